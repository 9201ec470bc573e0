//! Which connections exist: the registry trait and the in-memory registry.
//!
//! The registry answers the three management operations for any connection id. The in-memory
//! registry knows only this process's connections; a clustered registry implements the same
//! trait and reaches connections on other nodes. Operations on local connections complete
//! synchronously ([`Deferred::Ready`]) so the broadcast path never allocates a future.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use crate::deferred::Deferred;
use crate::gateway::conn::{Conn, PushError};
use crate::gateway::frame::OutFrame;
use crate::ids::Id;

/// Why a management operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManageError {
    /// No such connection (closed, never existed, or still in `$connect`): 410.
    #[error("connection is gone")]
    Gone,
    /// The connection's outbox is full: 429.
    #[error("the connection's outbox is full")]
    Full,
    /// The node holding the connection could not be reached: 500 (cluster mode).
    #[error("the connection's node did not answer: {0}")]
    Unavailable(String),
}

impl From<PushError> for ManageError {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Gone => ManageError::Gone,
            PushError::Full => ManageError::Full,
        }
    }
}

/// What GetConnection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Handshake time, epoch milliseconds.
    pub connected_at_ms: i64,
    /// Last traffic either way, epoch milliseconds.
    pub last_active_ms: i64,
    /// The client's address.
    pub source_ip: String,
    /// The client's `User-Agent`, when it sent one.
    pub user_agent: Option<String>,
}

impl ConnectionInfo {
    /// The info of a local connection.
    pub fn of(conn: &Conn) -> Self {
        ConnectionInfo {
            connected_at_ms: conn.context.connected_at_ms,
            last_active_ms: conn.last_active_ms(),
            source_ip: conn.context.source_ip.to_string(),
            user_agent: conn.context.user_agent.as_deref().map(str::to_owned),
        }
    }
}

/// The set of connections the management API can reach.
pub trait Registry: Send + Sync + 'static {
    /// Adds a connection after its `$connect` succeeded; false if the id is taken.
    fn register(&self, conn: Arc<Conn>) -> Deferred<bool>;
    /// Removes a connection that has closed.
    fn unregister(&self, id: &Id);
    /// A connection of this process.
    fn local(&self, id: &Id) -> Option<Arc<Conn>>;
    /// Every connection of this process.
    fn local_connections(&self) -> Vec<Arc<Conn>>;
    /// How many connections this process holds.
    fn local_count(&self) -> usize;
    /// Queues a frame for a connection.
    fn post(&self, id: &Id, frame: &OutFrame) -> Deferred<Result<(), ManageError>>;
    /// Reports a connection's info.
    fn info(&self, id: &Id) -> Deferred<Result<ConnectionInfo, ManageError>>;
    /// Closes a connection with code 1000.
    fn disconnect(&self, id: &Id) -> Deferred<Result<(), ManageError>>;
    /// Whether every backend the registry needs is reachable (`/readyz`).
    fn is_ready(&self) -> bool {
        true
    }
    /// Whether connections may live on other nodes.
    fn is_clustered(&self) -> bool {
        false
    }
}

const SHARDS: usize = 64;

type Shard = Mutex<HashMap<Id, Arc<Conn>, foldhash::fast::RandomState>>;

/// The in-memory registry of this process's connections.
#[derive(Debug)]
pub struct LocalRegistry {
    shards: Box<[Shard]>,
}

impl Default for LocalRegistry {
    fn default() -> Self {
        LocalRegistry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl LocalRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, id: &Id) -> &Shard {
        // Hashed rather than read through `Id::as_str`, which checks the UTF-8 of the id on
        // every call: this runs once per recipient of a broadcast.
        let h = foldhash::fast::FixedState::default().hash_one(id);
        &self.shards[(h >> 58) as usize % SHARDS]
    }

    /// Posts to a local connection.
    ///
    /// The push happens under the shard's lock (it neither blocks nor awaits), which saves
    /// cloning and dropping the connection's `Arc` for each recipient of a broadcast.
    pub fn post_local(&self, id: &Id, frame: &OutFrame) -> Result<(), ManageError> {
        self.try_post_local(id, frame)
            .unwrap_or(Err(ManageError::Gone))
    }

    /// Posts to the connection if it is one of this process's: `None` when it is not. One
    /// lookup, where asking first and then posting took two (with the clone and drop of the
    /// connection's `Arc` between): a cluster's broadcast path, once per recipient.
    pub fn try_post_local(&self, id: &Id, frame: &OutFrame) -> Option<Result<(), ManageError>> {
        let shard = self.shard(id).lock().expect("registry lock");
        let conn = shard.get(id)?;
        Some(conn.push(frame).map_err(ManageError::from))
    }

    /// Info of a local connection.
    pub fn info_local(&self, id: &Id) -> Result<ConnectionInfo, ManageError> {
        let conn = self.get(id).ok_or(ManageError::Gone)?;
        if conn.is_closing() {
            return Err(ManageError::Gone);
        }
        Ok(ConnectionInfo::of(&conn))
    }

    /// Closes a local connection with 1000.
    pub fn disconnect_local(&self, id: &Id) -> Result<(), ManageError> {
        let conn = self.get(id).ok_or(ManageError::Gone)?;
        if conn.request_close(1000, "Connection Closed Normally") {
            Ok(())
        } else {
            Err(ManageError::Gone)
        }
    }
}

impl LocalRegistry {
    /// Adds a connection; false if the id is taken.
    pub fn insert(&self, conn: Arc<Conn>) -> bool {
        let mut shard = self.shard(&conn.id()).lock().expect("registry lock");
        match shard.entry(conn.id()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(conn);
                true
            }
        }
    }

    /// Removes a connection.
    pub fn remove(&self, id: &Id) {
        self.shard(id).lock().expect("registry lock").remove(id);
    }

    /// A connection by id.
    pub fn get(&self, id: &Id) -> Option<Arc<Conn>> {
        self.shard(id)
            .lock()
            .expect("registry lock")
            .get(id)
            .cloned()
    }

    /// Every connection.
    pub fn all(&self) -> Vec<Arc<Conn>> {
        let mut all = Vec::with_capacity(self.count());
        for shard in self.shards.iter() {
            all.extend(shard.lock().expect("registry lock").values().cloned());
        }
        all
    }

    /// How many connections there are.
    pub fn count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("registry lock").len())
            .sum()
    }
}

impl Registry for LocalRegistry {
    fn register(&self, conn: Arc<Conn>) -> Deferred<bool> {
        Deferred::Ready(self.insert(conn))
    }

    fn unregister(&self, id: &Id) {
        self.remove(id);
    }

    fn local(&self, id: &Id) -> Option<Arc<Conn>> {
        self.get(id)
    }

    fn local_connections(&self) -> Vec<Arc<Conn>> {
        self.all()
    }

    fn local_count(&self) -> usize {
        self.count()
    }

    fn post(&self, id: &Id, frame: &OutFrame) -> Deferred<Result<(), ManageError>> {
        Deferred::Ready(self.post_local(id, frame))
    }

    fn info(&self, id: &Id) -> Deferred<Result<ConnectionInfo, ManageError>> {
        Deferred::Ready(self.info_local(id))
    }

    fn disconnect(&self, id: &Id) -> Deferred<Result<(), ManageError>> {
        Deferred::Ready(self.disconnect_local(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ConnectionContext;

    fn conn() -> Arc<Conn> {
        Arc::new(Conn::new(
            ConnectionContext {
                connection_id: Id::random(),
                connected_at_ms: 5,
                source_ip: "127.0.0.1".parse().unwrap(),
                user_agent: Some("ua".into()),
                domain_name: "localhost".into(),
                authorizer: None,
            },
            1024,
        ))
    }

    #[test]
    fn register_post_info_disconnect() {
        let r = LocalRegistry::new();
        let c = conn();
        let id = c.id();
        assert!(r.insert(c.clone()));
        assert!(!r.insert(c.clone()), "ids are unique");
        assert_eq!(r.count(), 1);
        assert_eq!(r.post_local(&id, &OutFrame::text(b"x")), Ok(()));
        let info = r.info_local(&id).unwrap();
        assert_eq!(info.connected_at_ms, 5);
        assert_eq!(info.user_agent.as_deref(), Some("ua"));
        assert_eq!(r.disconnect_local(&id), Ok(()));
        assert_eq!(r.info_local(&id), Err(ManageError::Gone));
        assert_eq!(
            r.post_local(&id, &OutFrame::text(b"x")),
            Err(ManageError::Gone)
        );
        assert_eq!(
            r.try_post_local(&id, &OutFrame::text(b"x")),
            Some(Err(ManageError::Gone)),
            "closing, but still here"
        );
        r.remove(&id);
        assert_eq!(r.try_post_local(&id, &OutFrame::text(b"x")), None);
        assert_eq!(r.count(), 0);
        assert_eq!(r.disconnect_local(&id), Err(ManageError::Gone));
        assert_eq!(r.all().len(), 0);
    }
}
