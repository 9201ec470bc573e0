//! Integrations: what handles a route's events.
//!
//! Every integration receives the same AWS proxy [`Event`] and returns a proxy-style
//! [`Response`]. Built-in integrations answer synchronously ([`Deferred::Ready`]); integrations
//! that call out (HTTP, Lambda) return a future that owns everything it needs.
//!
//! HTTP endpoints and Lambda functions are both a [`Backend`]: something that takes a JSON
//! payload and answers with a JSON payload. [`Proxy`] makes a backend a route integration (the
//! payload is the proxy event, the answer a proxy result); an authorizer uses the same backends
//! with its own payload and answer.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

pub use crate::deferred::Deferred;
use crate::event::{Event, Response};

pub mod definition;
pub mod echo;
pub mod http;
pub mod lambda;

/// Why an integration call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrationError {
    /// The integration did not answer within its timeout.
    #[error("the integration timed out")]
    Timeout,
    /// The integration failed or returned something that is not a proxy result.
    #[error("the integration failed: {0}")]
    Failed(String),
}

/// The outcome of one integration call.
pub type Invocation = Deferred<Result<Response, IntegrationError>>;

/// A route's handler.
pub trait Integration: Send + Sync + 'static {
    /// Handles one event.
    fn invoke(&self, event: &Event<'_>) -> Invocation;

    /// A short name for logs.
    fn name(&self) -> &str;
}

/// Why a call to a [`Backend`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The HTTP endpoint answered with a status that is not 2xx.
    #[error("the endpoint answered HTTP {0}")]
    Status(u16),
    /// The function reported an error, as Lambda reports it (`errorType`, `errorMessage`).
    #[error("{error_type}: {message}")]
    Function {
        /// `errorType`, e.g. `Runtime.ExitError`.
        error_type: String,
        /// `errorMessage`.
        message: String,
    },
    /// The call could not be made or its answer could not be read.
    #[error("{0}")]
    Failed(String),
}

impl From<CallError> for IntegrationError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Timeout => IntegrationError::Timeout,
            other => IntegrationError::Failed(other.to_string()),
        }
    }
}

/// Something that takes a JSON payload and answers with a JSON payload.
#[derive(Debug, Clone)]
pub enum Backend {
    /// An HTTP endpoint: the payload is POSTed, the response body is the answer.
    Http(http::HttpBackend),
    /// A Lambda function run by switchboard.
    Lambda(Arc<lambda::LambdaFunction>),
}

impl Backend {
    /// Calls the backend; the future owns everything it needs.
    pub fn call(
        &self,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Bytes, CallError>> + Send + 'static {
        let backend = self.clone();
        async move {
            match backend {
                Backend::Http(http) => http.call(payload).await,
                Backend::Lambda(function) => function.call(payload).await,
            }
        }
    }

    /// A short name for logs: the URL or the function name.
    pub fn name(&self) -> &str {
        match self {
            Backend::Http(http) => http.url(),
            Backend::Lambda(function) => function.name(),
        }
    }
}

/// A route integration that sends the proxy event to a backend and reads a proxy result
/// (API Gateway's `AWS_PROXY` and `HTTP_PROXY` integrations).
#[derive(Debug, Clone)]
pub struct Proxy {
    backend: Backend,
}

impl Proxy {
    /// A proxy integration in front of `backend`.
    pub fn new(backend: Backend) -> Self {
        Proxy { backend }
    }
}

impl Integration for Proxy {
    fn invoke(&self, event: &Event<'_>) -> Invocation {
        let call = self.backend.call(event.to_json());
        Deferred::Pending(Box::pin(async move { parse_proxy_result(&call.await?) }))
    }

    fn name(&self) -> &str {
        self.backend.name()
    }
}

/// Reads a Lambda-proxy result (`statusCode`, `headers`, `body`, `isBase64Encoded`).
///
/// An empty answer or `null` (a handler that returns nothing) is `200` with no body; any other
/// JSON that is not an object, or an object whose fields have the wrong types, is an error.
pub fn parse_proxy_result(raw: &[u8]) -> Result<Response, IntegrationError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(Response::ok());
    }
    let value: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| IntegrationError::Failed(format!("the result is not JSON: {e}")))?;
    match value {
        serde_json::Value::Null => Ok(Response::ok()),
        value @ serde_json::Value::Object(_) => serde_json::from_value(value).map_err(|e| {
            IntegrationError::Failed(format!("the result is not a proxy result: {e}"))
        }),
        _ => Err(IntegrationError::Failed(
            "the result is not a proxy result: expected a JSON object".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_results() {
        assert_eq!(parse_proxy_result(b"").unwrap(), Response::ok());
        assert_eq!(parse_proxy_result(b" null ").unwrap(), Response::ok());
        let r = parse_proxy_result(br#"{"statusCode":403,"body":"no"}"#).unwrap();
        assert_eq!((r.status_code, r.body.as_deref()), (403, Some("no")));
        assert!(parse_proxy_result(b"<html>").is_err());
        assert!(parse_proxy_result(b"[1]").is_err());
        assert!(parse_proxy_result(br#"{"statusCode":"200"}"#).is_err());
    }
}
