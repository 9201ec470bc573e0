//! DynamoDB-compatible tables on the gateway's listener.
//!
//! `POST /` with `X-Amz-Target: DynamoDB_20120810.*` or `DynamoDBStreams_20120810.*` is a
//! DynamoDB call. [`DynamoDb`] checks who may call (the management API's rule: loopback
//! without credentials, SigV4 for the service `dynamodb` with the configured keys otherwise),
//! bounds how many calls run at once, and forwards the request unchanged to the embedded
//! engine ([`engine`]: dynoxide on SQLite, behind its own HTTP front, whose request checks
//! and error shapes are the ones its conformance suite holds against DynamoDB). Declared
//! tables are set up before the server listens ([`tables`]). The inspector lists the tables
//! and reads their items a page at a time ([`browse`]).
//!
//! With `[dynamodb] endpoint` set, this node keeps no tables: functions are pointed at that
//! endpoint instead.

pub(crate) mod browse;
pub(crate) mod engine;
pub(crate) mod metrics;
pub(crate) mod tables;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Mutex, Semaphore};

use crate::config::DynamoDbConfig;
use crate::sigv4::{Credential, SignatureError, Verifier};

use self::engine::Engine;
use self::metrics::DynamoMetrics;
use self::tables::{TableSpec, TablesError, TablesReport};

/// The `X-Amz-Target` prefix of DynamoDB calls.
pub(crate) const TARGET_PREFIX: &str = "DynamoDB_20120810.";
/// The `X-Amz-Target` prefix of DynamoDB Streams calls.
pub(crate) const STREAMS_TARGET_PREFIX: &str = "DynamoDBStreams_20120810.";
/// The service DynamoDB calls are signed for.
pub(crate) const SERVICE: &str = "dynamodb";
/// The largest request body DynamoDB accepts.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// Why the DynamoDB endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    /// The database file cannot be opened.
    #[error("cannot open the DynamoDB database {}: {error}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// A declared table is invalid.
    #[error("dynamodb.tables: {0}")]
    Spec(#[from] tables::SpecError),
    /// Declared tables could not be set up.
    #[error("dynamodb.tables: {0}")]
    Tables(#[from] TablesError),
    /// The engine's listener or thread could not start.
    #[error("cannot start the DynamoDB engine: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether a request is a DynamoDB (or DynamoDB Streams) call, by its `X-Amz-Target`.
pub(crate) fn is_dynamodb_call(headers: &HeaderMap) -> bool {
    operation(headers).is_some()
}

/// The operation a request names (`PutItem`), if it is a DynamoDB call.
fn operation(headers: &HeaderMap) -> Option<&str> {
    let target = headers.get("x-amz-target")?.to_str().ok()?;
    target
        .strip_prefix(TARGET_PREFIX)
        .or_else(|| target.strip_prefix(STREAMS_TARGET_PREFIX))
}

/// The DynamoDB endpoint on the gateway's listener, in front of the embedded engine.
#[derive(Debug)]
pub struct DynamoDb {
    /// `http://127.0.0.1:PORT/`: the engine (parsed once).
    upstream: reqwest::Url,
    client: reqwest::Client,
    verifier: Verifier,
    inflight: Arc<Semaphore>,
    metrics: Arc<DynamoMetrics>,
    engine: Mutex<Option<Engine>>,
    report: TablesReport,
}

impl DynamoDb {
    /// Starts the embedded engine when the configuration asks for it (`enabled`, or tables
    /// declared, and no `endpoint` elsewhere); `None` otherwise. The database lives in
    /// `data_dir`; `credentials` are the management API's key pairs.
    pub fn start(
        config: &DynamoDbConfig,
        data_dir: &std::path::Path,
        credentials: Vec<Credential>,
    ) -> Result<Option<Arc<Self>>, DynamoError> {
        if !config.is_embedded() {
            return Ok(None);
        }
        let specs = config
            .tables
            .iter()
            .map(TableSpec::from_declaration)
            .collect::<Result<Vec<_>, _>>()?;
        let metrics = Arc::new(DynamoMetrics::default());
        let (engine, report) = Engine::start(
            &data_dir.join(&config.database_file),
            config.synchronous,
            &specs,
            config.recreate_changed_tables,
            std::time::Duration::from_secs(config.ttl_sweep_interval_secs),
            metrics.clone(),
        )?;
        tracing::info!(
            database = %engine.path().display(),
            engine = %engine.addr(),
            tables = specs.len(),
            "DynamoDB tables served on the gateway's listener"
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(config.max_inflight_requests)
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Some(Arc::new(DynamoDb {
            upstream: reqwest::Url::parse(&format!("http://{}/", engine.addr()))
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            client,
            verifier: Verifier::for_service(credentials, SERVICE),
            inflight: Arc::new(Semaphore::new(config.max_inflight_requests)),
            metrics,
            engine: Mutex::new(Some(engine)),
            report,
        })))
    }

    /// What happened to the declared tables at start.
    pub fn tables_report(&self) -> &TablesReport {
        &self.report
    }

    /// Serves one DynamoDB call from `peer`.
    pub async fn handle(&self, peer: SocketAddr, request: Request) -> Response {
        let started = Instant::now();
        let operation = operation(request.headers()).unwrap_or("").to_owned();
        let response = self.handle_inner(peer, request).await;
        self.metrics
            .observe(&operation, response.status().as_u16(), started.elapsed());
        response
    }

    async fn handle_inner(&self, peer: SocketAddr, request: Request) -> Response {
        // Bounded: beyond `max_inflight_requests` calls at once, the call is refused with the
        // error the SDKs retry with back-off, never queued without limit.
        let Ok(_permit) = self.inflight.try_acquire() else {
            self.metrics
                .throttled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return error(
                StatusCode::BAD_REQUEST,
                "ThrottlingException",
                "Rate of requests exceeds the allowed throughput.",
            );
        };
        let (parts, body) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "ValidationException",
                "Request size exceeds 16777216 bytes",
            );
        };
        if let Err(refused) = self.authorize(peer, &parts, &body) {
            return refused;
        }
        let mut forward = self.client.post(self.upstream.clone()).body(body);
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name) {
                forward = forward.header(name, value);
            }
        }
        let answer = match forward.send().await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, "the DynamoDB engine did not answer");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "Internal server error",
                );
            }
        };
        let status = answer.status();
        let headers = answer.headers().clone();
        let body = match answer.bytes().await {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = %e, "the DynamoDB engine's answer broke off");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "Internal server error",
                );
            }
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        for (name, value) in &headers {
            if !is_hop_by_hop(name) && name != header::CONTENT_LENGTH {
                response.headers_mut().append(name, value.clone());
            }
        }
        response
    }

    /// The access rule: the auth material must be complete (as DynamoDB checks it); with
    /// credentials configured the signature must verify with one of them (from anywhere);
    /// without, the caller must be on loopback.
    #[allow(clippy::result_large_err)]
    fn authorize(
        &self,
        peer: SocketAddr,
        parts: &axum::http::request::Parts,
        body: &[u8],
    ) -> Result<(), Response> {
        let material = dynoxide::auth_material::AuthMaterial {
            authorization: parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
            query: parts.uri.query().unwrap_or(""),
            has_date_header: parts.headers.contains_key("x-amz-date")
                || parts.headers.contains_key(header::DATE),
        };
        if let Some(body) = dynoxide::auth_material::validate(material) {
            return Err(raw(StatusCode::BAD_REQUEST, body));
        }
        if self.verifier.is_enabled() {
            return self
                .verifier
                .verify_http(parts, body)
                .map_err(|e| signature_error(&e));
        }
        if peer.ip().to_canonical().is_loopback() {
            Ok(())
        } else {
            Err(error(
                StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                "DynamoDB calls are accepted from loopback only unless [management] credentials \
                 are configured",
            ))
        }
    }

    /// Appends the endpoint's metrics to the gateway's Prometheus text.
    pub async fn render_metrics(&self, out: &mut String) {
        let gauges = match &*self.engine.lock().await {
            Some(engine) => engine.gauges().await,
            None => None,
        };
        self.metrics.render(out, gauges);
    }

    /// Stops the engine: calls under way finish, later ones answer 500.
    pub async fn stop(&self) {
        if let Some(mut engine) = self.engine.lock().await.take() {
            engine.stop().await;
        }
    }
}

fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    name == header::HOST
        || name == header::CONNECTION
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::UPGRADE
        || name == "keep-alive"
        || name == "proxy-connection"
}

/// A refused signature, in DynamoDB's words.
fn signature_error(e: &SignatureError) -> Response {
    let (kind, message) = match e {
        SignatureError::Missing => (
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token".to_owned(),
        ),
        SignatureError::Malformed(why) => (
            "IncompleteSignatureException",
            format!("Authorization header is malformed: {why}"),
        ),
        SignatureError::UnknownKey => (
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".to_owned(),
        ),
        SignatureError::BadScope => (
            "InvalidSignatureException",
            format!("Credential should be scoped to correct service: '{SERVICE}'."),
        ),
        SignatureError::Expired => (
            "InvalidSignatureException",
            "Signature expired: the request time is more than 5 minutes from the server's."
                .to_owned(),
        ),
        SignatureError::Mismatch => (
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details."
                .to_owned(),
        ),
    };
    // DynamoDB answers every refused signature with 400.
    error(StatusCode::BAD_REQUEST, kind, &message)
}

/// An error in DynamoDB's shape: `{"__type": "com.amazon.coral.service#Kind", "message"}`.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let namespace = if kind == "InternalServerError" {
        "com.amazonaws.dynamodb.v20120810"
    } else {
        "com.amazon.coral.service"
    };
    let body = serde_json::json!({
        "__type": format!("{namespace}#{kind}"),
        "message": message,
    })
    .to_string();
    raw(status, body)
}

fn raw(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(id) = HeaderValue::from_str(&crate::management::request_uuid()) {
        headers.insert("x-amzn-RequestId", id);
    }
    response
}

/// The DynamoDB endpoint a function process should use: the configured `endpoint`, or this
/// gateway (`gateway_url`, `http(s)://127.0.0.1:PORT`) when it serves the tables; `None` when
/// neither.
pub(crate) fn endpoint_for_functions(config: &DynamoDbConfig, gateway_url: &str) -> Option<String> {
    match &config.endpoint {
        Some(endpoint) => Some(endpoint.clone()),
        None if config.is_embedded() => Some(gateway_url.to_owned()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(target: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-amz-target", HeaderValue::from_str(target).unwrap());
        h
    }

    #[test]
    fn calls_are_told_by_their_target() {
        assert!(is_dynamodb_call(&headers("DynamoDB_20120810.PutItem")));
        assert!(is_dynamodb_call(&headers(
            "DynamoDBStreams_20120810.GetRecords"
        )));
        assert!(!is_dynamodb_call(&headers("AmazonSQS.SendMessage")));
        assert!(!is_dynamodb_call(&HeaderMap::new()));
        assert_eq!(
            operation(&headers("DynamoDB_20120810.Query")),
            Some("Query")
        );
    }

    #[test]
    fn functions_get_the_endpoint_that_serves_the_tables() {
        let mut c = DynamoDbConfig::default();
        assert_eq!(endpoint_for_functions(&c, "http://127.0.0.1:1"), None);
        c.enabled = true;
        assert_eq!(
            endpoint_for_functions(&c, "http://127.0.0.1:1").as_deref(),
            Some("http://127.0.0.1:1")
        );
        c.endpoint = Some("http://tables:8000".into());
        assert_eq!(
            endpoint_for_functions(&c, "http://127.0.0.1:1").as_deref(),
            Some("http://tables:8000")
        );
    }

    fn started(
        credentials: Vec<Credential>,
        inflight: usize,
    ) -> (Arc<DynamoDb>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = DynamoDbConfig {
            enabled: true,
            max_inflight_requests: inflight,
            ..DynamoDbConfig::default()
        };
        let db = DynamoDb::start(&config, dir.path(), credentials)
            .unwrap()
            .unwrap();
        (db, dir)
    }

    fn call(target: &str, auth: Option<&str>) -> Request {
        let mut builder = axum::http::Request::post("/")
            .header("x-amz-target", target)
            .header("content-type", CONTENT_TYPE)
            .header("x-amz-date", "20260101T000000Z");
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        builder.body(Body::from("{}")).unwrap()
    }

    async fn answer(response: Response) -> (u16, serde_json::Value) {
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";

    #[tokio::test]
    async fn loopback_calls_reach_the_engine_and_others_are_refused() {
        let (db, _dir) = started(Vec::new(), 8);
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let (status, body) = answer(
            db.handle(local, call("DynamoDB_20120810.ListTables", Some(AUTH)))
                .await,
        )
        .await;
        assert_eq!(
            (status, &body),
            (200, &serde_json::json!({"TableNames": []}))
        );
        let (status, body) = answer(
            db.handle(remote, call("DynamoDB_20120810.ListTables", Some(AUTH)))
                .await,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["__type"],
            "com.amazon.coral.service#AccessDeniedException"
        );
        let (status, body) = answer(
            db.handle(local, call("DynamoDB_20120810.ListTables", None))
                .await,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["__type"],
            "com.amazon.coral.service#MissingAuthenticationTokenException"
        );
        db.stop().await;
    }

    #[tokio::test]
    async fn with_credentials_an_unknown_key_is_unrecognized() {
        let credential = Credential {
            access_key_id: "KEY".into(),
            secret_access_key: "secret".into(),
        };
        let (db, _dir) = started(vec![credential], 8);
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let (status, body) = answer(
            db.handle(local, call("DynamoDB_20120810.ListTables", Some(AUTH)))
                .await,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["__type"],
            "com.amazon.coral.service#UnrecognizedClientException"
        );
        assert_eq!(
            body["message"],
            "The security token included in the request is invalid."
        );
        db.stop().await;
    }

    #[tokio::test]
    async fn beyond_the_inflight_limit_calls_are_throttled() {
        let (db, _dir) = started(Vec::new(), 1);
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let held = db.inflight.clone().try_acquire_owned().unwrap();
        let (status, body) = answer(
            db.handle(local, call("DynamoDB_20120810.ListTables", Some(AUTH)))
                .await,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["__type"],
            "com.amazon.coral.service#ThrottlingException"
        );
        drop(held);
        let (status, _) = answer(
            db.handle(local, call("DynamoDB_20120810.ListTables", Some(AUTH)))
                .await,
        )
        .await;
        assert_eq!(status, 200);
        let mut out = String::new();
        db.render_metrics(&mut out).await;
        assert!(
            out.contains("switchboard_dynamodb_throttled_total 1"),
            "{out}"
        );
        assert!(out.contains("switchboard_dynamodb_tables 0"), "{out}");
        db.stop().await;
        // Stopped: calls answer 500, not hang.
        let (status, body) = answer(
            db.handle(local, call("DynamoDB_20120810.ListTables", Some(AUTH)))
                .await,
        )
        .await;
        assert_eq!(status, 500);
        assert_eq!(
            body["__type"],
            "com.amazonaws.dynamodb.v20120810#InternalServerError"
        );
    }
}
