//! Several nodes on one Redis: which node holds each connection, and management calls for
//! connections held by another node.
//!
//! What lives in Redis (all keys under the configured prefix, `switchboard` by default):
//!
//! | Key | Type | What |
//! |---|---|---|
//! | `{p}:alive:{node}` | string, TTL `node_ttl` | the node's heartbeat, refreshed every third of the TTL |
//! | `{p}:nodes` | set | every node that has announced itself |
//! | `{p}:conn:{id}` | string | the node holding connection `id` |
//! | `{p}:node:{node}:conns` | set | the connections a node holds (for clean-up after its death) |
//!
//! and one pub/sub channel per node, `{p}:node:{node}`, carrying management requests for its
//! connections and the replies to its own requests. The same pub/sub connection carries the
//! channels of the cluster's [`Bus`] (the chat's), which the registry implements. A connection
//! whose node's heartbeat has expired answers 410; the first node to notice a dead node
//! deletes its keys and announces [`ClusterEvent::NodeDown`].
//!
//! When Redis is unreachable the node keeps serving its own connections, reports not ready,
//! and reconnects with back-off; once Redis answers again it re-announces its connections
//! (Redis may have restarted empty) and resumes. Nothing a connection waits for (its
//! registration, a post to a connection of this node) goes to Redis on its way: the keys are
//! written behind, through a bounded queue.

pub(crate) mod bus;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, PushInfo, PushKind, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::deferred::Deferred;
use crate::gateway::conn::Conn;
use crate::gateway::frame::OutFrame;
use crate::gateway::registry::{ConnectionInfo, LocalRegistry, ManageError, Registry};
use crate::ids::Id;
use bus::{Bus, BusError};

/// How a node joins a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://host:port/db`.
    pub redis_url: String,
    /// This node's name, unique in the cluster.
    pub node_id: String,
    /// A dead node's connections answer 410 at most this long after its death. The node's
    /// heartbeat key lives `node_ttl - request_timeout`, so that a request sent to it just
    /// before it expired has timed out by then too.
    pub node_ttl: Duration,
    /// Prefix of every key and channel, so several clusters can share one Redis.
    pub key_prefix: String,
    /// How long a request to another node may take.
    pub request_timeout: Duration,
}

impl ClusterConfig {
    /// How long the heartbeat key lives.
    fn heartbeat_ttl(&self) -> Duration {
        self.node_ttl
            .saturating_sub(self.request_timeout)
            .max(Duration::from_millis(600))
    }

    /// A configuration with the defaults: 10 s node TTL (so an 8 s heartbeat, refreshed every
    /// 2.7 s), prefix `switchboard`, 2 s requests.
    pub fn new(redis_url: impl Into<String>, node_id: impl Into<String>) -> Self {
        ClusterConfig {
            redis_url: redis_url.into(),
            node_id: node_id.into(),
            node_ttl: Duration::from_secs(10),
            key_prefix: "switchboard".into(),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// Why joining the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL or client setup is invalid.
    #[error("invalid Redis configuration: {0}")]
    Redis(#[from] redis::RedisError),
    /// The node id is not usable.
    #[error("invalid node id {0:?}: use letters, digits, `-`, `_` or `.`")]
    NodeId(String),
}

/// Something that happened to the cluster, for apps that keep per-connection state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A node died; these were its connections.
    NodeDown {
        /// The node.
        node: String,
        /// Its connections when it died.
        connections: Vec<Id>,
    },
    /// Redis answers again after being unreachable (it may have restarted empty): state
    /// mirrored into it should be written again.
    RedisBack,
}

/// What goes over a node's channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Wire {
    Post {
        rid: u64,
        from: String,
        id: String,
        /// The encoded frame, base64.
        frame: String,
    },
    Get {
        rid: u64,
        from: String,
        id: String,
    },
    Delete {
        rid: u64,
        from: String,
        id: String,
    },
    Reply {
        rid: u64,
        result: WireResult,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
enum WireResult {
    Ok,
    Info {
        connected_at_ms: i64,
        last_active_ms: i64,
        source_ip: String,
        user_agent: Option<String>,
    },
    Gone,
    Full,
}

impl From<Result<(), ManageError>> for WireResult {
    fn from(r: Result<(), ManageError>) -> Self {
        match r {
            Ok(()) => WireResult::Ok,
            Err(ManageError::Full) => WireResult::Full,
            Err(_) => WireResult::Gone,
        }
    }
}

/// Bookkeeping writes done off the connection path, in the order they were made.
#[derive(Debug)]
enum Write {
    Register(Id),
    Unregister(Id),
}

/// Capacity of the queue between Redis's push messages and the dispatcher. Overflow drops
/// the message (the requester times out) and is logged.
const INBOX: usize = 16_384;
/// Capacity of the bookkeeping queue. Overflow skips the write: a skipped registration is
/// written with every other connection of the node at the next heartbeat that reaches Redis;
/// stale keys are cleaned when looked up.
const WRITES: usize = 16_384;
/// The most bookkeeping writes sent in one pipeline.
const WRITE_BATCH: usize = 512;
/// Capacity of the bus's outgoing queue. Overflow drops the message ([`BusError::Full`]).
const BUS_OUTBOX: usize = 16_384;
/// The most bus messages sent in one pipeline.
const BUS_BATCH: usize = 256;

/// Finds a connection's node and whether that node is alive, in one round trip.
const LOCATE: &str = r"
local node = redis.call('GET', KEYS[1])
if not node then return false end
return {node, redis.call('EXISTS', ARGV[1] .. node)}
";

/// A registry spanning every node on one Redis.
pub(crate) struct ClusterRegistry {
    this: std::sync::Weak<ClusterRegistry>,
    config: ClusterConfig,
    local: LocalRegistry,
    redis: ConnectionManager,
    inbox: Mutex<Option<mpsc::Receiver<PushInfo>>>,
    writes_tx: mpsc::Sender<Write>,
    writes_rx: Mutex<Option<mpsc::Receiver<Write>>>,
    /// A bookkeeping write failed or was skipped: announce every connection again.
    reannounce: AtomicBool,
    bus_tx: mpsc::Sender<(String, Bytes)>,
    bus_rx: Mutex<Option<mpsc::Receiver<(String, Bytes)>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<WireResult>>>,
    next_rid: AtomicU64,
    ready: AtomicBool,
    events: broadcast::Sender<ClusterEvent>,
    locate: redis::Script,
    /// Channels apps subscribed to, and where their messages go.
    subscriptions: Mutex<HashMap<String, mpsc::Sender<Bytes>>>,
}

impl std::fmt::Debug for ClusterRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRegistry")
            .field("node_id", &self.config.node_id)
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ClusterRegistry {
    /// Sets up the registry; nothing is sent to Redis until [`ClusterRegistry::run`].
    pub(crate) fn new(config: ClusterConfig) -> Result<Arc<Self>, ClusterError> {
        let valid_id = !config.node_id.is_empty()
            && config
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_id {
            return Err(ClusterError::NodeId(config.node_id));
        }
        let url = if config.redis_url.contains("protocol=") {
            config.redis_url.clone()
        } else if config.redis_url.contains('?') {
            format!("{}&protocol=resp3", config.redis_url)
        } else {
            format!("{}?protocol=resp3", config.redis_url)
        };
        let client = redis::Client::open(url)?;
        let (push_tx, push_rx) = mpsc::channel(INBOX);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(2))
            .set_push_sender(move |info: PushInfo| {
                push_tx.try_send(info).map_err(|_| {
                    tracing::warn!("cluster inbox full: a message from another node was dropped");
                })
            })
            .set_automatic_resubscription();
        let redis = client.get_connection_manager_lazy(manager_config)?;
        let (writes_tx, writes_rx) = mpsc::channel(WRITES);
        let (bus_tx, bus_rx) = mpsc::channel(BUS_OUTBOX);
        let (events, _) = broadcast::channel(256);
        Ok(Arc::new_cyclic(|this| ClusterRegistry {
            this: this.clone(),
            config,
            local: LocalRegistry::new(),
            redis,
            inbox: Mutex::new(Some(push_rx)),
            writes_tx,
            writes_rx: Mutex::new(Some(writes_rx)),
            reannounce: AtomicBool::new(false),
            bus_tx,
            bus_rx: Mutex::new(Some(bus_rx)),
            pending: Mutex::default(),
            next_rid: AtomicU64::new(1),
            ready: AtomicBool::new(false),
            events,
            locate: redis::Script::new(LOCATE),
            subscriptions: Mutex::default(),
        }))
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The prefix of every key and channel.
    pub(crate) fn key_prefix(&self) -> &str {
        &self.config.key_prefix
    }

    /// The Redis URL.
    pub(crate) fn redis_url(&self) -> &str {
        &self.config.redis_url
    }

    /// Cluster events (a bounded broadcast: a receiver that lags loses the oldest events and
    /// is told how many with `RecvError::Lagged`).
    pub(crate) fn events(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.config.key_prefix)
    }

    fn channel_of(&self, node: &str) -> String {
        self.key(&format!("node:{node}"))
    }

    /// Runs the node's part of the cluster until `shutdown`, then removes the node's keys
    /// once its connections have closed (at most `drain` later).
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken, drain: Duration) {
        let inbox = self.inbox.lock().expect("inbox lock").take();
        let writes = self.writes_rx.lock().expect("writes lock").take();
        let outbox = self.bus_rx.lock().expect("bus lock").take();
        let (Some(inbox), Some(writes), Some(outbox)) = (inbox, writes, outbox) else {
            tracing::error!("the cluster registry is already running");
            return;
        };
        let tasks = tokio_util::task::TaskTracker::new();
        tasks.spawn(self.clone().dispatch(inbox));
        tasks.spawn(self.clone().write_behind(writes));
        tasks.spawn(self.clone().publish_behind(outbox));
        tasks.spawn(self.clone().janitor(shutdown.clone()));
        self.heartbeat(&shutdown).await;
        // Draining: wait for this node's connections to close, then leave the cluster.
        let _ = tokio::time::timeout(drain, async {
            while self.local.count() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        self.leave().await;
        tasks.close();
    }

    /// Refreshes the heartbeat and tracks whether Redis answers, until `shutdown`.
    async fn heartbeat(&self, shutdown: &CancellationToken) {
        let channel = self.channel_of(&self.config.node_id);
        let mut subscribed = false;
        let period = self.config.heartbeat_ttl() / 3;
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = async {
                let mut redis = self.redis.clone();
                if !subscribed {
                    let mut channels = vec![channel.clone()];
                    channels.extend(
                        self.subscriptions
                            .lock()
                            .expect("subscriptions lock")
                            .keys()
                            .cloned(),
                    );
                    redis.subscribe(&channels).await?;
                    subscribed = true;
                }
                let ttl = self.config.heartbeat_ttl().as_millis() as u64;
                redis::pipe()
                    .set_options(
                        self.key(&format!("alive:{}", self.config.node_id)),
                        "1",
                        redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl)),
                    )
                    .ignore()
                    .sadd(self.key("nodes"), &self.config.node_id)
                    .ignore()
                    .exec_async(&mut redis)
                    .await
            }
            .await;
            let wait = match result {
                Ok(()) => {
                    if !self.ready.swap(true, Ordering::Relaxed) {
                        tracing::info!(node = %self.config.node_id, "cluster: Redis reachable; this node is ready");
                        self.reannounce.store(false, Ordering::Relaxed);
                        self.announce_all().await;
                        let _ = self.events.send(ClusterEvent::RedisBack);
                    } else if self.reannounce.swap(false, Ordering::Relaxed) {
                        self.announce_all().await;
                    }
                    backoff = Duration::from_millis(100);
                    period
                }
                Err(error) => {
                    if self.ready.swap(false, Ordering::Relaxed) {
                        tracing::warn!(%error, "cluster: Redis unreachable; serving local connections only, retrying");
                    } else {
                        tracing::debug!(%error, "cluster: Redis still unreachable");
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Writes every local connection's keys (after Redis came back, possibly empty).
    async fn announce_all(&self) {
        let ids: Vec<Id> = self.local.all().iter().map(|c| c.id()).collect();
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                self.announce_into(&mut pipe, id);
            }
            if let Err(error) = pipe.exec_async(&mut self.redis.clone()).await {
                tracing::warn!(%error, "cluster: could not re-announce connections");
                self.reannounce.store(true, Ordering::Relaxed);
                return;
            }
        }
    }

    fn announce_into(&self, pipe: &mut redis::Pipeline, id: &Id) {
        pipe.set(self.key(&format!("conn:{id}")), &self.config.node_id)
            .ignore()
            .sadd(
                self.key(&format!("node:{}:conns", self.config.node_id)),
                id.as_str(),
            )
            .ignore();
    }

    async fn leave(&self) {
        let me = &self.config.node_id;
        let result: redis::RedisResult<()> = redis::pipe()
            .del(self.key(&format!("alive:{me}")))
            .del(self.key(&format!("node:{me}:conns")))
            .srem(self.key("nodes"), me)
            .exec_async(&mut self.redis.clone())
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "cluster: could not remove this node's keys");
        }
    }

    /// Applies bookkeeping writes in the background, in order, the writes queued meanwhile in
    /// one pipeline (a burst of connections costs Redis one round trip per batch, not per
    /// connection). While Redis is unreachable they are skipped: the node announces all its
    /// connections when it is back.
    async fn write_behind(self: Arc<Self>, mut writes: mpsc::Receiver<Write>) {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        while writes.recv_many(&mut batch, WRITE_BATCH).await > 0 {
            if self.ready.load(Ordering::Relaxed) {
                let mut pipe = redis::pipe();
                for write in &batch {
                    match write {
                        Write::Register(id) => self.announce_into(&mut pipe, id),
                        Write::Unregister(id) => {
                            pipe.del(self.key(&format!("conn:{id}")))
                                .ignore()
                                .srem(
                                    self.key(&format!("node:{}:conns", self.config.node_id)),
                                    id.as_str(),
                                )
                                .ignore();
                        }
                    }
                }
                if let Err(error) = pipe.exec_async(&mut self.redis.clone()).await {
                    tracing::debug!(%error, writes = batch.len(), "cluster: connections' keys not written");
                    self.reannounce.store(true, Ordering::Relaxed);
                }
            }
            batch.clear();
        }
    }

    /// Sends the bus's messages, in order, a pipeline at a time.
    async fn publish_behind(self: Arc<Self>, mut outbox: mpsc::Receiver<(String, Bytes)>) {
        let mut batch = Vec::with_capacity(BUS_BATCH);
        while outbox.recv_many(&mut batch, BUS_BATCH).await > 0 {
            let mut pipe = redis::pipe();
            for (channel, payload) in &batch {
                pipe.publish(channel, payload.as_ref()).ignore();
            }
            if let Err(error) = pipe.exec_async(&mut self.redis.clone()).await {
                tracing::debug!(%error, messages = batch.len(), "cluster: bus messages not sent");
            }
            batch.clear();
        }
    }

    /// Looks for dead nodes and cleans up after them.
    async fn janitor(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.heartbeat_ttl() / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            if !self.ready.load(Ordering::Relaxed) {
                continue;
            }
            if let Err(error) = self.reap_dead_nodes().await {
                tracing::debug!(%error, "cluster: dead-node clean-up failed");
            }
        }
    }

    async fn reap_dead_nodes(&self) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        let nodes: Vec<String> = redis.smembers(self.key("nodes")).await?;
        for node in nodes {
            if node == self.config.node_id {
                continue;
            }
            let alive: bool = redis.exists(self.key(&format!("alive:{node}"))).await?;
            if alive {
                continue;
            }
            // Only one node cleans up after a dead one.
            let claimed: bool = redis::cmd("SET")
                .arg(self.key(&format!("reaping:{node}")))
                .arg(&self.config.node_id)
                .arg("NX")
                .arg("EX")
                .arg(30)
                .query_async::<Option<String>>(&mut redis)
                .await?
                .is_some();
            if !claimed {
                continue;
            }
            let conns_key = self.key(&format!("node:{node}:conns"));
            let ids: Vec<String> = redis.smembers(&conns_key).await?;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.del(self.key(&format!("conn:{id}"))).ignore();
            }
            pipe.del(&conns_key)
                .ignore()
                .srem(self.key("nodes"), &node)
                .ignore();
            pipe.exec_async(&mut redis).await?;
            tracing::warn!(%node, connections = ids.len(), "cluster: node died; its connections are gone");
            let _ = self.events.send(ClusterEvent::NodeDown {
                node,
                connections: ids.iter().filter_map(|id| Id::parse(id)).collect(),
            });
        }
        Ok(())
    }

    /// Handles requests from other nodes and replies to ours.
    async fn dispatch(self: Arc<Self>, mut inbox: mpsc::Receiver<PushInfo>) {
        while let Some(info) = inbox.recv().await {
            match info.kind {
                PushKind::Message => {}
                PushKind::Disconnection => {
                    tracing::debug!("cluster: Redis connection lost");
                    continue;
                }
                _ => continue,
            }
            let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                (info.data.first(), info.data.get(1))
            else {
                continue;
            };
            let sink = self
                .subscriptions
                .lock()
                .expect("subscriptions lock")
                .get(std::str::from_utf8(channel).unwrap_or_default())
                .cloned();
            if let Some(sink) = sink {
                let channel = String::from_utf8_lossy(channel);
                if !bus::offer(&channel, &sink, Bytes::copy_from_slice(payload)) {
                    self.subscriptions
                        .lock()
                        .expect("subscriptions lock")
                        .remove(&*channel);
                }
                continue;
            }
            let wire: Wire = match serde_json::from_slice(payload) {
                Ok(wire) => wire,
                Err(error) => {
                    tracing::warn!(%error, "cluster: unreadable message on this node's channel");
                    continue;
                }
            };
            match wire {
                Wire::Reply { rid, result } => {
                    if let Some(tx) = self.pending.lock().expect("pending lock").remove(&rid) {
                        let _ = tx.send(result);
                    }
                }
                Wire::Post {
                    rid,
                    from,
                    id,
                    frame,
                } => {
                    let result = match (
                        Id::parse(&id),
                        base64::engine::general_purpose::STANDARD.decode(frame),
                    ) {
                        (Some(id), Ok(frame)) => self
                            .local
                            .post_local(&id, &OutFrame::from_encoded(Bytes::from(frame)))
                            .into(),
                        _ => WireResult::Gone,
                    };
                    self.reply(&from, rid, result).await;
                }
                Wire::Get { rid, from, id } => {
                    let result = match Id::parse(&id).map(|id| self.local.info_local(&id)) {
                        Some(Ok(info)) => WireResult::Info {
                            connected_at_ms: info.connected_at_ms,
                            last_active_ms: info.last_active_ms,
                            source_ip: info.source_ip,
                            user_agent: info.user_agent,
                        },
                        _ => WireResult::Gone,
                    };
                    self.reply(&from, rid, result).await;
                }
                Wire::Delete { rid, from, id } => {
                    let result = match Id::parse(&id) {
                        Some(id) => self.local.disconnect_local(&id).into(),
                        None => WireResult::Gone,
                    };
                    self.reply(&from, rid, result).await;
                }
            }
        }
    }

    async fn reply(&self, to: &str, rid: u64, result: WireResult) {
        let message = serde_json::to_vec(&Wire::Reply { rid, result }).expect("serialisable");
        let published: redis::RedisResult<()> = self
            .redis
            .clone()
            .publish(self.channel_of(to), message)
            .await;
        if let Err(error) = published {
            tracing::debug!(%error, "cluster: could not reply to another node");
        }
    }

    /// Sends a request to the node holding `id`, or answers without one.
    async fn request(
        self: Arc<Self>,
        id: Id,
        make: impl FnOnce(u64, String) -> Wire,
    ) -> Result<WireResult, ManageError> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err(ManageError::Unavailable(
                "the cluster's Redis is unreachable".into(),
            ));
        }
        let mut redis = self.redis.clone();
        let located: Option<(String, bool)> = self
            .locate
            .key(self.key(&format!("conn:{id}")))
            .arg(self.key("alive:"))
            .invoke_async(&mut redis)
            .await
            .map_err(|e| ManageError::Unavailable(e.to_string()))?;
        let node = match located {
            None => return Ok(WireResult::Gone),
            Some((node, _)) if node == self.config.node_id => {
                // Ours, but no longer here: a stale key.
                let _ = self.writes_tx.try_send(Write::Unregister(id));
                return Ok(WireResult::Gone);
            }
            Some((_, false)) => return Ok(WireResult::Gone),
            Some((node, true)) => node,
        };
        let rid = self.next_rid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(rid, tx);
        let message =
            serde_json::to_vec(&make(rid, self.config.node_id.clone())).expect("serialisable");
        let published: redis::RedisResult<()> =
            redis.publish(self.channel_of(&node), message).await;
        let answer = match published {
            Ok(()) => tokio::time::timeout(self.config.request_timeout, rx).await,
            Err(error) => {
                self.pending.lock().expect("pending lock").remove(&rid);
                return Err(ManageError::Unavailable(error.to_string()));
            }
        };
        if let Ok(Ok(result)) = answer {
            return Ok(result);
        }
        self.pending.lock().expect("pending lock").remove(&rid);
        // The node may have died while we waited.
        let alive: bool = redis
            .exists(self.key(&format!("alive:{node}")))
            .await
            .map_err(|e| ManageError::Unavailable(e.to_string()))?;
        if alive {
            Err(ManageError::Unavailable(format!(
                "node {node} did not answer in time"
            )))
        } else {
            Ok(WireResult::Gone)
        }
    }
}

fn simple(result: Result<WireResult, ManageError>) -> Result<(), ManageError> {
    match result? {
        WireResult::Ok | WireResult::Info { .. } => Ok(()),
        WireResult::Gone => Err(ManageError::Gone),
        WireResult::Full => Err(ManageError::Full),
    }
}

impl ClusterRegistry {
    fn me(&self) -> Arc<Self> {
        self.this
            .upgrade()
            .expect("the registry is alive while it is used")
    }
}

impl Registry for ClusterRegistry {
    fn register(&self, conn: Arc<Conn>) -> Deferred<bool> {
        let id = conn.id();
        if !self.local.insert(conn) {
            return Deferred::Ready(false);
        }
        // Written behind: a slow Redis does not hold up the connection.
        if self.writes_tx.try_send(Write::Register(id)).is_err() {
            self.reannounce.store(true, Ordering::Relaxed);
            tracing::debug!(connection_id = %id, "cluster: bookkeeping queue full; announced at the next heartbeat");
        }
        Deferred::Ready(true)
    }

    fn unregister(&self, id: &Id) {
        self.local.remove(id);
        if self.writes_tx.try_send(Write::Unregister(*id)).is_err() {
            tracing::debug!(connection_id = %id, "cluster: bookkeeping queue full; the key is cleaned when next looked up");
        }
    }

    fn local(&self, id: &Id) -> Option<Arc<Conn>> {
        self.local.get(id)
    }

    fn local_connections(&self) -> Vec<Arc<Conn>> {
        self.local.all()
    }

    fn local_count(&self) -> usize {
        self.local.count()
    }

    fn post(&self, id: &Id, frame: &OutFrame) -> Deferred<Result<(), ManageError>> {
        if let Some(result) = self.local.try_post_local(id, frame) {
            return Deferred::Ready(result);
        }
        let frame = base64::engine::general_purpose::STANDARD.encode(frame.bytes());
        let id = *id;
        let this = self.me();
        Deferred::Pending(Box::pin(async move {
            simple(
                this.request(id, |rid, from| Wire::Post {
                    rid,
                    from,
                    id: id.to_string(),
                    frame,
                })
                .await,
            )
        }))
    }

    fn info(&self, id: &Id) -> Deferred<Result<ConnectionInfo, ManageError>> {
        if self.local.get(id).is_some() {
            return Deferred::Ready(self.local.info_local(id));
        }
        let id = *id;
        let this = self.me();
        Deferred::Pending(Box::pin(async move {
            let result = this
                .request(id, |rid, from| Wire::Get {
                    rid,
                    from,
                    id: id.to_string(),
                })
                .await?;
            match result {
                WireResult::Info {
                    connected_at_ms,
                    last_active_ms,
                    source_ip,
                    user_agent,
                } => Ok(ConnectionInfo {
                    connected_at_ms,
                    last_active_ms,
                    source_ip,
                    user_agent,
                }),
                WireResult::Full => Err(ManageError::Full),
                _ => Err(ManageError::Gone),
            }
        }))
    }

    fn disconnect(&self, id: &Id) -> Deferred<Result<(), ManageError>> {
        if self.local.get(id).is_some() {
            return Deferred::Ready(self.local.disconnect_local(id));
        }
        let id = *id;
        let this = self.me();
        Deferred::Pending(Box::pin(async move {
            simple(
                this.request(id, |rid, from| Wire::Delete {
                    rid,
                    from,
                    id: id.to_string(),
                })
                .await,
            )
        }))
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn is_clustered(&self) -> bool {
        true
    }
}

/// The cluster's bus: Redis pub/sub on the registry's connection. Publishing queues the message
/// for a task that sends queued messages a pipeline at a time; the subscription connection
/// hands each message to its channel's subscriber. Subscribe before the registry runs: the
/// channels are subscribed to when it first reaches Redis (and again after every reconnect).
/// Messages published while Redis is unreachable are lost.
impl Bus for ClusterRegistry {
    fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BusError> {
        self.bus_tx
            .try_send((channel.to_owned(), payload))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BusError::Full,
                mpsc::error::TrySendError::Closed(_) => BusError::Closed,
            })
    }

    fn subscribe(&self, channel: &str, capacity: usize) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .insert(channel.to_owned(), tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ConnectionContext;

    /// A registry that has not run: nothing is sent, its queues only fill.
    fn idle_registry() -> Arc<ClusterRegistry> {
        ClusterRegistry::new(ClusterConfig::new("redis://127.0.0.1:1/0", "n")).unwrap()
    }

    #[tokio::test]
    async fn a_full_bus_queue_refuses_the_message_and_says_so() {
        let registry = idle_registry();
        for _ in 0..BUS_OUTBOX {
            registry.publish("c", Bytes::from_static(b"m")).unwrap();
        }
        assert_eq!(
            registry.publish("c", Bytes::from_static(b"m")),
            Err(BusError::Full)
        );
    }

    #[tokio::test]
    async fn registering_never_waits_and_a_full_write_queue_reannounces_later() {
        let registry = idle_registry();
        let conn = |_| {
            Arc::new(Conn::new(
                ConnectionContext {
                    connection_id: Id::random(),
                    connected_at_ms: 0,
                    source_ip: "127.0.0.1".parse().unwrap(),
                    user_agent: None,
                    domain_name: "localhost".into(),
                    authorizer: None,
                },
                1024,
            ))
        };
        for c in (0..WRITES).map(conn) {
            assert!(matches!(registry.register(c), Deferred::Ready(true)));
        }
        assert!(!registry.reannounce.load(Ordering::Relaxed));
        let one_more = conn(0);
        let id = one_more.id();
        assert!(matches!(registry.register(one_more), Deferred::Ready(true)));
        assert!(
            registry.reannounce.load(Ordering::Relaxed),
            "its key is written with every other at the next heartbeat"
        );
        assert!(registry.local(&id).is_some(), "served locally meanwhile");
    }
}
