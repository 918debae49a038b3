//! The admin endpoint's HTTP server (hyper, HTTP/1.1): the limits every connection gets,
//! the bearer-token check, and the node's routes. [`serve_routes`] is also what
//! `fedmmkt-testnet up --dashboard` serves its page with.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::{metrics_text, AdminState};

/// Most bytes of a request's head (request line and headers); a longer one is refused
/// (431, or 414 for a long URI) before it is read further.
pub const MAX_HEAD: usize = 16 << 10;
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send a request's head once it connected or its last request was
/// answered; a slower one is disconnected.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept, however busy (the live page reconnects).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The live page.
const PAGE: &str = include_str!("page.html");
/// The line charts both live pages draw (this node's and the testnet's dashboard).
const CHART_JS: &str = include_str!("chart.js");
/// The style both live pages share.
const PAGE_CSS: &str = include_str!("page.css");

/// Where a live page keeps its HTML once built.
pub type PageCell = std::sync::OnceLock<Bytes>;

/// A live page's HTML with the shared style and chart code in place of its `/* page.css */`
/// and `/* chart.js */` markers, as a `200` (built once per page).
pub fn page(cell: &'static PageCell, html: &'static str) -> Reply {
    let body = cell.get_or_init(|| {
        html.replacen("/* page.css */", PAGE_CSS, 1)
            .replacen("/* chart.js */", CHART_JS, 1)
            .into()
    });
    with_type(body.clone(), "text/html; charset=utf-8")
}

/// What a request must show to be answered.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The bearer token requests need, when one is in force.
    pub token: Option<String>,
    /// Whether `/metrics` needs it too.
    pub metrics_need_token: bool,
}

/// A complete response.
pub type Reply = Response<Full<Bytes>>;

/// Serves `route` on `listener` until `closed` resolves, with the endpoint's limits: at most
/// [`MAX_CONNECTIONS`] at once, heads of at most [`MAX_HEAD`] bytes sent within
/// [`HEAD_TIMEOUT`], no request bodies, GET and HEAD only, [`CONNECTION_LIFETIME`] each.
pub async fn serve_routes<R, F>(listener: TcpListener, route: R, closed: F)
where
    R: Fn(&Parts) -> Reply + Send + Sync + 'static,
    F: Future<Output = ()>,
{
    let route = Arc::new(route);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(closed);
    loop {
        tokio::select! {
            () = &mut closed => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        tracing::warn!("admin endpoint: too many connections, closed one from {peer}");
                        continue;
                    };
                    let route = Arc::clone(&route);
                    tokio::spawn(async move {
                        let _slot = slot;
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let reply = answer(&*route, req);
                            async move { Ok::<_, Infallible>(reply) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEAD_TIMEOUT)
                            .max_buf_size(MAX_HEAD)
                            .serve_connection(TokioIo::new(stream), service);
                        match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!("admin endpoint: connection from {peer}: {e}"),
                            Err(_) => tracing::debug!("admin endpoint: connection from {peer} closed after {CONNECTION_LIFETIME:?}"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("admin endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Refuses what no route takes (bodies, methods other than GET and HEAD), else routes.
fn answer<R: Fn(&Parts) -> Reply>(route: &R, req: Request<Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0");
    if declared || !body.is_end_stream() {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "no route takes a request body",
        );
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut reply = error(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return reply;
    }
    route(&parts)
}

/// Serves the node's routes on `listener` until the watch channel's sender is dropped.
pub async fn serve(listener: TcpListener, access: Access, state: watch::Receiver<AdminState>) {
    let mut watch = state.clone();
    let closed = async move { while watch.changed().await.is_ok() {} };
    serve_routes(
        listener,
        move |parts| node_route(parts, &access, &state.borrow()),
        closed,
    )
    .await
}

/// The answer to one request for the node's routes, given its state.
pub fn node_route(parts: &Parts, access: &Access, state: &AdminState) -> Reply {
    let path = parts.uri.path();
    if let Some(token) = &access.token {
        let needed = path != "/metrics" || access.metrics_need_token;
        // The page may take the token in its URL (a browser cannot set the header on the
        // address bar); its script then sends the header.
        if needed && !authorized(parts, token, path == "/") {
            let mut reply = error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs `Authorization: Bearer <token>` (the token is in the node's data directory, admin.token)",
            );
            reply.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fedmmkt\""),
            );
            return reply;
        }
    }
    match path {
        "/" => {
            static BUILT: PageCell = PageCell::new();
            page(&BUILT, PAGE)
        }
        "/status" => json(&state.status),
        "/peers" => json(&state.peers),
        "/history" => json(&state.history),
        "/audit" => match &state.audit {
            Some(audit) => json(audit),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no privacy audit available yet",
            ),
        },
        "/metrics" => with_type(
            metrics_text(state).into(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/grid.png" => match &state.grid {
            Some(grid) => {
                let mut reply = with_type(grid.png.clone().into(), "image/png");
                reply
                    .headers_mut()
                    .insert("x-fedmmkt-round", HeaderValue::from(grid.round));
                reply
            }
            None => error(
                StatusCode::NOT_FOUND,
                "no synthetic images yet: this node has not sampled a round as host",
            ),
        },
        other => error(
            StatusCode::NOT_FOUND,
            &format!(
                "no route {other:?}: try /status, /peers, /audit, /history, /metrics, /grid.png or /"
            ),
        ),
    }
}

/// Whether the request carries `token`, as a bearer header (or, with `in_query`, as
/// `?token=`). Their SHA-256 digests are compared, so the time a comparison takes says
/// nothing about how much of the token a guess got right.
fn authorized(parts: &Parts, token: &str, in_query: bool) -> bool {
    use sha2::{Digest, Sha256};
    let expected = Sha256::digest(token.as_bytes());
    let same = |given: &[u8]| Sha256::digest(given) == expected;
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| same(given.trim_ascii()));
    header
        || (in_query
            && parts.uri.query().is_some_and(|q| {
                q.split('&')
                    .filter_map(|kv| kv.strip_prefix("token="))
                    .any(|given| same(given.as_bytes()))
            }))
}

/// A `200` with `body` of `content_type`, never cached.
pub fn with_type(body: Bytes, content_type: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(body));
    let headers = reply.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob:",
        ),
    );
    reply
}

/// `value` as a JSON `200`.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(body.into(), "application/json"),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("could not encode the answer: {e}"),
        ),
    }
}

/// A `404` naming what is missing.
pub fn not_found(message: &str) -> Reply {
    error(StatusCode::NOT_FOUND, message)
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: &str) -> Reply {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut reply = with_type(body.into(), "application/json");
    *reply.status_mut() = status;
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, auth: Option<&str>) -> Parts {
        let mut req = Request::get(uri);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_token_is_checked_where_it_is_in_force() {
        let state = AdminState::default();
        let token = "t".repeat(40);
        let access = Access {
            token: Some(token.clone()),
            metrics_need_token: false,
        };
        let bearer = format!("Bearer {token}");
        let status = |uri: &str, auth: Option<&str>, access: &Access| {
            node_route(&parts(uri, auth), access, &state).status()
        };
        assert_eq!(status("/status", None, &access), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status("/status", Some("Bearer wrong"), &access),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status("/status", Some(&bearer), &access), StatusCode::OK);
        assert_eq!(status("/metrics", None, &access), StatusCode::OK);
        // The page takes it in its URL; no other route does.
        let in_url = format!("/?token={token}");
        assert_eq!(status(&in_url, None, &access), StatusCode::OK);
        assert_eq!(
            status(&format!("/status?token={token}"), None, &access),
            StatusCode::UNAUTHORIZED
        );
        let strict = Access {
            metrics_need_token: true,
            ..access.clone()
        };
        assert_eq!(status("/metrics", None, &strict), StatusCode::UNAUTHORIZED);
        assert_eq!(status("/metrics", Some(&bearer), &strict), StatusCode::OK);
        // Without a token in force every route is open.
        let open = Access::default();
        assert_eq!(status("/peers", None, &open), StatusCode::OK);
        assert_eq!(status("/nope", None, &open), StatusCode::NOT_FOUND);
        assert_eq!(
            status("/audit", None, &open),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status("/grid.png", None, &open), StatusCode::NOT_FOUND);
    }
}
