//! What storing chat messages costs: `cargo bench --bench chat_store`.
//!
//! 1. The SQLite store alone: messages per second and commit latency for batches of 1, 16 and
//!    256 messages, with `synchronous = normal` (survives `kill -9`) and `full` (survives a
//!    power cut).
//! 2. The articles' `sendmessage` through the chat (store thread, SQLite, fan-out) to 1,000
//!    plain clients, against the same fan-out without the chat: what storing each message in
//!    the lobby's history adds per delivery.
//!
//! Plain `Instant` timing, no statistics: it prints figures to compare, not a verdict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard::Id;
use switchboard::apps::chat::protocol::Member;
use switchboard::apps::chat::sqlite::SqliteStore;
use switchboard::apps::chat::store::{ChatStore, NewMessage, Retention, Write};
use switchboard::apps::chat::{Chat, ChatConfig, Synchronous};
use switchboard::event::{ApiContext, ConnectionContext, Event, EventKind, Message};
use switchboard::gateway::conn::Conn;
use switchboard::gateway::frame::OutFrame;
use switchboard::gateway::registry::{LocalRegistry, Registry};
use switchboard::integration::Integration;
use switchboard::management::ManagementApi;

fn message(i: usize) -> Write {
    Write::Append(NewMessage {
        room: "lobby".into(),
        from: Member {
            id: Id::random(),
            name: "bench".into(),
        },
        text: format!("message number {i:>6} with some text to make it 64 bytes long..").into(),
        client_id: None,
        ts_ms: 1_700_000_000_000,
        delivery: Default::default(),
    })
}

fn store_alone() {
    println!("SQLite store, apply():");
    for sync in [Synchronous::Normal, Synchronous::Full] {
        for batch in [1usize, 16, 256] {
            let dir = tempfile::tempdir().unwrap();
            let retention = Retention {
                count: 10_000,
                age_ms: 0,
            };
            let mut store = SqliteStore::open(dir.path(), retention, sync).unwrap();
            let total = if sync == Synchronous::Full && batch == 1 {
                2_000
            } else {
                50_000
            };
            let writes: Vec<Write> = (0..batch).map(message).collect();
            let mut commits = Vec::with_capacity(total / batch);
            let start = Instant::now();
            for _ in 0..total / batch {
                let t = Instant::now();
                store.apply(&writes).unwrap();
                commits.push(t.elapsed());
            }
            let elapsed = start.elapsed();
            commits.sort();
            let at =
                |q: f64| commits[((commits.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
            let n = (total / batch * batch) as f64;
            println!(
                "  synchronous={sync:?} batch={batch:>3}: {:>7.0} messages/s, {:>6.2} µs/message; \
                 commit p50 {:>5.0} µs, p99 {:>6.0} µs, max {:>6.0} µs",
                n / elapsed.as_secs_f64(),
                elapsed.as_secs_f64() * 1e6 / n,
                at(0.5),
                at(0.99),
                at(1.0)
            );
        }
    }
}

fn conn(registry: &LocalRegistry) -> Arc<Conn> {
    let conn = Arc::new(Conn::new(
        ConnectionContext {
            connection_id: Id::random(),
            connected_at_ms: 0,
            source_ip: "127.0.0.1".parse().unwrap(),
            user_agent: None,
            domain_name: "localhost".into(),
            authorizer: None,
        },
        1 << 30,
    ));
    registry.register(conn.clone());
    conn
}

fn event<'a>(
    route_key: &'a str,
    api: &'a ApiContext,
    conn: &'a Conn,
    kind: EventKind<'a>,
) -> Event<'a> {
    Event {
        route_key,
        request_id: Id::random(),
        request_time_ms: 0,
        api,
        connection: &conn.context,
        kind,
    }
}

const CLIENTS: usize = 1_000;
const MESSAGES: usize = 2_000;

/// The fan-out the articles' chat did before it stored anything: encode once, push to each.
fn fan_out_only() -> Duration {
    let registry = Arc::new(LocalRegistry::new());
    let management = ManagementApi::new(registry.clone(), 1 << 20);
    let ids: Vec<Id> = (0..CLIENTS).map(|_| conn(&registry).id()).collect();
    let start = Instant::now();
    for i in 0..MESSAGES {
        let frame = OutFrame::text(format!("{i:>64}").as_bytes());
        for id in &ids {
            let _ = management.post_frame(id, &frame);
        }
    }
    start.elapsed()
}

/// `sendmessage` through the chat: queued, stored in the lobby (SQLite), then fanned out.
async fn through_the_chat(sync: Synchronous) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(LocalRegistry::new());
    let management = ManagementApi::new(registry.clone(), 1 << 20);
    let config = ChatConfig {
        synchronous: sync,
        rate_per_sec: 0,
        ..ChatConfig::default()
    };
    let store = SqliteStore::open(dir.path(), config.retention(), sync).unwrap();
    let chat = Chat::start(Box::new(store), config, management);
    let api = ApiContext {
        api_id: "bench".into(),
        stage: "dev".into(),
    };
    let conns: Vec<Arc<Conn>> = (0..CLIENTS).map(|_| conn(&registry)).collect();
    for c in &conns {
        let connect = event(
            "$connect",
            &api,
            c,
            EventKind::Disconnect {
                code: 0,
                reason: "",
            },
        );
        chat.invoke(&connect).resolve().await.unwrap();
    }
    let sender = &conns[0];
    let start = Instant::now();
    for i in 0..MESSAGES {
        let json = serde_json::json!({"action": "sendmessage", "data": format!("{i:>64}")});
        let message = Message {
            data: Bytes::from(json.to_string()),
            binary: false,
        };
        let kind = EventKind::Message {
            message: &message,
            message_id: Id::random(),
            json: Some(&json),
        };
        chat.invoke(&event("sendmessage", &api, sender, kind))
            .resolve()
            .await
            .unwrap();
    }
    // Close waits until every queued message is stored and fanned out.
    chat.close().await;
    let elapsed = start.elapsed();
    assert!(conns.iter().all(|c| c.queued_bytes() >= MESSAGES * 66));
    elapsed
}

fn main() {
    store_alone();
    let deliveries = (CLIENTS * MESSAGES) as f64;
    let report = |what: &str, d: Duration| {
        println!(
            "  {what}: {:>6.0} ms, {:>5.0} k deliveries/s, {:>5.3} µs/delivery, {:>5.1} µs/message",
            d.as_secs_f64() * 1e3,
            deliveries / d.as_secs_f64() / 1e3,
            d.as_secs_f64() * 1e6 / deliveries,
            d.as_secs_f64() * 1e6 / MESSAGES as f64
        )
    };
    println!(
        "sendmessage to {CLIENTS} plain clients, {MESSAGES} messages (no sockets: outboxes only):"
    );
    report("fan-out only            ", fan_out_only());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    report(
        "chat, synchronous=normal",
        rt.block_on(through_the_chat(Synchronous::Normal)),
    );
    report(
        "chat, synchronous=full  ",
        rt.block_on(through_the_chat(Synchronous::Full)),
    );
}
