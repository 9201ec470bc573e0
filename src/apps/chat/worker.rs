//! The chat's store calls ([`Job`]s) and their outcomes ([`Done`]), and where they run.
//!
//! A store on local disk (SQLite) is called on the store thread itself: each job runs at once
//! and its outcome is handled before the next command. A store across the network (one that
//! announces its writes to every node, [`ChatStore::announces`]: Redis) gets a thread of its
//! own, the I/O thread: the store thread hands it jobs through a bounded queue and goes on;
//! the outcomes come back on the store thread's own queue, in job order, as
//! [`Command::Done`]. So the store thread never waits on the network, and a node's write and
//! a later read still reach the store in the order the node made them.
//!
//! The I/O thread's queue holds [`QUEUE`] jobs. When it is full (the store is far behind), a
//! new job fails at once: its requests are answered `unavailable`.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use tokio::sync::mpsc;

use super::engine::{Command, Pending};
use crate::apps::chat::protocol::{LOBBY, Name, Room, RoomSummary};
use crate::apps::chat::store::{Applied, ChatStore, Page, StoreError, StoredMessage, Write};
use crate::ids::Id;

/// Capacity of the I/O thread's queue, in jobs (a job stores a whole batch of writes).
pub(crate) const QUEUE: usize = 1024;
/// The most rooms a `rooms` answer lists.
const MAX_ROOMS_LISTED: usize = 100;

/// A store call.
#[derive(Debug)]
pub(crate) enum Job {
    /// Store a batch of writes.
    Apply {
        writes: Vec<Write>,
        pending: Vec<Pending>,
    },
    /// Read what a joiner gets: the latest messages, or those after `since`.
    Join {
        room: Room,
        id: Id,
        name: Option<Name>,
        since: Option<u64>,
        history_default: usize,
        recovery_max: usize,
    },
    /// Read messages before an id.
    Page {
        room: Room,
        id: Id,
        before: Option<u64>,
        limit: usize,
    },
    /// List the rooms, given the rooms with members (and how many).
    Rooms { id: Id, live: Vec<(Room, usize)> },
    /// Apply age retention.
    Prune { now_ms: i64 },
}

/// What a joiner gets.
#[derive(Debug)]
pub(crate) struct JoinRead {
    pub(crate) last_id: u64,
    pub(crate) messages: Vec<StoredMessage>,
    pub(crate) truncated: bool,
}

/// A store call's outcome.
#[derive(Debug)]
pub(crate) enum Done {
    Applied {
        writes: Vec<Write>,
        pending: Vec<Pending>,
        result: Result<Vec<Applied>, StoreError>,
    },
    Joined {
        room: Room,
        id: Id,
        name: Option<Name>,
        result: Result<JoinRead, StoreError>,
    },
    Paged {
        room: Room,
        id: Id,
        result: Result<Page, StoreError>,
    },
    Rooms {
        id: Id,
        result: Result<Vec<RoomSummary>, StoreError>,
    },
    Pruned(Result<u64, StoreError>),
}

impl Job {
    /// Runs the call.
    pub(crate) fn run(self, store: &mut dyn ChatStore) -> Done {
        match self {
            Job::Apply { writes, pending } => {
                let result = store.apply(&writes);
                Done::Applied {
                    writes,
                    pending,
                    result,
                }
            }
            Job::Join {
                room,
                id,
                name,
                since,
                history_default,
                recovery_max,
            } => {
                let result = read_join(store, &room, since, history_default, recovery_max);
                Done::Joined {
                    room,
                    id,
                    name,
                    result,
                }
            }
            Job::Page {
                room,
                id,
                before,
                limit,
            } => {
                let result = store.before(&room, before, limit);
                Done::Paged { room, id, result }
            }
            Job::Rooms { id, live } => Done::Rooms {
                id,
                result: list_rooms(store, live),
            },
            Job::Prune { now_ms } => Done::Pruned(store.prune(now_ms)),
        }
    }

    /// The outcome of the call when it cannot be made.
    pub(crate) fn fail(self, error: StoreError) -> Done {
        match self {
            Job::Apply { writes, pending } => Done::Applied {
                writes,
                pending,
                result: Err(error),
            },
            Job::Join { room, id, name, .. } => Done::Joined {
                room,
                id,
                name,
                result: Err(error),
            },
            Job::Page { room, id, .. } => Done::Paged {
                room,
                id,
                result: Err(error),
            },
            Job::Rooms { id, .. } => Done::Rooms {
                id,
                result: Err(error),
            },
            Job::Prune { .. } => Done::Pruned(Err(error)),
        }
    }
}

fn read_join(
    store: &mut dyn ChatStore,
    room: &str,
    since: Option<u64>,
    history_default: usize,
    recovery_max: usize,
) -> Result<JoinRead, StoreError> {
    let last_id = store.last_id(room)?;
    let (messages, truncated) = match since {
        Some(since) if since <= last_id => {
            let r = store.after(room, since, recovery_max)?;
            (r.messages, r.truncated)
        }
        // No `since`: the latest messages. A `since` above the last id: the client's view
        // belongs to another database; it starts afresh.
        other => {
            let page = store.before(room, None, history_default)?;
            (page.messages, other.is_some())
        }
    };
    Ok(JoinRead {
        last_id,
        messages,
        truncated,
    })
}

fn list_rooms(
    store: &mut dyn ChatStore,
    live: Vec<(Room, usize)>,
) -> Result<Vec<RoomSummary>, StoreError> {
    let stored = store.rooms(MAX_ROOMS_LISTED)?;
    let mut rooms: Vec<RoomSummary> = stored
        .into_iter()
        .map(|r| RoomSummary {
            members: live
                .iter()
                .find(|(room, _)| *room == r.room)
                .map_or(0, |l| l.1),
            room: r.room,
            last_id: r.last_id,
        })
        .collect();
    for (room, members) in live {
        if !rooms.iter().any(|r| r.room == room) {
            let last_id = store.last_id(&room)?;
            rooms.push(RoomSummary {
                room,
                members,
                last_id,
            });
        }
    }
    if !rooms.iter().any(|r| &*r.room == LOBBY) {
        rooms.push(RoomSummary {
            room: Room::from(LOBBY),
            members: 0,
            last_id: 0,
        });
    }
    // The lobby first, then by name.
    rooms.sort_by(|a, b| (&*a.room != LOBBY, &a.room).cmp(&(&*b.room != LOBBY, &b.room)));
    Ok(rooms)
}

/// Where the store is called.
pub(crate) enum Storage {
    /// On the store thread.
    Here(Box<dyn ChatStore>),
    /// On the I/O thread, through its queue (`None` once closed).
    Worker(Option<SyncSender<Job>>),
}

impl Storage {
    /// The store, called on the store thread if it keeps its data on local disk, on an I/O
    /// thread of its own if it announces its writes (a store across the network), sending its
    /// outcomes to `results`.
    pub(crate) fn new(store: Box<dyn ChatStore>, results: mpsc::WeakSender<Command>) -> Self {
        if !store.announces() {
            return Storage::Here(store);
        }
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("chat-store-io".into())
            .spawn(move || io_thread(store, rx, results))
            .expect("the chat's I/O thread starts");
        Storage::Worker(Some(tx))
    }

    /// Whether outcomes come back later, as [`Command::Done`].
    pub(crate) fn is_deferred(&self) -> bool {
        matches!(self, Storage::Worker(_))
    }

    /// Runs `job` now (its outcome is returned) or hands it to the I/O thread (`None`).
    pub(crate) fn submit(&mut self, job: Job) -> Option<Done> {
        match self {
            Storage::Here(store) => Some(job.run(store.as_mut())),
            Storage::Worker(None) => {
                Some(job.fail(StoreError::Failed("the chat's storage is closed".into())))
            }
            Storage::Worker(Some(tx)) => match tx.try_send(job) {
                Ok(()) => None,
                Err(TrySendError::Full(job)) => Some(job.fail(StoreError::Failed(
                    "the chat's storage is too far behind".into(),
                ))),
                Err(TrySendError::Disconnected(job)) => {
                    Some(job.fail(StoreError::Failed("the chat's storage has stopped".into())))
                }
            },
        }
    }

    /// Stops taking jobs; true if the I/O thread will answer [`Command::StoreClosed`] once it
    /// has run the jobs already queued.
    pub(crate) fn close(&mut self) -> bool {
        match self {
            Storage::Here(_) => false,
            Storage::Worker(tx) => tx.take().is_some(),
        }
    }
}

/// Runs jobs until the store thread stops sending them. It holds the store thread's queue
/// weakly, so that a chat dropped without closing still ends both threads.
fn io_thread(
    mut store: Box<dyn ChatStore>,
    jobs: Receiver<Job>,
    results: mpsc::WeakSender<Command>,
) {
    let answer = |command: Command| match results.upgrade() {
        Some(tx) => tx.blocking_send(command).is_ok(),
        None => false,
    };
    for job in jobs {
        if !answer(Command::Done(job.run(store.as_mut()))) {
            return;
        }
    }
    drop(store);
    answer(Command::StoreClosed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::chat::store::{Recovery, RoomInfo};
    use std::sync::Mutex;

    /// A store across the network whose first write waits to be let go.
    struct Slow {
        go: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    impl ChatStore for Slow {
        fn apply(&mut self, writes: &[Write]) -> Result<Vec<Applied>, StoreError> {
            if let Some(go) = self.go.lock().unwrap().take() {
                go.recv().unwrap();
            }
            Ok(writes.iter().map(|_| Applied::Appended(1)).collect())
        }
        fn last_id(&mut self, _: &str) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn before(&mut self, _: &str, _: Option<u64>, _: usize) -> Result<Page, StoreError> {
            Ok(Page::default())
        }
        fn after(&mut self, _: &str, _: u64, _: usize) -> Result<Recovery, StoreError> {
            Ok(Recovery::default())
        }
        fn rooms(&mut self, _: usize) -> Result<Vec<RoomInfo>, StoreError> {
            Ok(Vec::new())
        }
        fn prune(&mut self, _: i64) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn announces(&self) -> bool {
            true
        }
    }

    fn apply() -> Job {
        Job::Apply {
            writes: Vec::new(),
            pending: Vec::new(),
        }
    }

    #[test]
    fn a_full_io_queue_fails_a_job_at_once_and_the_queued_ones_still_run() {
        let (go, go_rx) = std::sync::mpsc::channel();
        let store = Slow {
            go: Mutex::new(Some(go_rx)),
        };
        let (results, mut done) = mpsc::channel(2 * QUEUE);
        let mut storage = Storage::new(Box::new(store), results.downgrade());
        assert!(storage.is_deferred());
        // The I/O thread holds at most one job while the queue holds `QUEUE`.
        let mut accepted = 0;
        let refused = loop {
            match storage.submit(apply()) {
                None => accepted += 1,
                Some(refused) => break refused,
            }
            assert!(accepted <= QUEUE + 1, "the queue is bounded");
        };
        assert!(accepted >= QUEUE, "{accepted}");
        assert!(
            matches!(refused, Done::Applied { result: Err(StoreError::Failed(ref m)), .. } if m.contains("behind")),
            "{refused:?}"
        );
        go.send(()).unwrap();
        assert!(storage.close());
        for _ in 0..accepted {
            assert!(matches!(
                done.blocking_recv(),
                Some(Command::Done(Done::Applied { result: Ok(_), .. }))
            ));
        }
        assert!(matches!(done.blocking_recv(), Some(Command::StoreClosed)));
    }
}
