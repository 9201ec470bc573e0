//! The chat on several nodes: history in Redis, membership in Redis, and every room's writes
//! announced to every node in id order.
//!
//! - [`RedisChatStore`] keeps each room's messages in a Redis stream (`{p}:chat:room:{room}:msgs`,
//!   entry ids `{id}-0`), its id counter (`…:seq`), reaction counts (`…:r:{id}`, a hash per
//!   message) and the rooms by activity (`{p}:chat:rooms`). One Lua script stores a whole
//!   batch and, in the same atomic step, publishes each stored write on `{p}:chat:events`.
//!   Redis runs scripts one at a time, so the announcements of a room come out in id order on
//!   every node, and a message is stored before anyone can receive it.
//! - [`ClusterPresence`] keeps this node's connections like the single-node presence and
//!   mirrors membership into Redis (`{p}:chat:members:{room}`, `{p}:chat:rooms-of:{id}`,
//!   `{p}:chat:live-rooms`) so that `joined`, `who` and `rooms` list members on every node.
//!   Presence frames go to this node's members at once and to the other nodes on the same
//!   channel.
//! - [`connect_chat`] routes the channel's messages into the chat's engine and, when a node
//!   dies, removes its members and tells their rooms they left.
//!
//! When Redis is unreachable, writes fail and their senders get `unavailable` (never an
//! acknowledgement for a message that was not stored); reads of membership fall back to this
//! node's connections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::Commands;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::apps::chat::Chat;
use crate::apps::chat::presence::{LocalPresence, Presence};
use crate::apps::chat::protocol::{self, Member, Name, PresenceEvent, Room};
use crate::apps::chat::store::{
    Applied, ChatStore, Delivery, NewMessage, Page, Recovery, Retention, RoomInfo, StoreError,
    StoredMessage, Write,
};
use crate::cluster::{ClusterEvent, ClusterRegistry};
use crate::gateway::frame::OutFrame;
use crate::ids::Id;
use crate::management::ManagementApi;

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

/// What goes over the chat channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k")]
enum Announcement {
    /// A stored message.
    #[serde(rename = "m")]
    Message {
        room: String,
        id: u64,
        from: String,
        name: String,
        text: String,
        cid: Option<String>,
        ts: i64,
        skip: Option<String>,
        bare: bool,
    },
    /// A stored reaction.
    #[serde(rename = "r")]
    Reaction {
        room: String,
        id: u64,
        emoji: String,
        count: u64,
    },
    /// A presence frame fanned out by a node (`room` `None`: for plain clients).
    #[serde(rename = "f")]
    Frame {
        origin: String,
        room: Option<String>,
        frame: String,
        skip: Option<String>,
    },
}

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
        format!("{}:chat:events", self.prefix)
    }
    fn members(&self, room: &str) -> String {
        format!("{}:chat:members:{room}", self.prefix)
    }
    fn rooms_of(&self, id: &Id) -> String {
        format!("{}:chat:rooms-of:{id}", self.prefix)
    }
    fn live_rooms(&self) -> String {
        format!("{}:chat:live-rooms", self.prefix)
    }
}

/// A blocking Redis connection made on demand and dropped after an error, for the chat's
/// store thread.
struct Link {
    client: redis::Client,
    conn: Option<redis::Connection>,
}

const IO_TIMEOUT: Duration = Duration::from_secs(2);

impl Link {
    fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Open {
            path: url.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Link { client, conn: None })
    }

    /// Runs `f` on the connection; a failure drops the connection (the next call reconnects).
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        if self.conn.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(IO_TIMEOUT)
                .and_then(|c| {
                    c.set_read_timeout(Some(IO_TIMEOUT))?;
                    c.set_write_timeout(Some(IO_TIMEOUT))?;
                    Ok(c)
                })
                .map_err(|e| StoreError::Failed(format!("Redis unreachable: {e}")))?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        f(conn).map_err(|e| {
            self.conn = None;
            StoreError::Failed(format!("Redis: {e}"))
        })
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

/// Membership across nodes: this node's connections in memory, everyone's in Redis.
pub struct ClusterPresence {
    local: LocalPresence,
    keys: Keys,
    node_id: String,
    link: Mutex<Link>,
}

impl std::fmt::Debug for ClusterPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPresence")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl ClusterPresence {
    /// Presence for this node, mirrored into the Redis at `url` under `prefix`.
    pub fn new(
        url: &str,
        prefix: &str,
        node_id: &str,
        management: ManagementApi,
    ) -> Result<Self, StoreError> {
        Ok(ClusterPresence {
            local: LocalPresence::new(management),
            keys: Keys {
                prefix: prefix.to_owned(),
            },
            node_id: node_id.to_owned(),
            link: Mutex::new(Link::new(url)?),
        })
    }

    /// Runs Redis commands; failures are logged, not returned: membership in Redis is a
    /// mirror, this node's own state stays right.
    fn mirror(&self, what: &str, pipe: &redis::Pipeline) {
        let result = self
            .link
            .lock()
            .expect("link lock")
            .run(|c| pipe.query::<()>(c));
        if let Err(e) = result {
            tracing::debug!(error = %e, what, "chat membership not mirrored to Redis");
        }
    }

    fn announce(&self, room: Option<&str>, frame: &OutFrame, skip: Option<Id>) {
        let Ok(text) = std::str::from_utf8(frame_payload(frame)) else {
            return;
        };
        let message = Announcement::Frame {
            origin: self.node_id.clone(),
            room: room.map(str::to_owned),
            frame: text.to_owned(),
            skip: skip.map(|id| id.to_string()),
        };
        let mut pipe = redis::pipe();
        pipe.publish(
            self.keys.channel(),
            serde_json::to_vec(&message).expect("serialisable"),
        )
        .ignore();
        self.mirror("presence frame", &pipe);
    }
}

/// The payload of an encoded server frame (text frames only go over the channel).
fn frame_payload(frame: &OutFrame) -> &[u8] {
    let bytes = frame.bytes();
    let header = match bytes.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    &bytes[header.min(bytes.len())..]
}

impl Presence for ClusterPresence {
    fn resync(&self) {
        let mut pipe = redis::pipe();
        for (room, member) in self.local.memberships() {
            pipe.hset(self.keys.members(&room), member.id.as_str(), &*member.name)
                .ignore()
                .sadd(self.keys.rooms_of(&member.id), &*room)
                .ignore()
                .sadd(self.keys.live_rooms(), &*room)
                .ignore();
        }
        self.mirror("resync", &pipe);
    }

    fn connect(&self, id: Id, connected_at_ms: i64) {
        self.local.connect(id, connected_at_ms);
    }

    fn disconnect(&self, id: Id) -> Option<(Member, Vec<Room>)> {
        let left = self.local.disconnect(id)?;
        let mut pipe = redis::pipe();
        for room in &left.1 {
            pipe.hdel(self.keys.members(room), id.as_str()).ignore();
        }
        pipe.del(self.keys.rooms_of(&id)).ignore();
        self.mirror("disconnect", &pipe);
        Some(left)
    }

    fn member(&self, id: Id) -> Member {
        self.local.member(id)
    }

    fn join(&self, room: &Room, id: Id) -> bool {
        let newly = self.local.join(room, id);
        if newly {
            let name = self.local.member(id).name;
            let mut pipe = redis::pipe();
            pipe.hset(self.keys.members(room), id.as_str(), &*name)
                .ignore()
                .sadd(self.keys.rooms_of(&id), &**room)
                .ignore()
                .sadd(self.keys.live_rooms(), &**room)
                .ignore();
            self.mirror("join", &pipe);
        }
        newly
    }

    fn leave(&self, room: &str, id: Id) -> bool {
        let left = self.local.leave(room, id);
        if left {
            let mut pipe = redis::pipe();
            pipe.hdel(self.keys.members(room), id.as_str())
                .ignore()
                .srem(self.keys.rooms_of(&id), room)
                .ignore();
            self.mirror("leave", &pipe);
        }
        left
    }

    fn rename(&self, id: Id, name: Name) -> (Name, Vec<Room>) {
        let (previous, rooms) = self.local.rename(id, name.clone());
        if !rooms.is_empty() {
            let mut pipe = redis::pipe();
            for room in &rooms {
                pipe.hset(self.keys.members(room), id.as_str(), &*name)
                    .ignore();
            }
            self.mirror("rename", &pipe);
        }
        (previous, rooms)
    }

    fn is_member(&self, room: &str, id: Id) -> bool {
        self.local.is_member(room, id)
    }

    fn members(&self, room: &str) -> Vec<Member> {
        let key = self.keys.members(room);
        let all: Result<Vec<(String, String)>, _> = self
            .link
            .lock()
            .expect("link lock")
            .run(|c| c.hgetall(&key));
        let Ok(all) = all else {
            return self.local.members(room);
        };
        let mut members: Vec<Member> = all
            .into_iter()
            .filter_map(|(id, name)| {
                Some(Member {
                    id: Id::parse(&id)?,
                    name: Name::from(name),
                })
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        members
    }

    fn rooms(&self) -> Vec<(Room, usize)> {
        let live = self.keys.live_rooms();
        let counted: Result<Vec<(Room, usize)>, StoreError> =
            self.link.lock().expect("link lock").run(|c| {
                let rooms: Vec<String> = c.smembers(&live)?;
                let mut pipe = redis::pipe();
                for room in &rooms {
                    pipe.hlen(self.keys.members(room));
                }
                let sizes: Vec<usize> = pipe.query(c)?;
                let mut empty = redis::pipe();
                let mut out = Vec::new();
                for (room, size) in rooms.into_iter().zip(sizes) {
                    if size == 0 {
                        empty.srem(&live, &room).ignore();
                    } else {
                        out.push((Room::from(room), size));
                    }
                }
                empty.query::<()>(c)?;
                Ok(out)
            });
        counted.unwrap_or_else(|_| self.local.rooms())
    }

    fn publish(&self, room: &str, frame: &OutFrame, skip: Option<Id>, gone: &mut Vec<Id>) {
        self.local.publish(room, frame, skip, gone);
        self.announce(Some(room), frame, skip);
    }

    fn publish_plain(&self, frame: &OutFrame, skip: Option<Id>, gone: &mut Vec<Id>) {
        self.local.publish_plain(frame, skip, gone);
        self.announce(None, frame, skip);
    }

    fn publish_local(&self, room: &str, frame: &OutFrame, skip: &[Id], gone: &mut Vec<Id>) {
        self.local.publish_local(room, frame, skip, gone);
    }

    fn publish_plain_local(&self, frame: &OutFrame, skip: &[Id], gone: &mut Vec<Id>) {
        self.local.publish_plain_local(frame, skip, gone);
    }
}

/// Capacity of the queue between the chat channel and the chat's engine. Overflow drops the
/// announcement for this node (logged): its members miss that live frame and get it back
/// with `since` when they next join.
const INBOX: usize = 16_384;

/// Connects a chat to the cluster: announcements from the chat channel go to its engine, and
/// the members of dead nodes are removed from their rooms.
pub fn connect_chat(registry: &Arc<ClusterRegistry>, chat: Arc<Chat>, prefix: &str) {
    let keys = Keys {
        prefix: prefix.to_owned(),
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(INBOX);
    registry.subscribe(keys.channel(), tx);
    let me = registry.node_id().to_owned();
    let sink = chat.clone();
    tokio::spawn(async move {
        while let Some(payload) = rx.recv().await {
            match serde_json::from_slice::<Announcement>(&payload) {
                Ok(announcement) => deliver(&sink, &me, announcement).await,
                Err(error) => tracing::warn!(%error, "unreadable chat announcement"),
            }
        }
    });
    let mut events = registry.events();
    let registry = registry.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ClusterEvent::NodeDown { node, connections }) => {
                    if let Err(error) = remove_dead_members(&registry, &keys, &connections).await {
                        tracing::warn!(%node, %error, "could not remove a dead node's chat members");
                    }
                }
                Ok(ClusterEvent::RedisBack) => chat.resync().await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "cluster events missed by the chat");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

async fn deliver(chat: &Chat, me: &str, announcement: Announcement) {
    match announcement {
        Announcement::Message {
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
        Announcement::Reaction {
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
        Announcement::Frame {
            origin,
            room,
            frame,
            skip,
        } => {
            // This node delivered its own frames when it sent them.
            if origin != me {
                let skip = skip.as_deref().and_then(Id::parse);
                chat.remote(room.map(Room::from), OutFrame::text(frame.as_bytes()), skip)
                    .await;
            }
        }
    }
}

/// Takes a dead node's connections out of their rooms and tells every node's members.
async fn remove_dead_members(
    registry: &ClusterRegistry,
    keys: &Keys,
    connections: &[Id],
) -> redis::RedisResult<()> {
    let mut redis = registry.redis();
    for id in connections {
        let rooms: Vec<String> =
            redis::AsyncCommands::smembers(&mut redis, keys.rooms_of(id)).await?;
        for room in rooms {
            let name: Option<String> =
                redis::AsyncCommands::hget(&mut redis, keys.members(&room), id.as_str()).await?;
            let member = Member {
                id: *id,
                name: Name::from(name.unwrap_or_else(|| protocol::default_name(*id).to_string())),
            };
            let frame = protocol::presence_frame(&room, PresenceEvent::Leave, &member, None);
            let announcement = Announcement::Frame {
                // From no node: every node delivers it.
                origin: String::new(),
                room: Some(room.clone()),
                frame: String::from_utf8_lossy(frame_payload(&frame)).into_owned(),
                skip: None,
            };
            redis::pipe()
                .hdel(keys.members(&room), id.as_str())
                .ignore()
                .publish(
                    keys.channel(),
                    serde_json::to_vec(&announcement).expect("serialisable"),
                )
                .ignore()
                .exec_async(&mut redis)
                .await?;
        }
        redis::AsyncCommands::del::<_, ()>(&mut redis, keys.rooms_of(id)).await?;
    }
    Ok(())
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
                Announcement::Message {
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
