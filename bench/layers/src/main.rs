//! The articles' chat (`sendmessage` to every other client) on three WebSocket layers, each
//! used the way its documentation suggests, to compare them under `switchboard bench`:
//!
//! - `tuned`: fastwebsockets reads; frames are encoded once, shared as `Bytes`, and a
//!   client's backlog is written with one `writev` (the tuned reference of issue 6), on
//!   tokio's multi-thread runtime (a worker per core);
//! - `tuned-st`: the same server on tokio's current-thread runtime: one thread does all the
//!   work, as uWebSockets does. On a 2-core machine shared with the load client this is the
//!   floor for CPU per delivery (no cross-thread wake-ups, no lock contention, every outbox in
//!   one core's cache), and the reference the gateway is compared with from issue 14 on;
//! - `tungstenite`: tokio-tungstenite with small buffers (4 KiB read, 4 KiB write), a split
//!   sink fed the whole backlog, then flushed;
//! - `tokio-websockets`: its server, a split sink fed the whole backlog, then flushed.
//!
//! Usage: `bench-layers LAYER PORT`. Every layer shares the hub: one queue per client,
//! bounded to `QUEUE` items (a full queue drops the message for that client).

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Items one client's queue holds; beyond, messages to it are dropped.
const QUEUE: usize = 4096;

#[derive(Default)]
struct Peer {
    queue: Mutex<VecDeque<Bytes>>,
    notify: Notify,
}

impl Peer {
    fn push(&self, item: Bytes) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap();
            if q.len() >= QUEUE {
                return;
            }
            q.push_back(item);
            q.len() == 1
        };
        if was_empty {
            self.notify.notify_one();
        }
    }

    async fn take(&self, into: &mut VecDeque<Bytes>) {
        loop {
            {
                let mut q = self.queue.lock().unwrap();
                if !q.is_empty() {
                    std::mem::swap(into, &mut q);
                    return;
                }
            }
            self.notify.notified().await;
        }
    }
}

#[derive(Default)]
struct Hub {
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
    next: AtomicU64,
}

impl Hub {
    fn join(&self) -> (u64, Arc<Peer>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let peer = Arc::new(Peer::default());
        self.peers.lock().unwrap().insert(id, peer.clone());
        (id, peer)
    }

    fn leave(&self, id: u64) {
        self.peers.lock().unwrap().remove(&id);
    }

    fn broadcast(&self, from: u64, item: Bytes) {
        for (id, peer) in self.peers.lock().unwrap().iter() {
            if *id != from {
                peer.push(item.clone());
            }
        }
    }
}

/// The `message` of a `sendmessage` frame.
fn chat_message(frame: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(frame).ok()?;
    if body["action"] != "sendmessage" {
        return None;
    }
    match &body["message"] {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[derive(Clone, Copy)]
enum Layer {
    Tuned,
    Tungstenite,
    TokioWebsockets,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (layer, single_thread) = match args.next().as_deref() {
        Some("tuned") => (Layer::Tuned, false),
        Some("tuned-st") => (Layer::Tuned, true),
        Some("tungstenite") => (Layer::Tungstenite, false),
        Some("tokio-websockets") => (Layer::TokioWebsockets, false),
        _ => {
            eprintln!("usage: bench-layers tuned|tuned-st|tungstenite|tokio-websockets PORT");
            std::process::exit(2);
        }
    };
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(8083);
    let mut runtime = if single_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = runtime.enable_all().build().expect("a tokio runtime");
    runtime.block_on(serve(layer, port));
}

async fn serve(layer: Layer, port: u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(([127, 0, 0, 1], port).into()).unwrap();
    let listener = socket.listen(4096).unwrap();
    println!("ready on ws://127.0.0.1:{port}/ (pid {})", std::process::id());
    let hub = Arc::new(Hub::default());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        tokio::spawn(async move {
            match layer {
                Layer::Tuned => tuned(stream, hub).await,
                Layer::Tungstenite => tungstenite(stream, hub).await,
                Layer::TokioWebsockets => tokio_websockets(stream, hub).await,
            }
        });
    }
}

/// Reads the request head and answers `101`.
async fn handshake(stream: &mut TcpStream) -> Option<()> {
    let mut head = Vec::with_capacity(512);
    while !head.ends_with(b"\r\n\r\n") {
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || head.len() > 8192 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let text = std::str::from_utf8(&head).ok()?;
    let key = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("sec-websocket-key").then(|| v.trim())
    })?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await.ok()
}

/// An unmasked server text frame, encoded once for every recipient.
fn encode_text(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    Bytes::from(out)
}

async fn tuned(mut stream: TcpStream, hub: Arc<Hub>) {
    if handshake(&mut stream).await.is_none() {
        return;
    }
    let (read, mut write) = stream.into_split();
    let (mut ws, _) = fastwebsockets::after_handshake_split(
        read,
        tokio::io::sink(),
        fastwebsockets::Role::Server,
    );
    ws.set_auto_pong(false);
    ws.set_auto_close(false);
    let (id, peer) = hub.join();
    let writer = tokio::spawn(async move {
        let mut out = VecDeque::new();
        loop {
            peer.take(&mut out).await;
            let mut offset = 0;
            while !out.is_empty() {
                let slices: Vec<IoSlice<'_>> = out
                    .iter()
                    .take(64)
                    .enumerate()
                    .map(|(i, f)| IoSlice::new(if i == 0 { &f[offset..] } else { &f[..] }))
                    .collect();
                let Ok(mut n) = write.write_vectored(&slices).await else {
                    return;
                };
                while n > 0 {
                    let left = out[0].len() - offset;
                    if n >= left {
                        n -= left;
                        out.pop_front();
                        offset = 0;
                    } else {
                        offset += n;
                        n = 0;
                    }
                }
            }
        }
    });
    let mut ignore = |_| async { Ok::<(), std::convert::Infallible>(()) };
    while let Ok(frame) = ws.read_frame(&mut ignore).await {
        match frame.opcode {
            fastwebsockets::OpCode::Text => {
                if let Some(text) = chat_message(&frame.payload) {
                    hub.broadcast(id, encode_text(text.as_bytes()));
                }
            }
            fastwebsockets::OpCode::Close => break,
            _ => {}
        }
    }
    hub.leave(id);
    writer.abort();
}

async fn tungstenite(stream: TcpStream, hub: Arc<Hub>) {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (id, peer) = hub.join();
    let writer = tokio::spawn(async move {
        let mut out = VecDeque::new();
        loop {
            peer.take(&mut out).await;
            for payload in out.drain(..) {
                let text = tungstenite::Utf8Bytes::try_from(payload).expect("chat text is UTF-8");
                if sink.feed(Message::Text(text)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = source.next().await {
        match message {
            Message::Text(text) => {
                if let Some(text) = chat_message(text.as_bytes()) {
                    hub.broadcast(id, Bytes::from(text));
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    hub.leave(id);
    writer.abort();
}

async fn tokio_websockets(stream: TcpStream, hub: Arc<Hub>) {
    use tokio_websockets::Message;
    let Ok((_, ws)) = tokio_websockets::ServerBuilder::new().accept(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (id, peer) = hub.join();
    let writer = tokio::spawn(async move {
        let mut out = VecDeque::new();
        loop {
            peer.take(&mut out).await;
            for payload in out.drain(..) {
                if sink.feed(Message::text(payload)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = source.next().await {
        if message.is_close() {
            break;
        }
        if let Some(text) = message.as_text().and_then(|t| chat_message(t.as_bytes())) {
            hub.broadcast(id, Bytes::from(text));
        }
    }
    hub.leave(id);
    writer.abort();
}
