//! The articles' chat on axum + `tokio::sync::broadcast`, written the way a Rust developer
//! first writes it (after axum's `examples/chat`): a benchmark peer for `switchboard bench`.
//!
//! `{"action":"sendmessage","message":"hi"}` sends `hi` to every other client. Each socket is
//! split into a task that forwards the broadcast channel to the client and a task that reads
//! the client. A client that falls more than the channel's capacity behind skips what it
//! missed (`Lagged`) and goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;

/// Messages the channel holds for the slowest receiver.
const CAPACITY: usize = 1024;

struct Chat {
    tx: broadcast::Sender<(u64, Utf8Bytes)>,
    next_id: AtomicU64,
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8082);
    let (tx, _) = broadcast::channel(CAPACITY);
    let chat = Arc::new(Chat {
        tx,
        next_id: AtomicU64::new(0),
    });
    let app = Router::new().fallback(upgrade).with_state(chat);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!(
        "ready on ws://127.0.0.1:{port}/ (pid {})",
        std::process::id()
    );
    axum::serve(listener, app).await.expect("serve");
}

async fn upgrade(ws: WebSocketUpgrade, State(chat): State<Arc<Chat>>) -> Response {
    ws.on_upgrade(move |socket| client(socket, chat))
}

async fn client(socket: WebSocket, chat: Arc<Chat>) {
    let id = chat.next_id.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    let mut rx = chat.tx.subscribe();
    let mut send_task = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok((from, text)) if from != id => {
                    if sink.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let tx = chat.tx.clone();
    let mut recv_task = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(body) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if body["action"] != "sendmessage" {
                continue;
            }
            let text = match &body["message"] {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = tx.send((id, text.into()));
        }
    });
    tokio::select! {
        _ = &mut send_task => recv_task.abort(),
        _ = &mut recv_task => send_task.abort(),
    }
}
