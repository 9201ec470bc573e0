//! Helpers for the integration and authorizer tests: configurations from TOML, an HTTP backend
//! to point integrations at, a log capture, and DynamoDB calls as an SDK makes them.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use switchboard::config::{Config, FileConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::common::{self, WAIT};

/// The directory of the test functions; relative paths in test configurations start there.
pub fn functions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/functions")
}

/// A server configuration with the API defined by `toml_text`.
pub fn api_config(toml_text: &str) -> Config {
    let file = FileConfig::parse(toml_text).unwrap_or_else(|e| panic!("{e}"));
    let mut config = common::config();
    config.api = file.definition(&functions_dir());
    config.limits = file.limits;
    config
}

/// The Python test function as a `lambda` integration, with extra keys.
pub fn python(extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { ", " };
    format!(r#"{{ type = "lambda", command = ["python3", "runtime.py"]{sep}{extra} }}"#)
}

/// Asserts that `frame` is API Gateway's answer to a failed integration.
pub fn internal_error(frame: &Value) {
    assert_eq!(frame["message"], "Internal server error", "{frame}");
}

/// What the backend answers: a status, a body, and how long it waits first.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn json(body: Value) -> Self {
        Reply {
            status: 200,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn status(status: u16) -> Self {
        Reply {
            status,
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn raw(body: &str) -> Self {
        Reply {
            status: 200,
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Answer = dyn Fn(&str, &Value) -> Reply + Send + Sync;

/// An HTTP backend on a free port: records each request (path, JSON body, `Content-Type`)
/// and answers with `answer(path, body)`.
pub struct Backend {
    pub base: String,
    pub requests: mpsc::UnboundedReceiver<(String, Value, String)>,
    connections: Arc<AtomicUsize>,
}

impl Backend {
    pub async fn start(answer: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, requests) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let answer: Arc<Answer> = Arc::new(answer);
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        let answer = answer.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let reply = answer(&path, &json);
                            let _ = tx.send((path, json, content_type));
                            tokio::time::sleep(reply.delay).await;
                            let response = hyper::Response::builder()
                                .status(reply.status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(reply.body)))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            base,
            requests,
            connections,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The next request: (path, JSON body, content type).
    pub async fn next(&mut self) -> (String, Value, String) {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("a backend request in time")
            .expect("the backend runs")
    }

    /// TCP connections the backend has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Log records captured from switchboard (this test process's global subscriber).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures every log record of this process from now on (once per test binary process).
    pub fn capture() -> Self {
        let logs = Logs::default();
        let buffer = logs.0.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(buffer.clone()))
            .try_init()
            .expect("one log capture per test process");
        logs
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until a captured line satisfies `matches`; returns it.
    pub async fn wait_for(&self, matches: impl Fn(&str) -> bool) -> String {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(line) = self.text().lines().find(|l| matches(l)) {
                    return line.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no such log line in:\n{}", self.text()))
    }
}

/// One DynamoDB call to the server at `addr` over plain HTTP, as an SDK sends it (signed with
/// any key: on loopback without credentials the signature is not checked).
pub async fn dynamodb_call(addr: &str, operation: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/"))
        .header("x-amz-target", format!("DynamoDB_20120810.{operation}"))
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-date", "20260101T000000Z")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/dynamodb/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00",
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// [`dynamodb_call`], which must answer 200.
pub async fn dynamodb_call_ok(addr: &str, operation: &str, body: Value) -> Value {
    let (status, answer) = dynamodb_call(addr, operation, body).await;
    assert_eq!(status, 200, "{operation}: {answer}");
    answer
}
