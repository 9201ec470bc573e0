//! The `@connections` management API: the interface and its HTTP binding.
//!
//! [`ManagementApi`] is what handlers use to reach clients: built-in apps call it directly,
//! HTTP callers (the AWS CLI, the SDKs, `curl`) reach the same methods through
//! `POST|GET|DELETE /{stage}/@connections/{id}`. Paths are matched the way API Gateway and the
//! SDKs spell them: `@` or `%40`, the id raw or percent-encoded (decoded once), the stage
//! optional.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use percent_encoding::percent_decode_str;

use crate::deferred::Deferred;
use crate::gateway::frame::OutFrame;
use crate::gateway::registry::{ConnectionInfo, ManageError, Registry};
use crate::ids::Id;
use crate::inspector::{self, Caller, Inspector, Kind};
use crate::metrics::Metrics;
use crate::sigv4::{Credential, Verifier};
use crate::time;
use crate::workers::Lanes;

/// The management interface: post to, describe and close connections by id.
#[derive(Clone)]
pub struct ManagementApi {
    registry: Arc<dyn Registry>,
    max_payload: usize,
    verifier: Arc<Verifier>,
    metrics: Arc<Metrics>,
    inspector: Arc<Inspector>,
    /// Where posts that must await another node are finished when the caller does not wait.
    runtime: Option<tokio::runtime::Handle>,
    /// With worker threads: where [`post_frame_queued`](Self::post_frame_queued) gathers.
    lanes: Option<Arc<Lanes>>,
}

impl std::fmt::Debug for ManagementApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementApi")
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

/// Why a post failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The payload is larger than the message limit: 413.
    #[error("the payload is larger than {0} bytes")]
    TooLarge(usize),
    /// The registry refused it.
    #[error(transparent)]
    Manage(#[from] ManageError),
}

impl ManagementApi {
    /// The interface over a registry; posts are limited to `max_payload` bytes.
    pub fn new(registry: Arc<dyn Registry>, max_payload: usize) -> Self {
        ManagementApi {
            registry,
            max_payload,
            verifier: Arc::default(),
            metrics: Arc::default(),
            inspector: Arc::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            lanes: None,
        }
    }

    /// Hands [`post_frame_queued`](Self::post_frame_queued)'s posts to worker threads.
    pub(crate) fn with_lanes(mut self, lanes: Arc<Lanes>) -> Self {
        self.lanes = Some(lanes);
        self
    }

    /// The worker threads' lanes, when connections run on workers.
    pub(crate) fn lanes(&self) -> Option<&Arc<Lanes>> {
        self.lanes.as_ref()
    }

    /// Counts outbox overflows into the gateway's counters (here, where every push passes);
    /// without it they go to counters of the API's own that nothing reads.
    pub fn counting_into(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn count<T>(
        &self,
        result: Deferred<Result<T, ManageError>>,
    ) -> Deferred<Result<T, ManageError>> {
        if let Deferred::Ready(Err(ManageError::Full)) = &result {
            self.metrics
                .outbox_overflows
                .fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Requires HTTP callers to sign with one of these key pairs (SigV4, `execute-api`).
    /// Without credentials, HTTP callers must be on loopback. Calls from inside the process
    /// (built-in apps) are not HTTP and need neither.
    pub fn with_credentials(mut self, credentials: Vec<Credential>) -> Self {
        self.verifier = Arc::new(Verifier::new(credentials));
        self
    }

    /// Publishes every call's outcome to `inspector` (the server's event stream).
    pub fn inspected_by(mut self, inspector: Arc<Inspector>) -> Self {
        self.inspector = inspector;
        self
    }

    /// The event stream this API publishes its calls to.
    pub fn inspector(&self) -> &Arc<Inspector> {
        &self.inspector
    }

    /// PostToConnection: sends `data` as one frame (text when it is UTF-8, else binary).
    pub fn post(&self, id: &Id, data: &[u8]) -> Deferred<Result<(), PostError>> {
        self.post_as(Caller::BuiltIn, id, data)
    }

    /// [`ManagementApi::post`] on behalf of `caller`, as the inspector reports it.
    pub fn post_as(&self, caller: Caller, id: &Id, data: &[u8]) -> Deferred<Result<(), PostError>> {
        let result = if data.len() > self.max_payload {
            Deferred::Ready(Err(PostError::TooLarge(self.max_payload)))
        } else {
            match self.count(self.registry.post(id, &OutFrame::data(data))) {
                Deferred::Ready(r) => Deferred::Ready(r.map_err(PostError::from)),
                Deferred::Pending(f) => {
                    Deferred::Pending(Box::pin(async move { f.await.map_err(PostError::from) }))
                }
            }
        };
        self.inspect(caller, "post", id, Some(data), result, |e| {
            AwsError::from(e.clone()).status.as_u16()
        })
    }

    /// Posts an already encoded frame; the way to send one payload to many connections.
    pub fn post_frame(&self, id: &Id, frame: &OutFrame) -> Deferred<Result<(), ManageError>> {
        let result = self.count(self.registry.post(id, frame));
        self.inspect(Caller::BuiltIn, "post", id, None, result, manage_status)
    }

    /// Reports a call's outcome to the inspector, now or when it is known; with nobody
    /// watching, one relaxed load and the result unchanged.
    fn inspect<T: Send + 'static, E: Send + 'static>(
        &self,
        caller: Caller,
        operation: &'static str,
        id: &Id,
        data: Option<&[u8]>,
        result: Deferred<Result<T, E>>,
        status_of: fn(&E) -> u16,
    ) -> Deferred<Result<T, E>> {
        if !self.inspector.is_watched() {
            return result;
        }
        let ok = if operation == "delete" { 204 } else { 200 };
        // The payload's size and text (cut), and the event.
        let payload = |data: Option<&[u8]>| (data.map(<[u8]>::len), data.map(inspector::cut_bytes));
        let event = move |connection_id, status, (size, text)| Kind::Management {
            connection_id,
            operation,
            caller: caller.to_string(),
            status,
            size,
            text,
        };
        match result {
            Deferred::Ready(r) => {
                let status = r.as_ref().map_or_else(status_of, |_| ok);
                // Sampled before anything is built or copied.
                if self.inspector.admit_call(status) {
                    self.inspector
                        .publish(|| event(inspector::id(id), status, payload(data)));
                }
                Deferred::Ready(r)
            }
            Deferred::Pending(f) => {
                let inspector = Arc::clone(&self.inspector);
                let (connection_id, payload) = (inspector::id(id), payload(data));
                Deferred::Pending(Box::pin(async move {
                    let r = f.await;
                    let status = r.as_ref().map_or_else(status_of, |_| ok);
                    if inspector.admit_call(status) {
                        inspector.publish(|| event(connection_id, status, payload));
                    }
                    r
                }))
            }
        }
    }

    /// Posts an encoded frame without waiting for the outcome, for callers that are not on the
    /// runtime (the chat's store thread) or must not wait: a local outcome is returned now; a
    /// post that must reach another node is finished on the runtime this API was built on, its
    /// failure logged, and counts as queued here.
    pub fn post_frame_detached(&self, id: &Id, frame: &OutFrame) -> Result<(), ManageError> {
        match self.post_frame(id, frame) {
            Deferred::Ready(result) => result,
            Deferred::Pending(future) => {
                let id = *id;
                let finish = async move {
                    if let Err(e) = future.await {
                        tracing::debug!(connection_id = %id, error = %e, "post not delivered");
                    }
                };
                match &self.runtime {
                    Some(rt) => drop(rt.spawn(finish)),
                    None => tracing::warn!(connection_id = %id, "no runtime to finish a post"),
                }
                Ok(())
            }
        }
    }

    /// Posts an encoded frame from a thread outside the runtime that posts to many
    /// connections in an order they must see (the chat's store thread). With worker threads
    /// the post is queued for the connection's worker and handed over by
    /// [`flush_queued`](Self::flush_queued), and answers `Ok`: a connection found gone is
    /// reported to the lanes' [`on_gone`](Lanes::on_gone) instead. Without, it is
    /// [`post_frame_detached`](Self::post_frame_detached).
    pub(crate) fn post_frame_queued(&self, id: &Id, frame: &OutFrame) -> Result<(), ManageError> {
        match &self.lanes {
            Some(lanes) => {
                lanes.queue(*id, frame);
                Ok(())
            }
            None => self.post_frame_detached(id, frame),
        }
    }

    /// Hands the posts [`post_frame_queued`](Self::post_frame_queued) gathered to their
    /// workers, waiting while a worker is a whole lane behind.
    pub(crate) fn flush_queued(&self) {
        if let Some(lanes) = &self.lanes {
            lanes.flush();
        }
    }

    /// GetConnection.
    pub fn get(&self, id: &Id) -> Deferred<Result<ConnectionInfo, ManageError>> {
        self.get_as(Caller::BuiltIn, id)
    }

    /// [`ManagementApi::get`] on behalf of `caller`.
    pub fn get_as(&self, caller: Caller, id: &Id) -> Deferred<Result<ConnectionInfo, ManageError>> {
        let result = self.registry.info(id);
        self.inspect(caller, "get", id, None, result, manage_status)
    }

    /// DeleteConnection: closes the connection with 1000.
    pub fn delete(&self, id: &Id) -> Deferred<Result<(), ManageError>> {
        self.delete_as(Caller::BuiltIn, id)
    }

    /// [`ManagementApi::delete`] on behalf of `caller`.
    pub fn delete_as(&self, caller: Caller, id: &Id) -> Deferred<Result<(), ManageError>> {
        let result = self.registry.disconnect(id);
        self.inspect(caller, "delete", id, None, result, manage_status)
    }

    /// The largest payload a post accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }
}

fn manage_status(e: &ManageError) -> u16 {
    AwsError::from(e.clone()).status.as_u16()
}

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The stage itself (`/{stage}`): the WebSocket endpoint.
    Stage,
    /// A connection under `@connections`; `Err` holds the undecodable or malformed id.
    Connection(Result<Id, String>),
    /// `@connections` under another stage.
    WrongStage,
    /// Anything else.
    Other,
}

/// Classifies a raw (still percent-encoded) request path. Allocates nothing unless a segment
/// is percent-encoded: every management call passes here.
pub fn parse_path(raw: &str, stage: &str) -> Target {
    let mut decoded: [Cow<'_, str>; 3] = Default::default();
    let mut n = 0;
    for segment in raw.strip_prefix('/').unwrap_or(raw).split('/') {
        if n == decoded.len() {
            return Target::Other;
        }
        decoded[n] = percent_decode_str(segment).decode_utf8_lossy();
        n += 1;
    }
    let all: [&str; 3] = [&decoded[0], &decoded[1], &decoded[2]];
    let connection = |id: &str| Target::Connection(Id::parse(id).ok_or_else(|| id.to_owned()));
    match &all[..n] {
        [s] | [s, ""] if *s == stage => Target::Stage,
        [s, "@connections", id] if *s == stage => connection(id),
        ["@connections", id] => connection(id),
        [_, "@connections", _] => Target::WrongStage,
        [s, "@connections"] if *s == stage => connection(""),
        ["@connections"] => connection(""),
        _ => Target::Other,
    }
}

/// A management API error in AWS's shape: status, `x-amzn-ErrorType`, `{"message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// The status code.
    pub status: StatusCode,
    /// The `x-amzn-ErrorType` value.
    pub error_type: &'static str,
    /// The message.
    pub message: String,
}

impl AwsError {
    /// An error.
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        AwsError {
            status,
            error_type,
            message: message.into(),
        }
    }

    /// 403 `ForbiddenException`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "ForbiddenException", message)
    }
}

impl From<ManageError> for AwsError {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::Gone => {
                AwsError::new(StatusCode::GONE, "GoneException", "the connection is gone")
            }
            ManageError::Full => AwsError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "LimitExceededException",
                "the connection's outbox is full: the client is not reading fast enough",
            ),
            ManageError::Unavailable(why) => AwsError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerErrorException",
                why,
            ),
        }
    }
}

impl From<PostError> for AwsError {
    fn from(e: PostError) -> Self {
        match e {
            PostError::TooLarge(max) => AwsError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLargeException",
                format!("the payload is larger than {max} bytes"),
            ),
            PostError::Manage(m) => m.into(),
        }
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message }).to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            "x-amzn-ErrorType",
            HeaderValue::from_static(self.error_type),
        );
        with_request_id(response)
    }
}

fn with_request_id(mut response: Response) -> Response {
    let id = HeaderValue::from_bytes(&uuid_bytes()).expect("uuids are valid header values");
    response.headers_mut().insert("x-amzn-RequestId", id);
    response
}

/// A random UUID, the form of AWS request ids on HTTP APIs.
pub(crate) fn request_uuid() -> String {
    String::from_utf8(uuid_bytes().to_vec()).expect("uuids are ASCII")
}

/// A random (version 4) UUID as its 36 ASCII characters. One draw from the thread's
/// generator and a table lookup per digit: it is on the path of every management call.
fn uuid_bytes() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = rand::random::<u128>().to_be_bytes();
    b[6] = 0x40 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    out
}

/// Who may call the management API over HTTP: with credentials configured, whoever signs
/// with one of them (from anywhere); without, callers on loopback.
fn authorize(
    verifier: &Verifier,
    peer: SocketAddr,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Result<(), AwsError> {
    if verifier.is_enabled() {
        return verifier
            .verify_http(parts, body)
            .map_err(|e| AwsError::forbidden(e.to_string()));
    }
    if peer.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(AwsError::forbidden(
            "the management API accepts calls from loopback only unless credentials are configured",
        ))
    }
}

/// Serves one management request for connection `id`.
pub async fn handle(
    api: &ManagementApi,
    id: Result<Id, String>,
    peer: SocketAddr,
    request: Request<Body>,
) -> Response {
    let method = match *request.method() {
        Method::POST => "POST",
        Method::GET => "GET",
        Method::DELETE => "DELETE",
        _ => "other",
    };
    let response = match handle_inner(api, id, peer, request).await {
        Ok(response) => with_request_id(response),
        Err(error) => error.into_response(),
    };
    api.metrics.management(method, response.status().as_u16());
    response
}

async fn handle_inner(
    api: &ManagementApi,
    id: Result<Id, String>,
    peer: SocketAddr,
    request: Request<Body>,
) -> Result<Response, AwsError> {
    let (parts, body) = request.into_parts();
    let limit = api.max_payload();
    // Read the body first: a signature covers it. One byte over the limit is enough to know.
    let body = axum::body::to_bytes(body, limit + 1)
        .await
        .map_err(|_| PostError::TooLarge(limit))?;
    authorize(&api.verifier, peer, &parts, &body)?;
    let id = id.map_err(|bad| {
        AwsError::new(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            format!("Invalid connectionId: {bad}"),
        )
    })?;
    match parts.method {
        Method::POST => {
            if body.len() > limit {
                return Err(PostError::TooLarge(limit).into());
            }
            api.post_as(Caller::Http(peer), &id, &body)
                .resolve()
                .await?;
            Ok(StatusCode::OK.into_response())
        }
        Method::GET => {
            let info = api.get_as(Caller::Http(peer), &id).resolve().await?;
            let body = info_json(&info);
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        Method::DELETE => {
            api.delete_as(Caller::Http(peer), &id).resolve().await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(AwsError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowedException",
            "use POST, GET or DELETE on @connections",
        )),
    }
}

/// GetConnection's body.
pub fn info_json(info: &ConnectionInfo) -> Bytes {
    let mut identity = serde_json::Map::new();
    identity.insert("sourceIp".into(), info.source_ip.clone().into());
    if let Some(ua) = &info.user_agent {
        identity.insert("userAgent".into(), ua.clone().into());
    }
    let body = serde_json::json!({
        "connectedAt": time::iso_ms(info.connected_at_ms),
        "identity": identity,
        "lastActiveAt": time::iso_ms(info.last_active_ms),
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "Tq3mxb7WNjMCFhA=";

    fn id() -> Id {
        Id::parse(ID).unwrap()
    }

    #[test]
    fn paths_in_every_spelling() {
        for path in [
            "/dev/@connections/Tq3mxb7WNjMCFhA=",
            "/dev/@connections/Tq3mxb7WNjMCFhA%3D",
            "/dev/%40connections/Tq3mxb7WNjMCFhA%3D",
            "/dev/%40connections/Tq3mxb7WNjMCFhA%3d",
            "/@connections/Tq3mxb7WNjMCFhA=",
            "/%40connections/Tq3mxb7WNjMCFhA%3D",
        ] {
            assert_eq!(
                parse_path(path, "dev"),
                Target::Connection(Ok(id())),
                "{path}"
            );
        }
    }

    #[test]
    fn ids_are_decoded_once() {
        // %253D decodes to %3D, which is not an id.
        assert_eq!(
            parse_path("/dev/@connections/Tq3mxb7WNjMCFhA%253D", "dev"),
            Target::Connection(Err("Tq3mxb7WNjMCFhA%3D".into()))
        );
    }

    #[test]
    fn other_paths() {
        assert_eq!(parse_path("/dev", "dev"), Target::Stage);
        assert_eq!(parse_path("/dev/", "dev"), Target::Stage);
        assert_eq!(
            parse_path("/prod/@connections/x", "dev"),
            Target::WrongStage
        );
        assert_eq!(
            parse_path("/dev/@connections/not-an-id", "dev"),
            Target::Connection(Err("not-an-id".into()))
        );
        assert_eq!(
            parse_path("/dev/@connections", "dev"),
            Target::Connection(Err(String::new()))
        );
        assert_eq!(parse_path("/dev/other", "dev"), Target::Other);
        assert_eq!(parse_path("/", "dev"), Target::Other);
        assert_eq!(parse_path("/dev/@connections/a/b", "dev"), Target::Other);
        assert_eq!(parse_path("/dev/..%2F@connections/x", "dev"), Target::Other);
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_uuid();
        assert_eq!(id.len(), 36);
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(id.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
        assert!(!id.bytes().any(|c| c.is_ascii_uppercase()));
        assert_eq!(id.as_bytes()[14], b'4');
        assert!(matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(request_uuid(), id);
    }

    #[test]
    fn info_body_shape() {
        let body = info_json(&ConnectionInfo {
            connected_at_ms: 1588277433236,
            last_active_ms: 1588277442997,
            source_ip: "192.0.2.1".into(),
            user_agent: Some("ua".into()),
        });
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["connectedAt"], "2020-04-30T20:10:33.236Z");
        assert_eq!(v["lastActiveAt"], "2020-04-30T20:10:42.997Z");
        assert_eq!(v["identity"]["sourceIp"], "192.0.2.1");
        assert_eq!(v["identity"]["userAgent"], "ua");
    }
}
