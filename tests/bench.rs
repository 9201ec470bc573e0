//! The bench tool, run briefly against a real server.

mod common;

use common::*;
use switchboard::bench::{FanoutOptions, IdleOptions, run_fanout, run_idle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_reports_deliveries_and_latency() {
    let server = TestServer::start(config()).await;
    let mut options = FanoutOptions::new(server.ws_url(), 20);
    options.senders = 2;
    options.rate = 20.0;
    options.duration = 1.0;
    options.threads = Some(2);
    options.source_ips = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
    options.pid = Some(std::process::id());
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
