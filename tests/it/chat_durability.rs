//! Durability with the real binary: `kill -9` in the middle of traffic loses no message that
//! any client was sent.

use std::collections::BTreeMap;

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;

/// Starts `switchboard serve` on a free port over `data_dir`, with the chat's rate limit off
/// (set in the configuration file); returns it and its address.
async fn spawn_server(data_dir: &std::path::Path) -> (Child, String) {
    let config = data_dir.join("switchboard.toml");
    std::fs::write(&config, "[chat]\nrate_per_sec = 0\n").unwrap();
    let (child, addr, log) = spawn_binary(data_dir, &["--config", config.to_str().unwrap()]).await;
    drain_log(log);
    (child, addr)
}

#[tokio::test]
async fn kill_9_loses_no_message_a_client_was_sent() {
    let data = tempfile::tempdir().unwrap();
    let (mut server, addr) = spawn_server(data.path()).await;
    let url = format!("ws://{addr}/dev");

    // An articles-style client's message, sent back to it: it was delivered, so it must
    // be in the lobby's history after the crash.
    let mut plain = Client::connect(&url).await;
    plain
        .send(r#"{"action":"sendmessage","data":"from the article"}"#)
        .await;
    assert_eq!(plain.recv().await, "from the article");

    // A burst of messages; the server is killed while acknowledgements are still arriving.
    let mut alice = Client::connect(&url).await;
    alice
        .send_json(json!({"action":"join","room":"r","name":"alice"}))
        .await;
    assert_eq!(alice.recv_json().await["type"], "joined");
    const SENT: usize = 1000;
    for i in 0..SENT {
        alice
            .send_json(json!({"action":"send","room":"r","text":format!("m{i}")}))
            .await;
    }
    let mut acked = BTreeMap::new();
    let mut killed = false;
    loop {
        let frame = tokio::time::timeout(WAIT, alice.ws.next())
            .await
            .expect("a frame or the end in time");
        let Some(Ok(Message::Text(text))) = frame else {
            break;
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "message", "{v}");
        acked.insert(
            v["id"].as_u64().unwrap(),
            v["text"].as_str().unwrap().to_owned(),
        );
        if acked.len() == 300 && !killed {
            server.start_kill().unwrap();
            killed = true;
        }
        if acked.len() == SENT {
            break;
        }
    }
    assert!(killed, "the server was killed mid-traffic");
    let status = server.wait().await.unwrap();
    assert!(!status.success(), "killed, not stopped: {status:?}");

    let (mut server, addr) = spawn_server(data.path()).await;
    let url = format!("ws://{addr}/dev");
    let mut bob = Client::connect(&url).await;
    bob.send_json(json!({"action":"join","room":"r","name":"bob","since":0}))
        .await;
    let joined = bob.recv_json().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let stored: BTreeMap<u64, String> = joined["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (id, text) in &acked {
        assert_eq!(
            stored.get(id),
            Some(text),
            "acknowledged message {id} was lost"
        );
    }
    // Ids are contiguous from 1, and the next one follows the last stored.
    let last = joined["lastId"].as_u64().unwrap();
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    assert!(last as usize >= acked.len());
    eprintln!("acknowledged {} of {SENT}; {last} stored", acked.len());
    bob.send_json(json!({"action":"send","room":"r","text":"after"}))
        .await;
    assert_eq!(bob.recv_json().await["id"], last + 1);

    bob.send_json(json!({"action":"history","room":"lobby"}))
        .await;
    let err = bob.recv_json().await;
    assert_eq!(err["code"], "not_member");
    bob.send_json(json!({"action":"join","room":"lobby"})).await;
    let lobby = bob.recv_json().await;
    assert_eq!(lobby["messages"][0]["text"], "from the article");

    server.start_kill().unwrap();
    server.wait().await.unwrap();
}
