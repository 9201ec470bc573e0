//! Several nodes on a real Redis: cross-node management calls, node death, Redis restarts.

use std::time::{Duration, Instant};

use crate::chat_common::texts;
use crate::common::*;
use switchboard::config::ClusterConfig;

fn node_config(redis: &RedisServer, node: &str) -> switchboard::Config {
    let mut cfg = config();
    let mut cluster = ClusterConfig::new(redis.url(), node);
    cluster.node_ttl = Duration::from_secs(3);
    cluster.key_prefix = format!("test{}", redis.port);
    cfg.cluster = Some(cluster);
    cfg
}

fn url_for(server: &TestServer, id: &str) -> String {
    format!(
        "{}/@connections/{}",
        server.endpoint(),
        id.replace('=', "%3D")
    )
}

/// Waits until a POST of `body` to `id` through `server`'s `@connections` answers `status`
/// (a 410 delivers nothing; a 200 delivers once).
async fn eventually_posts(
    http: &reqwest::Client,
    server: &TestServer,
    id: &str,
    body: &'static str,
    status: u16,
    limit: Duration,
) {
    eventually(limit, || async {
        http.post(url_for(server, id))
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            == status
    })
    .await;
}

async fn nodes(redis: &RedisServer) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b", "node-c"] {
        nodes.push(TestServer::start(node_config(redis, name)).await);
    }
    for node in &nodes {
        eventually(WAIT, || node.ready()).await;
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

    // Known to the other nodes once its node has written it to Redis (behind the handshake):
    // a 410 until then delivers nothing, the first 200 delivers once.
    eventually_posts(&http, &nodes[1], &id, "via node b", 200, WAIT).await;
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
        eventually_posts(&http, node, &id, "x", 410, WAIT).await;
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
    eventually(WAIT, || survivor.ready()).await;
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
    eventually(WAIT, || is_ready(&addr)).await;
    let mut client = Client::connect(&format!("ws://{addr}/dev")).await;
    let id = client.chat_id().await;
    let http = reqwest::Client::new();
    // Known to the survivor once the doomed node has written it to Redis.
    eventually_posts(&http, &survivor, &id, "before", 200, WAIT).await;
    assert_eq!(client.recv().await, "before");

    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();
    let died = Instant::now();
    eventually_posts(&http, &survivor, &id, "after", 410, Duration::from_secs(10)).await;
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
    eventually(WAIT, || a.ready()).await;
    eventually(WAIT, || b.ready()).await;
    let mut client = a.connect().await;
    let id = client.chat_id().await;

    redis.kill();
    eventually(WAIT, || async { !a.ready().await && !b.ready().await }).await;
    // The chat cannot store a lobby message now: the sender is told, nothing is half done.
    client
        .send(r#"{"action":"sendmessage","data":"redis is down"}"#)
        .await;
    let refused: serde_json::Value = serde_json::from_str(&client.recv().await).unwrap();
    assert_eq!(refused["code"], "unavailable");
    // Traffic that needs no Redis goes on.
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
        a.ready().await && b.ready().await
    })
    .await;
    let http = reqwest::Client::new();
    eventually_posts(&http, &b, &id, "back", 200, WAIT).await;
    assert_eq!(client.recv().await, "back");
}

async fn join(client: &mut Client, room: &str, name: &str) -> serde_json::Value {
    client
        .send_json(serde_json::json!({"action": "join", "room": room, "name": name}))
        .await;
    client.next_of("joined").await
}

#[tokio::test]
async fn rooms_presence_and_history_span_every_node() {
    let redis = RedisServer::start_with(true).await;
    let nodes = nodes(&redis).await;
    let mut alice = nodes[0].connect().await;
    let mut bob = nodes[1].connect().await;
    join(&mut alice, "general", "alice").await;
    let joined = join(&mut bob, "general", "bob").await;
    let names: Vec<&str> = joined["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"], "members of every node");
    let presence = alice.next_of("presence").await;
    assert_eq!(
        (
            presence["event"].as_str(),
            presence["member"]["name"].as_str()
        ),
        (Some("join"), Some("bob"))
    );

    alice
        .send_json(serde_json::json!({"action": "send", "room": "general", "text": "hi from a", "clientId": "a-1"}))
        .await;
    let at_bob = bob.next_of("message").await;
    let at_alice = alice.next_of("message").await;
    assert_eq!(at_bob["id"], 1);
    assert_eq!(at_alice["clientId"], "a-1", "the sender's acknowledgement");
    bob.send_json(serde_json::json!({"action": "send", "room": "general", "text": "hi from b"}))
        .await;
    assert_eq!(alice.next_of("message").await["id"], 2);
    alice
        .send_json(
            serde_json::json!({"action": "react", "room": "general", "id": 1, "emoji": "👏"}),
        )
        .await;
    let reaction = bob.next_of("reaction").await;
    assert_eq!(
        (reaction["id"].as_u64(), reaction["count"].as_u64()),
        (Some(1), Some(1))
    );

    // A third node serves the history.
    let mut carol = nodes[2].connect().await;
    let joined = join(&mut carol, "general", "carol").await;
    assert_eq!(texts(&joined["messages"]), ["hi from a", "hi from b"]);
    assert_eq!(joined["messages"][0]["reactions"]["👏"], 1);
    assert_eq!(joined["lastId"], 2);

    // Leaving is seen on the other nodes.
    bob.close(1000, "bye").await;
    let left = carol.next_of("presence").await;
    let left = if left["event"] == "leave" {
        left
    } else {
        carol.next_of("presence").await
    };
    assert_eq!(
        (left["event"].as_str(), left["member"]["name"].as_str()),
        (Some("leave"), Some("bob"))
    );
}

#[tokio::test]
async fn the_articles_broadcast_reaches_plain_clients_on_every_node() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis).await;
    let mut a = nodes[0].connect().await;
    let mut c = nodes[2].connect().await;
    a.chat_id().await;
    c.chat_id().await;
    a.send(r#"{"action":"sendmessage","message":"everyone else"}"#)
        .await;
    assert_eq!(c.recv().await, "everyone else");
    c.send(r#"{"action":"sendMessage","data":"everyone"}"#)
        .await;
    assert_eq!(a.recv().await, "everyone", "article 1 goes to everyone");
    assert_eq!(c.recv().await, "everyone", "the sender included");
}

#[tokio::test]
async fn each_rooms_messages_arrive_in_id_order_on_every_node() {
    let redis = RedisServer::start().await;
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b", "node-c"] {
        let mut cfg = node_config(&redis, name);
        // Senders here send faster than the chat's per-person rate allows.
        cfg.chat.rate_per_sec = 10_000;
        cfg.chat.rate_burst = 10_000;
        nodes.push(TestServer::start(cfg).await);
    }
    for node in &nodes {
        eventually(WAIT, || node.ready()).await;
    }
    let mut watcher = nodes[2].connect().await;
    join(&mut watcher, "race", "watcher").await;
    let mut senders = Vec::new();
    for (i, node) in nodes[..2].iter().enumerate() {
        let mut s = node.connect().await;
        join(&mut s, "race", &format!("sender{i}")).await;
        senders.push(s);
    }
    let per_sender = 100;
    let mut tasks = Vec::new();
    for (i, mut s) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..per_sender {
                s.send_json(serde_json::json!({"action": "send", "room": "race", "text": format!("{i}-{n}")}))
                    .await;
            }
            s
        }));
    }
    let mut ids = Vec::new();
    while ids.len() < 2 * per_sender {
        ids.push(watcher.next_of("message").await["id"].as_u64().unwrap());
    }
    let expected: Vec<u64> = (1..=2 * per_sender as u64).collect();
    assert_eq!(ids, expected);
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn chat_writes_while_redis_is_down_are_refused_not_lost() {
    let mut redis = RedisServer::start_with(true).await;
    let a = TestServer::start(node_config(&redis, "node-a")).await;
    eventually(WAIT, || a.ready()).await;
    let mut alice = a.connect().await;
    join(&mut alice, "ops", "alice").await;
    alice
        .send_json(
            serde_json::json!({"action": "send", "room": "ops", "text": "before", "clientId": "1"}),
        )
        .await;
    assert_eq!(alice.next_of("message").await["id"], 1);

    redis.kill();
    eventually(WAIT, || async { !a.ready().await }).await;
    alice
        .send_json(
            serde_json::json!({"action": "send", "room": "ops", "text": "during", "clientId": "2"}),
        )
        .await;
    let error = alice.next_of("error").await;
    assert_eq!(error["code"], "unavailable");
    assert_eq!(error["clientId"], "2");

    redis.restart().await;
    eventually(Duration::from_secs(20), || a.ready()).await;
    let mut sent = None;
    // The store reconnects on its next write.
    for attempt in 0..50 {
        alice
            .send_json(serde_json::json!({"action": "send", "room": "ops", "text": "after", "clientId": format!("3-{attempt}")}))
            .await;
        let frame = loop {
            let f = alice.recv_json().await;
            if f["type"] == "message" || f["type"] == "error" {
                break f;
            }
        };
        if frame["type"] == "message" {
            sent = Some(frame);
            break;
        }
    }
    let sent = sent.expect("writes succeed again once Redis is back");
    assert_eq!(
        sent["id"], 2,
        "the id after the last stored one: nothing was acknowledged and lost"
    );
    let mut bob = a.connect().await;
    let joined = join(&mut bob, "ops", "bob").await;
    assert_eq!(texts(&joined["messages"]), ["before", "after"]);
}
