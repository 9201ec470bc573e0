//! Abuse limits: connection caps, connection rate, message rate and the origin allow-list.

use std::net::SocketAddr;

use crate::common::*;
use switchboard::config::BuiltinApp;
use tokio::net::TcpSocket;

fn echo() -> switchboard::Config {
    let mut cfg = config();
    cfg.app = BuiltinApp::Echo;
    cfg
}

/// A handshake from a chosen loopback source address.
async fn handshake_from(
    source: &str,
    server: SocketAddr,
    extra: &[&str],
) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    stream
        .write_all(upgrade_request(server, "/dev", extra).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (String::from_utf8(head).unwrap(), stream)
}

#[tokio::test]
async fn the_global_connection_limit_answers_503() {
    let mut cfg = echo();
    cfg.limits.max_connections = 2;
    let server = TestServer::start(cfg).await;
    let first = server.connect().await;
    let _second = server.connect().await;
    let (head, _) = raw_request(server.addr, &upgrade_request(server.addr, "/dev", &[])).await;
    assert_eq!(status_of(&head), 503, "{head}");
    assert!(head.contains("Retry-After: 1"));
    first.close(1000, "making room").await;
    // The place is given back once the first connection's task has finished.
    let mut third = loop {
        let (head, stream) =
            raw_request(server.addr, &upgrade_request(server.addr, "/dev", &[])).await;
        if status_of(&head) == 101 {
            break stream;
        }
        tokio::task::yield_now().await;
    };
    use tokio::io::AsyncWriteExt;
    third
        .write_all(&client_frame(1, true, b"in"))
        .await
        .unwrap();
    assert_eq!(read_frame(&mut third).await, (1, b"in".to_vec()));
}

#[tokio::test]
async fn the_per_address_limit_answers_429_to_that_address_only() {
    let mut cfg = echo();
    cfg.limits.max_connections_per_ip = 1;
    let server = TestServer::start(cfg).await;
    let (head, _kept) = handshake_from("127.0.0.1", server.addr, &[]).await;
    assert_eq!(status_of(&head), 101);
    let (head, _) = handshake_from("127.0.0.1", server.addr, &[]).await;
    assert_eq!(status_of(&head), 429, "{head}");
    assert!(head.contains("Retry-After: 1"), "{head}");
    let (head, _) = handshake_from("127.0.0.2", server.addr, &[]).await;
    assert_eq!(status_of(&head), 101, "another address is not affected");
}

#[tokio::test]
async fn the_connection_rate_answers_429() {
    let mut cfg = echo();
    cfg.limits.max_new_connections_per_sec = 3;
    let server = TestServer::start(cfg).await;
    let mut statuses = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..6 {
        let (head, stream) =
            raw_request(server.addr, &upgrade_request(server.addr, "/dev", &[])).await;
        statuses.push(status_of(&head));
        kept.push(stream);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 101).count(),
        3,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 101 || *s == 429),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn the_message_rate_answers_too_many_requests_and_keeps_the_connection() {
    let mut cfg = echo();
    cfg.limits.max_messages_per_sec = 5;
    let server = TestServer::start(cfg).await;
    let mut c = server.connect().await;
    for i in 0..10 {
        c.send(&format!("m{i}")).await;
    }
    let mut echoed = 0;
    let mut throttled = 0;
    for _ in 0..10 {
        let frame = c.recv().await;
        if frame.starts_with(r#"{"message": "Too Many Requests", "connectionId":""#) {
            throttled += 1;
        } else {
            echoed += 1;
        }
    }
    assert!(
        echoed >= 5 && throttled >= 1,
        "echoed {echoed}, throttled {throttled}"
    );
    assert_eq!(echoed + throttled, 10);
}

#[tokio::test]
async fn origins_outside_the_allow_list_get_403() {
    let mut cfg = echo();
    cfg.limits.allowed_origins = vec!["https://chat.example.com".into()];
    let server = TestServer::start(cfg).await;
    let a = server.addr;
    let status = |extra: &'static [&'static str]| async move {
        status_of(&raw_request(a, &upgrade_request(a, "/dev", extra)).await.0)
    };
    assert_eq!(status(&["Origin: https://evil.example"]).await, 403);
    assert_eq!(status(&["Origin: https://chat.example.com"]).await, 101);
    assert_eq!(status(&[]).await, 101, "non-browser clients send no Origin");
}
