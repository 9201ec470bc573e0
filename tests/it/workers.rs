//! Connections on worker threads (`workers`): the chat's order across workers, broadcasts and
//! management calls to connections on every worker. (`scripts/test.sh` also runs the gateway's
//! and the chat's tests with `SWITCHBOARD_TEST_WORKERS=2`.)

use std::collections::HashSet;

use crate::common::*;
use serde_json::{Value, json};
use switchboard::apps::chat::ChatConfig;
use switchboard::config::Config;

fn with_workers(workers: usize) -> Config {
    Config {
        workers,
        // Every sender sends back to back.
        chat: ChatConfig {
            rate_per_sec: 0,
            ..ChatConfig::default()
        },
        ..config()
    }
}

/// Which of `workers` workers an id names: its first character's value, modulo `workers`.
fn owner(id: &str, workers: usize) -> usize {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    ALPHABET.find(&id[..1]).expect("a base64 character") % workers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_sees_each_room_in_its_commit_order_while_many_rooms_send_at_once() {
    const ROOMS: usize = 6;
    const MEMBERS: usize = 5;
    const EACH: usize = 12;
    let server = TestServer::start(with_workers(3)).await;
    let mut members = Vec::new();
    let mut owners = HashSet::new();
    for room in 0..ROOMS {
        for member in 0..MEMBERS {
            let mut client = server.connect().await;
            let joined = client
                .join(&format!("room-{room}"), &format!("m{room}-{member}"))
                .await;
            let id = joined["you"]["connectionId"].as_str().unwrap().to_owned();
            owners.insert(owner(&id, 3));
            members.push((room, member, client));
        }
    }
    // Every member sends EACH messages at once, without waiting for its own, then reads its
    // room until it has every member's.
    let total = MEMBERS * EACH;
    let tasks: Vec<_> = members
        .into_iter()
        .map(|(room, member, mut client)| {
            tokio::spawn(async move {
                let name = format!("room-{room}");
                for seq in 0..EACH {
                    client
                        .send_json(
                            json!({"action":"send","room":name,"text":format!("{member}:{seq}")}),
                        )
                        .await;
                }
                let mut seen: Vec<(u64, String)> = Vec::new();
                while seen.len() < total {
                    let frame: Value = client.recv_json().await;
                    if frame["type"] == "message" {
                        assert_eq!(frame["room"], name.as_str(), "{frame}");
                        seen.push((
                            frame["id"].as_u64().unwrap(),
                            frame["text"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
                (room, seen)
            })
        })
        .collect();
    let mut orders: Vec<Option<Vec<(u64, String)>>> = vec![None; ROOMS];
    for task in tasks {
        let (room, seen) = task.await.unwrap();
        let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids,
            (1..=total as u64).collect::<Vec<_>>(),
            "room {room}: every message once, in id order"
        );
        for member in 0..MEMBERS {
            let own: Vec<&str> = seen
                .iter()
                .map(|(_, text)| text.as_str())
                .filter(|text| text.starts_with(&format!("{member}:")))
                .collect();
            let sent: Vec<String> = (0..EACH).map(|seq| format!("{member}:{seq}")).collect();
            assert_eq!(
                own, sent,
                "room {room}: member {member}'s messages in its order"
            );
        }
        match &orders[room] {
            None => orders[room] = Some(seen),
            Some(first) => assert_eq!(first, &seen, "room {room}: one order for every member"),
        }
    }
    assert!(
        owners.iter().all(|w| *w < 3),
        "every id names one of the three workers: {owners:?}"
    );
}

#[tokio::test]
async fn broadcasts_and_management_posts_reach_connections_on_every_worker() {
    let server = TestServer::start(with_workers(2)).await;
    let mut clients = Vec::new();
    let mut by_worker = [0usize; 2];
    while clients.len() < 16 || by_worker.contains(&0) {
        assert!(
            clients.len() < 200,
            "connections keep landing on one worker"
        );
        let mut client = server.connect().await;
        let id = client.chat_id().await;
        by_worker[owner(&id, 2)] += 1;
        clients.push((id, client));
    }
    // The articles' broadcast: everyone but the sender.
    clients[0]
        .1
        .send(r#"{"action":"sendmessage","message":"to all"}"#)
        .await;
    for (_, client) in &mut clients[1..] {
        assert_eq!(client.recv().await, "to all");
    }
    // A management post to each connection, whichever worker holds it.
    let http = reqwest::Client::new();
    for (id, client) in &mut clients {
        let r = http
            .post(format!("{}/@connections/{id}", server.endpoint()))
            .body(format!("for {id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(client.recv().await, format!("for {id}"));
    }
    // And a connection that left answers 410.
    let (gone, client) = clients.pop().unwrap();
    client.close(1000, "bye").await;
    server.wait_for_connections(clients.len()).await;
    let r = http
        .post(format!("{}/@connections/{gone}", server.endpoint()))
        .body("late")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
}

/// The binary's `listening` log line with `extra` serve arguments.
async fn listening_line(extra: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    spawn_binary_listening(data.path(), extra).await.1
}

#[tokio::test]
async fn with_workers_the_binary_keeps_one_shared_runtime_thread() {
    // Background work only: a second thread would be woken beside the workers for nothing.
    let line = listening_line(&["--workers", "2"]).await;
    assert!(line.contains("workers=2 shared_threads=1"), "{line}");
    // Without workers the shared runtime serves the connections on every core.
    let cores = std::thread::available_parallelism().unwrap().get();
    let line = listening_line(&["--workers", "0"]).await;
    assert!(
        line.contains(&format!("workers=0 shared_threads={cores}")),
        "{line}"
    );
}

#[test]
fn more_workers_than_an_id_can_name_is_a_configuration_error() {
    let config = Config {
        workers: 65,
        ..config()
    };
    let error = switchboard::Server::new(config).unwrap_err().to_string();
    assert!(error.contains("workers"), "{error}");
}
