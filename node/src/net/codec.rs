//! Request-response framing: a kind tag and a length before each body, so the receiver
//! rejects an oversized message of any kind before reading it.

use std::io;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};
use protocol::wire::{self, Kind, Request, Response, MAX_RESPONSE_BYTES};

/// The fedmmkt request-response codec (postcard bodies in the versioned envelope).
#[derive(Debug, Clone, Copy, Default)]
pub struct WireCodec;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Bytes a body is read in at a time: memory grows with what arrives, not with what a peer
/// declares (a peer that declares the limit and sends nothing costs one chunk).
const READ_CHUNK: usize = 64 << 10;

async fn read_body<T: AsyncRead + Unpin + Send>(io: &mut T, limit: usize) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    read_body_into(io, limit, &mut body).await?;
    Ok(body)
}

/// Reads a length-prefixed body of at most `limit` bytes into `body`, chunk by chunk.
async fn read_body_into<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
    body: &mut Vec<u8>,
) -> io::Result<()> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(invalid(format!(
            "message of {len} bytes exceeds the limit of {limit}"
        )));
    }
    let mut chunk = vec![0u8; READ_CHUNK.min(len)];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        let got = io.read(&mut chunk[..want]).await?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body ended after {} of {len} bytes", body.len()),
            ));
        }
        body.extend_from_slice(&chunk[..got]);
    }
    Ok(())
}

async fn write_body<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    tag: u8,
    body: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(invalid)?;
    io.write_all(&[tag]).await?;
    io.write_all(&len.to_le_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}

/// Reads one request: tag, length (checked against the kind's limit), body, then decodes.
pub async fn read_request<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Request> {
    let mut tag = [0u8; 1];
    io.read_exact(&mut tag).await?;
    let kind = Kind::from_tag(tag[0]).ok_or_else(|| invalid(format!("unknown kind {}", tag[0])))?;
    let body = read_body(io, kind.limit()).await?;
    let req: Request = wire::decode(&body, kind.limit()).map_err(invalid)?;
    if req.kind() != kind {
        return Err(invalid("body does not match its declared kind"));
    }
    Ok(req)
}

impl request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_request(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut tag = [0u8; 1];
        io.read_exact(&mut tag).await?;
        let body = read_body(io, MAX_RESPONSE_BYTES).await?;
        wire::decode(&body, MAX_RESPONSE_BYTES).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let kind = req.kind();
        let body = wire::encode(&req).map_err(invalid)?;
        if body.len() > kind.limit() {
            return Err(invalid(format!(
                "refusing to send {} bytes of {kind:?} (limit {})",
                body.len(),
                kind.limit()
            )));
        }
        write_body(io, kind as u8, &body).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let body = wire::encode(&res).map_err(invalid)?;
        write_body(io, 0, &body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;
    use protocol::wire::SecAggPacket;
    use request_response::Codec;

    fn packet(len: usize) -> Request {
        Request::SecAgg(SecAggPacket {
            term: 1,
            round: 2,
            attempt: 0,
            payload: vec![7; len],
        })
    }

    #[test]
    fn frames_round_trip_and_oversized_or_mislabelled_bodies_are_refused() {
        let proto = crate::net::RR_PROTOCOL;
        let mut buf = Vec::new();
        block_on(WireCodec.write_request(&proto, &mut Cursor::new(&mut buf), packet(100))).unwrap();
        let got = block_on(WireCodec.read_request(&proto, &mut Cursor::new(&buf))).unwrap();
        assert_eq!(got, packet(100));
        // A length above the kind's limit is refused before the body is read.
        let mut big = buf.clone();
        big[1..5].copy_from_slice(&(Kind::SecAgg.limit() as u32 + 1).to_le_bytes());
        let err = block_on(WireCodec.read_request(&proto, &mut Cursor::new(&big))).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        // The election kind has a small limit: a secagg body labelled as election is refused.
        let mut relabelled = buf.clone();
        relabelled[0] = Kind::Election as u8;
        assert!(block_on(WireCodec.read_request(&proto, &mut Cursor::new(&relabelled))).is_err());
        // A declared length is not allocated up front: a peer that declares the largest
        // body its kind allows and sends 10 bytes costs what arrived, not the declaration.
        let limit = Kind::Offer.limit();
        let mut stalled = (limit as u32).to_le_bytes().to_vec();
        stalled.extend([1u8; 10]);
        let mut body = Vec::new();
        let err =
            block_on(read_body_into(&mut Cursor::new(&stalled), limit, &mut body)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        assert_eq!(body.len(), 10);
        assert!(body.capacity() <= READ_CHUNK, "{}", body.capacity());
        // A body longer than one chunk arrives whole.
        let long = packet(3 * READ_CHUNK + 5);
        let mut buf3 = Vec::new();
        block_on(WireCodec.write_request(&proto, &mut Cursor::new(&mut buf3), long.clone()))
            .unwrap();
        let got = block_on(WireCodec.read_request(&proto, &mut Cursor::new(&buf3))).unwrap();
        assert_eq!(got, long);
        // Truncated input and unknown kinds are errors, not panics.
        assert!(block_on(WireCodec.read_request(&proto, &mut Cursor::new(&buf[..20]))).is_err());
        assert!(block_on(WireCodec.read_request(&proto, &mut Cursor::new(&[99u8, 0, 0]))).is_err());
        // Responses.
        let mut out = Vec::new();
        block_on(WireCodec.write_response(&proto, &mut Cursor::new(&mut out), Response::Ack))
            .unwrap();
        let back = block_on(WireCodec.read_response(&proto, &mut Cursor::new(&out))).unwrap();
        assert_eq!(back, Response::Ack);
    }
}
