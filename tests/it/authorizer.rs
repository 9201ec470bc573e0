//! `$connect` authorizers against the real server: identity sources, REQUEST authorizers over
//! HTTP and Lambda, the built-in JWT authorizer, and the context on every later event.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use crate::integrations_common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:switchboard/dev/$connect";

/// The HTTP authorizer's answer, chosen by the request's `Authorization` header; the routes
/// answer 200.
fn answer(path: &str, event: &Value) -> Reply {
    if path != "/auth" {
        return Reply::json(json!({"statusCode": 200}));
    }
    let policy = |effect: &str, resource: &str| {
        json!({"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}]})
    };
    let allow = |context: Value| {
        Reply::json(
            json!({"principalId": "user-1", "policyDocument": policy("Allow", ARN),
            "context": context}),
        )
    };
    let headers = event["headers"].as_object().unwrap();
    let verdict = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_default();
    match verdict {
        "allow" => allow(json!({"role": "admin", "n": 42, "flag": true})),
        "deny" => {
            Reply::json(json!({"principalId": "user-1", "policyDocument": policy("Deny", ARN)}))
        }
        "elsewhere" => Reply::json(json!({"principalId": "user-1",
            "policyDocument": policy("Allow", "arn:aws:execute-api:*:*:other/*")})),
        "nested" => allow(json!({"o": {"a": 1}})),
        "garbage" => Reply::raw("<html>"),
        "slow" => allow(json!({})).after(Duration::from_secs(5)),
        status => Reply::status(status.parse().unwrap_or(500)),
    }
}

/// Routes and an HTTP authorizer on one backend.
fn http_config(backend: &Backend) -> switchboard::Config {
    api_config(&format!(
        r#"
        [routes."$connect"]
        integration = {{ type = "http", url = "{connect}" }}
        [routes."$default"]
        integration = {{ type = "http", url = "{default}" }}
        [routes."$disconnect"]
        integration = {{ type = "http", url = "{disconnect}" }}
        [authorizer]
        type = "http"
        url = "{auth}"
        timeout_ms = 500
        identity_sources = ["route.request.header.Authorization", "route.request.querystring.token"]
        "#,
        connect = backend.url("/connect"),
        default = backend.url("/default"),
        disconnect = backend.url("/disconnect"),
        auth = backend.url("/auth"),
    ))
}

async fn handshake(server: &TestServer, path: &str, headers: &[&str]) -> u16 {
    let req = upgrade_request(server.addr, path, headers);
    let (head, _) = raw_request(server.addr, &req).await;
    status_of(&head)
}

fn authorizer_context(event: &Value) -> &Value {
    &event["requestContext"]["authorizer"]
}

#[tokio::test]
async fn missing_identity_sources_are_401_without_calling_the_authorizer() {
    let mut backend = Backend::start(answer).await;
    let server = TestServer::start(http_config(&backend)).await;
    assert_eq!(handshake(&server, "/dev?token=t", &[]).await, 401);
    assert_eq!(
        handshake(&server, "/dev", &["Authorization: allow"]).await,
        401
    );
    assert_eq!(
        handshake(&server, "/dev?token=", &["Authorization: allow"]).await,
        401
    );
    assert_eq!(
        handshake(&server, "/dev?token=t", &["Authorization:  "]).await,
        401
    );
    assert!(
        backend.requests.try_recv().is_err(),
        "the authorizer was not called"
    );
    assert_eq!(backend.connections(), 0);
    // Header names compare case-insensitively, as HTTP's do.
    assert_eq!(
        handshake(&server, "/dev?token=t", &["authorization: allow"]).await,
        101
    );
}

#[tokio::test]
async fn an_allowed_connection_carries_the_context_on_every_event() {
    let mut backend = Backend::start(answer).await;
    let server = TestServer::start(http_config(&backend)).await;
    let req = upgrade_request(server.addr, "/dev?token=abc", &["Authorization: allow"]);
    let (head, mut stream) = raw_request(server.addr, &req).await;
    assert_eq!(status_of(&head), 101, "{head}");

    let (path, auth, _) = backend.next().await;
    assert_eq!(path, "/auth");
    assert_eq!(auth["type"], "REQUEST");
    assert_eq!(auth["methodArn"], ARN);
    assert_eq!(auth["headers"]["Authorization"], "allow");
    assert_eq!(auth["headers"]["Connection"], "upgrade");
    assert_eq!(auth["headers"]["Upgrade"], "websocket");
    assert_eq!(auth["headers"]["content-length"], "0");
    assert_eq!(auth["multiValueHeaders"]["Upgrade"], json!(["websocket"]));
    assert_eq!(auth["queryStringParameters"]["token"], "abc");
    assert_eq!(auth["requestContext"]["eventType"], "CONNECT");
    assert_eq!(auth["requestContext"]["routeKey"], "$connect");
    assert!(auth["requestContext"].get("authorizer").is_none());

    let expected = |event: &Value| {
        let a = authorizer_context(event);
        assert_eq!(a["principalId"], "user-1", "{event}");
        assert!(a["integrationLatency"].is_u64(), "{event}");
        assert_eq!(a["role"], "admin");
        assert_eq!(a["n"], "42");
        assert_eq!(a["flag"], "true");
    };
    let (path, connect, _) = backend.next().await;
    assert_eq!(path, "/connect");
    expected(&connect);
    // The $connect integration does not see the authorizer-only headers.
    assert!(connect["headers"].get("Upgrade").is_none());

    stream
        .write_all(&client_frame(1, true, b"hello"))
        .await
        .unwrap();
    let (path, message, _) = backend.next().await;
    assert_eq!(path, "/default");
    expected(&message);

    stream
        .write_all(&client_frame(8, true, b"\x03\xe8"))
        .await
        .unwrap();
    let (path, disconnect, _) = backend.next().await;
    assert_eq!(path, "/disconnect");
    expected(&disconnect);
}

#[tokio::test]
async fn denials_and_failures_map_to_401_403_and_500() {
    let backend = Backend::start(answer).await;
    let server = TestServer::start(http_config(&backend)).await;
    let status = |auth: &'static str| {
        let header = format!("Authorization: {auth}");
        let server = &server;
        async move { handshake(server, "/dev?token=t", &[&header]).await }
    };
    assert_eq!(status("deny").await, 403);
    assert_eq!(status("elsewhere").await, 403);
    assert_eq!(status("401").await, 401);
    assert_eq!(status("403").await, 403);
    assert_eq!(status("500").await, 500);
    assert_eq!(status("404").await, 500);
    assert_eq!(status("garbage").await, 500);
    assert_eq!(status("nested").await, 500);
    assert_eq!(status("slow").await, 500);
    assert_eq!(status("allow").await, 101);
}

#[tokio::test]
async fn lambda_authorizers_answer_like_on_aws() {
    let mut backend = Backend::start(answer).await;
    let config = api_config(&format!(
        r#"
        [routes."$connect"]
        integration = {{ type = "http", url = "{connect}" }}
        [authorizer]
        {function}
        identity_sources = ["route.request.header.Authorization"]
        "#,
        connect = backend.url("/connect"),
        function = r#"type = "lambda"
        command = ["python3", "runtime.py"]"#,
    ));
    let server = TestServer::start(config).await;
    let status = |auth: &'static str| {
        let header = format!("Authorization: {auth}");
        let server = &server;
        async move { handshake(server, "/dev", &[&header]).await }
    };
    assert_eq!(status("unauthorized").await, 401);
    assert_eq!(status("deny").await, 403);
    assert_eq!(status("error").await, 500);
    assert_eq!(status("garbage").await, 500);
    assert_eq!(status("allow").await, 101);
    let (_, connect, _) = backend.next().await;
    let a = authorizer_context(&connect);
    assert_eq!(a["principalId"], "lambda-user");
    assert_eq!(a["source"], "lambda");
    assert_eq!(a["level"], "7");
    // The function saw the REQUEST authorizer event.
    let seen: Value = serde_json::from_str(a["event"].as_str().unwrap()).unwrap();
    assert_eq!(seen["type"], "REQUEST");
    assert_eq!(seen["methodArn"], ARN);
}

fn now() -> i64 {
    crate::common::now_ms() / 1000
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name),
    )
    .unwrap()
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// A JWT authorizer with `keys` (TOML), and a `$connect` route recording its events.
async fn jwt_server(backend: &Backend, keys: &str) -> TestServer {
    let jwt = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
    let config = api_config(&format!(
        r#"
        [routes."$connect"]
        integration = {{ type = "http", url = "{connect}" }}
        [authorizer]
        type = "jwt"
        identity_sources = ["route.request.querystring.token"]
        issuer = "https://issuer.example"
        audience = ["chat"]
        leeway_secs = 0
        {keys}
        "#,
        connect = backend.url("/connect"),
        keys = keys.replace("{jwt}", &jwt.display().to_string()),
    ));
    TestServer::start(config).await
}

#[tokio::test]
async fn jwt_hs256_valid_expired_wrong_audience_wrong_signature() {
    let mut backend = Backend::start(answer).await;
    let server = jwt_server(&backend, "algorithm = \"HS256\"\nsecret = \"s3cret\"").await;
    let key = EncodingKey::from_secret(b"s3cret");
    let claims = json!({"sub": "alice", "iss": "https://issuer.example", "aud": "chat",
        "exp": now() + 300, "groups": ["a", "b"], "admin": true});
    let token =
        |claims: &Value, key: &EncodingKey| sign(Algorithm::HS256, None, key, claims.clone());
    let status = |token: String| {
        let server = &server;
        async move { handshake(server, &format!("/dev?token={token}"), &[]).await }
    };

    assert_eq!(status(token(&claims, &key)).await, 101);
    let (_, connect, _) = backend.next().await;
    let a = authorizer_context(&connect);
    assert_eq!(a["principalId"], "alice");
    assert_eq!(a["sub"], "alice");
    assert_eq!(a["aud"], "chat");
    assert_eq!(a["admin"], "true");
    assert_eq!(a["groups"], r#"["a","b"]"#);

    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 3600);
    assert_eq!(status(token(&expired, &key)).await, 401);
    let mut not_yet = claims.clone();
    not_yet["nbf"] = json!(now() + 3600);
    assert_eq!(status(token(&not_yet, &key)).await, 401);
    let mut wrong_audience = claims.clone();
    wrong_audience["aud"] = json!("other-app");
    assert_eq!(status(token(&wrong_audience, &key)).await, 401);
    let mut wrong_issuer = claims.clone();
    wrong_issuer["iss"] = json!("https://evil.example");
    assert_eq!(status(token(&wrong_issuer, &key)).await, 401);
    let other_key = EncodingKey::from_secret(b"not the secret");
    assert_eq!(status(token(&claims, &other_key)).await, 401);
    assert_eq!(status("garbage".into()).await, 401);
    // Only the valid token reached `$connect`.
    assert!(backend.requests.try_recv().is_err());
}

#[tokio::test]
async fn jwt_rs256_with_a_pem_key_and_es256_with_a_jwks_file() {
    let backend = Backend::start(answer).await;
    let claims =
        json!({"sub": "bob", "iss": "https://issuer.example", "aud": "chat", "exp": now() + 300});

    let server = jwt_server(
        &backend,
        "algorithm = \"RS256\"\npublic_key_file = \"{jwt}/rs256-public.pem\"",
    )
    .await;
    let rsa = EncodingKey::from_rsa_pem(&fixture("rs256-private.pem")).unwrap();
    let good = sign(Algorithm::RS256, None, &rsa, claims.clone());
    assert_eq!(
        handshake(&server, &format!("/dev?token={good}"), &[]).await,
        101
    );
    let ec = EncodingKey::from_ec_pem(&fixture("es256-private.pem")).unwrap();
    let wrong_alg = sign(Algorithm::ES256, None, &ec, claims.clone());
    assert_eq!(
        handshake(&server, &format!("/dev?token={wrong_alg}"), &[]).await,
        401
    );
    drop(server);

    let server = jwt_server(
        &backend,
        "algorithm = \"ES256\"\njwks_file = \"{jwt}/jwks.json\"",
    )
    .await;
    let good = sign(Algorithm::ES256, Some("es-key-1"), &ec, claims.clone());
    assert_eq!(
        handshake(&server, &format!("/dev?token={good}"), &[]).await,
        101
    );
    let unknown_kid = sign(Algorithm::ES256, Some("nope"), &ec, claims.clone());
    assert_eq!(
        handshake(&server, &format!("/dev?token={unknown_kid}"), &[]).await,
        401
    );
    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 60);
    let expired = sign(Algorithm::ES256, Some("es-key-1"), &ec, expired);
    assert_eq!(
        handshake(&server, &format!("/dev?token={expired}"), &[]).await,
        401
    );
}

#[tokio::test]
async fn an_authorizer_can_protect_the_built_in_chat() {
    let config = api_config(
        r#"
        [authorizer]
        type = "jwt"
        algorithm = "HS256"
        secret = "s3cret"
        identity_sources = ["route.request.header.Authorization"]
        "#,
    );
    let server = TestServer::start(config).await;
    assert_eq!(handshake(&server, "/dev", &[]).await, 401);
    let token = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"s3cret"),
        json!({"sub": "carol", "exp": now() + 300}),
    );
    let header = format!("Authorization: Bearer {token}");
    assert_eq!(handshake(&server, "/dev", &[&header]).await, 101);
}
