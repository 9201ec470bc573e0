//! `$connect` authorizers, as API Gateway runs them.
//!
//! An authorizer runs during the handshake, before `$connect`:
//! 1. every identity source (`route.request.header.X`, `route.request.querystring.x`) must be
//!    present and non-empty, else 401 without calling the authorizer;
//! 2. a REQUEST authorizer (an HTTP endpoint or a Lambda function) gets the authorizer event —
//!    the CONNECT event plus `"type": "REQUEST"`, `methodArn` and the `Connection`, `Upgrade`
//!    and `content-length` headers — and answers `principalId`, `policyDocument` and
//!    `context`; the built-in JWT authorizer verifies a token instead;
//! 3. a policy that allows the method ARN lets the handshake go on, with
//!    `requestContext.authorizer` on every event of the connection; a `Deny`, or a policy that
//!    does not cover the ARN, is 403; the error `Unauthorized` is 401; anything else is 500.

use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;

use crate::event::{AuthorizerContext, Event, EventKind, RequestHead};
use crate::integration::{Backend, CallError};

pub(crate) mod jwt;
pub(crate) mod policy;

/// Where an identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// `route.request.header.<name>` (names compare case-insensitively).
    Header(String),
    /// `route.request.querystring.<name>`.
    Query(String),
}

impl IdentitySource {
    /// Parses `route.request.header.X` or `route.request.querystring.x`.
    pub fn parse(source: &str) -> Result<Self, String> {
        let (kind, name) = if let Some(name) = source.strip_prefix("route.request.header.") {
            (IdentitySource::Header as fn(String) -> Self, name)
        } else if let Some(name) = source.strip_prefix("route.request.querystring.") {
            (IdentitySource::Query as fn(String) -> Self, name)
        } else {
            return Err(format!(
                "{source:?} is not an identity source: use route.request.header.<name> or route.request.querystring.<name>"
            ));
        };
        if name.is_empty() {
            return Err(format!("{source:?} names no header or parameter"));
        }
        Ok(kind(name.to_owned()))
    }

    /// The source's value in a handshake request.
    fn value<'a>(&self, head: &'a RequestHead, query: &'a [(String, String)]) -> Option<&'a str> {
        match self {
            IdentitySource::Header(name) => head.header(name),
            IdentitySource::Query(name) => query
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
    }
}

impl std::fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentitySource::Header(n) => write!(f, "route.request.header.{n}"),
            IdentitySource::Query(n) => write!(f, "route.request.querystring.{n}"),
        }
    }
}

/// What decides.
#[derive(Debug)]
pub enum Decider {
    /// A REQUEST authorizer: an HTTP endpoint or a Lambda function.
    Request(Backend),
    /// The built-in JWT verifier; the token is the first identity source's value.
    Jwt(jwt::JwtVerifier),
}

/// Why a handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// 401: an identity source is missing, or the authorizer said `Unauthorized`.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 403: the policy denies the method ARN or does not cover it.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 500: the authorizer failed or answered something unusable.
    #[error("authorizer error: {0}")]
    Error(String),
}

impl Denied {
    /// The HTTP status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            Denied::Unauthorized(_) => 401,
            Denied::Forbidden(_) => 403,
            Denied::Error(_) => 500,
        }
    }

    /// The message the client gets (the reason goes to the log only).
    pub fn message(&self) -> &'static str {
        match self {
            Denied::Unauthorized(_) => "Unauthorized",
            Denied::Forbidden(_) => "Forbidden",
            Denied::Error(_) => "Internal Server Error",
        }
    }
}

/// A `$connect` authorizer.
#[derive(Debug)]
pub struct Authorizer {
    identity_sources: Vec<IdentitySource>,
    decider: Decider,
    region: String,
    account_id: String,
}

impl Authorizer {
    /// An authorizer; `region` and `account_id` go into the method ARN.
    pub fn new(
        identity_sources: Vec<IdentitySource>,
        decider: Decider,
        region: impl Into<String>,
        account_id: impl Into<String>,
    ) -> Self {
        Authorizer {
            identity_sources,
            decider,
            region: region.into(),
            account_id: account_id.into(),
        }
    }

    /// The method ARN of `$connect`: `arn:aws:execute-api:{region}:{account}:{api}/{stage}/$connect`.
    pub fn method_arn(&self, event: &Event<'_>) -> String {
        format!(
            "arn:aws:execute-api:{}:{}:{}/{}/$connect",
            self.region, self.account_id, event.api.api_id, event.api.stage
        )
    }

    /// Decides on a CONNECT event.
    pub async fn authorize(&self, event: &Event<'_>) -> Result<AuthorizerContext, Denied> {
        let EventKind::Connect { request, .. } = &event.kind else {
            return Err(Denied::Error("authorizers run on $connect only".into()));
        };
        let query = request.query_pairs();
        let mut identities = Vec::with_capacity(self.identity_sources.len());
        for source in &self.identity_sources {
            match source.value(request, &query) {
                Some(value) if !value.trim().is_empty() => identities.push(value),
                _ => {
                    return Err(Denied::Unauthorized(format!(
                        "{source} is missing or empty"
                    )));
                }
            }
        }
        let started = Instant::now();
        let (principal_id, context) = match &self.decider {
            Decider::Jwt(verifier) => {
                let token = identities.first().copied().unwrap_or_default();
                verifier.verify(token).map_err(Denied::Unauthorized)?
            }
            Decider::Request(backend) => {
                let method_arn = self.method_arn(event);
                let answer = backend.call(request_event(event, &method_arn)).await;
                decide(answer, &method_arn)?
            }
        };
        Ok(AuthorizerContext {
            principal_id,
            integration_latency_ms: started.elapsed().as_millis() as u64,
            context,
        })
    }
}

/// The REQUEST authorizer event: the CONNECT event, `type`, `methodArn`, and the headers that
/// only authorizers see.
pub(crate) fn request_event(event: &Event<'_>, method_arn: &str) -> Vec<u8> {
    let mut json = serde_json::to_value(event).expect("events always serialise");
    if let Some(object) = json.as_object_mut() {
        for (name, value) in [
            ("Connection", "upgrade"),
            ("Upgrade", "websocket"),
            ("content-length", "0"),
        ] {
            if let Some(Value::Object(h)) = object.get_mut("headers") {
                h.insert(name.into(), value.into());
            }
            if let Some(Value::Object(h)) = object.get_mut("multiValueHeaders") {
                h.insert(name.into(), Value::Array(vec![value.into()]));
            }
        }
        object.insert("type".into(), "REQUEST".into());
        object.insert("methodArn".into(), method_arn.into());
    }
    serde_json::to_vec(&json).expect("JSON values always serialise")
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "principalId")]
    principal_id: Option<Value>,
    #[serde(rename = "policyDocument")]
    policy_document: Option<Value>,
    context: Option<serde_json::Map<String, Value>>,
}

/// Reads a REQUEST authorizer's answer.
fn decide(
    answer: Result<bytes::Bytes, CallError>,
    method_arn: &str,
) -> Result<(String, Vec<(String, String)>), Denied> {
    let raw = match answer {
        Ok(raw) => raw,
        Err(CallError::Function { message, .. }) if message == "Unauthorized" => {
            return Err(Denied::Unauthorized(
                "the authorizer said Unauthorized".into(),
            ));
        }
        Err(CallError::Status(401)) => {
            return Err(Denied::Unauthorized("the authorizer answered 401".into()));
        }
        Err(CallError::Status(403)) => {
            return Err(Denied::Forbidden("the authorizer answered 403".into()));
        }
        Err(other) => return Err(Denied::Error(other.to_string())),
    };
    let answer: Answer = serde_json::from_slice(&raw)
        .map_err(|e| Denied::Error(format!("the answer is not an authorizer result: {e}")))?;
    let principal_id = match answer.principal_id {
        Some(Value::String(s)) => s,
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        _ => return Err(Denied::Error("the answer has no principalId".into())),
    };
    let policy = answer
        .policy_document
        .ok_or_else(|| Denied::Error("the answer has no policyDocument".into()))?;
    match policy::evaluate(&policy, method_arn).map_err(Denied::Error)? {
        policy::Decision::Allow => {}
        policy::Decision::Deny => {
            return Err(Denied::Forbidden(format!(
                "the policy does not allow {method_arn}"
            )));
        }
    }
    let mut context = Vec::new();
    for (key, value) in answer.context.unwrap_or_default() {
        let value = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            _ => {
                return Err(Denied::Error(format!(
                    "context value {key:?} is an object or array; API Gateway allows only strings, numbers and booleans"
                )));
            }
        };
        context.push((key, value));
    }
    Ok((principal_id, context))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:api/dev/$connect";

    fn allow(context: Value) -> Result<Bytes, CallError> {
        Ok(Bytes::from(
            json!({"principalId": "me", "policyDocument": {"Version": "2012-10-17",
                "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": ARN}]},
                "context": context})
            .to_string(),
        ))
    }

    #[test]
    fn answers_map_to_statuses() {
        let (p, c) = decide(allow(json!({"n": 1, "b": true, "s": "x"})), ARN).unwrap();
        assert_eq!(p, "me");
        assert_eq!(
            c,
            vec![
                ("b".to_owned(), "true".to_owned()),
                ("n".into(), "1".into()),
                ("s".into(), "x".into())
            ]
        );
        let status = |r: Result<_, Denied>| r.unwrap_err().status();
        assert_eq!(status(decide(allow(json!({"o": {}})), ARN)), 500);
        assert_eq!(
            status(decide(
                Err(CallError::Function {
                    error_type: "Error".into(),
                    message: "Unauthorized".into()
                }),
                ARN
            )),
            401
        );
        assert_eq!(
            status(decide(
                Err(CallError::Function {
                    error_type: "Error".into(),
                    message: "boom".into()
                }),
                ARN
            )),
            500
        );
        assert_eq!(status(decide(Err(CallError::Timeout), ARN)), 500);
        assert_eq!(status(decide(Err(CallError::Status(403)), ARN)), 403);
        assert_eq!(status(decide(allow(json!({})), "arn:other")), 403);
        assert_eq!(status(decide(Ok(Bytes::from_static(b"{}")), ARN)), 500);
    }

    #[test]
    fn identity_sources_parse() {
        assert_eq!(
            IdentitySource::parse("route.request.header.Authorization"),
            Ok(IdentitySource::Header("Authorization".into()))
        );
        assert_eq!(
            IdentitySource::parse("route.request.querystring.token"),
            Ok(IdentitySource::Query("token".into()))
        );
        assert!(IdentitySource::parse("stageVariables.x").is_err());
        assert!(IdentitySource::parse("route.request.header.").is_err());
    }
}
