//! A cluster's Redis that stops answering (stopped with SIGSTOP, not killed): the node keeps
//! serving what needs no Redis at once, chat requests fail within their timeout with a clear
//! error, and the chat works again soon after Redis resumes.

use std::time::{Duration, Instant};

use crate::common::*;
use switchboard::config::ClusterConfig;

/// How long Redis stays stopped.
const STALL: Duration = Duration::from_secs(5);
/// What "at once" allows on a loaded test machine.
const PROMPT: Duration = Duration::from_millis(500);

/// Posts to `id` through the node's `@connections` and waits for `client` to get it.
async fn post_arrives(server: &TestServer, client: &mut Client, id: &str, text: &str) -> Duration {
    let started = Instant::now();
    let url = format!(
        "{}/@connections/{}",
        server.endpoint(),
        id.replace('=', "%3D")
    );
    let r = reqwest::Client::new()
        .post(url)
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(client.recv().await, text);
    started.elapsed()
}

/// Opens a connection and waits for its first answer.
async fn new_connection(server: &TestServer) -> (Client, Duration) {
    let started = Instant::now();
    let mut client = server.connect().await;
    client.chat_id().await;
    (client, started.elapsed())
}

fn send(room: &str, text: &str) -> serde_json::Value {
    serde_json::json!({"action": "send", "room": room, "text": text, "clientId": text})
}

/// The answer to the `send` of `text`: the stored message (its acknowledgement) or an error.
/// (A write that timed out may still be stored once Redis resumes: its message is skipped.)
async fn answer(client: &mut Client, text: &str) -> serde_json::Value {
    loop {
        let frame = client.recv_json().await;
        if (frame["type"] == "message" || frame["type"] == "error") && frame["clientId"] == text {
            return frame;
        }
    }
}

#[tokio::test]
async fn a_stalled_redis_delays_neither_posts_nor_connections_and_the_chat_recovers() {
    let redis = RedisServer::start().await;
    let mut cfg = config();
    let mut cluster = ClusterConfig::new(redis.url(), "node-a");
    cluster.key_prefix = format!("stall{}", redis.port);
    cfg.cluster = Some(cluster);
    cfg.chat.rate_per_sec = 1000;
    cfg.chat.rate_burst = 1000;
    let node = TestServer::start(cfg).await;
    eventually(WAIT, || node.ready()).await;
    let mut alice = node.connect().await;
    alice
        .send_json(serde_json::json!({"action": "join", "room": "ops", "name": "alice"}))
        .await;
    alice.next_of("joined").await;
    alice.send_json(send("ops", "before")).await;
    assert_eq!(answer(&mut alice, "before").await["id"], 1);
    let mut plain = node.connect().await;
    let plain_id = plain.chat_id().await;

    let (mut carol, _) = new_connection(&node).await;

    redis.signal("-STOP");
    let stopped = Instant::now();
    // A write waits for Redis (on the chat's I/O thread) at most its timeout; a join needs the
    // other nodes to see it, which they cannot: it fails within its own timeout.
    alice.send_json(send("ops", "during-1")).await;
    carol
        .send_json(serde_json::json!({"action": "join", "room": "ops", "name": "carol"}))
        .await;
    // Meanwhile posts to this node's connections and new connections go on at once.
    let took = post_arrives(&node, &mut plain, &plain_id, "posted while stalled").await;
    assert!(took < PROMPT, "a post took {took:?}");
    let (_dave, took) = new_connection(&node).await;
    assert!(took < PROMPT, "a new connection took {took:?}");
    // The chat's store thread does not wait for the write: what needs only memory is answered.
    let asked = Instant::now();
    plain
        .send_json(serde_json::json!({"action": "who", "room": "ops"}))
        .await;
    let who = plain.next_of("members").await;
    assert_eq!(who["members"][0]["name"], "alice");
    assert!(asked.elapsed() < PROMPT, "who took {:?}", asked.elapsed());

    let refused = answer(&mut alice, "during-1").await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{refused}"
    );
    let waited = stopped.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "the write waited {waited:?}"
    );
    // Redis is known not to answer now: the next write fails at once.
    let asked = Instant::now();
    alice.send_json(send("ops", "during-2")).await;
    let refused = answer(&mut alice, "during-2").await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert!(asked.elapsed() < PROMPT, "took {:?}", asked.elapsed());
    let took = post_arrives(&node, &mut plain, &plain_id, "still stalled").await;
    assert!(took < PROMPT, "a post took {took:?}");

    let refused = carol.next_of("error").await;
    assert_eq!(
        (refused["action"].as_str(), refused["code"].as_str()),
        (Some("join"), Some("unavailable")),
        "{refused}"
    );
    let waited = stopped.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "the join waited {waited:?}"
    );
    let (_erin, took) = new_connection(&node).await;
    assert!(took < PROMPT, "a new connection took {took:?}");
    assert!(stopped.elapsed() < STALL, "the checks fit in the stall");

    // The stall itself is what is tested: Redis stays stopped for its full length.
    tokio::time::sleep(STALL.saturating_sub(stopped.elapsed())).await;
    redis.signal("-CONT");
    let resumed = Instant::now();
    let mut attempt = 0;
    let stored = loop {
        attempt += 1;
        let text = format!("after-{attempt}");
        alice.send_json(send("ops", &text)).await;
        let frame = answer(&mut alice, &text).await;
        if frame["type"] == "message" {
            break frame;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(2),
            "still refused {:?} after Redis resumed: {frame}",
            resumed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        resumed.elapsed() < Duration::from_secs(2),
        "the chat answered {:?} after Redis resumed",
        resumed.elapsed()
    );
    assert!(stored["id"].as_u64().unwrap() >= 2);
    eprintln!(
        "chat stored again {:?} after Redis resumed",
        resumed.elapsed()
    );

    // Joins work again too, and see who is there.
    eventually(WAIT, || node.ready()).await;
    carol
        .send_json(serde_json::json!({"action": "join", "room": "ops", "name": "carol"}))
        .await;
    let joined = carol.next_of("joined").await;
    let names: Vec<&str> = joined["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "carol"]);
    eprintln!(
        "a join answered {:?} after Redis resumed",
        resumed.elapsed()
    );
}
