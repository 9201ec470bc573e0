//! Chat test helpers: a server on a data directory the test chooses (to restart it), and
//! JSON conveniences on the shared test client.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard::apps::chat::ChatConfig;
use switchboard::config::Config;
use switchboard::{Error, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::common::Client;

/// A chat server on `dir`, which outlives it so that the next one finds the same data.
pub struct ChatServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), Error>>>,
}

impl ChatServer {
    pub async fn start(dir: &Path, chat: ChatConfig) -> Self {
        let config = Config {
            data_dir: dir.to_owned(),
            chat,
            ..Config::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::new(config).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        ChatServer {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/dev", self.addr)
    }

    pub async fn connect(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// Stops gracefully and waits until the chat has closed its store.
    pub async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the server stops")
            .expect("no panic")
            .expect("a clean stop");
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Client {
    /// The next frame, which must be JSON of this `type`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let v = self.recv_json().await;
        assert_eq!(v["type"], kind, "expected a {kind} frame, got {v}");
        v
    }

    /// The next frame of this `type`, skipping others (presence or messages from other nodes).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv_json().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// The next frame, which must be an error with this code for this action.
    pub async fn expect_error(&mut self, code: &str, action: &str) -> Value {
        let v = self.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["action"], action, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }

    /// Joins `room` as `name`; returns the `joined` frame.
    pub async fn join(&mut self, room: &str, name: &str) -> Value {
        self.send_json(json!({"action": "join", "room": room, "name": name}))
            .await;
        let v = self.expect("joined").await;
        assert_eq!(v["room"], room);
        v
    }

    /// Sends `text` to `room` and waits for the acknowledgement; returns the message's id.
    pub async fn say(&mut self, room: &str, text: &str) -> u64 {
        self.send_json(json!({"action": "send", "room": room, "text": text}))
            .await;
        let v = self.expect("message").await;
        assert_eq!(v["text"], text);
        v["id"].as_u64().unwrap()
    }
}

/// Ids of a list of messages.
pub fn ids(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

/// Texts of a list of messages.
pub fn texts(messages: &Value) -> Vec<&str> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect()
}

/// Names of a list of members.
pub fn names(members: &Value) -> Vec<String> {
    members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}
