//! The embedded history store: one SQLite database in the data directory.
//!
//! - **Files**: `{data_dir}/chat.sqlite3` in WAL mode, and `chat.lock`, a tiny database that
//!   the process holds an exclusive lock on while it runs, so that a second server on the same
//!   directory refuses to start instead of handing out the same ids. The operating system
//!   releases the lock when the process dies, `kill -9` included.
//! - **Durability**: a batch is one transaction. With `synchronous = normal` its commit has
//!   been written to the WAL file, so it survives the process being killed; with `full` it
//!   has been flushed to the disk too. The chat delivers nothing before the commit returns.
//! - **Schema**: versioned by `PRAGMA user_version`; [`MIGRATIONS`] run in order at open,
//!   and a database from a newer build is refused.
//! - **Ids**: `rooms.last_id` is updated in the same transaction as the messages, and is kept
//!   when retention deletes messages, so ids are never reused.
//! - **Cost**: statements are prepared once (`prepare_cached`); last ids are cached in
//!   memory. A batch of N messages is N inserts, one update per room and one commit.
//!   Count retention deletes in steps of 1 % of the count (a room holds at most 1 % more),
//!   not at every commit. WAL checkpoints, which `fsync`, run on their own thread with their
//!   own connection once a second, never inside a commit: a commit never waits for the disk
//!   with `synchronous = normal`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use crate::apps::chat::config::Synchronous;
use crate::apps::chat::protocol::Room;
use crate::apps::chat::store::{
    Applied, ChatStore, Page, Recovery, Retention, RoomInfo, StoreError, StoredMessage, Write,
};

/// The schema, one entry per version: entry `i` takes a database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: rooms with their id counters, messages, reaction counts.
    "CREATE TABLE rooms (
        name TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        room TEXT NOT NULL,
        id INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL,
        from_id TEXT NOT NULL,
        from_name TEXT NOT NULL,
        text TEXT NOT NULL,
        client_id TEXT,
        PRIMARY KEY (room, id)
    ) WITHOUT ROWID;
    CREATE INDEX messages_by_time ON messages (ts_ms);
    CREATE TABLE reactions (
        room TEXT NOT NULL,
        id INTEGER NOT NULL,
        emoji TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (room, id, emoji)
    ) WITHOUT ROWID;",
];

/// The database file's name in the data directory.
pub const FILE_NAME: &str = "chat.sqlite3";
/// The lock file's name in the data directory.
pub const LOCK_NAME: &str = "chat.lock";
/// How often the checkpointer moves the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// WAL frames (pages) beyond which the checkpointer makes the next commit start the WAL
/// over. A passive checkpoint leaves that to the next commit, and only when it finds every
/// frame copied; under steady writes one always slips in first, and the WAL file (and its
/// index, mapped into memory) would grow for ever.
const WAL_RESTART_FRAMES: i64 = 1000;

const INSERT_MESSAGE: &str =
    "INSERT INTO messages (room, id, ts_ms, from_id, from_name, text, client_id)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const MESSAGE_EXISTS: &str = "SELECT 1 FROM messages WHERE room = ?1 AND id = ?2";
const ADD_REACTION: &str = "INSERT INTO reactions (room, id, emoji, count) VALUES (?1, ?2, ?3, 1)
     ON CONFLICT (room, id, emoji) DO UPDATE SET count = count + 1
     RETURNING count";
const SET_LAST_ID: &str = "INSERT INTO rooms (name, last_id, updated_ms) VALUES (?1, ?2, ?3)
     ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id, updated_ms = excluded.updated_ms";
const GET_LAST_ID: &str = "SELECT last_id FROM rooms WHERE name = ?1";
const DELETE_MESSAGES_UP_TO: &str = "DELETE FROM messages WHERE room = ?1 AND id <= ?2";
const DELETE_REACTIONS_UP_TO: &str = "DELETE FROM reactions WHERE room = ?1 AND id <= ?2";
const SELECT_BEFORE: &str = "SELECT id, ts_ms, from_id, from_name, text, client_id FROM messages
     WHERE room = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3";
const SELECT_AFTER: &str = "SELECT id, ts_ms, from_id, from_name, text, client_id FROM messages
     WHERE room = ?1 AND id > ?2 ORDER BY id DESC LIMIT ?3";
const SELECT_REACTIONS: &str = "SELECT id, emoji, count FROM reactions
     WHERE room = ?1 AND id BETWEEN ?2 AND ?3 ORDER BY id, emoji";

/// The SQLite history store.
pub struct SqliteStore {
    conn: Connection,
    retention: Retention,
    last_ids: HashMap<Room, u64>,
    checkpointer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// Held open (and so locked) for as long as the store lives; dropped last.
    _lock: Connection,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.checkpointer.take() {
            drop(stop);
            let _ = thread.join();
        }
        // The connection closes next; as the last one, it checkpoints and removes the WAL.
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.conn.path())
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

fn failed(e: rusqlite::Error) -> StoreError {
    StoreError::Failed(e.to_string())
}

impl SqliteStore {
    /// Opens (creating it and the directory when needed) the database in `dir` and brings its
    /// schema up to date.
    pub fn open(
        dir: &Path,
        retention: Retention,
        synchronous: Synchronous,
    ) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let open_error = |e: &dyn std::fmt::Display| StoreError::Open {
            path: shown.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(&e))?;
        let lock = take_lock(&dir.join(LOCK_NAME)).map_err(|e| {
            if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) {
                StoreError::Locked {
                    path: shown.clone(),
                }
            } else {
                open_error(&e)
            }
        })?;
        let mut conn = Connection::open(&path).map_err(|e| open_error(&e))?;
        let setup = |conn: &Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(Duration::from_secs(5))?;
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(rusqlite::Error::InvalidParameterName(format!(
                    "journal_mode is {mode}, not wal"
                )));
            }
            let sync = match synchronous {
                Synchronous::Normal => "NORMAL",
                Synchronous::Full => "FULL",
            };
            conn.pragma_update(None, "synchronous", sync)?;
            // Checkpoints are the checkpointer thread's job, never a commit's.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            conn.set_prepared_statement_cache_capacity(32);
            Ok(())
        };
        setup(&conn).map_err(|e| open_error(&e))?;
        migrate(&mut conn)?;
        let checkpointer = start_checkpointer(path).map_err(|e| open_error(&e))?;
        Ok(SqliteStore {
            conn,
            retention,
            last_ids: HashMap::new(),
            checkpointer: Some(checkpointer),
            _lock: lock,
        })
    }
}

/// Opens the lock database and takes its write lock for good (`locking_mode = EXCLUSIVE`
/// keeps it until the connection closes); busy when another process holds it.
fn take_lock(path: &Path) -> rusqlite::Result<Connection> {
    let lock = Connection::open(path)?;
    lock.busy_timeout(Duration::from_millis(200))?;
    lock.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    lock.execute_batch(
        "BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS holder (pid INTEGER);
         DELETE FROM holder; INSERT INTO holder VALUES (0); COMMIT;",
    )?;
    lock.execute("UPDATE holder SET pid = ?1", [std::process::id()])?;
    Ok(lock)
}

/// Starts the thread that checkpoints the WAL once a second with its own connection, and a
/// last time when the store is dropped.
fn start_checkpointer(path: PathBuf) -> rusqlite::Result<(mpsc::Sender<()>, JoinHandle<()>)> {
    let conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("chat-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                checkpoint_step(&conn);
            }
            let _ = checkpoint(&conn, "TRUNCATE");
        })
        .map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string()))?;
    Ok((stop, thread))
}

/// One round of the checkpointer: copies the WAL into the database without waiting for
/// anyone; when the WAL has grown past [`WAL_RESTART_FRAMES`], finishes the copy and has the
/// next commit start the WAL over (`RESTART`: the writer waits meanwhile, for as long as it
/// takes to copy the frames written since the passive pass).
fn checkpoint_step(conn: &Connection) {
    if checkpoint(conn, "PASSIVE").is_some_and(|frames| frames >= WAL_RESTART_FRAMES) {
        let _ = checkpoint(conn, "RESTART");
    }
}

/// Runs one checkpoint; returns the frames the WAL held, or `None` when it failed (logged).
fn checkpoint(conn: &Connection, mode: &str) -> Option<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(1)
    })
    .inspect_err(|e| tracing::warn!(error = %e, "chat database checkpoint failed"))
    .ok()
}

/// Runs the migrations the database has not had, in one exclusive transaction (which also
/// takes the lock that keeps other processes out).
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(failed)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(failed)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(failed)?;
        tracing::info!(version = i + 1, "chat database migrated");
    }
    tx.pragma_update(None, "user_version", known)
        .map_err(failed)?;
    tx.commit().map_err(failed)
}

/// Count retention in steps: when a room's last id goes from `previous` to `last`, the id up
/// to which messages are deleted, if this batch crossed a step (1 % of `keep`, at least 1).
fn retention_cut(keep: u64, previous: u64, last: u64) -> Option<u64> {
    if keep == 0 || last <= keep {
        return None;
    }
    let step = (keep / 100).max(1);
    let crossed = (last - keep) / step > previous.saturating_sub(keep) / step;
    crossed.then_some(last - keep)
}

fn load_last_id(conn: &Connection, room: &str) -> rusqlite::Result<u64> {
    let id: Option<i64> = conn
        .prepare_cached(GET_LAST_ID)?
        .query_row([room], |r| r.get(0))
        .optional()?;
    Ok(id.unwrap_or(0) as u64)
}

/// Reads messages (newest first, as the queries return them), oldest first with reactions.
fn read_messages(
    conn: &Connection,
    sql: &str,
    room: &str,
    bound: i64,
    limit: usize,
) -> rusqlite::Result<Vec<StoredMessage>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![room, bound, limit as i64], |r| {
        Ok(StoredMessage {
            id: r.get::<_, i64>(0)? as u64,
            ts_ms: r.get(1)?,
            from_id: r.get(2)?,
            from_name: r.get(3)?,
            text: r.get(4)?,
            client_id: r.get(5)?,
            reactions: Vec::new(),
        })
    })?;
    let mut messages = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    messages.reverse();
    Ok(messages)
}

/// Fills in the reaction counts of `messages` (oldest first).
fn add_reactions(
    conn: &Connection,
    room: &str,
    messages: &mut [StoredMessage],
) -> rusqlite::Result<()> {
    let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
        return Ok(());
    };
    let (first, last) = (first.id as i64, last.id as i64);
    let mut stmt = conn.prepare_cached(SELECT_REACTIONS)?;
    let mut rows = stmt.query(params![room, first, last])?;
    while let Some(row) = rows.next()? {
        let id = row.get::<_, i64>(0)? as u64;
        if let Ok(i) = messages.binary_search_by_key(&id, |m| m.id) {
            messages[i]
                .reactions
                .push((row.get(1)?, row.get::<_, i64>(2)? as u64));
        }
    }
    Ok(())
}

/// Starts a write transaction holding the write lock from the start (waiting for it as long
/// as the busy timeout allows). A deferred transaction that reads first would have to
/// upgrade, and an upgrade that finds the lock taken (by a `RESTART` checkpoint, which holds
/// it while it waits for readers) fails at once with "database is locked".
fn begin_write(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)
}

impl ChatStore for SqliteStore {
    fn apply(&mut self, writes: &[Write]) -> Result<Vec<Applied>, StoreError> {
        let keep = self.retention.count;
        let cache = &self.last_ids;
        let tx = begin_write(&mut self.conn)?;
        let mut results = Vec::with_capacity(writes.len());
        // The rooms this batch appends to: (room, last id before, last id after, time of the
        // last message).
        let mut touched: Vec<(Room, u64, u64, i64)> = Vec::new();
        for write in writes {
            match write {
                Write::Append(m) => {
                    let id = match touched.iter_mut().find(|t| t.0 == m.room) {
                        Some(t) => {
                            t.2 += 1;
                            t.3 = m.ts_ms;
                            t.2
                        }
                        None => {
                            let last = match cache.get(&m.room) {
                                Some(&last) => last,
                                None => load_last_id(&tx, &m.room).map_err(failed)?,
                            };
                            touched.push((m.room.clone(), last, last + 1, m.ts_ms));
                            last + 1
                        }
                    };
                    tx.prepare_cached(INSERT_MESSAGE)
                        .and_then(|mut s| {
                            s.execute(params![
                                &*m.room,
                                id as i64,
                                m.ts_ms,
                                m.from.id.as_str(),
                                &*m.from.name,
                                &*m.text,
                                m.client_id.as_deref(),
                            ])
                        })
                        .map_err(failed)?;
                    results.push(Applied::Appended(id));
                }
                Write::React { room, id, emoji } => {
                    let exists = tx
                        .prepare_cached(MESSAGE_EXISTS)
                        .and_then(|mut s| s.exists(params![&**room, *id as i64]))
                        .map_err(failed)?;
                    if !exists {
                        results.push(Applied::UnknownMessage);
                        continue;
                    }
                    let count: i64 = tx
                        .prepare_cached(ADD_REACTION)
                        .and_then(|mut s| {
                            s.query_row(params![&**room, *id as i64, &**emoji], |r| r.get(0))
                        })
                        .map_err(failed)?;
                    results.push(Applied::Reacted(count as u64));
                }
            }
        }
        for (room, previous, last, ts_ms) in &touched {
            let run = || -> rusqlite::Result<()> {
                tx.prepare_cached(SET_LAST_ID)?
                    .execute(params![&**room, *last as i64, ts_ms])?;
                if let Some(cut) = retention_cut(keep, *previous, *last) {
                    let cut = cut as i64;
                    tx.prepare_cached(DELETE_MESSAGES_UP_TO)?
                        .execute(params![&**room, cut])?;
                    tx.prepare_cached(DELETE_REACTIONS_UP_TO)?
                        .execute(params![&**room, cut])?;
                }
                Ok(())
            };
            run().map_err(failed)?;
        }
        tx.commit().map_err(failed)?;
        for (room, _, last, _) in touched {
            self.last_ids.insert(room, last);
        }
        Ok(results)
    }

    fn last_id(&mut self, room: &str) -> Result<u64, StoreError> {
        if let Some(&id) = self.last_ids.get(room) {
            return Ok(id);
        }
        load_last_id(&self.conn, room).map_err(failed)
    }

    fn before(
        &mut self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let bound = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let mut messages =
            read_messages(&self.conn, SELECT_BEFORE, room, bound, limit + 1).map_err(failed)?;
        let has_more = messages.len() > limit;
        if has_more {
            messages.remove(0);
        }
        add_reactions(&self.conn, room, &mut messages).map_err(failed)?;
        Ok(Page { messages, has_more })
    }

    fn after(&mut self, room: &str, since: u64, limit: usize) -> Result<Recovery, StoreError> {
        let bound = since.min(i64::MAX as u64) as i64;
        let mut messages =
            read_messages(&self.conn, SELECT_AFTER, room, bound, limit + 1).map_err(failed)?;
        let over = messages.len() > limit;
        if over {
            messages.remove(0);
        }
        let truncated = over
            || match messages.first() {
                Some(first) => first.id > since + 1,
                None => self.last_id(room)? > since,
            };
        add_reactions(&self.conn, room, &mut messages).map_err(failed)?;
        Ok(Recovery {
            messages,
            truncated,
        })
    }

    fn rooms(&mut self, limit: usize) -> Result<Vec<RoomInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, last_id FROM rooms ORDER BY updated_ms DESC LIMIT ?1")
            .map_err(failed)?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(RoomInfo {
                    room: Room::from(r.get::<_, String>(0)?),
                    last_id: r.get::<_, i64>(1)? as u64,
                })
            })
            .map_err(failed)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(failed)
    }

    fn prune(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        if self.retention.age_ms == 0 {
            return Ok(0);
        }
        let cutoff = now_ms - self.retention.age_ms;
        let tx = begin_write(&mut self.conn)?;
        let run = || -> rusqlite::Result<u64> {
            // Per room, everything up to the newest expired message: the oldest go first even
            // if the clock went back at some point.
            let expired: Vec<(String, i64)> = tx
                .prepare_cached(
                    "SELECT room, MAX(id) FROM messages WHERE ts_ms < ?1 GROUP BY room",
                )?
                .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut deleted = 0;
            for (room, up_to) in &expired {
                deleted += tx
                    .prepare_cached(DELETE_MESSAGES_UP_TO)?
                    .execute(params![room, up_to])? as u64;
                tx.prepare_cached(DELETE_REACTIONS_UP_TO)?
                    .execute(params![room, up_to])?;
            }
            Ok(deleted)
        };
        let deleted = run().map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention() -> Retention {
        Retention {
            count: 5,
            age_ms: 1000,
        }
    }

    #[test]
    fn keeps_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let open = |d: &Path| SqliteStore::open(d, retention(), Synchronous::Normal).unwrap();
        let store = open(dir.path());
        crate::apps::chat::store::tests::contract(store, |s| {
            drop(s);
            open(dir.path())
        });
    }

    #[test]
    fn count_retention_deletes_in_steps_of_one_percent() {
        assert_eq!(retention_cut(0, 10, 20), None, "0 keeps everything");
        assert_eq!(retention_cut(5, 5, 6), Some(1), "small counts are exact");
        assert_eq!(retention_cut(5, 6, 7), Some(2));
        assert_eq!(retention_cut(1000, 1000, 1009), None, "within a step");
        assert_eq!(retention_cut(1000, 1009, 1010), Some(10));
        assert_eq!(
            retention_cut(1000, 1005, 1300),
            Some(300),
            "a batch past a step"
        );
        assert_eq!(
            retention_cut(1000, 0, 5000),
            Some(4000),
            "first batch after a restart"
        );
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = SqliteStore::open(dir.path(), retention(), Synchronous::Full).unwrap();
        let second = SqliteStore::open(dir.path(), retention(), Synchronous::Full);
        assert!(
            matches!(second, Err(StoreError::Locked { .. })),
            "{second:?}"
        );
        drop(first);
        SqliteStore::open(dir.path(), retention(), Synchronous::Full).unwrap();
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path(), retention(), Synchronous::Normal).unwrap());
        let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = SqliteStore::open(dir.path(), retention(), Synchronous::Normal).unwrap_err();
        assert!(matches!(e, StoreError::TooNew { found: 99, .. }), "{e}");
    }

    fn message(text: &str) -> Write {
        Write::Append(crate::apps::chat::store::NewMessage {
            room: "r".into(),
            from: crate::apps::chat::protocol::Member {
                id: crate::ids::Id::random(),
                name: "a".into(),
            },
            text: text.into(),
            client_id: None,
            ts_ms: 1,
            delivery: Default::default(),
        })
    }

    #[test]
    fn a_batch_waits_for_a_write_lock_held_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path(), retention(), Synchronous::Normal).unwrap();
        s.conn.execute_batch("CREATE TABLE other (x)").unwrap();
        // Another connection (as a RESTART checkpoint does) holds the write lock a while and
        // commits; the batch, which reads before it writes, waits instead of failing.
        let other = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        let (held_tx, held) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            other
                .execute_batch("BEGIN IMMEDIATE; INSERT INTO other VALUES (1)")
                .unwrap();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        held.recv().unwrap();
        assert_eq!(s.apply(&[message("1")]).unwrap(), [Applied::Appended(1)]);
        holder.join().unwrap();
    }

    #[test]
    fn a_failed_batch_uses_up_no_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path(), retention(), Synchronous::Normal).unwrap();
        assert_eq!(s.apply(&[message("1")]).unwrap(), [Applied::Appended(1)]);
        // Make the next insert fail after the first write of the batch succeeded.
        s.conn
            .execute_batch("CREATE TRIGGER no_twos BEFORE INSERT ON messages WHEN NEW.text = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END;")
            .unwrap();
        assert!(s.apply(&[message("2"), message("bad")]).is_err());
        assert_eq!(s.last_id("r").unwrap(), 1);
        assert_eq!(s.apply(&[message("3")]).unwrap(), [Applied::Appended(2)]);
        assert_eq!(s.before("r", None, 10).unwrap().messages.len(), 2);
    }
}
