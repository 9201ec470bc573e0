//! Several nodes on a real Redis: cross-node management calls, node death, Redis restarts.

mod common;

use std::time::{Duration, Instant};

use common::*;
use switchboard::cluster::ClusterConfig;

fn node_config(redis: &RedisServer, node: &str) -> switchboard::Config {
    let mut cfg = config();
    let mut cluster = ClusterConfig::new(redis.url(), node);
    cluster.node_ttl = Duration::from_secs(3);
    cluster.key_prefix = format!("test{}", redis.port);
    cfg.cluster = Some(cluster);
    cfg
}

async fn ready(server: &TestServer) -> bool {
    reqwest::get(server.http("/readyz"))
        .await
        .map(|r| r.status() == 200)
        .unwrap_or(false)
}

fn url_for(server: &TestServer, id: &str) -> String {
    format!(
        "{}/@connections/{}",
        server.endpoint(),
        id.replace('=', "%3D")
    )
}

async fn nodes(redis: &RedisServer) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b", "node-c"] {
        nodes.push(TestServer::start(node_config(redis, name)).await);
    }
    for node in &nodes {
        eventually(WAIT, || ready(node)).await;
    }
    nodes
}

#[tokio::test]
async fn any_node_answers_for_any_connection() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis).await;
    let mut client = nodes[0].connect().await;
    let id = client.chat_id().await;
    let http = reqwest::Client::new();

    let r = http
        .post(url_for(&nodes[1], &id))
        .body("via node b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(client.recv().await, "via node b");

    let r = http.get(url_for(&nodes[2], &id)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let info: serde_json::Value = r.json().await.unwrap();
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1");

    let r = http.delete(url_for(&nodes[1], &id)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(client.expect_close().await.0, 1000);
    // Gone everywhere once the connection's node has let it go.
    for node in &nodes {
        eventually(WAIT, || async {
            http.post(url_for(node, &id))
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                == 410
        })
        .await;
    }
    // Unknown ids are gone on every node without waiting for anyone.
    let r = http
        .post(url_for(&nodes[2], "AAAAAAAAAAAAAAA="))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
}

#[tokio::test]
async fn connections_of_a_killed_node_answer_410_within_the_heartbeat_ttl() {
    let redis = RedisServer::start().await;
    let survivor = TestServer::start(node_config(&redis, "survivor")).await;
    eventually(WAIT, || ready(&survivor)).await;
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nredis = \"{}\"\nnode_id = \"doomed\"\nnode_ttl_secs = 3\nkey_prefix = \"test{}\"\n",
            redis.url(),
            redis.port
        ),
    )
    .unwrap();
    let (mut doomed, addr, _logs) =
        spawn_binary(data.path(), &["--config", config.to_str().unwrap()]).await;
    eventually(WAIT, || async {
        reqwest::get(format!("http://{addr}/readyz"))
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    let mut client = Client::connect(&format!("ws://{addr}/dev")).await;
    let id = client.chat_id().await;
    let http = reqwest::Client::new();
    let r = http
        .post(url_for(&survivor, &id))
        .body("before")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(client.recv().await, "before");

    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();
    let died = Instant::now();
    eventually(Duration::from_secs(10), || async {
        http.post(url_for(&survivor, &id))
            .body("after")
            .send()
            .await
            .unwrap()
            .status()
            == 410
    })
    .await;
    assert!(
        died.elapsed() <= Duration::from_secs(4),
        "{:?}",
        died.elapsed()
    );
}

#[tokio::test]
async fn nodes_survive_a_redis_restart() {
    let mut redis = RedisServer::start().await;
    let a = TestServer::start(node_config(&redis, "node-a")).await;
    let b = TestServer::start(node_config(&redis, "node-b")).await;
    eventually(WAIT, || ready(&a)).await;
    eventually(WAIT, || ready(&b)).await;
    let mut client = a.connect().await;
    let id = client.chat_id().await;

    redis.kill();
    eventually(WAIT, || async { !ready(&a).await && !ready(&b).await }).await;
    // Local traffic goes on.
    client
        .send(r#"{"action":"sendmessage","data":"redis is down"}"#)
        .await;
    assert_eq!(client.recv().await, "redis is down");
    let r = reqwest::Client::new()
        .post(url_for(&a, &id))
        .body("local post")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(client.recv().await, "local post");
    // A remote call cannot be answered and says so.
    let r = reqwest::Client::new()
        .post(url_for(&b, &id))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);

    // Redis comes back empty: the nodes reconnect, re-announce, and cross-node calls resume.
    redis.restart().await;
    eventually(Duration::from_secs(20), || async {
        ready(&a).await && ready(&b).await
    })
    .await;
    let http = reqwest::Client::new();
    eventually(WAIT, || async {
        http.post(url_for(&b, &id))
            .body("back")
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert_eq!(client.recv().await, "back");
}
