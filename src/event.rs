//! The AWS proxy events (CONNECT, MESSAGE, DISCONNECT) and the proxy-style result.
//!
//! Events are built from borrowed connection state and serialised by hand so that the JSON has
//! exactly API Gateway's shape: header names keep the client's casing, keys that do not apply
//! are omitted (never `null` or `{}`), epochs are milliseconds and `requestTime` is in Common
//! Log Format. Built-in integrations read the typed fields directly and never pay for JSON.

use std::net::IpAddr;

use bytes::Bytes;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::Id;
use crate::time;

/// What kind of event an integration receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A client asks to connect (`$connect`).
    Connect,
    /// A client sent a message.
    Message,
    /// A connection has closed (`$disconnect`).
    Disconnect,
}

impl EventType {
    /// The `eventType` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Connect => "CONNECT",
            EventType::Message => "MESSAGE",
            EventType::Disconnect => "DISCONNECT",
        }
    }
}

/// The values that describe the API and stage every event belongs to.
#[derive(Debug, Clone)]
pub struct ApiContext {
    /// The API id (`apiId`).
    pub api_id: String,
    /// The stage name, the first path segment of the WebSocket URL.
    pub stage: String,
}

/// What a `$connect` authorizer returned, carried on every later event of the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerContext {
    /// The authorizer's `principalId`.
    pub principal_id: String,
    /// How long the authorizer took, in milliseconds.
    pub integration_latency_ms: u64,
    /// The authorizer's `context`, values stringified.
    pub context: Vec<(String, String)>,
}

/// The fixed facts about one connection that every event repeats.
#[derive(Debug)]
pub struct ConnectionContext {
    /// The connection id.
    pub connection_id: Id,
    /// When the handshake arrived, epoch milliseconds.
    pub connected_at_ms: i64,
    /// The client's address.
    pub source_ip: IpAddr,
    /// The client's `User-Agent`, when it sent one.
    pub user_agent: Option<Box<str>>,
    /// The `Host` the client used, port included.
    pub domain_name: Box<str>,
    /// What the authorizer allowed, when the API has one.
    pub authorizer: Option<Box<AuthorizerContext>>,
}

/// The handshake request as the client sent it.
#[derive(Debug, Default, Clone)]
pub struct RequestHead {
    /// The request method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string, without `?`, when the URL had one.
    pub query: Option<String>,
    /// Headers in the client's order and casing.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Query parameters, percent-decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .as_deref()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One message frame as received.
#[derive(Debug, Clone)]
pub struct Message {
    /// The payload.
    pub data: Bytes,
    /// Whether it arrived as a binary frame (only when binary frames are accepted).
    pub binary: bool,
}

impl Message {
    /// The payload as text; binary payloads that are not UTF-8 give `None`.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
}

/// What differs between the three event types.
#[derive(Debug, Clone, Copy)]
pub enum EventKind<'a> {
    /// `$connect`: the handshake's headers and query.
    Connect {
        /// The handshake request.
        request: &'a RequestHead,
        /// The port the client connected to (for `X-Forwarded-Port`).
        port: u16,
        /// `http` or `https` (for `X-Forwarded-Proto`).
        proto: &'static str,
        /// Trace id for `X-Amzn-Trace-Id`.
        trace_id: &'a str,
    },
    /// A message.
    Message {
        /// The frame.
        message: &'a Message,
        /// The message id.
        message_id: Id,
        /// The frame parsed as JSON, when route selection already parsed it.
        json: Option<&'a Value>,
    },
    /// `$disconnect` with the close code and reason.
    Disconnect {
        /// `disconnectStatusCode`.
        code: u16,
        /// `disconnectReason`.
        reason: &'a str,
    },
}

/// One event for one integration call.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The selected route key.
    pub route_key: &'a str,
    /// A new id per invocation (`requestId` and `extendedRequestId`).
    pub request_id: Id,
    /// When the event was created, epoch milliseconds.
    pub request_time_ms: i64,
    /// The API and stage.
    pub api: &'a ApiContext,
    /// The connection.
    pub connection: &'a ConnectionContext,
    /// Type-specific content.
    pub kind: EventKind<'a>,
}

impl Event<'_> {
    /// The event type.
    pub fn event_type(&self) -> EventType {
        match self.kind {
            EventKind::Connect { .. } => EventType::Connect,
            EventKind::Message { .. } => EventType::Message,
            EventKind::Disconnect { .. } => EventType::Disconnect,
        }
    }

    /// The connection id.
    pub fn connection_id(&self) -> Id {
        self.connection.connection_id
    }

    /// The message, for MESSAGE events.
    pub fn message(&self) -> Option<&Message> {
        match &self.kind {
            EventKind::Message { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The message body parsed as JSON, reusing route selection's parse when it made one.
    pub fn body_json(&self) -> Option<std::borrow::Cow<'_, Value>> {
        match &self.kind {
            EventKind::Message {
                json: Some(json), ..
            } => Some(std::borrow::Cow::Borrowed(*json)),
            EventKind::Message { message, .. } => serde_json::from_slice(&message.data)
                .ok()
                .map(std::borrow::Cow::Owned),
            _ => None,
        }
    }

    /// The event as AWS JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events always serialise")
    }
}

impl Serialize for Event<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match &self.kind {
            EventKind::Connect {
                request,
                port,
                proto,
                trace_id,
            } => {
                let headers =
                    connect_headers(request, self.connection.source_ip, *port, proto, trace_id);
                map.serialize_entry("headers", &SingleValues(&headers))?;
                map.serialize_entry("multiValueHeaders", &MultiValues(&headers))?;
                if request.query.is_some() {
                    let query = request.query_pairs();
                    if !query.is_empty() {
                        map.serialize_entry("queryStringParameters", &SingleValues(&query))?;
                        map.serialize_entry(
                            "multiValueQueryStringParameters",
                            &MultiValues(&query),
                        )?;
                    }
                }
            }
            EventKind::Disconnect { .. } => {
                let headers = disconnect_headers(&self.connection.domain_name);
                map.serialize_entry("headers", &SingleValues(&headers))?;
                map.serialize_entry("multiValueHeaders", &MultiValues(&headers))?;
            }
            EventKind::Message { .. } => {}
        }
        map.serialize_entry("requestContext", &RequestContext(self))?;
        if let EventKind::Message { message, .. } = &self.kind {
            if message.binary {
                use base64::Engine;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&message.data);
                map.serialize_entry("body", &encoded)?;
                map.serialize_entry("isBase64Encoded", &true)?;
                return map.end();
            }
            map.serialize_entry("body", &String::from_utf8_lossy(&message.data))?;
        }
        map.serialize_entry("isBase64Encoded", &false)?;
        map.end()
    }
}

struct RequestContext<'e, 'a>(&'e Event<'a>);

impl Serialize for RequestContext<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let c = e.connection;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("routeKey", e.route_key)?;
        if let EventKind::Message { message_id, .. } = &e.kind {
            map.serialize_entry("messageId", message_id)?;
        }
        if let EventKind::Disconnect { code, reason } = &e.kind {
            map.serialize_entry("disconnectStatusCode", code)?;
            map.serialize_entry("disconnectReason", reason)?;
        }
        map.serialize_entry("eventType", e.event_type().as_str())?;
        map.serialize_entry("extendedRequestId", &e.request_id)?;
        map.serialize_entry("requestTime", &time::clf(e.request_time_ms))?;
        map.serialize_entry("messageDirection", "IN")?;
        map.serialize_entry("stage", &e.api.stage)?;
        map.serialize_entry("connectedAt", &c.connected_at_ms)?;
        map.serialize_entry("requestTimeEpoch", &e.request_time_ms)?;
        map.serialize_entry("identity", &Identity(c))?;
        map.serialize_entry("requestId", &e.request_id)?;
        map.serialize_entry("domainName", &*c.domain_name)?;
        map.serialize_entry("connectionId", &c.connection_id)?;
        map.serialize_entry("apiId", &e.api.api_id)?;
        if let Some(auth) = &c.authorizer {
            map.serialize_entry("authorizer", &Authorizer(auth))?;
        }
        map.end()
    }
}

struct Identity<'a>(&'a ConnectionContext);

impl Serialize for Identity<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(ua) = &self.0.user_agent {
            map.serialize_entry("userAgent", &**ua)?;
        }
        map.serialize_entry("sourceIp", &self.0.source_ip.to_string())?;
        map.end()
    }
}

struct Authorizer<'a>(&'a AuthorizerContext);

impl Serialize for Authorizer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in &self.0.context {
            if k != "principalId" && k != "integrationLatency" {
                map.serialize_entry(k, v)?;
            }
        }
        map.serialize_entry("principalId", &self.0.principal_id)?;
        map.serialize_entry("integrationLatency", &self.0.integration_latency_ms)?;
        map.end()
    }
}

/// Serialises `[(k, v)]` as `{k: last v}`.
struct SingleValues<'a>(&'a [(String, String)]);

impl Serialize for SingleValues<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (i, (k, _)) in self.0.iter().enumerate() {
            if self.0[..i].iter().any(|(prev, _)| prev == k) {
                continue;
            }
            let last = self.0.iter().rev().find(|(other, _)| other == k);
            map.serialize_entry(k, &last.expect("present").1)?;
        }
        map.end()
    }
}

/// Serialises `[(k, v)]` as `{k: [v, ...]}`.
struct MultiValues<'a>(&'a [(String, String)]);

impl Serialize for MultiValues<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (i, (k, _)) in self.0.iter().enumerate() {
            if self.0[..i].iter().any(|(prev, _)| prev == k) {
                continue;
            }
            let values: Vec<&str> = self
                .0
                .iter()
                .filter(|(other, _)| other == k)
                .map(|(_, v)| v.as_str())
                .collect();
            map.serialize_entry(k, &values)?;
        }
        map.end()
    }
}

/// Headers that stay between client and gateway (they only reach an authorizer).
const HOP_HEADERS: [&str; 3] = ["connection", "upgrade", "content-length"];

/// The CONNECT event's headers: the client's, plus what the gateway adds.
pub fn connect_headers(
    request: &RequestHead,
    source_ip: IpAddr,
    port: u16,
    proto: &str,
    trace_id: &str,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(request.headers.len() + 4);
    let mut forwarded_for = None;
    for (k, v) in &request.headers {
        let lower = k.to_ascii_lowercase();
        if HOP_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        if lower == "x-forwarded-for" {
            forwarded_for = Some(v.clone());
            continue;
        }
        if lower.starts_with("x-forwarded-") || lower == "x-amzn-trace-id" {
            continue;
        }
        headers.push((k.clone(), v.clone()));
    }
    headers.push(("X-Amzn-Trace-Id".into(), trace_id.to_owned()));
    let ip = source_ip.to_string();
    headers.push((
        "X-Forwarded-For".into(),
        match forwarded_for {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip,
        },
    ));
    headers.push(("X-Forwarded-Port".into(), port.to_string()));
    headers.push(("X-Forwarded-Proto".into(), proto.to_owned()));
    headers
}

/// The synthetic headers API Gateway puts on DISCONNECT events.
fn disconnect_headers(host: &str) -> Vec<(String, String)> {
    vec![
        ("Host".into(), host.to_owned()),
        ("x-api-key".into(), String::new()),
        ("X-Forwarded-For".into(), String::new()),
        ("x-restapi".into(), String::new()),
    ]
}

/// A new `X-Amzn-Trace-Id` value: `Root=1-{epoch seconds hex}-{24 hex digits}`.
pub fn new_trace_id(now_ms: i64) -> String {
    let random: [u8; 12] = rand::random();
    let mut hex = String::with_capacity(24);
    for b in random {
        use std::fmt::Write;
        let _ = write!(hex, "{b:02x}");
    }
    format!("Root=1-{:08x}-{hex}", now_ms / 1000)
}

/// A Lambda-proxy-style result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// The status code; 2xx is success.
    #[serde(default = "default_status")]
    pub status_code: u16,
    /// Response headers (only `Sec-WebSocket-Protocol` is used, on `$connect`).
    #[serde(default, deserialize_with = "headers_from_map")]
    pub headers: Vec<(String, String)>,
    /// The body, sent back to the client on two-way routes.
    #[serde(default)]
    pub body: Option<String>,
    /// Whether `body` is base64.
    #[serde(default)]
    pub is_base64_encoded: bool,
}

fn default_status() -> u16 {
    200
}

fn headers_from_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, String)>, D::Error> {
    let map: Option<serde_json::Map<String, Value>> = Option::deserialize(d)?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

impl Response {
    /// `200` with no body.
    pub fn ok() -> Self {
        Response {
            status_code: 200,
            ..Response::default()
        }
    }

    /// A status with no body.
    pub fn status(status_code: u16) -> Self {
        Response {
            status_code,
            ..Response::default()
        }
    }

    /// `200` with a body.
    pub fn with_body(body: impl Into<String>) -> Self {
        Response {
            status_code: 200,
            body: Some(body.into()),
            ..Response::default()
        }
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status_code)
    }

    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's bytes, decoding base64 when flagged.
    pub fn body_bytes(&self) -> Option<Bytes> {
        let body = self.body.as_ref()?;
        if self.is_base64_encoded {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .ok()
                .map(Bytes::from)
        } else {
            Some(Bytes::copy_from_slice(body.as_bytes()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnectionContext {
        ConnectionContext {
            connection_id: Id::parse("Tq3mxb7WNjMCFhA=").unwrap(),
            connected_at_ms: 1705751697419,
            source_ip: "192.0.2.10".parse().unwrap(),
            user_agent: Some("Mozilla/5.0 (test)".into()),
            domain_name: "localhost:8080".into(),
            authorizer: None,
        }
    }

    fn api() -> ApiContext {
        ApiContext {
            api_id: "abcdef1234".into(),
            stage: "prod".into(),
        }
    }

    fn json(e: &Event) -> Value {
        serde_json::from_slice(&e.to_json()).unwrap()
    }

    #[test]
    fn message_event_has_the_captured_shape() {
        let c = conn();
        let a = api();
        let msg = Message {
            data: Bytes::from_static(b"{\r\n\t\"a\": 1\r\n}"),
            binary: false,
        };
        let e = Event {
            route_key: "$default",
            request_id: Id::parse("Tq3nQH2kNjMFb9w=").unwrap(),
            request_time_ms: 1705751700453,
            api: &a,
            connection: &c,
            kind: EventKind::Message {
                message: &msg,
                message_id: Id::parse("Tq3nQc5ptjMCFhA=").unwrap(),
                json: None,
            },
        };
        let v = json(&e);
        assert_eq!(v["body"], "{\r\n\t\"a\": 1\r\n}");
        assert_eq!(v["isBase64Encoded"], false);
        assert!(v.get("headers").is_none());
        assert!(v.get("queryStringParameters").is_none());
        let rc = &v["requestContext"];
        assert_eq!(rc["routeKey"], "$default");
        assert_eq!(rc["messageId"], "Tq3nQc5ptjMCFhA=");
        assert_eq!(rc["eventType"], "MESSAGE");
        assert_eq!(rc["requestId"], rc["extendedRequestId"]);
        assert_eq!(rc["requestTime"], "20/Jan/2024:11:55:00 +0000");
        assert_eq!(rc["requestTimeEpoch"], 1705751700453i64);
        assert_eq!(rc["connectedAt"], 1705751697419i64);
        assert_eq!(rc["messageDirection"], "IN");
        assert_eq!(rc["stage"], "prod");
        assert_eq!(rc["identity"]["sourceIp"], "192.0.2.10");
        assert_eq!(rc["identity"]["userAgent"], "Mozilla/5.0 (test)");
        assert_eq!(rc["domainName"], "localhost:8080");
        assert_eq!(rc["connectionId"], "Tq3mxb7WNjMCFhA=");
        assert_eq!(rc["apiId"], "abcdef1234");
        assert!(rc.get("disconnectStatusCode").is_none());
        assert!(rc.get("authorizer").is_none());
    }

    #[test]
    fn connect_event_keeps_header_casing_and_adds_forwarding() {
        let c = conn();
        let a = api();
        let req = RequestHead {
            method: "GET".into(),
            path: "/prod".into(),
            query: Some("token=abc&x=1&x=2&sp=a%20b".into()),
            headers: vec![
                ("Host".into(), "localhost:8080".into()),
                ("Connection".into(), "Upgrade".into()),
                ("Upgrade".into(), "websocket".into()),
                (
                    "Sec-WebSocket-Key".into(),
                    "dGhlIHNhbXBsZSBub25jZQ==".into(),
                ),
                ("authorization".into(), "Bearer t".into()),
            ],
        };
        let e = Event {
            route_key: "$connect",
            request_id: Id::random(),
            request_time_ms: 1705751697421,
            api: &a,
            connection: &c,
            kind: EventKind::Connect {
                request: &req,
                port: 8080,
                proto: "http",
                trace_id: "Root=1-65abb391-0123456789abcdef01234567",
            },
        };
        let v = json(&e);
        let h = &v["headers"];
        assert_eq!(h["Host"], "localhost:8080");
        assert_eq!(h["Sec-WebSocket-Key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(h["authorization"], "Bearer t");
        assert!(h.get("Connection").is_none());
        assert!(h.get("Upgrade").is_none());
        assert_eq!(h["X-Forwarded-For"], "192.0.2.10");
        assert_eq!(h["X-Forwarded-Port"], "8080");
        assert_eq!(h["X-Forwarded-Proto"], "http");
        assert_eq!(
            h["X-Amzn-Trace-Id"],
            "Root=1-65abb391-0123456789abcdef01234567"
        );
        assert_eq!(v["multiValueHeaders"]["Host"][0], "localhost:8080");
        assert_eq!(v["queryStringParameters"]["token"], "abc");
        assert_eq!(v["queryStringParameters"]["x"], "2");
        assert_eq!(v["queryStringParameters"]["sp"], "a b");
        assert_eq!(
            v["multiValueQueryStringParameters"]["x"],
            serde_json::json!(["1", "2"])
        );
        assert!(v.get("body").is_none());
        assert_eq!(v["requestContext"]["eventType"], "CONNECT");
        assert!(v["requestContext"].get("messageId").is_none());
    }

    #[test]
    fn connect_without_query_has_no_query_maps() {
        let c = conn();
        let a = api();
        let req = RequestHead::default();
        let e = Event {
            route_key: "$connect",
            request_id: Id::random(),
            request_time_ms: 0,
            api: &a,
            connection: &c,
            kind: EventKind::Connect {
                request: &req,
                port: 1,
                proto: "http",
                trace_id: "t",
            },
        };
        let v = json(&e);
        assert!(v.get("queryStringParameters").is_none());
        assert!(v.get("multiValueQueryStringParameters").is_none());
    }

    #[test]
    fn disconnect_event_has_synthetic_headers_and_code() {
        let mut c = conn();
        c.user_agent = None;
        c.authorizer = Some(Box::new(AuthorizerContext {
            principal_id: "user".into(),
            integration_latency_ms: 12,
            context: vec![("role".into(), "admin".into())],
        }));
        let a = api();
        let e = Event {
            route_key: "$disconnect",
            request_id: Id::random(),
            request_time_ms: 0,
            api: &a,
            connection: &c,
            kind: EventKind::Disconnect {
                code: 1001,
                reason: "Going away",
            },
        };
        let v = json(&e);
        assert_eq!(v["headers"]["Host"], "localhost:8080");
        assert_eq!(v["headers"]["x-api-key"], "");
        assert_eq!(v["headers"]["X-Forwarded-For"], "");
        assert_eq!(v["headers"]["x-restapi"], "");
        assert_eq!(v["multiValueHeaders"]["x-restapi"][0], "");
        let rc = &v["requestContext"];
        assert_eq!(rc["disconnectStatusCode"], 1001);
        assert_eq!(rc["disconnectReason"], "Going away");
        assert!(rc["identity"].get("userAgent").is_none());
        assert_eq!(rc["authorizer"]["principalId"], "user");
        assert_eq!(rc["authorizer"]["integrationLatency"], 12);
        assert_eq!(rc["authorizer"]["role"], "admin");
        assert!(v.get("body").is_none());
    }

    #[test]
    fn response_parses_lambda_results() {
        let r: Response = serde_json::from_str(
            r#"{"statusCode":401,"headers":{"Sec-WebSocket-Protocol":"chat","X-N":1},"body":"no"}"#,
        )
        .unwrap();
        assert_eq!(r.status_code, 401);
        assert_eq!(r.header("sec-websocket-protocol"), Some("chat"));
        assert_eq!(r.header("x-n"), Some("1"));
        assert_eq!(r.body.as_deref(), Some("no"));
        let r: Response = serde_json::from_str("{}").unwrap();
        assert_eq!(r.status_code, 200);
        let r: Response =
            serde_json::from_str(r#"{"statusCode":200,"body":"aGk=","isBase64Encoded":true}"#)
                .unwrap();
        assert_eq!(r.body_bytes().unwrap(), Bytes::from_static(b"hi"));
    }
}
