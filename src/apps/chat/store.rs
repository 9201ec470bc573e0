//! What the chat keeps: the [`ChatStore`] trait a history backend implements, and its types.
//!
//! A store holds each room's messages, the room's id counter and the reaction counts. The
//! chat calls it from one thread only, never from a connection's task, so implementations
//! may block: the store thread for a store on local disk, an I/O thread of its own for a store
//! that announces its writes ([`ChatStore::announces`]: a store across the network), so that
//! the store thread never waits on the network. The embedded implementation is SQLite
//! ([`crate::apps::chat::sqlite`]); the shared one, for several nodes, is
//! [`crate::apps::chat::cluster::RedisChatStore`].
//!
//! The contract, which the test `store::tests::contract` checks for any implementation:
//! - [`ChatStore::apply`] is all or nothing: when it returns `Ok`, every write in it is stored
//!   durably; when it returns `Err`, none is, and no id was used up.
//! - Ids start at 1 in each room, increase by one per message and are never reused, even
//!   after every message of the room was deleted by retention or after a restart.
//! - Retention deletes the oldest messages of a room first, so the ids a room still holds are
//!   always one contiguous range ending at its last id.

use crate::apps::chat::protocol::{Member, Room};

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The room.
    pub room: Room,
    /// Who sent it.
    pub from: Member,
    /// The text.
    pub text: Box<str>,
    /// The sender's own id for it.
    pub client_id: Option<Box<str>>,
    /// When the chat accepted it, epoch milliseconds.
    pub ts_ms: i64,
    /// How it is fanned out once stored (not stored itself).
    pub delivery: Delivery,
}

/// How a stored message is fanned out: what the engine needs besides the message itself, so
/// that a store announcing its writes to other nodes can carry it along.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Not delivered to this connection (the articles' `message` goes to everyone else).
    pub skip: Option<crate::ids::Id>,
    /// Plain clients get the bare text (the articles' routes) instead of `name: text`.
    pub bare: bool,
}

/// One change in an [`ChatStore::apply`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Store a message under the room's next id.
    Append(NewMessage),
    /// Add one to a message's count for an emoji.
    React {
        /// The room.
        room: Room,
        /// The message id.
        id: u64,
        /// The reaction.
        emoji: Box<str>,
    },
}

/// What one [`Write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The message got this id.
    Appended(u64),
    /// The reaction's count is now this.
    Reacted(u64),
    /// The message reacted to does not exist (or is no longer kept): nothing changed.
    UnknownMessage,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id in its room.
    pub id: u64,
    /// When it was accepted, epoch milliseconds.
    pub ts_ms: i64,
    /// The sender's connection id.
    pub from_id: String,
    /// The sender's name when it was sent.
    pub from_name: String,
    /// The text.
    pub text: String,
    /// The sender's own id for it.
    pub client_id: Option<String>,
    /// Reaction counts, by emoji.
    pub reactions: Vec<(String, u64)>,
}

/// Messages older than some id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Oldest first.
    pub messages: Vec<StoredMessage>,
    /// Whether older messages exist.
    pub has_more: bool,
}

/// Messages after an id the client already has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Oldest first.
    pub messages: Vec<StoredMessage>,
    /// Whether some messages after the id are missing from `messages` (no longer kept, or
    /// more than the limit).
    pub truncated: bool,
}

/// A room the store knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room.
    pub room: Room,
    /// Its last message id.
    pub last_id: u64,
}

/// How long messages are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept per room (0: all).
    pub count: u64,
    /// Milliseconds a message is kept (0: forever).
    pub age_ms: i64,
}

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be opened or created.
    #[error("cannot open the chat database {path}: {message}")]
    Open {
        /// The database file.
        path: String,
        /// Why.
        message: String,
    },
    /// Another process has the database open.
    #[error("the chat database {path} is in use by another process")]
    Locked {
        /// The database file.
        path: String,
    },
    /// The database was written by a newer version of the program.
    #[error("the chat database has schema version {found}; this build knows up to {known}")]
    TooNew {
        /// The database's version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A read or write failed.
    #[error("chat storage failed: {0}")]
    Failed(String),
}

/// A chat history backend. See the module documentation for the contract.
pub trait ChatStore: Send + 'static {
    /// Applies `writes` in order, durably and all or nothing; one result per write.
    fn apply(&mut self, writes: &[Write]) -> Result<Vec<Applied>, StoreError>;

    /// The room's last message id (0 if it never had one).
    fn last_id(&mut self, room: &str) -> Result<u64, StoreError>;

    /// Up to `limit` messages with ids below `before` (all ids when `None`), the newest ones.
    fn before(&mut self, room: &str, before: Option<u64>, limit: usize)
    -> Result<Page, StoreError>;

    /// Up to `limit` messages with ids above `since`, the newest ones.
    fn after(&mut self, room: &str, since: u64, limit: usize) -> Result<Recovery, StoreError>;

    /// The rooms that have had messages, most recently active first.
    fn rooms(&mut self, limit: usize) -> Result<Vec<RoomInfo>, StoreError>;

    /// Deletes messages older than the retention age; returns how many.
    fn prune(&mut self, now_ms: i64) -> Result<u64, StoreError>;

    /// Whether the store announces every stored write to every node itself, in store order
    /// (a store shared by several nodes). The engine then delivers writes only as their
    /// announcements arrive ([`crate::apps::chat::Chat::announced`]), so that each room's
    /// messages reach every node in id order; the embedded store does not. A store that
    /// announces is called on an I/O thread of its own, not on the store thread.
    fn announces(&self) -> bool {
        false
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The contract every store must keep, run against each implementation.

    use super::*;
    use crate::ids::Id;

    fn append(room: &str, text: &str, ts_ms: i64) -> Write {
        Write::Append(NewMessage {
            room: room.into(),
            from: Member {
                id: Id::parse("Tq3mxb7WNjMCFhA=").unwrap(),
                name: "alice".into(),
            },
            text: text.into(),
            client_id: Some(format!("c-{text}").into()),
            ts_ms,
            delivery: Delivery::default(),
        })
    }

    fn react(room: &str, id: u64) -> Write {
        Write::React {
            room: room.into(),
            id,
            emoji: "👏".into(),
        }
    }

    fn ids(messages: &[StoredMessage]) -> Vec<u64> {
        messages.iter().map(|m| m.id).collect()
    }

    /// Checks the contract on a fresh store whose retention is 5 messages and 1,000 ms;
    /// `reopen` must give a store over the same data, as after a restart.
    pub(crate) fn contract<S: ChatStore>(mut store: S, reopen: impl FnOnce(S) -> S) {
        // Ids per room, from 1, one batch with several rooms.
        let applied = store
            .apply(&[
                append("a", "1", 100),
                append("b", "x", 100),
                append("a", "2", 100),
            ])
            .unwrap();
        assert_eq!(
            applied,
            [
                Applied::Appended(1),
                Applied::Appended(1),
                Applied::Appended(2)
            ]
        );
        assert_eq!(store.last_id("a").unwrap(), 2);
        assert_eq!(store.last_id("none").unwrap(), 0);

        // Reactions count up; unknown messages change nothing.
        let applied = store
            .apply(&[react("a", 1), react("a", 1), react("a", 9), react("b", 1)])
            .unwrap();
        assert_eq!(
            applied,
            [
                Applied::Reacted(1),
                Applied::Reacted(2),
                Applied::UnknownMessage,
                Applied::Reacted(1)
            ]
        );
        let page = store.before("a", None, 10).unwrap();
        assert_eq!(ids(&page.messages), [1, 2]);
        assert!(!page.has_more);
        assert_eq!(page.messages[0].reactions, [("👏".to_owned(), 2)]);
        assert_eq!(page.messages[0].text, "1");
        assert_eq!(page.messages[0].from_name, "alice");
        assert_eq!(page.messages[0].client_id.as_deref(), Some("c-1"));
        assert!(page.messages[1].reactions.is_empty());

        // A reaction to a message appended in the same batch.
        let applied = store
            .apply(&[append("a", "3", 200), react("a", 3)])
            .unwrap();
        assert_eq!(applied, [Applied::Appended(3), Applied::Reacted(1)]);

        // Survives a restart; ids continue.
        let mut store = reopen(store);
        assert_eq!(store.last_id("a").unwrap(), 3);
        assert_eq!(
            store.apply(&[append("a", "4", 300)]).unwrap(),
            [Applied::Appended(4)]
        );
        assert_eq!(
            store.before("a", None, 10).unwrap().messages[0].reactions,
            [("👏".to_owned(), 2)]
        );

        // Pages and recovery.
        let page = store.before("a", Some(4), 2).unwrap();
        assert_eq!(ids(&page.messages), [2, 3]);
        assert!(page.has_more);
        let page = store.before("a", Some(2), 2).unwrap();
        assert_eq!(ids(&page.messages), [1]);
        assert!(!page.has_more);
        let r = store.after("a", 1, 10).unwrap();
        assert_eq!(ids(&r.messages), [2, 3, 4]);
        assert!(!r.truncated);
        let r = store.after("a", 1, 2).unwrap();
        assert_eq!(ids(&r.messages), [3, 4], "the newest ones");
        assert!(r.truncated);
        assert!(store.after("a", 4, 10).unwrap().messages.is_empty());

        // Count retention (5): the oldest go, ids are never reused.
        for i in 5..=8 {
            let ts = if i == 8 { 500 } else { 400 };
            store.apply(&[append("a", &i.to_string(), ts)]).unwrap();
        }
        assert_eq!(
            ids(&store.before("a", None, 10).unwrap().messages),
            [4, 5, 6, 7, 8]
        );
        let r = store.after("a", 1, 10).unwrap();
        assert_eq!(ids(&r.messages), [4, 5, 6, 7, 8]);
        assert!(r.truncated, "2 and 3 are no longer kept");
        assert_eq!(
            store.apply(&[react("a", 2)]).unwrap(),
            [Applied::UnknownMessage]
        );

        // Age retention (1,000 ms): everything older than now - 1000 goes, oldest first.
        assert_eq!(
            store.prune(1450).unwrap(),
            5,
            "b's 1, a's 4 to 7 (ts < 450)"
        );
        assert_eq!(ids(&store.before("a", None, 10).unwrap().messages), [8]);
        assert!(store.before("b", None, 10).unwrap().messages.is_empty());
        assert_eq!(store.last_id("b").unwrap(), 1, "the counter stays");
        assert_eq!(
            store.apply(&[append("b", "y", 2000)]).unwrap(),
            [Applied::Appended(2)]
        );
        let r = store.after("b", 0, 10).unwrap();
        assert_eq!(ids(&r.messages), [2]);
        assert!(r.truncated);

        let rooms = store.rooms(10).unwrap();
        assert_eq!(rooms.len(), 2);
        assert_eq!(&*rooms[0].room, "b", "most recently active first");
        assert_eq!(rooms[1].last_id, 8);
    }
}
