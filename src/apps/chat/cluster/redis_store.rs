//! [`RedisChatStore`]: the chat's history shared by every node, in Redis.
//!
//! Each room's messages are a Redis stream (`{p}:chat:room:{room}:msgs`, entry ids `{id}-0`),
//! with its id counter (`…:seq`), reaction counts (`…:r:{id}`, a hash per message) and the
//! rooms by activity (`{p}:chat:rooms`). One Lua script stores a whole batch and, in the same
//! atomic step, publishes each stored write on the chat's bus channel (a
//! [`ChatEvent`](super::ChatEvent)). Redis runs scripts one at a time, so the writes of a room
//! come out in id order on every node, and a message is stored before anyone can receive it.
//!
//! The store is called on the chat's I/O thread (it announces its writes, so the chat does not
//! call it on the store thread), and its calls wait for Redis, each at most [`IO_TIMEOUT`]. A
//! call that times out (Redis stopped answering) marks Redis as not answering: until a probe on
//! the runtime gets an answer again, calls fail at once instead of waiting, so a stalled Redis
//! costs one timeout, not one per request. When Redis is unreachable, writes fail and their
//! senders get `unavailable` (never an acknowledgement for a message that was not stored).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::Commands;
use serde::Deserialize;
use tokio::runtime::Handle;

use crate::apps::chat::protocol::Room;
use crate::apps::chat::store::{
    Applied, ChatStore, Page, Recovery, Retention, RoomInfo, StoreError, StoredMessage, Write,
};

/// Stores a batch: assigns ids, appends, counts reactions, trims, and announces each write.
const APPLY: &str = r"
local p, keep, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local function opt(v) if v == '' then return cjson.null end return v end
local out = {}
local i = 4
while i <= #ARGV do
  local kind, room = ARGV[i], ARGV[i + 1]
  local base = p .. ':chat:room:' .. room
  if kind == 'A' then
    local from, name, text, cid, ts = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], opt(ARGV[i + 5]), tonumber(ARGV[i + 6])
    local skip, bare = opt(ARGV[i + 7]), ARGV[i + 8] == '1'
    i = i + 9
    local id = redis.call('INCR', base .. ':seq')
    redis.call('XADD', base .. ':msgs', id .. '-0', 'm',
      cjson.encode({from = from, name = name, text = text, cid = cid, ts = ts}))
    redis.call('ZADD', p .. ':chat:rooms', ts, room)
    -- Count retention, in steps of about 1 % so that not every append trims.
    if keep > 0 and id > keep + math.max(1, math.floor(keep / 100)) then
      local first = redis.call('XRANGE', base .. ':msgs', '-', '+', 'COUNT', 1)[1]
      local new_first = id - keep + 1
      if first then
        local old_first = tonumber(string.match(first[1], '^(%d+)'))
        for gone = old_first, new_first - 1 do redis.call('DEL', base .. ':r:' .. gone) end
      end
      redis.call('XTRIM', base .. ':msgs', 'MINID', new_first .. '-0')
    end
    out[#out + 1] = id
    redis.call('PUBLISH', channel, cjson.encode({k = 'm', room = room, id = id, from = from,
      name = name, text = text, cid = cid, ts = ts, skip = skip, bare = bare}))
  else
    local id, emoji = tonumber(ARGV[i + 2]), ARGV[i + 3]
    i = i + 4
    local found = redis.call('XRANGE', base .. ':msgs', id .. '-0', id .. '-0')
    if #found == 0 then
      out[#out + 1] = 0
    else
      local count = redis.call('HINCRBY', base .. ':r:' .. id, emoji, 1)
      out[#out + 1] = count
      redis.call('PUBLISH', channel, cjson.encode({k = 'r', room = room, id = id, emoji = emoji, count = count}))
    end
  end
end
return out
";

/// The Redis keys of one cluster's chat.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn room(&self, room: &str, suffix: &str) -> String {
        format!("{}:chat:room:{room}:{suffix}", self.prefix)
    }
    fn rooms(&self) -> String {
        format!("{}:chat:rooms", self.prefix)
    }
    fn channel(&self) -> String {
        super::channel(&self.prefix)
    }
}

/// A blocking Redis connection made on demand and dropped after an error, for the chat's
/// store thread.
struct Link {
    client: redis::Client,
    conn: Option<redis::Connection>,
    /// Set while Redis does not answer: calls fail at once. Cleared by the probe.
    silent: Arc<AtomicBool>,
    /// Where the probe runs (none outside a runtime: then every call tries Redis).
    runtime: Option<Handle>,
}

/// How long one call may wait for Redis.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the probe waits for an answer, and between its tries.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const PROBE_PAUSE: Duration = Duration::from_millis(50);

impl Link {
    fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Open {
            path: url.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Link {
            client,
            conn: None,
            silent: Arc::default(),
            runtime: Handle::try_current().ok(),
        })
    }

    /// Runs `f` on the connection; a failure drops the connection (the next call reconnects).
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        if self.silent.load(Ordering::Relaxed) {
            return Err(StoreError::Failed(
                "Redis is not answering (waiting for it to answer again)".into(),
            ));
        }
        if self.conn.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(IO_TIMEOUT)
                .and_then(|c| {
                    c.set_read_timeout(Some(IO_TIMEOUT))?;
                    c.set_write_timeout(Some(IO_TIMEOUT))?;
                    Ok(c)
                })
                .map_err(|e| self.failed("Redis unreachable", &e))?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        f(conn).map_err(|e| {
            self.conn = None;
            self.failed("Redis", &e)
        })
    }

    /// The error for `e`; a timeout also starts the probe.
    fn failed(&mut self, what: &str, e: &redis::RedisError) -> StoreError {
        if e.is_timeout()
            && let Some(runtime) = &self.runtime
            && !self.silent.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "chat store: Redis is not answering; failing calls until it does");
            runtime.spawn(probe(self.client.clone(), self.silent.clone()));
        }
        StoreError::Failed(format!("{what}: {e}"))
    }
}

/// Pings Redis until it answers, then lets the store's calls through again.
async fn probe(client: redis::Client, silent: Arc<AtomicBool>) {
    loop {
        let answered = tokio::time::timeout(PROBE_TIMEOUT, async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await;
        if matches!(answered, Ok(Ok(_))) {
            tracing::info!("chat store: Redis answers again");
            silent.store(false, Ordering::Relaxed);
            return;
        }
        tokio::time::sleep(PROBE_PAUSE).await;
    }
}

/// Chat history shared by every node, in Redis.
pub struct RedisChatStore {
    link: Link,
    keys: Keys,
    retention: Retention,
    apply: redis::Script,
}

impl std::fmt::Debug for RedisChatStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChatStore")
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Record {
    from: String,
    name: String,
    text: String,
    cid: Option<String>,
    ts: i64,
}

type StreamEntry = (String, Vec<(String, String)>);

impl RedisChatStore {
    /// A store on the Redis at `url`, its keys under `prefix`.
    pub fn open(url: &str, prefix: &str, retention: Retention) -> Result<Self, StoreError> {
        Ok(RedisChatStore {
            link: Link::new(url)?,
            keys: Keys {
                prefix: prefix.to_owned(),
            },
            retention,
            apply: redis::Script::new(APPLY),
        })
    }

    /// Reads stream entries and their reactions.
    fn messages(
        &mut self,
        room: &str,
        entries: Vec<StreamEntry>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut messages = Vec::with_capacity(entries.len());
        for (entry_id, fields) in entries {
            let id: u64 = entry_id
                .split('-')
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| StoreError::Failed(format!("bad stream id {entry_id}")))?;
            let json = fields
                .into_iter()
                .find(|(k, _)| k == "m")
                .map(|(_, v)| v)
                .ok_or_else(|| StoreError::Failed(format!("message {id} has no record")))?;
            let r: Record = serde_json::from_str(&json)
                .map_err(|e| StoreError::Failed(format!("message {id}: {e}")))?;
            messages.push(StoredMessage {
                id,
                ts_ms: r.ts,
                from_id: r.from,
                from_name: r.name,
                text: r.text,
                client_id: r.cid,
                reactions: Vec::new(),
            });
        }
        if messages.is_empty() {
            return Ok(messages);
        }
        let keys: Vec<String> = messages
            .iter()
            .map(|m| self.keys.room(room, &format!("r:{}", m.id)))
            .collect();
        let counts: Vec<Vec<(String, u64)>> = self.link.run(|c| {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.hgetall(key);
            }
            pipe.query(c)
        })?;
        for (m, mut reactions) in messages.iter_mut().zip(counts) {
            reactions.sort();
            m.reactions = reactions;
        }
        Ok(messages)
    }
}

impl ChatStore for RedisChatStore {
    fn apply(&mut self, writes: &[Write]) -> Result<Vec<Applied>, StoreError> {
        let mut invocation = self.apply.prepare_invoke();
        invocation
            .arg(&self.keys.prefix)
            .arg(self.retention.count)
            .arg(self.keys.channel());
        for write in writes {
            match write {
                Write::Append(m) => {
                    invocation
                        .arg("A")
                        .arg(&*m.room)
                        .arg(m.from.id.as_str())
                        .arg(&*m.from.name)
                        .arg(&*m.text)
                        .arg(m.client_id.as_deref().unwrap_or(""))
                        .arg(m.ts_ms)
                        .arg(m.delivery.skip.map(|id| id.to_string()).unwrap_or_default())
                        .arg(if m.delivery.bare { "1" } else { "0" });
                }
                Write::React { room, id, emoji } => {
                    invocation.arg("R").arg(&**room).arg(*id).arg(&**emoji);
                }
            }
        }
        let results: Vec<u64> = self.link.run(|c| invocation.invoke(c))?;
        if results.len() != writes.len() {
            return Err(StoreError::Failed(format!(
                "{} results for {} writes",
                results.len(),
                writes.len()
            )));
        }
        Ok(writes
            .iter()
            .zip(results)
            .map(|(write, n)| match (write, n) {
                (Write::Append(_), id) => Applied::Appended(id),
                (Write::React { .. }, 0) => Applied::UnknownMessage,
                (Write::React { .. }, count) => Applied::Reacted(count),
            })
            .collect())
    }

    fn last_id(&mut self, room: &str) -> Result<u64, StoreError> {
        let key = self.keys.room(room, "seq");
        let last: Option<u64> = self.link.run(|c| c.get(&key))?;
        Ok(last.unwrap_or(0))
    }

    fn before(
        &mut self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let end = match before {
            Some(0) => return Ok(Page::default()),
            Some(b) => format!("{}-0", b - 1),
            None => "+".to_owned(),
        };
        let key = self.keys.room(room, "msgs");
        let mut entries: Vec<StreamEntry> = self
            .link
            .run(|c| c.xrevrange_count(&key, &end, "-", limit + 1))
            .map(|r: redis::streams::StreamRangeReply| flatten(r))?;
        let has_more = entries.len() > limit;
        entries.truncate(limit);
        entries.reverse();
        Ok(Page {
            messages: self.messages(room, entries)?,
            has_more,
        })
    }

    fn after(&mut self, room: &str, since: u64, limit: usize) -> Result<Recovery, StoreError> {
        let last = self.last_id(room)?;
        if last <= since {
            return Ok(Recovery::default());
        }
        let key = self.keys.room(room, "msgs");
        let start = format!("{}-0", since + 1);
        let mut entries: Vec<StreamEntry> = self
            .link
            .run(|c| c.xrevrange_count(&key, "+", &start, limit))
            .map(|r: redis::streams::StreamRangeReply| flatten(r))?;
        entries.reverse();
        let messages = self.messages(room, entries)?;
        let truncated = (messages.len() as u64) < last - since;
        Ok(Recovery {
            messages,
            truncated,
        })
    }

    fn rooms(&mut self, limit: usize) -> Result<Vec<RoomInfo>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.keys.rooms();
        let names: Vec<String> = self
            .link
            .run(|c| c.zrevrange(&key, 0, limit as isize - 1))?;
        let seqs: Vec<String> = names.iter().map(|r| self.keys.room(r, "seq")).collect();
        let lasts: Vec<Option<u64>> = if seqs.is_empty() {
            Vec::new()
        } else {
            self.link.run(|c| c.mget(&seqs))?
        };
        Ok(names
            .into_iter()
            .zip(lasts)
            .map(|(room, last)| RoomInfo {
                room: Room::from(room),
                last_id: last.unwrap_or(0),
            })
            .collect())
    }

    fn prune(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        if self.retention.age_ms <= 0 {
            return Ok(0);
        }
        let cutoff = now_ms - self.retention.age_ms;
        let rooms_key = self.keys.rooms();
        let rooms: Vec<String> = self.link.run(|c| c.zrange(&rooms_key, 0, -1))?;
        let mut deleted = 0;
        for room in rooms {
            let key = self.keys.room(&room, "msgs");
            loop {
                let entries: Vec<StreamEntry> = self
                    .link
                    .run(|c| c.xrange_count(&key, "-", "+", 500))
                    .map(|r: redis::streams::StreamRangeReply| flatten(r))?;
                let batch = entries.len();
                let old: Vec<u64> = self
                    .messages(&room, entries)?
                    .iter()
                    .take_while(|m| m.ts_ms < cutoff)
                    .map(|m| m.id)
                    .collect();
                let Some(&newest_old) = old.last() else {
                    break;
                };
                let reaction_keys: Vec<String> = old
                    .iter()
                    .map(|id| self.keys.room(&room, &format!("r:{id}")))
                    .collect();
                self.link.run(|c| {
                    redis::pipe()
                        .cmd("XTRIM")
                        .arg(&key)
                        .arg("MINID")
                        .arg(format!("{}-0", newest_old + 1))
                        .ignore()
                        .del(&reaction_keys)
                        .ignore()
                        .query::<()>(c)
                })?;
                deleted += old.len() as u64;
                if old.len() < batch || batch < 500 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    fn announces(&self) -> bool {
        true
    }
}

fn flatten(reply: redis::streams::StreamRangeReply) -> Vec<StreamEntry> {
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let fields = entry
                .map
                .into_iter()
                .filter_map(|(k, v)| redis::from_redis_value::<String>(v).ok().map(|v| (k, v)))
                .collect();
            (entry.id, fields)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway `redis-server` on a free port.
    struct TestRedis {
        port: u16,
        child: std::process::Child,
    }

    impl TestRedis {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .args(["--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test.sh installs it)");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection())
                .is_err()
            {
                assert!(std::time::Instant::now() < deadline, "redis-server starts");
                std::thread::sleep(Duration::from_millis(20));
            }
            TestRedis { port, child }
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn keeps_the_store_contract() {
        let redis = TestRedis::start();
        let retention = Retention {
            count: 5,
            age_ms: 1000,
        };
        let url = redis.url();
        let store = RedisChatStore::open(&url, "contract", retention).unwrap();
        crate::apps::chat::store::tests::contract(store, |_| {
            RedisChatStore::open(&url, "contract", retention).unwrap()
        });
    }

    #[test]
    fn writes_are_announced_in_store_order_and_failures_are_errors() {
        use crate::apps::chat::protocol::Member;
        use crate::apps::chat::store::{Delivery, NewMessage};
        use crate::ids::Id;

        let redis = TestRedis::start();
        let url = redis.url();
        let mut listener = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let mut pubsub = listener.as_pubsub();
        pubsub.subscribe("order:chat:events").unwrap();
        let retention = Retention {
            count: 0,
            age_ms: 0,
        };
        let mut store = RedisChatStore::open(&url, "order", retention).unwrap();
        let from = Member {
            id: Id::random(),
            name: "alice".into(),
        };
        let append = |text: &str| {
            Write::Append(NewMessage {
                room: "r".into(),
                from: from.clone(),
                text: text.into(),
                client_id: None,
                ts_ms: 1,
                delivery: Delivery {
                    skip: Some(from.id),
                    bare: true,
                },
            })
        };
        let applied = store.apply(&[append("one"), append("two")]).unwrap();
        assert_eq!(applied, [Applied::Appended(1), Applied::Appended(2)]);
        for (expected_id, expected_text) in [(1, "one"), (2, "two")] {
            let payload: Vec<u8> = pubsub.get_message().unwrap().get_payload().unwrap();
            match serde_json::from_slice(&payload).unwrap() {
                super::super::ChatEvent::Message {
                    id,
                    text,
                    skip,
                    bare,
                    ..
                } => {
                    assert_eq!((id, text.as_str()), (expected_id, expected_text));
                    assert_eq!(skip.as_deref(), Some(from.id.as_str()));
                    assert!(bare);
                }
                other => panic!("{other:?}"),
            }
        }
        drop(redis);
        assert!(matches!(
            store.apply(&[append("lost?")]),
            Err(StoreError::Failed(_))
        ));
    }
}
