//! How the CLI (and the testnet) ask a running node: a blocking HTTP/1.1 GET to the address
//! in `DIR/admin.addr`, with the data directory's bearer token when it has one.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{token, AdminError, PeerInfo, StatusReport};
use crate::store::DataDir;

/// Timeout of [`query`]'s connect, write and read.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest answer [`query`] reads.
pub const MAX_RESPONSE: u64 = 16 << 20;
/// Longest route name.
const MAX_ROUTE: usize = 64;
/// Most bytes of `admin.addr` read (an IPv6 `[addr%scope]:port` line fits many times over).
const MAX_ADDR_FILE: u64 = 256;

/// Asks the node running on `dir` for `route` (`status`, `peers`, `audit`, `history`) and
/// parses the JSON answer (blocking, [`QUERY_TIMEOUT`]); `Ok(None)` when no node runs there
/// (no `admin.addr`, or nothing listens at it).
pub fn query(dir: &Path, route: &str) -> Result<Option<Value>, AdminError> {
    if route.is_empty()
        || route.len() > MAX_ROUTE
        || !route
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err(AdminError::BadRequest(route.into()));
    }
    let path = DataDir::new(dir).admin_addr();
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AdminError::Io { path, source }),
    };
    // An `ip:port` line is short: read no more than could hold one.
    let mut bytes = Vec::new();
    file.take(MAX_ADDR_FILE)
        .read_to_end(&mut bytes)
        .map_err(|source| AdminError::Io {
            path: path.clone(),
            source,
        })?;
    let text = String::from_utf8_lossy(&bytes);
    let addr: SocketAddr = text.trim().parse().map_err(|_| AdminError::BadAddrFile {
        path: path.clone(),
        text: text.trim().chars().take(100).collect(),
    })?;
    let token = token::load_if_present(dir)?;
    let conn = |source| AdminError::Connection { addr, source };
    let mut stream = match std::net::TcpStream::connect_timeout(&addr, QUERY_TIMEOUT) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
        Err(e) => return Err(conn(e)),
    };
    stream.set_read_timeout(Some(QUERY_TIMEOUT)).map_err(conn)?;
    stream
        .set_write_timeout(Some(QUERY_TIMEOUT))
        .map_err(conn)?;
    let mut request = format!("GET /{route} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = &token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(conn)?;
    let mut reply = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE)
        .read_to_end(&mut reply)
        .map_err(conn)?;
    let (status, body) = parse_reply(&reply).map_err(|reason| AdminError::BadReply {
        addr,
        reason: reason.to_string(),
    })?;
    let value: Option<Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        let message = value
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map_or_else(
                || String::from_utf8_lossy(body).chars().take(200).collect(),
                str::to_string,
            );
        return Err(AdminError::Remote { status, message });
    }
    value.map(Some).ok_or_else(|| AdminError::BadReply {
        addr,
        reason: format!("/{route}: the body is not JSON"),
    })
}

/// The status code and body of a whole HTTP/1.1 response (`Content-Length`-framed, or up
/// to the end of the connection).
fn parse_reply(reply: &[u8]) -> Result<(u16, &[u8]), &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(reply) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("the answer ended inside its head"),
        Err(_) => return Err("the answer is not HTTP"),
    };
    let status = response.code.ok_or("no status code")?;
    let body = reply.get(head..).unwrap_or_default();
    let mut length = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked answers are not expected");
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        }
    }
    match length {
        Some(n) => body
            .get(..n)
            .map(|b| (status, b))
            .ok_or("the answer is cut short"),
        None => Ok((status, body)),
    }
}

/// [`parse_reply`] on arbitrary bytes (the fuzz target's second half).
pub fn parse_reply_for_fuzzing(data: &[u8]) {
    let _ = parse_reply(data);
}

/// [`query`] for `status`, decoded.
pub fn query_status(dir: &Path) -> Result<Option<StatusReport>, AdminError> {
    query_typed(dir, "status")
}

/// [`query`] for `peers`, decoded.
pub fn query_peers(dir: &Path) -> Result<Option<Vec<PeerInfo>>, AdminError> {
    query_typed(dir, "peers")
}

fn query_typed<T: serde::de::DeserializeOwned>(
    dir: &Path,
    route: &str,
) -> Result<Option<T>, AdminError> {
    let Some(value) = query(dir, route)? else {
        return Ok(None);
    };
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| AdminError::BadReply {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            reason: format!("{route}: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_by_their_length_and_bad_ones_are_errors() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing";
        assert_eq!(parse_reply(ok).unwrap(), (200, &b"{}"[..]));
        let unframed = b"HTTP/1.1 404 Not Found\r\n\r\n{\"error\":\"x\"}";
        assert_eq!(parse_reply(unframed).unwrap().0, 404);
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\ncontent-le").is_err());
        assert!(parse_reply(b"\x00\x01garbage\r\n\r\n").is_err());
        assert!(
            parse_reply(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}").is_err()
        );
    }

    #[test]
    fn query_without_a_node_is_none_and_bad_routes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(query(dir.path(), "status").unwrap().is_none());
        // A stale address (nothing listens there any more) also means "not running".
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        super::super::write_addr(dir.path(), addr).unwrap();
        assert!(query(dir.path(), "status").unwrap().is_none());
        super::super::remove_addr(dir.path()).unwrap();
        super::super::remove_addr(dir.path()).unwrap();
        for bad in [
            "bad\nrequest",
            "",
            "../status",
            "status?x=1",
            &"a".repeat(65),
        ] {
            assert!(matches!(
                query(dir.path(), bad),
                Err(AdminError::BadRequest(_))
            ));
        }
        for bad in [
            "not an address".to_string(),
            format!("127.0.0.1:1{}", "0".repeat(4096)),
        ] {
            std::fs::write(DataDir::new(dir.path()).admin_addr(), bad).unwrap();
            assert!(matches!(
                query(dir.path(), "status"),
                Err(AdminError::BadAddrFile { .. })
            ));
        }
    }
}
