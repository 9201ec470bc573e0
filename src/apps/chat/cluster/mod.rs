//! The chat on several nodes: history in Redis, membership in every node's memory, and one
//! bus channel (`{p}:chat:events`, see [`Bus`]) carrying every node's news to every node.
//!
//! - [`redis_store`]: [`RedisChatStore`], the shared history. Its script stores a batch and
//!   publishes each stored write on the channel in the same atomic step, so every node sees a
//!   room's writes in id order, after they are stored.
//! - [`presence`]: [`ClusterPresence`], this node's members plus a copy of the others',
//!   kept current by the membership changes on the channel.
//! - here: what goes over the channel ([`ChatEvent`]: payloads, never encoded frames; each
//!   node encodes the frames for its own connections) and [`connect_chat`], which hands the
//!   channel's events to the chat's store thread and turns cluster events (a dead node, Redis
//!   back) into membership changes.
//!
//! Nothing here runs on the store thread but memory work: the store thread queues what it
//! shares, and the events it is given were read from the bus by a task.

pub mod presence;
pub mod redis_store;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use presence::ClusterPresence;
pub use redis_store::RedisChatStore;

use crate::apps::chat::Chat;
use crate::apps::chat::protocol::{Member, Name, Room};
use crate::apps::chat::store::{Applied, Delivery, NewMessage, Write};
use crate::cluster::ClusterEvent;
use crate::cluster::bus::Bus;
use crate::ids::Id;

/// The chat's bus channel for the key prefix `prefix`.
pub(crate) fn channel(prefix: &str) -> String {
    format!("{prefix}:chat:events")
}

/// What goes over the chat's channel (JSON, tagged by `k`). Stored writes are published by the
/// store (the Redis script writes this shape itself); membership changes by presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum ChatEvent {
    /// A stored message.
    #[serde(rename = "m")]
    Message {
        /// Its room.
        room: String,
        /// Its id in the room.
        id: u64,
        /// The sender's connection id.
        from: String,
        /// The sender's name.
        name: String,
        /// The text.
        text: String,
        /// The sender's own id for it.
        cid: Option<String>,
        /// When it was accepted, epoch milliseconds.
        ts: i64,
        /// A connection that does not get it ([`Delivery::skip`]).
        skip: Option<String>,
        /// Whether plain clients get the bare text ([`Delivery::bare`]).
        bare: bool,
    },
    /// A stored reaction.
    #[serde(rename = "r")]
    Reaction {
        /// The room.
        room: String,
        /// The message reacted to.
        id: u64,
        /// The reaction.
        emoji: String,
        /// The message's count for it now.
        count: u64,
    },
    /// A membership change.
    #[serde(rename = "p")]
    Peer(PeerChange),
}

/// A member as it crosses nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMember {
    /// The connection id.
    pub id: String,
    /// The display name.
    pub name: String,
}

impl From<&Member> for WireMember {
    fn from(m: &Member) -> Self {
        WireMember {
            id: m.id.to_string(),
            name: m.name.to_string(),
        }
    }
}

impl WireMember {
    fn parse(self) -> Option<Member> {
        Some(Member {
            id: Id::parse(&self.id)?,
            name: Name::from(self.name),
        })
    }
}

/// A change in a node's membership, applied by every other node to its copy (and told to its
/// members of the room as a presence frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "p", rename_all = "lowercase")]
pub enum PeerChange {
    /// `member` of `node` joined `room`.
    Join {
        /// The member's node.
        node: String,
        /// The room.
        room: String,
        /// Who.
        member: WireMember,
    },
    /// `member` of `node` left `room` (or disconnected).
    Leave {
        /// The member's node.
        node: String,
        /// The room.
        room: String,
        /// Who.
        member: WireMember,
    },
    /// `member` of `node` is now called `member.name`, in every room it is in.
    Rename {
        /// The member's node.
        node: String,
        /// Who, with the new name.
        member: WireMember,
        /// The old name.
        previous: String,
    },
    /// Everything `node`'s connections are in, replacing what the others knew of it; `ask`:
    /// answer with yours.
    State {
        /// The node.
        node: String,
        /// (room, member) pairs.
        members: Vec<(String, WireMember)>,
        /// Whether the other nodes answer with their own state.
        ask: bool,
    },
    /// `node` died: its members have left every room.
    NodeDown {
        /// The dead node.
        node: String,
    },
}

impl PeerChange {
    /// The node the change is about.
    pub fn node(&self) -> &str {
        match self {
            PeerChange::Join { node, .. }
            | PeerChange::Leave { node, .. }
            | PeerChange::Rename { node, .. }
            | PeerChange::State { node, .. }
            | PeerChange::NodeDown { node } => node,
        }
    }
}

/// Capacity of the queue between the bus and the chat. Overflow drops the event for this node
/// (the bus logs it): this node's members miss that live frame (a client gets the message back
/// with `since` when it next joins), or this node's copy of the membership misses a change
/// until the next snapshot.
const INBOX: usize = 16_384;

/// Connects `chat` (started with a [`ClusterPresence`] and, usually, a [`RedisChatStore`]) to
/// the other nodes: the events on its channel go to its store thread, and of the cluster's
/// `events`, a dead node becomes a [`PeerChange::NodeDown`] for every node and Redis being back
/// makes this node share its membership again. Call it on the runtime, before the bus runs
/// (Redis subscribes to the channels when the registry starts).
pub fn connect_chat(
    chat: Arc<Chat>,
    bus: Arc<dyn Bus>,
    prefix: &str,
    mut events: broadcast::Receiver<ClusterEvent>,
) {
    let channel = channel(prefix);
    let mut inbox = bus.subscribe(&channel, INBOX);
    let sink = chat.clone();
    tokio::spawn(async move {
        while let Some(payload) = inbox.recv().await {
            match serde_json::from_slice::<ChatEvent>(&payload) {
                Ok(event) => deliver(&sink, event).await,
                Err(error) => tracing::warn!(%error, "unreadable chat event"),
            }
        }
    });
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ClusterEvent::NodeDown { node, .. }) => {
                    let down = ChatEvent::Peer(PeerChange::NodeDown { node });
                    let payload = serde_json::to_vec(&down).expect("serialisable");
                    if let Err(error) = bus.publish(&channel, Bytes::from(payload)) {
                        tracing::warn!(%error, "chat: a dead node's members were not removed");
                    }
                }
                Ok(ClusterEvent::RedisBack) => chat.resync().await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "cluster events missed by the chat");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

async fn deliver(chat: &Chat, event: ChatEvent) {
    match event {
        ChatEvent::Message {
            room,
            id,
            from,
            name,
            text,
            cid,
            ts,
            skip,
            bare,
        } => {
            let Some(from) = Id::parse(&from) else { return };
            let write = Write::Append(NewMessage {
                room: Room::from(room),
                from: Member {
                    id: from,
                    name: Name::from(name),
                },
                text: text.into(),
                client_id: cid.map(Into::into),
                ts_ms: ts,
                delivery: Delivery {
                    skip: skip.as_deref().and_then(Id::parse),
                    bare,
                },
            });
            chat.announced(write, Applied::Appended(id)).await;
        }
        ChatEvent::Reaction {
            room,
            id,
            emoji,
            count,
        } => {
            let write = Write::React {
                room: Room::from(room),
                id,
                emoji: emoji.into(),
            };
            chat.announced(write, Applied::Reacted(count)).await;
        }
        ChatEvent::Peer(change) => chat.peer(change).await,
    }
}

/// Several chat nodes in one process, linked by a [`MemoryBus`](crate::cluster::bus::MemoryBus)
/// and sharing one store that announces its writes on the bus as the Redis script does.
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::task::Poll;
    use std::time::Duration;

    use crate::apps::chat::ChatConfig;
    use crate::apps::chat::Synchronous;
    use crate::apps::chat::engine::{Command, MAX_HELD};
    use crate::apps::chat::presence::Presence;
    use crate::apps::chat::protocol::Request;
    use crate::apps::chat::sqlite::SqliteStore;
    use crate::apps::chat::store::{ChatStore, Page, Recovery, Retention, RoomInfo, StoreError};
    use crate::cluster::bus::MemoryBus;
    use crate::deferred::Deferred;
    use crate::event::{ConnectionContext, Response};
    use crate::gateway::conn::Conn;
    use crate::gateway::registry::{LocalRegistry, Registry};
    use crate::management::ManagementApi;

    const PREFIX: &str = "t";
    const WAIT: Duration = Duration::from_secs(10);

    /// One history for every node; a batch is stored and announced under one lock, so every
    /// node sees the writes in store order, as with the Redis script.
    #[derive(Clone)]
    struct SharedStore {
        inner: Arc<Mutex<SqliteStore>>,
        bus: Arc<MemoryBus>,
        /// When set, the next history read, once done, says so and waits to be let go.
        gate: Arc<Mutex<Option<Gate>>>,
    }

    type Gate = (std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>);

    impl ChatStore for SharedStore {
        fn apply(&mut self, writes: &[Write]) -> Result<Vec<Applied>, StoreError> {
            let mut inner = self.inner.lock().unwrap();
            let applied = inner.apply(writes)?;
            for (write, applied) in writes.iter().zip(&applied) {
                let event = match (write, *applied) {
                    (Write::Append(m), Applied::Appended(id)) => ChatEvent::Message {
                        room: m.room.to_string(),
                        id,
                        from: m.from.id.to_string(),
                        name: m.from.name.to_string(),
                        text: m.text.to_string(),
                        cid: m.client_id.as_deref().map(str::to_owned),
                        ts: m.ts_ms,
                        skip: m.delivery.skip.map(|id| id.to_string()),
                        bare: m.delivery.bare,
                    },
                    (Write::React { room, id, emoji }, Applied::Reacted(count)) => {
                        ChatEvent::Reaction {
                            room: room.to_string(),
                            id: *id,
                            emoji: emoji.to_string(),
                            count,
                        }
                    }
                    _ => continue,
                };
                let payload = serde_json::to_vec(&event).unwrap();
                self.bus.publish(&channel(PREFIX), payload.into()).unwrap();
            }
            Ok(applied)
        }
        fn last_id(&mut self, room: &str) -> Result<u64, StoreError> {
            self.inner.lock().unwrap().last_id(room)
        }
        fn before(&mut self, room: &str, b: Option<u64>, n: usize) -> Result<Page, StoreError> {
            let page = self.inner.lock().unwrap().before(room, b, n);
            let gate = self.gate.lock().unwrap().take();
            if let Some((read, go)) = gate {
                read.send(()).unwrap();
                go.recv().unwrap();
            }
            page
        }
        fn after(&mut self, room: &str, since: u64, n: usize) -> Result<Recovery, StoreError> {
            self.inner.lock().unwrap().after(room, since, n)
        }
        fn rooms(&mut self, limit: usize) -> Result<Vec<RoomInfo>, StoreError> {
            self.inner.lock().unwrap().rooms(limit)
        }
        fn prune(&mut self, now_ms: i64) -> Result<u64, StoreError> {
            self.inner.lock().unwrap().prune(now_ms)
        }
        fn announces(&self) -> bool {
            true
        }
    }

    struct Cluster {
        bus: Arc<MemoryBus>,
        store: SharedStore,
        _dir: tempfile::TempDir,
    }

    impl Cluster {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let retention = Retention {
                count: 0,
                age_ms: 0,
            };
            let sqlite = SqliteStore::open(dir.path(), retention, Synchronous::Normal).unwrap();
            let bus = Arc::new(MemoryBus::new());
            Cluster {
                store: SharedStore {
                    inner: Arc::new(Mutex::new(sqlite)),
                    bus: bus.clone(),
                    gate: Arc::default(),
                },
                bus,
                _dir: dir,
            }
        }

        fn node(&self, name: &str) -> Node {
            let registry = Arc::new(LocalRegistry::new());
            let management = ManagementApi::new(registry.clone(), 1 << 20);
            let presence = Arc::new(ClusterPresence::new(
                name,
                PREFIX,
                self.bus.clone(),
                management.clone(),
            ));
            let config = ChatConfig {
                rate_per_sec: 0,
                ..ChatConfig::default()
            };
            let chat = Chat::start_with(
                Box::new(self.store.clone()),
                presence.clone(),
                config,
                management,
            );
            let (events, rx) = broadcast::channel(16);
            connect_chat(chat.clone(), self.bus.clone(), PREFIX, rx);
            Node {
                registry,
                presence,
                chat,
                events,
            }
        }
    }

    struct Node {
        registry: Arc<LocalRegistry>,
        presence: Arc<ClusterPresence>,
        chat: Arc<Chat>,
        events: broadcast::Sender<ClusterEvent>,
    }

    impl Node {
        fn submit(&self, command: Command) {
            let queued = self.chat.engine.submit(command, Response::ok());
            assert!(matches!(queued, Deferred::Ready(Ok(_))), "{queued:?}");
        }

        fn connect(&self) -> Client {
            let conn = Arc::new(Conn::new(
                ConnectionContext {
                    connection_id: Id::random(),
                    connected_at_ms: crate::time::now_ms(),
                    source_ip: "127.0.0.1".parse().unwrap(),
                    user_agent: None,
                    domain_name: "localhost".into(),
                    authorizer: None,
                },
                1 << 20,
            ));
            let _ = self.registry.register(conn.clone());
            let id = conn.id();
            let queued = self
                .chat
                .engine
                .connect(id, crate::time::now_ms(), Response::ok());
            assert!(matches!(queued, Deferred::Ready(Ok(_))), "{queued:?}");
            Client {
                conn,
                id,
                frames: VecDeque::new(),
            }
        }

        fn request(&self, client: &Client, request: Request) {
            self.submit(Command::Request {
                id: client.id,
                request,
            });
        }

        async fn join(&self, client: &mut Client, room: &str, name: &str) -> serde_json::Value {
            self.request(
                client,
                Request::Join {
                    room: room.into(),
                    name: Some(name.into()),
                    since: None,
                },
            );
            client.next_of("joined").await
        }

        fn send(&self, client: &Client, room: &str, text: &str) {
            self.request(
                client,
                Request::Send {
                    room: room.into(),
                    text: text.into(),
                    client_id: None,
                },
            );
        }

        /// Waits until this node's copy of the membership shows `names` in `room`.
        async fn sees(&self, room: &str, names: &[&str]) {
            tokio::time::timeout(WAIT, async {
                while names_of(&self.presence.members(room)) != names {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{room} holds {names:?}"));
        }
    }

    fn names_of(members: &[Member]) -> Vec<String> {
        members.iter().map(|m| m.name.to_string()).collect()
    }

    struct Client {
        conn: Arc<Conn>,
        id: Id,
        frames: VecDeque<serde_json::Value>,
    }

    impl Client {
        /// The next frame of type `kind`, skipping others.
        async fn next_of(&mut self, kind: &str) -> serde_json::Value {
            loop {
                let frame = self.next().await;
                if frame["type"] == kind {
                    return frame;
                }
            }
        }

        /// The next frame; waits for the outbox to be pushed.
        async fn next(&mut self) -> serde_json::Value {
            tokio::time::timeout(WAIT, async {
                loop {
                    if let Some(frame) = self.frames.pop_front() {
                        return frame;
                    }
                    let queued = std::future::poll_fn(|cx| {
                        self.conn.register(cx);
                        let mut queued = VecDeque::new();
                        self.conn.drain(&mut queued);
                        if queued.is_empty() {
                            Poll::Pending
                        } else {
                            Poll::Ready(queued)
                        }
                    })
                    .await;
                    for bytes in queued {
                        self.conn.release(bytes.len());
                        let start = match bytes[1] & 0x7f {
                            126 => 4,
                            127 => 10,
                            _ => 2,
                        };
                        self.frames
                            .push_back(serde_json::from_slice(&bytes[start..]).unwrap());
                    }
                }
            })
            .await
            .expect("a frame arrives")
        }
    }

    #[test]
    fn events_are_payloads_not_frames() {
        let change = ChatEvent::Peer(PeerChange::Rename {
            node: "a".into(),
            member: WireMember {
                id: "x".into(),
                name: "alice".into(),
            },
            previous: "guest-1".into(),
        });
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"k": "p", "p": "rename", "node": "a",
                "member": {"id": "x", "name": "alice"}, "previous": "guest-1"})
        );
        assert_eq!(serde_json::from_value::<ChatEvent>(json).unwrap(), change);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn membership_messages_and_their_order_span_the_nodes() {
        let cluster = Cluster::new();
        let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
        let mut alice = a.connect();
        a.join(&mut alice, "general", "alice").await;
        b.sees("general", &["alice"]).await;

        let mut bob = b.connect();
        let joined = b.join(&mut bob, "general", "bob").await;
        let members: Vec<&str> = joined["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(members, ["alice", "bob"], "members of every node");
        let presence = alice.next_of("presence").await;
        assert_eq!(presence["event"], "join");
        assert_eq!(presence["member"]["name"], "bob");

        // Two nodes' senders race; a third node's watcher gets every message in id order.
        let mut watcher = c.connect();
        c.sees("general", &["alice", "bob"]).await;
        c.join(&mut watcher, "general", "watcher").await;
        let per_sender = 50;
        for n in 0..per_sender {
            a.send(&alice, "general", &format!("a{n}"));
            b.send(&bob, "general", &format!("b{n}"));
        }
        let mut ids = Vec::new();
        let mut texts = Vec::new();
        while ids.len() < 2 * per_sender {
            let message = watcher.next_of("message").await;
            ids.push(message["id"].as_u64().unwrap());
            texts.push(message["text"].as_str().unwrap().to_owned());
        }
        let expected: Vec<u64> = (1..=2 * per_sender as u64).collect();
        assert_eq!(ids, expected);
        let from_a: Vec<&String> = texts.iter().filter(|t| t.starts_with('a')).collect();
        assert_eq!(from_a.first().map(|t| t.as_str()), Some("a0"));
        assert_eq!(from_a.last().map(|t| t.as_str()), Some("a49"));
        assert_eq!(
            alice.next_of("message").await["id"],
            1,
            "the sender hears its own message from the store, like everyone"
        );

        // A rename and a departure reach the other nodes' members.
        b.request(
            &bob,
            Request::Nick {
                name: "robert".into(),
            },
        );
        let renamed = alice.next_of("presence").await;
        let renamed = if renamed["event"] == "rename" {
            renamed
        } else {
            alice.next_of("presence").await
        };
        assert_eq!(
            (
                renamed["member"]["name"].as_str(),
                renamed["previous"].as_str()
            ),
            (Some("robert"), Some("bob"))
        );
        b.submit(Command::Disconnect { id: bob.id });
        let left = watcher.next_of("presence").await;
        let left = if left["event"] == "leave" {
            left
        } else {
            watcher.next_of("presence").await
        };
        assert_eq!(left["member"]["name"], "robert");
        c.sees("general", &["alice", "watcher"]).await;
        a.sees("general", &["alice", "watcher"]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_made_while_a_join_waits_for_the_bus_follow_it() {
        let cluster = Cluster::new();
        let a = cluster.node("a");
        let mut alice = a.connect();
        a.request(
            &alice,
            Request::Join {
                room: "r".into(),
                name: Some("alice".into()),
                since: None,
            },
        );
        a.send(&alice, "r", "right after the join");
        a.request(&alice, Request::Who { room: "r".into() });
        // Each takes effect after the join, which is answered first. (The message comes back
        // through the store, as on every node, so it may follow the answer to `who`.)
        let joined = alice.next().await;
        assert_eq!(
            (joined["type"].as_str(), joined["room"].as_str()),
            (Some("joined"), Some("r"))
        );
        let mut next = [alice.next().await, alice.next().await];
        next.sort_by_key(|f| f["type"].as_str().unwrap_or_default().to_owned());
        let [who, message] = next;
        assert_eq!(who["type"], "members", "{who}");
        assert_eq!(who["members"][0]["name"], "alice");
        assert_eq!(message["type"], "message", "{message}");
        assert_eq!(message["text"], "right after the join");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_stored_while_a_joiners_history_is_read_follows_its_joined_answer() {
        let cluster = Cluster::new();
        let (a, b) = (cluster.node("a"), cluster.node("b"));
        let mut alice = a.connect();
        a.join(&mut alice, "r", "alice").await;
        let mut carol = b.connect();
        b.join(&mut carol, "r", "carol").await;

        // Bob's history is read (empty) and held back; meanwhile alice's message is stored
        // and reaches node b, where carol gets it.
        let (read_tx, read) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        *cluster.store.gate.lock().unwrap() = Some((read_tx, go_rx));
        let mut bob = b.connect();
        b.request(
            &bob,
            Request::Join {
                room: "r".into(),
                name: Some("bob".into()),
                since: None,
            },
        );
        tokio::task::spawn_blocking(move || read.recv().unwrap())
            .await
            .unwrap();
        a.send(&alice, "r", "while bob's history was read");
        assert_eq!(
            carol.next_of("message").await["text"],
            "while bob's history was read"
        );
        go.send(()).unwrap();

        let joined = bob.next().await;
        assert_eq!(joined["type"], "joined", "{joined}");
        assert_eq!(joined["messages"].as_array().unwrap().len(), 0);
        assert_eq!(joined["lastId"], 0);
        let message = bob.next().await;
        assert_eq!(
            (message["type"].as_str(), message["id"].as_u64()),
            (Some("message"), Some(1)),
            "{message}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_held_behind_a_read_are_bounded_and_the_rest_refused() {
        let cluster = Cluster::new();
        let a = cluster.node("a");
        let (read_tx, read) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        *cluster.store.gate.lock().unwrap() = Some((read_tx, go_rx));
        let mut bob = a.connect();
        a.request(
            &bob,
            Request::Join {
                room: "r".into(),
                name: Some("bob".into()),
                since: None,
            },
        );
        let extra = 10;
        for _ in 0..MAX_HELD + extra {
            a.request(&bob, Request::Who { room: "r".into() });
        }
        for _ in 0..extra {
            let refused = bob.next().await;
            assert_eq!(
                (refused["type"].as_str(), refused["action"].as_str()),
                (Some("error"), Some("who")),
                "{refused}"
            );
            assert_eq!(refused["code"], "unavailable");
        }
        tokio::task::spawn_blocking(move || read.recv().unwrap())
            .await
            .unwrap();
        go.send(()).unwrap();
        assert_eq!(bob.next().await["type"], "joined");
        for _ in 0..MAX_HELD {
            let who = bob.next().await;
            assert_eq!(who["type"], "members", "{who}");
            assert_eq!(who["members"][0]["name"], "bob");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_taken_while_a_join_waits_keeps_the_join() {
        let cluster = Cluster::new();
        let (a, b) = (cluster.node("a"), cluster.node("b"));
        let mut alice = a.connect();
        // The join is shared, then a snapshot is taken before the join comes back.
        a.request(
            &alice,
            Request::Join {
                room: "general".into(),
                name: Some("alice".into()),
                since: None,
            },
        );
        a.submit(Command::Resync);
        alice.next_of("joined").await;
        // A later change of node a reaches node b after the snapshot did.
        let mut ann = a.connect();
        a.join(&mut ann, "later", "ann").await;
        b.sees("later", &["ann"]).await;
        assert_eq!(names_of(&b.presence.members("general")), ["alice"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_nodes_members_leave_and_a_late_node_learns_who_is_where() {
        let cluster = Cluster::new();
        let (a, b) = (cluster.node("a"), cluster.node("b"));
        let mut alice = a.connect();
        a.join(&mut alice, "general", "alice").await;
        let mut bob = b.connect();
        b.join(&mut bob, "general", "bob").await;
        b.join(&mut bob, "ops", "bob").await;
        a.sees("ops", &["bob"]).await;

        // A node that starts late asks for everyone's membership when it reaches the bus.
        let c = cluster.node("c");
        assert!(c.presence.members("general").is_empty());
        c.events.send(ClusterEvent::RedisBack).unwrap();
        c.sees("general", &["alice", "bob"]).await;
        c.sees("ops", &["bob"]).await;
        let mut rooms = c.presence.rooms();
        rooms.sort();
        assert_eq!(rooms, [("general".into(), 2), ("ops".into(), 1)]);

        // Node b dies; the node that notices tells everyone, and b's members leave.
        a.events
            .send(ClusterEvent::NodeDown {
                node: "b".into(),
                connections: vec![bob.id],
            })
            .unwrap();
        let left = alice.next_of("presence").await;
        let left = if left["event"] == "leave" {
            left
        } else {
            alice.next_of("presence").await
        };
        assert_eq!(left["connectionIds"][0], bob.id.as_str(), "{left}");
        assert_eq!(left["connectionIds"].as_array().unwrap().len(), 1);
        a.sees("general", &["alice"]).await;
        c.sees("general", &["alice"]).await;
        c.sees("ops", &[]).await;
        assert_eq!(c.presence.rooms(), [("general".into(), 1)]);
    }
}
