//! The gateway against real clients: endpoints, handshake, route selection, events, limits.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use switchboard::Id;
use switchboard::api::Api;
use switchboard::api::SelectionExpression;
use switchboard::event::Response;
use switchboard::integration::IntegrationError;
use switchboard::integration::echo::Echo;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

fn is_aws_id(s: &str) -> bool {
    Id::parse(s).is_some()
}

#[tokio::test]
async fn endpoints_answer_like_api_gateway() {
    let server = TestServer::start(config()).await;
    let http = reqwest::Client::new();
    let r = http.get(server.http("/dev")).send().await.unwrap();
    assert_eq!(r.status(), 426);
    let r = http.get(server.http("/dev/")).send().await.unwrap();
    assert_eq!(r.status(), 426);
    let r = http.get(server.http("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(server.http("/elsewhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // A handshake on another path is not a WebSocket endpoint.
    let (head, _) = raw_request(server.addr, &upgrade_request(server.addr, "/prod", &[])).await;
    assert_eq!(status_of(&head), 404, "{head}");
    // Trailing slash accepted for the WebSocket too.
    let _ = Client::connect(&format!("ws://{}/dev/", server.addr)).await;
}

#[tokio::test]
async fn bad_handshakes_get_clear_statuses() {
    let server = TestServer::start(config()).await;
    let a = server.addr;
    let no_key = format!(
        "GET /dev HTTP/1.1\r\nHost: {a}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    assert_eq!(status_of(&raw_request(a, &no_key).await.0), 400);
    let old = upgrade_request(a, "/dev", &[]).replace("Version: 13", "Version: 8");
    let (head, _) = raw_request(a, &old).await;
    assert_eq!(status_of(&head), 426);
    assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
    let long = upgrade_request(a, &format!("/dev?q={}", "a".repeat(5000)), &[]);
    assert_eq!(status_of(&raw_request(a, &long).await.0), 414);
    let (head, _) = raw_request(a, "\x16\x03\x01 not http\r\n\r\n").await;
    assert_eq!(status_of(&head), 400);
    // The server still serves others.
    let mut c = server.connect().await;
    assert!(!c.chat_id().await.is_empty());
}

#[tokio::test]
async fn events_have_api_gateways_shape() {
    let (connect, mut connects) = Recorder::new("connect");
    let (message, mut messages) = Recorder::new("message");
    let (disconnect, mut disconnects) = Recorder::new("disconnect");
    let server = TestServer::with_api(config(), |_| {
        Api::new(SelectionExpression::default())
            .route("$connect", Arc::new(connect), false)?
            .route("$default", Arc::new(message), false)?
            .route("$disconnect", Arc::new(disconnect), false)
    })
    .await;
    let req = upgrade_request(
        server.addr,
        "/dev?token=abc&tag=1&tag=2",
        &[
            "User-Agent: test-agent/1.0",
            "X-Custom-Header: Value",
            "authorization: Bearer x",
        ],
    );
    let (head, mut stream) = raw_request(server.addr, &req).await;
    assert_eq!(status_of(&head), 101);
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );

    let c = next_event(&mut connects).await;
    let rc = &c["requestContext"];
    assert_eq!(rc["eventType"], "CONNECT");
    assert_eq!(rc["routeKey"], "$connect");
    assert!(is_aws_id(rc["connectionId"].as_str().unwrap()));
    assert!(is_aws_id(rc["requestId"].as_str().unwrap()));
    assert_eq!(rc["requestId"], rc["extendedRequestId"]);
    assert_eq!(rc["domainName"], server.addr.to_string());
    assert_eq!(rc["stage"], "dev");
    assert_eq!(rc["messageDirection"], "IN");
    assert_eq!(rc["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(rc["identity"]["userAgent"], "test-agent/1.0");
    assert!(rc.get("messageId").is_none());
    assert_eq!(c["headers"]["X-Custom-Header"], "Value");
    assert_eq!(c["headers"]["authorization"], "Bearer x");
    assert_eq!(c["headers"]["User-Agent"], "test-agent/1.0");
    assert!(c["headers"].get("Upgrade").is_none());
    assert_eq!(c["headers"]["X-Forwarded-For"], "127.0.0.1");
    assert_eq!(
        c["headers"]["X-Forwarded-Port"],
        server.addr.port().to_string()
    );
    assert!(
        c["headers"]["X-Amzn-Trace-Id"]
            .as_str()
            .unwrap()
            .starts_with("Root=1-")
    );
    assert_eq!(
        c["queryStringParameters"],
        json!({"token": "abc", "tag": "2"})
    );
    assert_eq!(
        c["multiValueQueryStringParameters"]["tag"],
        json!(["1", "2"])
    );
    assert_eq!(c["isBase64Encoded"], false);
    assert!(c.get("body").is_none());
    let connection_id = rc["connectionId"].clone();
    let connected_at = rc["connectedAt"].clone();

    stream
        .write_all(&client_frame(1, true, b"{\"x\": 1}"))
        .await
        .unwrap();
    let m = next_event(&mut messages).await;
    let rc = &m["requestContext"];
    assert_eq!(rc["eventType"], "MESSAGE");
    assert_eq!(rc["routeKey"], "$default");
    assert!(is_aws_id(rc["messageId"].as_str().unwrap()));
    assert_eq!(rc["connectionId"], connection_id);
    assert_eq!(rc["connectedAt"], connected_at);
    assert!(rc["requestTimeEpoch"].as_i64().unwrap() >= connected_at.as_i64().unwrap());
    assert_eq!(m["body"], "{\"x\": 1}");
    assert!(m.get("headers").is_none());

    stream
        .write_all(&client_frame(8, true, b"\x0f\xa1see you"))
        .await
        .unwrap();
    let d = next_event(&mut disconnects).await;
    let rc = &d["requestContext"];
    assert_eq!(rc["eventType"], "DISCONNECT");
    assert_eq!(rc["disconnectStatusCode"], 4001);
    assert_eq!(rc["disconnectReason"], "see you");
    assert_eq!(rc["connectionId"], connection_id);
    assert_eq!(d["headers"]["x-restapi"], "");
    // The server answered the close with the same code.
    let (op, payload) = read_frame(&mut stream).await;
    assert_eq!(op, 8);
    assert_eq!(&payload[..2], &[0x0f, 0xa1]);
}

fn routed_api(
    with_default: bool,
) -> impl FnOnce(switchboard::management::ManagementApi) -> Result<Api, switchboard::api::ApiError>
{
    move |_| {
        let named = |name: &'static str| {
            let (r, _) = Recorder::new(name);
            Arc::new(r.respond(move |e| {
                Ok(Response::with_body(format!(
                    "{name}:{}",
                    e["requestContext"]["routeKey"].as_str().unwrap()
                )))
            }))
        };
        let mut api = Api::new(
            SelectionExpression::parse("${request.body.service}/${request.body.action}").unwrap(),
        )
        .route("chat/join", named("join"), true)?
        .route("chat/", named("empty"), true)?;
        if with_default {
            api = api.route("$default", named("default"), true)?;
        }
        Ok(api)
    }
}

#[tokio::test]
async fn route_selection_with_several_variables() {
    let server = TestServer::with_api(config(), routed_api(true)).await;
    let mut c = server.connect().await;
    c.send(r#"{"service":"chat","action":"join"}"#).await;
    assert_eq!(c.recv().await, "join:chat/join");
    c.send(r#"{"service":"chat"}"#).await;
    assert_eq!(c.recv().await, "empty:chat/");
    c.send(r#"{"service":"Chat","action":"join"}"#).await;
    assert_eq!(
        c.recv().await,
        "default:$default",
        "keys are case-sensitive"
    );
    c.send("not json at all").await;
    assert_eq!(c.recv().await, "default:$default");
}

#[tokio::test]
async fn no_route_and_no_default_answers_forbidden_and_stays_open() {
    let server = TestServer::with_api(config(), routed_api(false)).await;
    let mut c = server.connect().await;
    c.send(r#"{"service":"x","action":"y"}"#).await;
    let frame = c.recv().await;
    let re = regex_lite(&frame);
    assert!(re, "{frame}");
    // Still connected: a routed message works.
    c.send(r#"{"service":"chat","action":"join"}"#).await;
    assert_eq!(c.recv().await, "join:chat/join");
}

/// Checks the exact bytes of the Forbidden frame.
fn regex_lite(frame: &str) -> bool {
    let Some(rest) = frame.strip_prefix(r#"{"message": "Forbidden", "connectionId":""#) else {
        return false;
    };
    let (cid, rest) = rest.split_at(16);
    let Some(rest) = rest.strip_prefix(r#"", "requestId":""#) else {
        return false;
    };
    let (rid, rest) = rest.split_at(16);
    is_aws_id(cid) && is_aws_id(rid) && rest == "\"}"
}

#[tokio::test]
async fn failing_integration_answers_internal_server_error() {
    let (failing, _) = Recorder::new("failing");
    let failing = failing.respond(|_| Err(IntegrationError::Failed("boom".into())));
    let (slow, _) = Recorder::new("slow");
    let slow = slow.delayed(Duration::from_secs(5));
    let mut cfg = config();
    cfg.limits.integration_timeout_ms = 200;
    let server = TestServer::with_api(cfg, |_| {
        Api::new(SelectionExpression::default())
            .route("fail", Arc::new(failing), false)?
            .route("slow", Arc::new(slow), false)
    })
    .await;
    let mut c = server.connect().await;
    for action in ["fail", "slow"] {
        c.send_json(json!({"action": action})).await;
        let frame = c.recv().await;
        assert!(
            frame.starts_with(r#"{"message": "Internal server error", "connectionId":""#),
            "{frame}"
        );
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert!(is_aws_id(v["requestId"].as_str().unwrap()));
    }
}

#[tokio::test]
async fn one_way_routes_send_nothing_and_two_way_routes_send_the_body() {
    let (one, _) = Recorder::new("one");
    let one = one.respond(|_| Ok(Response::with_body("not sent")));
    let (two, _) = Recorder::new("two");
    let two = two
        .respond(|_| Ok(Response::with_body("sent back")))
        .delayed(Duration::from_millis(10));
    let server = TestServer::with_api(config(), |_| {
        Api::new(SelectionExpression::default())
            .route("one", Arc::new(one), false)?
            .route("two", Arc::new(two), true)
    })
    .await;
    let mut c = server.connect().await;
    c.send(r#"{"action":"one"}"#).await;
    c.send(r#"{"action":"two"}"#).await;
    // The first frame to arrive is the two-way reply: the one-way route sent nothing.
    assert_eq!(c.recv().await, "sent back");
}

#[tokio::test]
async fn connect_route_gates_the_handshake() {
    let (gate, mut events) = Recorder::new("gate");
    let gate = gate.respond(|e| {
        let token = e["queryStringParameters"]["token"].as_str().unwrap_or("");
        match token {
            "ok" => Ok(Response::ok()),
            "proto" => Ok(Response {
                headers: vec![("Sec-WebSocket-Protocol".into(), "chat.v1".into())],
                ..Response::ok()
            }),
            "error" => Err(IntegrationError::Failed("crash".into())),
            "teapot" => Ok(Response::status(418)),
            _ => Ok(Response::status(401)),
        }
    });
    let server = TestServer::with_api(config(), |_| {
        Api::new(SelectionExpression::default())
            .route("$connect", Arc::new(gate), false)?
            .route("$default", Arc::new(Echo), true)
    })
    .await;
    let a = server.addr;
    let status =
        |token: &str, extra: &[&str]| upgrade_request(a, &format!("/dev?token={token}"), extra);
    assert_eq!(status_of(&raw_request(a, &status("ok", &[])).await.0), 101);
    assert_eq!(status_of(&raw_request(a, &status("no", &[])).await.0), 401);
    assert_eq!(
        status_of(&raw_request(a, &status("teapot", &[])).await.0),
        418
    );
    assert_eq!(
        status_of(&raw_request(a, &status("error", &[])).await.0),
        502
    );
    let (head, _) = raw_request(
        a,
        &status("proto", &["Sec-WebSocket-Protocol: chat.v1, chat.v0"]),
    )
    .await;
    assert_eq!(status_of(&head), 101);
    assert!(
        head.contains("Sec-WebSocket-Protocol: chat.v1\r\n"),
        "{head}"
    );
    for _ in 0..5 {
        next_event(&mut events).await;
    }
    // Without a $connect route every handshake is accepted.
    let open = TestServer::with_api(config(), |_| {
        Api::new(SelectionExpression::default()).route("$default", Arc::new(Echo), true)
    })
    .await;
    let mut c = open.connect().await;
    c.send("hello").await;
    assert_eq!(c.recv().await, "hello");
}

#[tokio::test]
async fn posts_during_connect_answer_410() {
    let (gate, mut events) = Recorder::new("gate");
    let gate = gate.delayed(Duration::from_millis(800));
    let server = TestServer::with_api(config(), |_| {
        Api::new(SelectionExpression::default()).route("$connect", Arc::new(gate), false)
    })
    .await;
    let url = server.ws_url();
    let pending = tokio::spawn(async move { Client::connect(&url).await });
    let event = next_event(&mut events).await;
    let id = event["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();
    let url = format!(
        "{}/@connections/{}",
        server.endpoint(),
        id.replace('=', "%3D")
    );
    let r = http.post(&url).body("too early").send().await.unwrap();
    assert_eq!(r.status(), 410);
    let mut client = pending.await.unwrap();
    // Once $connect returned, the same id is reachable.
    let r = http.post(&url).body("now").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(client.recv().await, "now");
}

#[tokio::test]
async fn limits_close_with_api_gateway_codes() {
    let server = TestServer::start(switchboard::Config {
        app: switchboard::config::BuiltinApp::Echo,
        ..config()
    })
    .await;
    // A frame over 32 KiB: 1009.
    let mut c = server.connect().await;
    c.ws.send(Message::text("a".repeat(32 * 1024 + 1)))
        .await
        .unwrap();
    assert_eq!(c.expect_close().await.0, 1009);
    // A frame of exactly 32 KiB is fine.
    let mut c = server.connect().await;
    let exact = "b".repeat(32 * 1024);
    c.send(&exact).await;
    assert_eq!(c.recv().await.len(), exact.len());
    // Binary frames: 1003.
    let mut c = server.connect().await;
    c.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(c.expect_close().await.0, 1003);
    // A fragmented message over 128 KiB: 1009, although every frame is small.
    let mut raw = raw_ws(&server).await;
    let part = vec![b'c'; 30 * 1024];
    raw.write_all(&client_frame(1, false, &part)).await.unwrap();
    for _ in 0..4 {
        raw.write_all(&client_frame(0, false, &part)).await.unwrap();
    }
    let (op, payload) = read_frame(&mut raw).await;
    assert_eq!(
        (op, u16::from_be_bytes([payload[0], payload[1]])),
        (8, 1009)
    );
    // A fragmented message under the limit is reassembled.
    let mut raw = raw_ws(&server).await;
    raw.write_all(&client_frame(1, false, b"hel"))
        .await
        .unwrap();
    raw.write_all(&client_frame(9, true, b"ping!"))
        .await
        .unwrap();
    raw.write_all(&client_frame(0, true, b"lo")).await.unwrap();
    assert_eq!(
        read_frame(&mut raw).await,
        (10, b"ping!".to_vec()),
        "pong first"
    );
    assert_eq!(read_frame(&mut raw).await, (1, b"hello".to_vec()));
    // Invalid UTF-8 in a text frame: 1007. Unmasked frame: 1002.
    let mut raw = raw_ws(&server).await;
    raw.write_all(&client_frame(1, true, &[0xc3, 0x28]))
        .await
        .unwrap();
    let (_, payload) = read_frame(&mut raw).await;
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1007);
    let mut raw = raw_ws(&server).await;
    raw.write_all(b"\x81\x02hi").await.unwrap();
    let (_, payload) = read_frame(&mut raw).await;
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
}

#[tokio::test]
async fn binary_frames_can_be_accepted() {
    let mut cfg = config();
    cfg.app = switchboard::config::BuiltinApp::Echo;
    cfg.limits.accept_binary = true;
    let server = TestServer::start(cfg).await;
    let mut c = server.connect().await;
    c.ws.send(Message::binary(vec![0xff, 0, 1])).await.unwrap();
    assert_eq!(c.next().await, Message::binary(vec![0xff, 0, 1]));
}

// The sweeper reads tokio's clock, so these two run on a paused clock: it jumps to the next
// timer whenever every task waits, and the limits pass in virtual seconds. Everything here is
// in this runtime (server, clients, integrations), so nothing is waited for on another thread
// while the clock jumps.

#[tokio::test(start_paused = true)]
async fn idle_connections_close_with_1001_and_traffic_keeps_them_open() {
    let (disconnect, mut events) = Recorder::new("disconnect");
    let mut cfg = config();
    cfg.limits.idle_timeout_secs = 2;
    let server = TestServer::with_api(cfg, |_| {
        Api::new(SelectionExpression::default())
            .route("$disconnect", Arc::new(disconnect), false)?
            .route("$default", Arc::new(Echo), true)
    })
    .await;
    let mut c = server.connect().await;
    // A message every half second keeps it open past the limit, twice over.
    let opened = Instant::now();
    while opened.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.send("keepalive").await;
        assert_eq!(c.recv().await, "keepalive");
    }
    // Then silence: closed once quiet for the limit, checked every 200 ms (a tenth of it). The
    // clock may move on by one check between the server reading the last message and this
    // client reading its echo, hence the lower bound of 1.8 s.
    let quiet = Instant::now();
    assert_eq!(c.expect_close().await, (1001, "Going away".into()));
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_millis(3500),
        "closed after {waited:?} of silence"
    );
    let e = next_event(&mut events).await;
    assert_eq!(e["requestContext"]["disconnectStatusCode"], 1001);
    assert_eq!(e["requestContext"]["disconnectReason"], "Going away");
}

#[tokio::test(start_paused = true)]
async fn the_lifetime_limit_closes_with_1001_despite_traffic() {
    let mut cfg = config();
    cfg.limits.max_lifetime_secs = 2;
    cfg.app = switchboard::config::BuiltinApp::Echo;
    let server = TestServer::start(cfg).await;
    let started = Instant::now();
    let mut c = server.connect().await;
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.send("keepalive").await;
        match c.next().await {
            Message::Text(_) => continue,
            Message::Close(Some(f)) => break u16::from(f.code),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(closed, 1001);
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_secs(2) && lived < Duration::from_millis(3500),
        "closed after {lived:?}"
    );
}

#[tokio::test]
async fn disconnect_codes_for_client_closes() {
    let (disconnect, mut events) = Recorder::new("disconnect");
    let server = TestServer::with_api(config(), |_| {
        Api::new(SelectionExpression::default())
            .route("$disconnect", Arc::new(disconnect), false)?
            .route("$default", Arc::new(Echo), true)
    })
    .await;
    // A close frame without a status code: 1005.
    let mut raw = raw_ws(&server).await;
    raw.write_all(&client_frame(8, true, b"")).await.unwrap();
    let e = next_event(&mut events).await;
    assert_eq!(e["requestContext"]["disconnectStatusCode"], 1005);
    assert_eq!(
        e["requestContext"]["disconnectReason"],
        "Client-side close frame status not set"
    );
    assert_eq!(read_frame(&mut raw).await, (8, vec![]));
    // The TCP connection just vanishes: 1006.
    let raw = raw_ws(&server).await;
    drop(raw);
    let e = next_event(&mut events).await;
    assert_eq!(e["requestContext"]["disconnectStatusCode"], 1006);
    // A normal close with a reason.
    let c = server.connect().await;
    c.close(1000, "bye").await;
    let e = next_event(&mut events).await;
    assert_eq!(e["requestContext"]["disconnectStatusCode"], 1000);
    assert_eq!(e["requestContext"]["disconnectReason"], "bye");
}

#[tokio::test]
async fn ids_are_unique_across_connections() {
    let server = TestServer::start(config()).await;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let mut c = server.connect().await;
        let id = c.chat_id().await;
        assert!(is_aws_id(&id), "{id}");
        assert!(ids.insert(id));
    }
}
