//! HTTP integrations against the real server: the proxy event goes out, the proxy result comes
//! back, and every failure maps to API Gateway's answer.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::integrations_common::*;
use serde_json::json;

/// Routes on one backend: `$connect`, `$disconnect`, `$default` (one-way) and `echo`
/// (two-way), each on its own path.
fn config_for(backend: &Backend, timeout_ms: u64) -> switchboard::Config {
    api_config(&format!(
        r#"
        [routes."$connect"]
        integration = {{ type = "http", url = "{connect}", timeout_ms = {timeout_ms} }}
        [routes."$disconnect"]
        integration = {{ type = "http", url = "{disconnect}" }}
        [routes."$default"]
        integration = {{ type = "http", url = "{default}", timeout_ms = {timeout_ms} }}
        [routes.echo]
        integration = {{ type = "http", url = "{echo}", timeout_ms = {timeout_ms} }}
        route_response = "$default"
        "#,
        connect = backend.url("/connect"),
        disconnect = backend.url("/disconnect"),
        default = backend.url("/default"),
        echo = backend.url("/echo"),
    ))
}

/// The backend's answer for the echo route: the `reply` field of the message, as a proxy
/// result, a raw body, a status or a delay.
fn answer(path: &str, event: &serde_json::Value) -> Reply {
    let Some(body) = event["body"].as_str() else {
        // CONNECT: the `status` query parameter, if any.
        let Some(status) = event["queryStringParameters"]["status"].as_str() else {
            return Reply::json(json!({"statusCode": 200}));
        };
        return match status.parse().unwrap() {
            0 => Reply::raw("not json"),
            504 => Reply::json(json!({"statusCode": 200})).after(Duration::from_secs(5)),
            s if s >= 1000 => Reply::status(s - 1000),
            s => {
                Reply::json(json!({"statusCode": s, "headers": {"Sec-WebSocket-Protocol": "chat"}}))
            }
        };
    };
    let msg: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match (path, msg["do"].as_str()) {
        ("/echo", Some("reply")) => Reply::json(json!({"statusCode": 200, "body": msg["text"]})),
        ("/echo", Some("empty")) => Reply::raw(""),
        ("/echo", Some("status500")) => Reply::status(500),
        ("/echo", Some("status404")) => Reply::status(404),
        ("/echo", Some("not-json")) => Reply::raw("<html>oops</html>"),
        ("/echo", Some("not-proxy")) => Reply::raw("[1, 2]"),
        ("/echo", Some("slow")) => {
            Reply::json(json!({"statusCode": 200, "body": "late"})).after(Duration::from_secs(5))
        }
        ("/echo", Some("proxy-error")) => {
            Reply::json(json!({"statusCode": 500, "body": "ignored?"}))
        }
        _ => Reply::json(json!({"statusCode": 200, "body": "one-way bodies are not sent"})),
    }
}

#[tokio::test]
async fn proxy_events_go_out_and_results_come_back() {
    let mut backend = Backend::start(answer).await;
    let server = TestServer::start(config_for(&backend, 29_000)).await;
    let mut c = server.connect().await;

    let (path, event, content_type) = backend.next().await;
    assert_eq!(path, "/connect");
    assert_eq!(content_type, "application/json");
    assert_eq!(event["requestContext"]["eventType"], "CONNECT");
    assert_eq!(
        event["requestContext"]["domainName"],
        server.addr.to_string()
    );
    assert_eq!(event["headers"]["Host"], server.addr.to_string());

    c.send(r#"{"action":"echo","do":"reply","text":"hello"}"#)
        .await;
    assert_eq!(c.recv().await, "hello");
    let (path, event, _) = backend.next().await;
    assert_eq!(path, "/echo");
    assert_eq!(event["requestContext"]["routeKey"], "echo");
    assert_eq!(
        event["body"],
        r#"{"action":"echo","do":"reply","text":"hello"}"#
    );

    // One-way: the body is not sent; the next frame is the two-way reply.
    c.send("not json at all").await;
    let (path, event, _) = backend.next().await;
    assert_eq!(
        (path.as_str(), event["body"].as_str()),
        ("/default", Some("not json at all"))
    );
    c.send(r#"{"action":"echo","do":"reply","text":"second"}"#)
        .await;
    assert_eq!(c.recv().await, "second");

    // An empty answer is a success without a body.
    c.send(r#"{"action":"echo","do":"empty"}"#).await;
    c.send(r#"{"action":"echo","do":"reply","text":"third"}"#)
        .await;
    assert_eq!(c.recv().await, "third");

    c.close(1000, "bye").await;
    loop {
        let (path, event, _) = backend.next().await;
        if path == "/disconnect" {
            assert_eq!(event["requestContext"]["disconnectStatusCode"], 1000);
            break;
        }
    }
}

#[tokio::test]
async fn failures_become_the_internal_server_error_frame() {
    let backend = Backend::start(answer).await;
    let server = TestServer::start(config_for(&backend, 1000)).await;
    let mut c = server.connect().await;
    for what in ["status500", "status404", "not-json", "not-proxy"] {
        c.send(&format!(r#"{{"action":"echo","do":"{what}"}}"#))
            .await;
        internal_error(&c.recv_json().await);
    }
    // A proxy result with a non-2xx statusCode is still a result: its body goes back.
    c.send(r#"{"action":"echo","do":"proxy-error"}"#).await;
    assert_eq!(c.recv().await, "ignored?");
    // The timeout (1 s here) answers long before the backend would.
    let started = Instant::now();
    c.send(r#"{"action":"echo","do":"slow"}"#).await;
    internal_error(&c.recv_json().await);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The connection is still fine.
    c.send(r#"{"action":"echo","do":"reply","text":"still here"}"#)
        .await;
    assert_eq!(c.recv().await, "still here");
}

#[tokio::test]
async fn connect_statuses_map_like_api_gateway() {
    let backend = Backend::start(answer).await;
    let server = TestServer::start(config_for(&backend, 1000)).await;
    let status = |query: &str| {
        let req = upgrade_request(server.addr, &format!("/dev?status={query}"), &[]);
        async move { raw_request(server.addr, &req).await.0 }
    };
    let head = status("200").await;
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(head.contains("Sec-WebSocket-Protocol: chat"), "{head}");
    assert_eq!(status_of(&status("401").await), 401);
    assert_eq!(status_of(&status("302").await), 302);
    // HTTP errors, invalid results and timeouts of the integration: 502.
    assert_eq!(status_of(&status("1500").await), 502);
    assert_eq!(status_of(&status("1403").await), 502);
    assert_eq!(status_of(&status("0").await), 502);
    let started = Instant::now();
    assert_eq!(status_of(&status("504").await), 502);
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn the_http_client_is_pooled() {
    let backend = Backend::start(answer).await;
    let server = TestServer::start(config_for(&backend, 29_000)).await;
    let mut c = server.connect().await;
    for i in 0..20 {
        c.send(&format!(r#"{{"action":"echo","do":"reply","text":"{i}"}}"#))
            .await;
        assert_eq!(c.recv().await, i.to_string());
    }
    // `$connect` and twenty messages, one after another, over one kept-alive connection.
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn an_unreachable_backend_is_an_error_not_a_crash() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = api_config(&format!(
        r#"
        [routes."$default"]
        integration = {{ type = "http", url = "http://127.0.0.1:{port}/x" }}
        route_response = "$default"
        "#
    ));
    let server = TestServer::start(config).await;
    let mut c = server.connect().await;
    c.send("hello").await;
    internal_error(&c.recv_json().await);
}
