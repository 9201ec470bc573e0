//! The bench tool, run briefly against a real server.

use crate::common::*;
use switchboard_bench::{
    FanoutOptions, IdleOptions, PostOptions, RoomsOptions, run_fanout, run_fanout_then, run_idle,
    run_post, run_rooms,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_reports_deliveries_and_latency() {
    let server = TestServer::start(config()).await;
    let mut options = FanoutOptions::new(server.ws_url(), 20);
    options.senders = 2;
    options.rate = 20.0;
    options.duration = 1.0;
    options.threads = Some(2);
    options.source_ips = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
    options.pid = vec![std::process::id()];
    let report = tokio::task::spawn_blocking(move || run_fanout(&options))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.connected, 20);
    assert_eq!(report.connect_errors, 0);
    assert!(report.sent >= 30, "{report:?}");
    assert_eq!(report.expected, report.sent * 19);
    assert_eq!(report.delivered, report.expected, "{report:?}");
    assert_eq!(report.early_closes, 0);
    assert!(report.latency.p50_us > 0 && report.latency.p50_us <= report.latency.max_us);
    assert!(report.server_cpu_us_per_delivery.is_some());
    assert!(report.server_tree_cpu_secs.unwrap() >= report.server_cpu_secs.unwrap() - 0.011);
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    for key in [
        "sent",
        "delivered",
        "expected",
        "delivery_ratio",
        "delivered_per_sec",
    ] {
        assert!(json[key].is_number(), "{key} in {json}");
    }
    for key in ["p50_us", "p90_us", "p99_us", "max_us"] {
        assert!(json["latency"][key].is_u64(), "{key} in {json}");
    }
    assert!(report.table().contains("delivery ratio           1.0000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_up_is_left_out_and_connections_outlive_the_report() {
    let server = TestServer::start(config()).await;
    let mut options = FanoutOptions::new(server.ws_url(), 5);
    options.senders = 1;
    options.rate = 20.0;
    options.warmup = 1.0;
    options.duration = 1.0;
    options.threads = Some(1);
    options.connect_concurrency = 1;
    let metrics = server.http("/metrics");
    let addr = metrics["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let report = tokio::task::spawn_blocking(move || {
        run_fanout_then(&options, |_| {
            // Still connected while the report is handed over.
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                stream,
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            assert!(text.contains("switchboard_connections_open 5\n"), "{text}");
        })
    })
    .await
    .unwrap()
    .unwrap();
    // One second of sending is counted, not two.
    assert!((15..=25).contains(&report.sent), "{report:?}");
    assert_eq!(report.delivered, report.sent * 4, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reaches_every_client_through_the_management_api() {
    let server = TestServer::start(config()).await;
    let options = PostOptions {
        url: server.ws_url(),
        endpoint: None,
        clients: 10,
        posters: 2,
        duration: 1.0,
        payload: 64,
        hello: r#"{"action":"whoami"}"#.into(),
        threads: Some(2),
        pid: vec![std::process::id()],
        json: false,
    };
    let report = tokio::task::spawn_blocking(move || run_post(&options))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.clients, 10, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.posts > 10, "{report:?}");
    assert_eq!(report.delivered, report.posts, "{report:?}");
    assert!(report.server_cpu_us_per_post.is_some());
    assert!(report.table().contains("posts/s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_expects_one_delivery_per_message() {
    let mut config = config();
    config.app = switchboard::config::BuiltinApp::Echo;
    let server = TestServer::start(config).await;
    let mut options = FanoutOptions::new(server.ws_url(), 4);
    options.senders = 4;
    options.echo = true;
    options.rate = 20.0;
    options.duration = 1.0;
    let report = tokio::task::spawn_blocking(move || run_fanout(&options))
        .await
        .unwrap()
        .unwrap();
    assert!(report.sent >= 60, "{report:?}");
    assert_eq!(report.expected, report.sent, "{report:?}");
    assert_eq!(report.delivered, report.sent, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reports_connects_and_memory() {
    let server = TestServer::start(config()).await;
    let options = IdleOptions {
        url: server.ws_url(),
        clients: 50,
        pid: Some(std::process::id()),
        source_ips: Vec::new(),
        threads: Some(1),
        json: true,
    };
    let report = tokio::task::spawn_blocking(move || run_idle(&options))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.connected, 50);
    assert!(report.connects_per_sec > 0.0);
    assert!(report.rss_bytes_per_connection.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_left_out_and_urls_take_turns() {
    let server = TestServer::start(config()).await;
    let mut options = FanoutOptions::new(server.ws_url(), 12);
    // Two URLs for one server: the clients alternate between them.
    options.url.push(format!("{}/", server.ws_url()));
    options.senders = 2;
    options.stall = 2;
    // 14 MB for each stalled client: more than the kernel buffers of a loopback socket
    // (about 4 MB) and its 1 MiB outbox hold.
    options.rate = 500.0;
    options.payload = 3500;
    options.duration = 4.0;
    options.threads = Some(1);
    let report = tokio::task::spawn_blocking(move || run_fanout(&options))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.connected, 12);
    assert_eq!(report.stalled, 2);
    assert_eq!(report.url.matches("ws://").count(), 2);
    // Every reading client but the sender gets every message; the stalled ones are not counted.
    assert_eq!(report.expected, report.sent * 9, "{report:?}");
    assert_eq!(report.delivered, report.expected, "{report:?}");
    assert_eq!(report.early_closes, 0);
    assert!(report.table().contains("stalled clients"));
    // The server closed both stalled clients for not reading.
    eventually(std::time::Duration::from_secs(10), || async {
        let metrics = server.metrics().await;
        metrics.contains("switchboard_slow_consumers_closed_total 2\n")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_joins_and_reports_each_messages_last_arrival() {
    let server = TestServer::start(config()).await;
    // Two "processes" of 10 clients each, in 3 rooms: this one is clients 10..20 of 20.
    let mut options = RoomsOptions::new(server.ws_url(), 10);
    options.first_index = 10;
    options.rooms = 3;
    options.room_prefix = format!("bench-{}-", std::process::id());
    options.senders = 3;
    options.rate = 4.0;
    options.duration = 1.0;
    options.drain = 1.0;
    options.threads = Some(2);
    options.per_message = true;
    options.per_second = true;
    let report = tokio::task::spawn_blocking(move || run_rooms(&options))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.connected, report.joined), (10, 10), "{report:?}");
    assert_eq!(report.join_failures, 0);
    assert_eq!(report.sent, 12, "3 senders x 4 msg/s x 1 s: {report:?}");
    // Clients 10..20 in rooms g % 3: 10, 13, 16, 19 in room 1; 11, 14, 17 in room 2; 12, 15,
    // 18 in room 0. The senders are 10, 11 and 12, one in each room, and get their own
    // messages back: every message reaches its room's members here.
    let arrivals = report.arrivals.as_ref().unwrap();
    assert_eq!(arrivals.len(), 12, "{report:?}");
    let mut counts: Vec<u64> = arrivals.iter().map(|a| a.count).collect();
    counts.sort_unstable();
    assert_eq!(counts, [3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4]);
    assert_eq!(report.delivered, 40);
    for a in arrivals {
        assert!(a.send_us >= report.start_us && a.first_us <= a.last_us && a.send_us < a.first_us);
    }
    assert!(report.last_arrival.max_us >= report.last_arrival.p50_us);
    let seconds = report.seconds.as_ref().unwrap();
    assert_eq!(
        seconds
            .iter()
            .flat_map(|s| &s.counts)
            .map(|(_, c)| c)
            .sum::<u64>(),
        40
    );
    assert_eq!(report.early_closes, 0);
    assert!(report.table().contains("10 joined 3 rooms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_without_rooms_broadcasts_to_the_lobby() {
    let server = TestServer::start(config()).await;
    let mut options = RoomsOptions::new(server.ws_url(), 8);
    options.senders = 2;
    options.rate = 2.0;
    options.offset = 0.2;
    options.duration = 1.0;
    options.drain = 1.0;
    options.threads = Some(1);
    let report = tokio::task::spawn_blocking(move || run_rooms(&options))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.joined, 0);
    assert_eq!(report.sent, 4, "{report:?}");
    // `sendmessage` with `message`: everyone but the sender.
    assert_eq!(report.delivered, 4 * 7, "{report:?}");
    assert_eq!(report.messages, 4);
    assert!(report.arrivals.is_none() && report.seconds.is_none());
}
