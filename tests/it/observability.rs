//! `/metrics`, `/readyz` and `/healthz` after real traffic.

use crate::common::*;

fn value(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let server = TestServer::start(config()).await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    let id = a.chat_id().await;
    b.chat_id().await;
    a.send(r#"{"action":"sendmessage","message":"hi"}"#).await;
    assert_eq!(b.recv().await, "hi");
    let http = reqwest::Client::new();
    let url = format!(
        "{}/@connections/{}",
        server.endpoint(),
        id.replace('=', "%3D")
    );
    assert_eq!(
        http.post(&url).body("x").send().await.unwrap().status(),
        200
    );
    assert_eq!(a.recv().await, "x");
    assert_eq!(
        http.post(format!(
            "{}/@connections/AAAAAAAAAAAAAAA%3D",
            server.endpoint()
        ))
        .body("x")
        .send()
        .await
        .unwrap()
        .status(),
        410
    );
    b.close(4000, "bye").await;
    let (head, _) = raw_request(server.addr, &upgrade_request(server.addr, "/nope", &[])).await;
    assert_eq!(status_of(&head), 404);

    let r = reqwest::get(server.http("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let m = r.text().await.unwrap();
    assert_eq!(value(&m, "switchboard_connections_opened_total"), 2);
    eventually(WAIT, || async {
        let m = server.metrics().await;
        m.contains("switchboard_connections_closed_total{code=\"4000\"} 1\n")
    })
    .await;
    assert_eq!(
        value(&m, "switchboard_messages_in_total{route=\"sendmessage\"}"),
        1
    );
    assert_eq!(
        value(&m, "switchboard_messages_in_total{route=\"$default\"}"),
        2
    );
    assert_eq!(
        value(&m, "switchboard_messages_in_total{route=\"$connect\"}"),
        2
    );
    assert!(value(&m, "switchboard_frames_out_total") >= 4);
    assert_eq!(
        value(
            &m,
            "switchboard_management_requests_total{method=\"POST\",status=\"200\"}"
        ),
        1
    );
    assert_eq!(
        value(
            &m,
            "switchboard_management_requests_total{method=\"POST\",status=\"410\"}"
        ),
        1
    );
    assert_eq!(
        value(&m, "switchboard_handshakes_rejected_total{status=\"404\"}"),
        1
    );
    assert_eq!(
        value(
            &m,
            "switchboard_integration_duration_seconds_count{route=\"sendmessage\"}"
        ),
        1
    );
    assert!(!m.contains("switchboard_cluster_redis_up"), "not clustered");
}

#[tokio::test]
async fn readyz_turns_503_while_draining() {
    use tower::ServiceExt;
    let server = TestServer::start(config()).await;
    assert_eq!(
        reqwest::get(server.http("/readyz")).await.unwrap().status(),
        200
    );
    assert_eq!(
        reqwest::get(server.http("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    server.gateway.begin_shutdown();
    let request = axum::http::Request::get("/readyz")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = switchboard::router(server.gateway.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}
