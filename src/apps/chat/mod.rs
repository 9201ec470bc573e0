//! The built-in chat: rooms, persistent history, presence, reactions, and the articles' routes.
//!
//! The chat is a client of the gateway like any Lambda function: it gets proxy events through
//! [`Integration`] and reaches clients only through the [`ManagementApi`]. Its parts:
//!
//! - here: the integration. On the connection's task it checks each request
//!   ([`protocol`]), applies the rate limit (a [`TokenBucket`] per connection), answers mistakes at once, and
//!   queues the rest for the store thread;
//! - `engine`: the store thread, which owns history and presence changes and fans frames
//!   out after they are stored; `worker`: the store calls, run on the store thread or, for a
//!   store across the network, on an I/O thread of their own;
//! - [`store`] / [`sqlite`]: the history backend trait and its SQLite implementation;
//! - [`presence`]: membership, names and fan-out, behind a trait a cluster can implement;
//! - [`cluster`]: the chat on several nodes: history in Redis, membership shared over the
//!   cluster's bus;
//! - [`articles`]: the articles' `sendmessage` and `$default`, unchanged for their clients;
//! - [`ui`]: the browser UI, embedded in the binary.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::api::{Api, ApiError, keys};
use crate::deferred::Deferred;
use crate::event::{Event, Response};
use crate::gateway::frame::OutFrame;
use crate::gateway::registry::ManageError;
use crate::ids::Id;
use crate::integration::{Integration, IntegrationError, Invocation};
use crate::limits::TokenBucket;
use crate::management::ManagementApi;
use crate::selection::SelectionExpression;

pub mod articles;
pub mod cluster;
pub mod config;
mod engine;
pub mod presence;
pub mod protocol;
pub mod sqlite;
pub mod store;
pub mod ui;
mod worker;

pub use config::{ChatConfig, Synchronous};

use engine::{Command, EngineHandle};
use presence::{LocalPresence, Presence};
use protocol::{ChatError, ErrorCode};
use store::{ChatStore, Retention};

impl ChatConfig {
    /// The retention the store applies.
    pub fn retention(&self) -> Retention {
        Retention {
            count: self.retention_count,
            age_ms: (self.retention_age_secs as i64).saturating_mul(1000),
        }
    }
}

/// The chat's request limit: a [`TokenBucket`] per connection, made on its first chat request
/// and dropped at its `$disconnect`, in shards (by the id's hash) so that connections on
/// different threads rarely meet on a lock. A request takes one token or is refused with
/// `rate_limited`; a rate of 0 allows everything.
#[derive(Debug)]
struct RateLimits {
    rate: u32,
    burst: u32,
    hasher: foldhash::fast::RandomState,
    shards: Box<[Mutex<HashMap<Id, TokenBucket, foldhash::fast::RandomState>>]>,
}

impl RateLimits {
    const SHARDS: usize = 16;

    fn new(rate: u32, burst: u32) -> Self {
        RateLimits {
            rate,
            burst,
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..Self::SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, id: &Id) -> &Mutex<HashMap<Id, TokenBucket, foldhash::fast::RandomState>> {
        &self.shards[self.hasher.hash_one(id) as usize % Self::SHARDS]
    }

    fn allow(&self, id: Id) -> bool {
        self.allow_at(id, Instant::now())
    }

    fn allow_at(&self, id: Id, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let mut shard = self.shard(&id).lock().expect("rate limit lock");
        shard
            .entry(id)
            .or_insert_with(|| TokenBucket::with_burst(self.rate, self.burst, now))
            .try_take_at(now)
    }

    fn forget(&self, id: Id) {
        self.shard(&id).lock().expect("rate limit lock").remove(&id);
    }
}

/// The chat: one handler for all its routes, like a single Lambda function.
pub struct Chat {
    config: Arc<ChatConfig>,
    management: ManagementApi,
    engine: EngineHandle,
    limiter: RateLimits,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Chat {
    /// Starts the chat over `store`, with this process's presence, pushing through
    /// `management`.
    pub fn start(
        store: Box<dyn ChatStore>,
        config: ChatConfig,
        management: ManagementApi,
    ) -> Arc<Self> {
        let presence = Arc::new(LocalPresence::new(management.clone()));
        Self::start_with(store, presence, config, management)
    }

    /// Starts the chat over `store` and `presence` (for instance a cluster's).
    pub fn start_with(
        store: Box<dyn ChatStore>,
        presence: Arc<dyn Presence>,
        config: ChatConfig,
        management: ManagementApi,
    ) -> Arc<Self> {
        let config = Arc::new(config);
        let engine = engine::start(store, presence, management.clone(), config.clone());
        Arc::new(Chat {
            limiter: RateLimits::new(config.rate_per_sec, config.rate_burst),
            config,
            management,
            engine,
        })
    }

    /// The API: `$connect`, `$disconnect`, `$default`, the articles' `sendmessage` and
    /// `sendMessage`, and the chat's actions.
    pub fn api(self: &Arc<Self>) -> Result<Api, ApiError> {
        let mut api = Api::new(SelectionExpression::default());
        let articles = [
            keys::CONNECT,
            keys::DISCONNECT,
            keys::DEFAULT,
            "sendmessage",
            "sendMessage",
        ];
        for key in articles.into_iter().chain(protocol::ACTIONS) {
            api = api.route(key, self.clone(), false)?;
        }
        Ok(api)
    }

    /// Finishes the requests already queued and closes the store. Call it once every
    /// connection's `$disconnect` has run; later requests are refused.
    pub async fn close(&self) {
        self.engine.close().await;
    }

    /// Delivers a write that a shared store announced (see [`ChatStore::announces`]) to this
    /// node's connections.
    pub async fn announced(&self, write: store::Write, applied: store::Applied) {
        self.engine
            .send(Command::Announced { write, applied })
            .await;
    }

    /// Applies a membership change another node made.
    pub(crate) async fn peer(&self, change: cluster::PeerChange) {
        self.engine.send(Command::Peer(change)).await;
    }

    /// Shares this node's membership again with the other nodes.
    pub async fn resync(&self) {
        self.engine.send(Command::Resync).await;
    }

    fn reply(&self, id: Id, frame: &OutFrame) {
        if let Err(e) = self.management.post_frame_detached(&id, frame) {
            tracing::debug!(connection_id = %id, error = %e, "reply not delivered");
        }
    }

    /// A chat action: checked and rate limited here, carried out by the store thread.
    fn chat_request(&self, action: &str, event: &Event<'_>) -> Invocation {
        let id = event.connection_id();
        let body = event.body_json();
        let request = if !self.limiter.allow(id) {
            Err(ChatError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many requests: at most {} in a burst and {} a second",
                    self.config.rate_burst, self.config.rate_per_sec
                ),
            ))
        } else {
            match &body {
                Some(body) => protocol::parse(action, body, &self.config),
                None => Err(ChatError::new(
                    ErrorCode::BadRequest,
                    "the message is not JSON",
                )),
            }
        };
        match request {
            Ok(request) => self
                .engine
                .submit(Command::Request { id, request }, Response::ok()),
            Err(error) => {
                // A refused `send` names its message, so that the client knows which one.
                let client_id = match (action, &body) {
                    ("send", Some(body)) => body.get("clientId").and_then(|c| c.as_str()),
                    _ => None,
                };
                self.reply(id, &error.frame(action, client_id));
                Deferred::Ready(Ok(Response::ok()))
            }
        }
    }

    /// The articles' `sendmessage` / `sendMessage`.
    fn send_message(&self, event: &Event<'_>) -> Invocation {
        let id = event.connection_id();
        let Some(body) = event.body_json() else {
            return Deferred::Ready(Err(IntegrationError::Failed(
                "the message is not JSON".into(),
            )));
        };
        let sent = Response::with_body("Data sent.");
        match articles::broadcast(&body) {
            Some(b) => {
                let action = if event.route_key == "sendMessage" {
                    "sendMessage"
                } else {
                    "sendmessage"
                };
                let command = Command::Article {
                    id,
                    action,
                    text: b.text,
                    skip_sender: b.skip_sender,
                };
                self.engine.submit(command, sent)
            }
            None => {
                self.reply(id, &OutFrame::text(articles::MISSING_CONTENT.as_bytes()));
                Deferred::Ready(Ok(sent))
            }
        }
    }

    /// The tutorial's `$default`: the sender's connection info.
    fn default_route(&self, event: &Event<'_>) -> Result<Response, IntegrationError> {
        let id = event.connection_id();
        let info = match self.management.get(&id) {
            Deferred::Ready(r) => r,
            // Local connections answer at once; the sender is always local.
            Deferred::Pending(_) => Err(ManageError::Unavailable("remote sender".into())),
        };
        let info = info.map_err(|e| IntegrationError::Failed(e.to_string()))?;
        let reply = articles::tutorial_reply(&info, id);
        self.reply(id, &OutFrame::text(reply.as_bytes()));
        Ok(Response::ok())
    }
}

impl Integration for Chat {
    fn invoke(&self, event: &Event<'_>) -> Invocation {
        let id = event.connection_id();
        match event.route_key {
            keys::CONNECT => self.engine.connect(
                id,
                event.connection.connected_at_ms,
                Response::with_body("Connected."),
            ),
            keys::DISCONNECT => {
                self.limiter.forget(id);
                self.engine.submit(
                    Command::Disconnect { id },
                    Response::with_body("Disconnected."),
                )
            }
            keys::DEFAULT => Deferred::Ready(self.default_route(event)),
            "sendmessage" | "sendMessage" => self.send_message(event),
            action => self.chat_request(action, event),
        }
    }

    fn name(&self) -> &str {
        "chat"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_per_connection_bursts_then_refills_at_the_rate() {
        let limits = RateLimits::new(2, 3);
        let (a, b) = (Id::random(), Id::random());
        let t0 = Instant::now();
        assert!((0..3).all(|_| limits.allow_at(a, t0)));
        assert!(!limits.allow_at(a, t0));
        assert!(limits.allow_at(b, t0), "buckets are per connection");
        // Half a second at 2 per second gives one token back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limits.allow_at(a, t1));
        assert!(!limits.allow_at(a, t1));
        // A long pause refills to the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| limits.allow_at(a, t2)).count(), 3);
        limits.forget(a);
        assert!(limits.allow_at(a, t2), "a forgotten connection starts full");
    }

    #[test]
    fn a_zero_rate_allows_everything() {
        let limits = RateLimits::new(0, 0);
        let a = Id::random();
        assert!((0..1000).all(|_| limits.allow(a)));
    }
}
