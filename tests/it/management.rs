//! The `@connections` API over HTTP, as the AWS SDKs and CLI call it.

use std::sync::Arc;

use crate::common::*;
use serde_json::Value;
use switchboard::api::Api;
use switchboard::api::SelectionExpression;
use switchboard::integration::echo::Echo;
use tokio_tungstenite::tungstenite::Message;

async fn server_and_client() -> (TestServer, Client, String) {
    let server = TestServer::start(config()).await;
    let mut client = server.connect().await;
    let id = client.chat_id().await;
    (server, client, id)
}

fn encoded(id: &str) -> String {
    id.replace('=', "%3D")
}

#[tokio::test]
async fn post_delivers_raw_bytes_in_every_path_spelling() {
    let (server, mut client, id) = server_and_client().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    for (i, path) in [
        format!("/dev/@connections/{id}"),
        format!("/dev/@connections/{}", encoded(&id)),
        format!("/dev/%40connections/{}", encoded(&id)),
        format!("/@connections/{}", encoded(&id)),
    ]
    .iter()
    .enumerate()
    {
        let r = http
            .post(format!("{base}{path}"))
            .body(format!("hello {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers().contains_key("x-amzn-requestid"));
        assert_eq!(r.text().await.unwrap(), "");
        assert_eq!(client.recv().await, format!("hello {i}"));
    }
    // Bytes that are not UTF-8 arrive as a binary frame.
    let r = http
        .post(format!("{base}/dev/@connections/{}", encoded(&id)))
        .body(vec![0xff, 0x00, 0xfe])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(client.next().await, Message::binary(vec![0xff, 0x00, 0xfe]));
}

#[tokio::test]
async fn get_reports_connection_info() {
    let server = TestServer::start(config()).await;
    let (mut client, _) = {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                server.ws_url(),
            )
            .unwrap();
        request
            .headers_mut()
            .insert("User-Agent", "probe/2.0".parse().unwrap());
        let (ws, r) = tokio_tungstenite::connect_async(request).await.unwrap();
        (Client { ws }, r)
    };
    let id = client.chat_id().await;
    let r = reqwest::get(format!(
        "{}/@connections/{}",
        server.endpoint(),
        encoded(&id)
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(v["identity"]["userAgent"], "probe/2.0");
    let connected = v["connectedAt"].as_str().unwrap();
    let last = v["lastActiveAt"].as_str().unwrap();
    assert_eq!(connected.len(), "2020-04-30T20:10:33.236Z".len());
    assert!(connected.ends_with('Z'));
    assert!(last >= connected);
}

#[tokio::test]
async fn delete_closes_with_1000_and_then_posts_are_gone() {
    let (disconnect, mut events) = Recorder::new("disconnect");
    let (connect, mut connects) = Recorder::new("connect");
    let server = TestServer::with_api(config(), |_| {
        Api::new(SelectionExpression::default())
            .route("$connect", Arc::new(connect), false)?
            .route("$disconnect", Arc::new(disconnect), false)?
            .route("$default", Arc::new(Echo), true)
    })
    .await;
    let mut client = server.connect().await;
    let id = next_event(&mut connects).await["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/@connections/{}", server.endpoint(), encoded(&id));
    let http = reqwest::Client::new();
    let r = http.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(client.expect_close().await.0, 1000);
    let e = next_event(&mut events).await;
    assert_eq!(e["requestContext"]["disconnectStatusCode"], 1000);
    assert_eq!(
        e["requestContext"]["disconnectReason"],
        "Connection Closed Normally"
    );
    for r in [
        http.post(&url).body("x").send().await.unwrap(),
        http.get(&url).send().await.unwrap(),
        http.delete(&url).send().await.unwrap(),
    ] {
        assert_eq!(r.status(), 410);
        assert_eq!(r.headers()["x-amzn-errortype"], "GoneException");
        let v: Value = r.json().await.unwrap();
        assert!(v["message"].is_string());
    }
}

#[tokio::test]
async fn errors_have_aws_types() {
    let (server, _client, id) = server_and_client().await;
    let http = reqwest::Client::new();
    let check = |r: reqwest::Response, status: u16, error_type: &str| {
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["x-amzn-errortype"], error_type);
        assert!(r.headers().contains_key("x-amzn-requestid"));
        r
    };
    // Unknown but well-formed id: 410.
    let r = http
        .post(format!(
            "{}/@connections/AAAAAAAAAAAAAAA%3D",
            server.endpoint()
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    check(r, 410, "GoneException");
    // Malformed id: 400.
    let r = http
        .post(format!("{}/@connections/not-an-id", server.endpoint()))
        .body("x")
        .send()
        .await
        .unwrap();
    let v: Value = check(r, 400, "BadRequestException").json().await.unwrap();
    assert_eq!(v["message"], "Invalid connectionId: not-an-id");
    // Another stage: 403.
    let r = http
        .post(format!(
            "http://{}/prod/@connections/{}",
            server.addr,
            encoded(&id)
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    let v: Value = check(r, 403, "ForbiddenException").json().await.unwrap();
    assert_eq!(v["message"], "Forbidden");
    // Over 128 KiB: 413.
    let r = http
        .post(format!(
            "{}/@connections/{}",
            server.endpoint(),
            encoded(&id)
        ))
        .body(vec![b'a'; 128 * 1024 + 1])
        .send()
        .await
        .unwrap();
    check(r, 413, "PayloadTooLargeException");
    // Exactly 128 KiB is accepted.
    let r = http
        .post(format!(
            "{}/@connections/{}",
            server.endpoint(),
            encoded(&id)
        ))
        .body(vec![b'a'; 128 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Other methods.
    let r = http
        .put(format!(
            "{}/@connections/{}",
            server.endpoint(),
            encoded(&id)
        ))
        .send()
        .await
        .unwrap();
    check(r, 405, "MethodNotAllowedException");
}

#[tokio::test]
async fn callers_off_loopback_are_forbidden() {
    let (server, _client, id) = server_and_client().await;
    let request = axum::http::Request::post("/dev/@connections/x")
        .body(axum::body::Body::from("x"))
        .unwrap();
    let response = switchboard::management::handle(
        &server.gateway.management,
        Ok(switchboard::Id::parse(&id).unwrap()),
        "192.0.2.7:5000".parse().unwrap(),
        request,
    )
    .await;
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["x-amzn-errortype"], "ForbiddenException");
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_and_posts_answer_429_meanwhile() {
    let mut cfg = config();
    cfg.limits.max_outbox_bytes = 200 * 1024;
    let server = TestServer::start(cfg).await;
    let mut reader = server.connect().await;
    let reader_id = reader.chat_id().await;
    // A raw client that never reads after the handshake.
    let stalled = raw_ws(&server).await;
    let stalled_id = loop {
        let other = server
            .gateway
            .registry
            .local_connections()
            .iter()
            .map(|c| c.id().to_string())
            .find(|id| *id != reader_id);
        if let Some(id) = other {
            break id;
        }
        tokio::task::yield_now().await;
    };
    let http = reqwest::Client::new();
    let url = format!(
        "{}/@connections/{}",
        server.endpoint(),
        encoded(&stalled_id)
    );
    let payload = vec![b'z'; 100 * 1024];
    let mut refused = None;
    // The kernel's socket buffers take a few MiB before the outbox starts to fill.
    for i in 0..2000 {
        let r = http.post(&url).body(payload.clone()).send().await.unwrap();
        if r.status() != 200 {
            refused = Some((i, r));
            break;
        }
    }
    let (count, r) = refused.expect("the outbox fills up");
    assert!(count > 0);
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-amzn-errortype"], "LimitExceededException");
    // While it is being closed, posts keep answering 429; once it is gone, 410.
    tokio::time::timeout(WAIT, async {
        loop {
            let status = http
                .post(&url)
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if status == 410 {
                break;
            }
            assert_eq!(status, 429, "a closing slow consumer answers 429");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("the slow consumer is closed");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("switchboard_slow_consumers_closed_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_connections_closed_total{code=\"1008\"} 1\n"),
        "{metrics}"
    );
    // Others were served throughout.
    let r = http
        .post(format!(
            "{}/@connections/{}",
            server.endpoint(),
            encoded(&reader_id)
        ))
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(reader.recv().await, "still here");
    drop(stalled);
}
