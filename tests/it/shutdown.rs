//! Graceful shutdown: every connection is closed with 1001 and gets its `$disconnect`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use switchboard::api::Api;
use switchboard::api::SelectionExpression;
use switchboard::integration::echo::Echo;

#[tokio::test]
async fn shutdown_closes_everyone_with_1001_and_runs_disconnect() {
    let (disconnect, mut events) = Recorder::new("disconnect");
    let server_api = |_| {
        Api::new(SelectionExpression::default())
            .route("$disconnect", Arc::new(disconnect), false)?
            .route("$default", Arc::new(Echo), true)
    };
    let mut server = TestServer::with_api(config(), server_api).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = server.connect().await;
        c.send("ready?").await;
        assert_eq!(c.recv().await, "ready?");
        clients.push(c);
    }
    let addr = server.addr;
    let stopping = tokio::spawn(async move { server.stop().await });
    for c in &mut clients {
        assert_eq!(c.expect_close().await, (1001, "Going away".to_owned()));
    }
    for _ in 0..3 {
        let e = next_event(&mut events).await;
        assert_eq!(e["requestContext"]["disconnectStatusCode"], 1001);
    }
    stopping.await.unwrap().unwrap();
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_does_not_wait_past_the_drain_deadline() {
    let mut cfg = config();
    cfg.drain_timeout = Duration::from_millis(500);
    let mut server = TestServer::start(cfg).await;
    // A client that never answers the close frame.
    let _silent = raw_ws(&server).await;
    let started = Instant::now();
    server.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
