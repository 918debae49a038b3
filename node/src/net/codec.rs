//! Request-response framing: a kind tag and a length before each body, so the receiver
//! rejects an oversized message of any kind before reading it, then reads the body in chunks
//! reserved from the node's [`InflightBudget`], while bytes keep arriving.
//!
//! A frame that is not a valid request (unknown kind, length over the limit, truncated,
//! undecodable, mislabelled) is read as [`Framed::Invalid`], not as an error: libp2p drops a
//! failed read without saying whose stream it was, and the node must refuse it and count the
//! offence against the peer that sent it. A request whose bytes stop arriving is read as
//! [`Framed::Stalled`]: whether that was the sender or the network is for the node to judge.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};
use protocol::wire::{self, Kind, Request, Response, MAX_RESPONSE_BYTES};

use super::inflight::{InflightBudget, Reservation};

/// Default time an inbound request may go without a byte arriving before it is given up.
pub const DEFAULT_READ_DEADLINE: Duration = Duration::from_secs(30);

/// Bytes this node's request-response streams carried since it started, both ways (what the
/// admin endpoint's `fedmmkt_bytes_total` counts).
#[derive(Debug, Default)]
pub struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Traffic {
    /// Bytes written: requests and responses, framing included.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes read: requests and responses, framing included.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// The fedmmkt request-response codec (postcard bodies in the versioned envelope); its clones
/// (one per connection and stream) share one inbound byte budget and one [`Traffic`] count.
#[derive(Debug, Clone)]
pub struct WireCodec {
    budget: Arc<InflightBudget>,
    traffic: Arc<Traffic>,
    /// Longest wait for the next byte of a request.
    idle: Duration,
    /// Longest a request may take to read in all, however its bytes trickle in.
    total: Duration,
}

impl Default for WireCodec {
    fn default() -> Self {
        Self::new(Arc::default(), DEFAULT_READ_DEADLINE, Arc::default())
    }
}

impl WireCodec {
    /// A codec whose inbound bodies share `budget`; a request is given up when no byte of it
    /// arrives for `idle`, or when reading it takes twice that in all. Bytes both ways are
    /// added to `traffic`.
    pub fn new(budget: Arc<InflightBudget>, idle: Duration, traffic: Arc<Traffic>) -> Self {
        Self {
            budget,
            traffic,
            idle,
            total: idle.saturating_mul(2),
        }
    }
}

/// A request as it travels: what a node sends, and what it reads off a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Framed {
    /// A request that decoded and matches its kind tag.
    Valid(Request),
    /// A frame that is not one, and why; never sent, only read.
    Invalid(String),
    /// A request whose bytes stopped arriving (or trickled past the total deadline), given up
    /// `idle` after its last byte; never sent, only read. A partition or a dead link looks
    /// the same as a sender that stalls on purpose, so this is not by itself an offence.
    Stalled {
        /// How long before the reader gave up the last byte of it arrived (or it opened).
        idle: Duration,
    },
}

/// A reader that notes when it last delivered a byte, in milliseconds after `start`, and
/// counts what it delivers.
struct Watched<'a, T> {
    io: &'a mut T,
    start: Instant,
    last_byte_ms: &'a AtomicU64,
    received: &'a AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            if *n > 0 {
                let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.last_byte_ms.store(ms, Ordering::Relaxed);
                self.received.fetch_add(*n as u64, Ordering::Relaxed);
            }
        }
        polled
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Bytes a body is read in at a time: memory grows with what arrives, not with what a peer
/// declares (a peer that declares the limit and sends nothing costs one chunk).
const READ_CHUNK: usize = 64 << 10;

async fn read_body<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
    budget: &Arc<InflightBudget>,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut held = Reservation::new(budget.clone());
    read_body_into(io, limit, &mut body, &mut held).await?;
    Ok(body)
}

/// Reads a length-prefixed body of at most `limit` bytes into `body`, chunk by chunk, each
/// chunk reserved in `held` before it is read.
async fn read_body_into<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
    body: &mut Vec<u8>,
    held: &mut Reservation,
) -> io::Result<()> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(invalid(format!(
            "message of {len} bytes exceeds the limit of {limit}"
        )));
    }
    let chunk_len = READ_CHUNK.min(len);
    held.grow(chunk_len)?;
    let mut chunk = vec![0u8; chunk_len];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        let got = io.read(&mut chunk[..want]).await?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body ended after {} of {len} bytes", body.len()),
            ));
        }
        // Grow the body by doubling (never past the declared length), each growth reserved
        // before it is allocated: the budget counts the body's capacity, not only its length.
        let need = body.len() + got;
        if need > body.capacity() {
            let capacity = (body.capacity() * 2).max(need).min(len);
            held.grow(capacity - body.capacity())?;
            body.reserve_exact(capacity - body.len());
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
/// An error is no frame at all (the stream ended before its first byte) or this node's own
/// (its in-flight budget is full); whatever the sender got wrong is a [`Framed::Invalid`].
pub async fn read_request<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: &Arc<InflightBudget>,
) -> io::Result<Framed> {
    // A stream that ends before its first byte is a connection going away, not a frame.
    let mut tag = [0u8; 1];
    io.read_exact(&mut tag).await?;
    let Some(kind) = Kind::from_tag(tag[0]) else {
        return Ok(Framed::Invalid(format!("unknown kind {}", tag[0])));
    };
    let body = match read_body(io, kind.limit(), budget).await {
        Ok(body) => body,
        Err(e) if e.kind() == io::ErrorKind::OutOfMemory => return Err(e),
        Err(e) => return Ok(Framed::Invalid(format!("{kind:?} body: {e}"))),
    };
    Ok(match wire::decode::<Request>(&body, kind.limit()) {
        Err(e) => Framed::Invalid(format!("{kind:?} body: {e}")),
        Ok(req) if req.kind() != kind => {
            Framed::Invalid(format!("a {:?} body under the {kind:?} tag", req.kind()))
        }
        Ok(req) => Framed::Valid(req),
    })
}

impl request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Framed;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Framed>
    where
        T: AsyncRead + Unpin + Send,
    {
        use libp2p::futures::future::{select, Either};
        let start = Instant::now();
        let last_byte_ms = AtomicU64::new(0);
        let mut watched = Watched {
            io,
            start,
            last_byte_ms: &last_byte_ms,
            received: &self.traffic.received,
        };
        let read = read_request(&mut watched, &self.budget);
        libp2p::futures::pin_mut!(read);
        loop {
            let elapsed = start.elapsed();
            let last_byte = Duration::from_millis(last_byte_ms.load(Ordering::Relaxed));
            let idle = elapsed.saturating_sub(last_byte);
            let left = self.total.saturating_sub(elapsed);
            if idle >= self.idle || left.is_zero() {
                return Ok(Framed::Stalled { idle });
            }
            let wait = (self.idle - idle).min(left);
            match select(read.as_mut(), futures_timer::Delay::new(wait)).await {
                Either::Left((framed, _)) => return framed,
                Either::Right(_) => {}
            }
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut tag = [0u8; 1];
        io.read_exact(&mut tag).await?;
        let body = read_body(io, MAX_RESPONSE_BYTES, &self.budget).await?;
        self.traffic
            .received
            .fetch_add(5 + body.len() as u64, Ordering::Relaxed);
        wire::decode(&body, MAX_RESPONSE_BYTES).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Framed,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let Framed::Valid(req) = req else {
            return Err(invalid("an invalid frame is never sent"));
        };
        let kind = req.kind();
        let body = wire::encode(&req).map_err(invalid)?;
        if body.len() > kind.limit() {
            return Err(invalid(format!(
                "refusing to send {} bytes of {kind:?} (limit {})",
                body.len(),
                kind.limit()
            )));
        }
        write_body(io, kind as u8, &body).await?;
        self.traffic
            .sent
            .fetch_add(5 + body.len() as u64, Ordering::Relaxed);
        Ok(())
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
        write_body(io, 0, &body).await?;
        self.traffic
            .sent
            .fetch_add(5 + body.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;
    use protocol::wire::SecAggPacket;
    use request_response::Codec;
    use std::future::Future;

    fn packet(len: usize) -> Request {
        Request::SecAgg(SecAggPacket {
            term: 1,
            round: 2,
            attempt: 0,
            payload: vec![7; len],
        })
    }

    /// The frame `write_request` puts on the wire for `req`.
    fn frame_of(req: Request) -> Vec<u8> {
        let mut buf = Vec::new();
        block_on(WireCodec::default().write_request(
            &crate::net::RR_PROTOCOL,
            &mut Cursor::new(&mut buf),
            Framed::Valid(req),
        ))
        .unwrap();
        buf
    }

    fn read(bytes: &[u8]) -> io::Result<Framed> {
        block_on(
            WireCodec::default().read_request(&crate::net::RR_PROTOCOL, &mut Cursor::new(bytes)),
        )
    }

    /// The reason of an invalid frame (panics on a valid one or an error).
    fn invalid_reason(bytes: &[u8]) -> String {
        match read(bytes).unwrap() {
            Framed::Invalid(why) => why,
            other => panic!("not read as invalid: {other:?}"),
        }
    }

    #[test]
    fn bodies_beyond_the_nodes_inflight_budget_are_an_error_and_released() {
        let proto = crate::net::RR_PROTOCOL;
        let buf = frame_of(packet(100_000));
        let budget = Arc::new(InflightBudget::new(100_000));
        let mut codec = WireCodec::new(budget.clone(), DEFAULT_READ_DEADLINE, Arc::default());
        let err = block_on(codec.read_request(&proto, &mut Cursor::new(&buf))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
        assert_eq!(budget.used(), 0);
        let traffic = Arc::new(Traffic::default());
        let mut codec = WireCodec::new(
            Arc::new(InflightBudget::new(300_000)),
            DEFAULT_READ_DEADLINE,
            traffic.clone(),
        );
        assert_eq!(
            block_on(codec.read_request(&proto, &mut Cursor::new(&buf))).unwrap(),
            Framed::Valid(packet(100_000))
        );
        // Every byte read is counted once, framing included; writing a response counts too.
        assert_eq!(traffic.received(), buf.len() as u64);
        let mut out = Cursor::new(Vec::new());
        block_on(codec.write_response(&proto, &mut out, Response::Ack)).unwrap();
        assert_eq!(traffic.sent(), out.into_inner().len() as u64);
    }

    /// A reader that yields its bytes, then never completes (a peer that stalls mid-body).
    struct Stalling(Cursor<Vec<u8>>);

    impl AsyncRead for Stalling {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
                std::task::Poll::Ready(Ok(0)) => std::task::Poll::Pending,
                other => other,
            }
        }
    }

    #[test]
    fn a_body_with_no_new_bytes_is_stalled_after_the_idle_deadline() {
        let mut stalled = vec![Kind::Offer as u8];
        stalled.extend((Kind::Offer.limit() as u32).to_le_bytes());
        stalled.extend([1u8; 10]);
        let budget = Arc::new(InflightBudget::default());
        let mut codec = WireCodec::new(budget.clone(), Duration::from_millis(200), Arc::default());
        let t0 = std::time::Instant::now();
        let got = block_on(codec.read_request(
            &crate::net::RR_PROTOCOL,
            &mut Stalling(Cursor::new(stalled)),
        ))
        .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert!(
            matches!(got, Framed::Stalled { idle } if idle >= Duration::from_millis(200)),
            "{got:?}"
        );
        assert_eq!(budget.used(), 0, "the stalled body's chunks are released");
    }

    /// A reader that gives one byte per `every`, waiting in between (a slow link or a drip).
    struct Trickle {
        bytes: Cursor<Vec<u8>>,
        every: Duration,
        wait: Option<futures_timer::Delay>,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let every = self.every;
            let wait = self
                .wait
                .get_or_insert_with(|| futures_timer::Delay::new(every));
            if Pin::new(wait).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
            let one = buf.len().min(1);
            Pin::new(&mut self.bytes).poll_read(cx, &mut buf[..one])
        }
    }

    fn trickle(frame: Vec<u8>, every: Duration, idle: Duration) -> (Framed, Duration) {
        let started = std::time::Instant::now();
        let got = block_on(
            WireCodec::new(Arc::default(), idle, Arc::default()).read_request(
                &crate::net::RR_PROTOCOL,
                &mut Trickle {
                    bytes: Cursor::new(frame),
                    every,
                    wait: None,
                },
            ),
        )
        .unwrap();
        (got, started.elapsed())
    }

    #[test]
    fn slow_bytes_keep_a_request_alive_until_the_total_deadline() {
        let idle = Duration::from_millis(400);
        // Bytes that keep coming, each well inside the idle deadline, are read in full even
        // when the whole takes longer than the idle deadline (a slow link).
        let frame = frame_of(packet(3));
        let every = idle.mul_f64(1.5) / frame.len() as u32;
        let (got, took) = trickle(frame, every, idle);
        assert!(took > idle, "{took:?}");
        assert_eq!(got, Framed::Valid(packet(3)));
        // A drip that would take longer than the total deadline (2 × idle) is given up there,
        // its last byte recent.
        let (got, took) = trickle(frame_of(packet(40)), idle / 4, idle);
        assert!(took >= 2 * idle && took < 3 * idle, "{took:?}");
        assert!(
            matches!(got, Framed::Stalled { idle: since } if since < idle),
            "{got:?}"
        );
    }

    #[test]
    fn frames_round_trip_and_bad_frames_read_as_invalid() {
        let buf = frame_of(packet(100));
        assert_eq!(read(&buf).unwrap(), Framed::Valid(packet(100)));
        // A length above the kind's limit is refused before the body is read.
        let mut big = buf.clone();
        big[1..5].copy_from_slice(&(Kind::SecAgg.limit() as u32 + 1).to_le_bytes());
        assert!(invalid_reason(&big).contains("exceeds the limit"));
        // A body of one kind under another kind's tag.
        let mut relabelled = buf.clone();
        relabelled[0] = Kind::Election as u8;
        assert!(invalid_reason(&relabelled).contains("a SecAgg body under the Election tag"));
        let abstain = frame_of(Request::Abstain {
            term: 1,
            round: 1,
            attempt: 0,
            reason: protocol::messages::AbstainReason::BudgetExhausted,
        });
        let mut mislabelled = abstain.clone();
        mislabelled[0] = Kind::Election as u8;
        assert!(invalid_reason(&mislabelled).contains("Abstain body under the Election tag"));
        // A declared length is not allocated up front: a peer that declares the largest
        // body its kind allows and sends 10 bytes costs what arrived, not the declaration.
        let limit = Kind::Offer.limit();
        let mut stalled = (limit as u32).to_le_bytes().to_vec();
        stalled.extend([1u8; 10]);
        let mut body = Vec::new();
        let budget = Arc::new(InflightBudget::default());
        let mut held = Reservation::new(budget.clone());
        let err = block_on(read_body_into(
            &mut Cursor::new(&stalled),
            limit,
            &mut body,
            &mut held,
        ))
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        assert_eq!(body.len(), 10);
        assert!(body.capacity() <= READ_CHUNK, "{}", body.capacity());
        // While it is held it counts against the node's budget (one chunk and what arrived);
        // once the stream is gone, nothing does.
        assert_eq!(budget.used(), READ_CHUNK + 10);
        drop(held);
        assert_eq!(budget.used(), 0);
        // A body longer than one chunk arrives whole.
        let long = packet(3 * READ_CHUNK + 5);
        assert_eq!(read(&frame_of(long.clone())).unwrap(), Framed::Valid(long));
        // Truncated input, unknown kinds, garbage and nothing at all are invalid, not panics.
        assert!(invalid_reason(&buf[..20]).contains("body ended"));
        assert!(invalid_reason(&[99u8, 0, 0]).contains("unknown kind 99"));
        let mut garbage = vec![Kind::SecAgg as u8];
        garbage.extend(6u32.to_le_bytes());
        garbage.extend([0xff; 6]);
        assert!(invalid_reason(&garbage).contains("SecAgg body"));
        assert_eq!(read(&[]).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        // An invalid frame is never sent.
        let mut out = Vec::new();
        assert!(block_on(WireCodec::default().write_request(
            &crate::net::RR_PROTOCOL,
            &mut Cursor::new(&mut out),
            Framed::Invalid("x".into()),
        ))
        .is_err());
        // Responses.
        let mut out = Vec::new();
        block_on(WireCodec::default().write_response(
            &crate::net::RR_PROTOCOL,
            &mut Cursor::new(&mut out),
            Response::Ack,
        ))
        .unwrap();
        let back = block_on(
            WireCodec::default().read_response(&crate::net::RR_PROTOCOL, &mut Cursor::new(&out)),
        )
        .unwrap();
        assert_eq!(back, Response::Ack);
    }
}
