//! The WebSocket handshake: reading the request head, validating it, running `$connect`.
//!
//! The head is parsed here (not by hyper) so that the CONNECT event can carry the client's
//! header names in their original casing, as API Gateway's does. No connection exists until
//! `$connect` has allowed it: the id is not registered, so management calls answer 410.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::api::keys;
use crate::event::{ConnectionContext, Event, EventKind, RequestHead, new_trace_id};
use crate::gateway::conn::Conn;
use crate::gateway::{Gateway, call};
use crate::ids::Id;
use crate::time;
use crate::workers;

/// Largest request head accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;

/// An HTTP error answer to a request that does not become a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The status code.
    pub status: u16,
    /// A message for the JSON body; `None` sends an empty body.
    pub message: Option<String>,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
}

impl Rejection {
    /// A rejection with a message.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: Some(message.into()),
            headers: Vec::new(),
        }
    }

    /// The raw HTTP/1.1 response.
    pub fn to_http(&self) -> Vec<u8> {
        let body = self
            .message
            .as_ref()
            .map(|m| serde_json::json!({ "message": m }).to_string())
            .unwrap_or_default();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.status,
            reason_phrase(self.status),
            body.len()
        );
        if !body.is_empty() {
            out.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&body);
        out.into_bytes()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

/// A request head read from a socket, with the bytes that followed it.
#[derive(Debug)]
pub struct ReadHead {
    /// The parsed head.
    pub head: RequestHead,
    /// The HTTP version's minor number (1 for HTTP/1.1).
    pub version: u8,
    /// Everything read so far, head included.
    pub raw: BytesMut,
    /// Where the head ends in `raw`.
    pub head_len: usize,
}

/// Reads and parses one HTTP/1.x request head.
pub async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<ReadHead, Rejection> {
    let mut raw = BytesMut::with_capacity(1024);
    loop {
        if raw.len() >= MAX_HEAD_BYTES {
            return Err(Rejection::new(431, "Request header fields too large"));
        }
        let n = io
            .read_buf(&mut raw)
            .await
            .map_err(|_| Rejection::new(400, "Bad request"))?;
        if n == 0 {
            return Err(Rejection {
                status: 400,
                message: None,
                headers: Vec::new(),
            });
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&raw) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(head_len)) => {
                if head_len > MAX_HEAD_BYTES {
                    return Err(Rejection::new(431, "Request header fields too large"));
                }
                let target = req.path.unwrap_or("/");
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                    None => (target.to_owned(), None),
                };
                let mut parsed = Vec::with_capacity(req.headers.len());
                for h in req.headers.iter() {
                    let value = std::str::from_utf8(h.value)
                        .map_err(|_| Rejection::new(400, "Header values must be UTF-8"))?;
                    parsed.push((h.name.to_owned(), value.to_owned()));
                }
                let head = RequestHead {
                    method: req.method.unwrap_or("GET").to_owned(),
                    path,
                    query,
                    headers: parsed,
                };
                return Ok(ReadHead {
                    head,
                    version: req.version.unwrap_or(1),
                    raw,
                    head_len,
                });
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Rejection::new(431, "Too many request header fields"));
            }
            Err(_) => return Err(Rejection::new(400, "Malformed HTTP request")),
        }
    }
}

/// Whether a request asks for a WebSocket upgrade.
pub fn is_upgrade(head: &RequestHead) -> bool {
    head.header("upgrade")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Whether a path is the stage's WebSocket path (`/{stage}`, trailing slash allowed).
pub fn is_stage_path(path: &str, stage: &str) -> bool {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    trimmed.strip_prefix('/') == Some(stage)
}

/// A handshake that `$connect` allowed.
#[derive(Debug)]
pub struct Accepted {
    /// The new connection, not yet registered.
    pub conn: Arc<Conn>,
    /// The `Sec-WebSocket-Accept` value.
    pub accept_key: String,
    /// The subprotocol `$connect` chose, if any.
    pub protocol: Option<String>,
}

impl Accepted {
    /// The raw `101 Switching Protocols` response.
    pub fn response(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            self.accept_key
        );
        if let Some(p) = &self.protocol {
            out.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Validates an upgrade request and runs `$connect`.
pub async fn accept(
    gw: &Gateway,
    head: &RequestHead,
    version: u8,
    peer: SocketAddr,
    local_port: u16,
    proto: &'static str,
) -> Result<Accepted, Rejection> {
    let accept_key = validate(gw, head, version)?;
    let (conn, protocol) = connect(gw, head, peer, local_port, proto).await?;
    Ok(Accepted {
        conn,
        accept_key,
        protocol,
    })
}

/// Checks what API Gateway checks before `$connect`; answers the `Sec-WebSocket-Accept` value.
fn validate(gw: &Gateway, head: &RequestHead, version: u8) -> Result<String, Rejection> {
    let url_len = head.path.len() + head.query.as_ref().map_or(0, |q| q.len() + 1);
    if url_len > gw.limits.max_url_bytes {
        return Err(Rejection::new(414, "URI too long"));
    }
    if !is_stage_path(&head.path, &gw.api_context.stage) {
        return Err(Rejection::new(404, "Not found"));
    }
    if !crate::limits::origin_allowed(&gw.limits.allowed_origins, head.header("origin")) {
        return Err(Rejection::new(403, "Origin not allowed"));
    }
    if head.method != "GET" || version < 1 {
        return Err(Rejection::new(
            400,
            "WebSocket handshakes must be GET over HTTP/1.1",
        ));
    }
    let connection_upgrade = head.header("connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !connection_upgrade {
        return Err(Rejection::new(400, "Missing `Connection: Upgrade`"));
    }
    if head.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(Rejection {
            status: 426,
            message: Some("Unsupported WebSocket version; use 13".into()),
            headers: vec![("Sec-WebSocket-Version", "13".into())],
        });
    }
    let key = head
        .header("sec-websocket-key")
        .map(str::trim)
        .filter(|k| is_valid_key(k))
        .ok_or_else(|| Rejection::new(400, "Missing or invalid Sec-WebSocket-Key"))?;
    Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Gives the connection an id, then runs the authorizer and `$connect`; answers the new,
/// unregistered connection and the subprotocol `$connect` chose.
async fn connect(
    gw: &Gateway,
    head: &RequestHead,
    peer: SocketAddr,
    local_port: u16,
    proto: &'static str,
) -> Result<(Arc<Conn>, Option<String>), Rejection> {
    let now = time::now_ms();
    // On a worker thread, an id that names the worker (see `workers`).
    let mut connection_id = workers::connection_id();
    while gw.registry.local(&connection_id).is_some() {
        connection_id = workers::connection_id();
    }
    let domain_name = head
        .header("host")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("localhost:{local_port}"));
    let mut context = ConnectionContext {
        connection_id,
        connected_at_ms: now,
        source_ip: peer.ip().to_canonical(),
        user_agent: head.header("user-agent").map(Into::into),
        domain_name: domain_name.into_boxed_str(),
        authorizer: None,
    };
    let request = ConnectRequest {
        gw,
        head,
        port: local_port,
        proto,
        trace_id: new_trace_id(now),
        now,
    };

    if let Some(authorizer) = gw.api.authorizer() {
        // Boxed: the authorizer's future is kilobytes, and most APIs have no authorizer.
        match Box::pin(authorizer.authorize(&request.event(&context))).await {
            Ok(allowed) => context.authorizer = Some(Box::new(allowed)),
            Err(denied) => {
                tracing::info!(connection_id = %connection_id, reason = %denied, "the authorizer refused the connection");
                return Err(Rejection::new(denied.status(), denied.message()));
            }
        }
    }

    let mut protocol = None;
    if let Some(route) = gw.api.get(keys::CONNECT) {
        let timeout = gw.limits.integration_timeout();
        let invocation = call::call(
            gw.management.inspector(),
            route,
            &request.event(&context),
            timeout,
        );
        match invocation.resolve().await {
            Ok(response) if response.is_success() => {
                protocol = response.header("sec-websocket-protocol").map(str::to_owned);
            }
            Ok(response) => {
                tracing::info!(connection_id = %connection_id, status = response.status_code, "$connect refused the connection");
                return Err(Rejection {
                    status: response.status_code,
                    message: None,
                    headers: Vec::new(),
                });
            }
            Err(error) => {
                tracing::warn!(connection_id = %connection_id, %error, "$connect integration failed");
                return Err(Rejection::new(502, "Bad gateway"));
            }
        }
    }
    if gw.shutdown.is_cancelled() {
        return Err(Rejection::new(503, "The server is shutting down"));
    }
    let conn = Arc::new(Conn::new(context, gw.limits.max_outbox_bytes));
    Ok((conn, protocol))
}

/// What every CONNECT event of one handshake shares (the authorizer's and `$connect`'s).
struct ConnectRequest<'a> {
    gw: &'a Gateway,
    head: &'a RequestHead,
    port: u16,
    proto: &'static str,
    trace_id: String,
    now: i64,
}

impl ConnectRequest<'_> {
    fn event<'b>(&'b self, connection: &'b ConnectionContext) -> Event<'b> {
        Event {
            route_key: keys::CONNECT,
            request_id: Id::random(),
            request_time_ms: self.now,
            api: &self.gw.api_context,
            connection,
            kind: EventKind::Connect {
                request: self.head,
                port: self.port,
                proto: self.proto,
                trace_id: &self.trace_id,
            },
        }
    }
}

/// A `Sec-WebSocket-Key` must be 16 bytes, base64-encoded.
fn is_valid_key(key: &str) -> bool {
    use base64::Engine;
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_head_keeping_casing_and_leftover() {
        let raw = b"GET /dev?token=a HTTP/1.1\r\nHost: x:1\r\nX-Custom-CASE: v\r\n\r\nextra";
        let mut io = &raw[..];
        let r = read_head(&mut io).await.unwrap();
        assert_eq!(r.head.path, "/dev");
        assert_eq!(r.head.query.as_deref(), Some("token=a"));
        assert_eq!(r.head.headers[1].0, "X-Custom-CASE");
        assert_eq!(&r.raw[r.head_len..], b"extra");
    }

    #[tokio::test]
    async fn rejects_garbage_and_huge_heads() {
        let mut io = &b"\x16\x03\x01garbage\r\n\r\n"[..];
        assert_eq!(read_head(&mut io).await.unwrap_err().status, 400);
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        let mut io = huge.as_bytes();
        assert_eq!(read_head(&mut io).await.unwrap_err().status, 431);
    }

    #[test]
    fn stage_paths() {
        assert!(is_stage_path("/dev", "dev"));
        assert!(is_stage_path("/dev/", "dev"));
        assert!(!is_stage_path("/dev/x", "dev"));
        assert!(!is_stage_path("/", "dev"));
        assert!(!is_stage_path("/Dev", "dev"));
    }

    #[test]
    fn keys() {
        assert!(is_valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key("short"));
    }
}
