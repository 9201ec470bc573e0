//! The chat's store thread: every request that touches rooms or history, one at a time, in
//! the order connections made them.
//!
//! Connection tasks check a request and put it on a bounded queue ([`EngineHandle::submit`]);
//! one thread takes the queue in batches and owns all presence changes and the store's use.
//! Because one thread does it all, a `join`'s history and the live messages after it never
//! overlap or leave a gap, and each room's messages reach everyone in id order.
//!
//! A store on local disk is called here; a store across the network (Redis) is called on an
//! I/O thread of its own ([`crate::apps::chat::worker`]), whose outcomes come back on this
//! queue: nothing on this thread waits on the network. Then a connection with a read under
//! way (a join's history, `history`, `rooms`) has its later requests held until the read is
//! answered, and the frames of a room delivered while a joiner's history is read are given
//! to it after its `joined` answer, if its history did not hold them.
//!
//! In a cluster a join also waits for the other nodes to see it ([`Presence::order_join`],
//! at most [`JOIN_TIMEOUT`]); the connection's later requests are held meanwhile too.
//!
//! Writes (`send`, `react`, the articles' `sendmessage`) are gathered while they arrive
//! back to back and stored with one [`ChatStore::apply`] (one transaction, one commit); only
//! after the commit are their frames encoded, once per message, and fanned out. Any other
//! request first flushes the writes gathered before it, so it sees them. So a message is on
//! disk before anyone receives it, and a busy room pays one commit per batch, not per message.
//!
//! The queue holds [`ChatConfig::queue_capacity`] requests. When it is full, the connection
//! whose request does not fit waits for room (its invocation is pending), and the gateway
//! stops reading that connection meanwhile: back-pressure, nothing dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::apps::chat::ChatConfig;
use crate::apps::chat::cluster::PeerChange;
use crate::apps::chat::presence::Presence;
use crate::apps::chat::protocol::{
    self, ChatError, ErrorCode, Joined, LOBBY, Member, Name, PresenceEvent, Request, Room,
};
use crate::apps::chat::store::{Applied, ChatStore, Delivery, NewMessage, StoreError, Write};
use crate::apps::chat::worker::{Done, Job, JoinRead, Storage};
use crate::deferred::Deferred;
use crate::event::Response;
use crate::gateway::frame::OutFrame;
use crate::ids::Id;
use crate::integration::{IntegrationError, Invocation};
use crate::management::ManagementApi;
use crate::time;

/// The most commands taken from the queue in one go.
const MAX_BATCH: usize = 512;
/// How long a join waits for the other nodes to see it (see [`Presence::order_join`]).
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The most requests held per connection while its join or read waits; beyond, they are
/// refused.
pub(crate) const MAX_HELD: usize = 256;

/// A join waiting for the other nodes.
#[derive(Debug)]
struct PendingJoin {
    name: Option<Name>,
    since: Option<u64>,
}

/// What a connection asks of the store thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// `$connect`: a plain client.
    Connect { id: Id, connected_at_ms: i64 },
    /// `$disconnect`: leave every room.
    Disconnect { id: Id },
    /// A checked chat request.
    Request { id: Id, request: Request },
    /// The articles' `sendmessage`: raw text to the plain clients, a message in the lobby.
    Article {
        id: Id,
        action: &'static str,
        text: Box<str>,
        skip_sender: bool,
    },
    /// A write another node (or this one) stored, announced by a shared store.
    Announced { write: Write, applied: Applied },
    /// A membership change another node made.
    Peer(PeerChange),
    /// Connections a worker thread found gone while delivering this thread's posts.
    Gone(Vec<Id>),
    /// A join waiting for the other nodes took too long.
    JoinExpired { room: Room, id: Id },
    /// Share this node's membership again (the link between nodes came back).
    Resync,
    /// Apply age retention.
    Tick,
    /// A store call's outcome, from the I/O thread.
    Done(Done),
    /// The I/O thread has run its last job and closed the store.
    StoreClosed,
    /// Finish what is queued, close the store, then answer.
    Close(oneshot::Sender<()>),
}

/// The connections' side of the queue.
#[derive(Debug, Clone)]
pub(crate) struct EngineHandle {
    tx: mpsc::Sender<Command>,
    quiet: Arc<QuietConnects>,
}

/// The most `$connect`s that wait in [`QuietConnects`]; beyond, a connect is queued like any
/// request.
const QUIET_CONNECTS: usize = 4096;

/// `$connect`s that wait for the store thread's next turn instead of waking it. A connect
/// changes nothing anyone sees until a later request uses it, and the thread takes these
/// first on every turn, before the requests it was woken for: so a connection's own later
/// requests, and everyone's later fan-outs, find it connected. Waking the thread for each
/// connect (a futex call here, a wake-up and a sleep there) was about a fifth of the
/// server's CPU per connect of the articles' chat.
#[derive(Debug, Default)]
struct QuietConnects(std::sync::Mutex<Vec<(Id, i64)>>);

impl QuietConnects {
    fn take(&self) -> Vec<(Id, i64)> {
        std::mem::take(&mut *self.0.lock().expect("connects lock"))
    }
}

fn closed() -> IntegrationError {
    IntegrationError::Failed("the chat is shutting down".into())
}

impl EngineHandle {
    /// Queues `command`; the invocation answers `response` once it is queued.
    pub(crate) fn submit(&self, command: Command, response: Response) -> Invocation {
        match self.tx.try_send(command) {
            Ok(()) => Deferred::Ready(Ok(response)),
            Err(TrySendError::Full(command)) => {
                let tx = self.tx.clone();
                Deferred::Pending(Box::pin(async move {
                    tx.send(command).await.map_err(|_| closed())?;
                    Ok(response)
                }))
            }
            Err(TrySendError::Closed(_)) => Deferred::Ready(Err(closed())),
        }
    }

    /// Queues a connection's `$connect` without waking the store thread (see
    /// [`QuietConnects`]); the invocation answers `response`.
    pub(crate) fn connect(&self, id: Id, connected_at_ms: i64, response: Response) -> Invocation {
        if !self.tx.is_closed() {
            let mut quiet = self.quiet.0.lock().expect("connects lock");
            if quiet.len() < QUIET_CONNECTS {
                quiet.push((id, connected_at_ms));
                return Deferred::Ready(Ok(response));
            }
        }
        self.submit(
            Command::Connect {
                id,
                connected_at_ms,
            },
            response,
        )
    }

    /// Queues `command`, waiting for room.
    pub(crate) async fn send(&self, command: Command) {
        if self.tx.send(command).await.is_err() {
            tracing::debug!("the chat is closed; an announcement was not delivered");
        }
    }

    /// Lets the thread finish what is queued and close the store; returns when it has.
    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the store thread (and, on a Tokio runtime, the retention tick).
pub(crate) fn start(
    store: Box<dyn ChatStore>,
    presence: Arc<dyn Presence>,
    management: ManagementApi,
    config: Arc<ChatConfig>,
) -> EngineHandle {
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let runtime = Handle::try_current().ok();
    if config.retention_age_secs > 0
        && let Some(rt) = &runtime
    {
        // A tenth of the retention age, between a second and a minute.
        let every = Duration::from_secs((config.retention_age_secs / 10).clamp(1, 60));
        let weak = tx.downgrade();
        rt.spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(tx) = weak.upgrade() else { break };
                if tx.send(Command::Tick).await.is_err() {
                    break;
                }
            }
        });
    }
    let announces = store.announces();
    let lanes = management.lanes().cloned();
    let quiet = Arc::new(QuietConnects::default());
    let engine = Engine {
        storage: Storage::new(store, tx.downgrade()),
        announces,
        reading: std::collections::HashMap::new(),
        busy: std::collections::HashSet::new(),
        presence,
        management,
        history_default: config.history_default,
        recovery_max: config.recovery_max,
        lobby: Room::from(LOBBY),
        writes: Vec::new(),
        pending: Vec::new(),
        gone: Vec::new(),
        floors: std::collections::HashMap::new(),
        joining: std::collections::HashMap::new(),
        held: std::collections::HashMap::new(),
        runtime: runtime.clone(),
        tx: tx.downgrade(),
        quiet: quiet.clone(),
    };
    std::thread::Builder::new()
        .name("chat-store".into())
        .spawn(move || engine.run(rx))
        .expect("the chat's store thread starts");
    if let Some(lanes) = lanes {
        let tx = tx.downgrade();
        lanes.on_gone(Box::new(move |ids| {
            // Not waited for when the queue is full: the connections' own `$disconnect` is on
            // its way and makes them leave all the same.
            if let Some(tx) = tx.upgrade()
                && tx.try_send(Command::Gone(ids)).is_err()
            {
                tracing::debug!("chat queue full; gone connections left to their $disconnect");
            }
        }));
    }
    EngineHandle { tx, quiet }
}

/// A frame delivered to a room while a joiner's history was read: a message (with its id) or
/// a reaction (`None`).
type Arrived = (Option<u64>, OutFrame);

/// What to do with a write once it is stored.
#[derive(Debug)]
pub(crate) struct Pending {
    sender: Id,
    action: &'static str,
}

struct Engine {
    /// The store, called here or on the I/O thread (see [`Storage`]).
    storage: Storage,
    /// Whether the store announces its writes to every node (then this thread delivers a
    /// write when its announcement arrives, not when it is stored).
    announces: bool,
    /// With the store on the I/O thread: joins whose history is being read, and the frames
    /// of the room delivered meanwhile (a message's id with it), given to the joiner after its
    /// `joined` answer if its history did not hold them.
    reading: std::collections::HashMap<(Room, Id), Vec<Arrived>>,
    /// With the store on the I/O thread: connections with a read under way (their later
    /// requests are held, so that answers keep their order).
    busy: std::collections::HashSet<Id>,
    presence: Arc<dyn Presence>,
    management: ManagementApi,
    history_default: usize,
    recovery_max: usize,
    lobby: Room,
    /// Writes gathered since the last flush, and what to do with each once stored.
    writes: Vec<Write>,
    pending: Vec<Pending>,
    /// Connections found gone while fanning out, to be departed after the batch.
    gone: Vec<Id>,
    /// With a store that announces its writes: for each (room, joiner), the last id its
    /// `joined` history held. An announcement can arrive after a join whose history already
    /// read its message; it is not delivered to that joiner again.
    floors: std::collections::HashMap<(Room, Id), u64>,
    /// Joins waiting for the other nodes to see them.
    joining: std::collections::HashMap<(Room, Id), PendingJoin>,
    /// The later requests of connections with a join or read waiting, carried out after it, so
    /// that each connection's requests take effect (and are answered) in the order it made
    /// them.
    held: std::collections::HashMap<Id, std::collections::VecDeque<Command>>,
    /// For the joins' deadlines.
    runtime: Option<Handle>,
    tx: mpsc::WeakSender<Command>,
    /// `$connect`s that did not wake this thread; taken first on every turn.
    quiet: Arc<QuietConnects>,
}

fn unavailable(e: &StoreError) -> ChatError {
    tracing::error!(error = %e, "chat storage failed");
    ChatError::new(
        ErrorCode::Unavailable,
        "the chat could not read or write its storage; try again",
    )
}

fn client_id(write: &Write) -> Option<&str> {
    match write {
        Write::Append(m) => m.client_id.as_deref(),
        Write::React { .. } => None,
    }
}

fn not_member(room: &str) -> ChatError {
    ChatError::new(
        ErrorCode::NotMember,
        format!("you are not in room {room:?}: join it first"),
    )
}

impl Engine {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut closer = None;
        while closer.is_none() {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            // After the batch was taken: every connect made before one of its requests is
            // in hand.
            self.take_quiet_connects();
            for command in batch.drain(..) {
                match command {
                    Command::Close(done) => closer = Some(done),
                    command => self.handle(command),
                }
            }
            self.flush();
            self.depart_gone();
            self.management.flush_queued();
        }
        if self.storage.is_deferred() {
            // Finish what is queued, then let the I/O thread run the last jobs and take their
            // outcomes; later requests are not carried out.
            self.take_quiet_connects();
            while let Ok(command) = rx.try_recv() {
                if !matches!(command, Command::Close(_)) {
                    self.handle(command);
                }
            }
            self.flush();
            if self.storage.close() {
                while let Some(command) = rx.blocking_recv() {
                    match command {
                        Command::Done(done) => self.done(done),
                        Command::StoreClosed => break,
                        _ => {}
                    }
                }
            }
        }
        // Refuse new commands, finish the ones already queued.
        rx.close();
        self.take_quiet_connects();
        while let Ok(command) = rx.try_recv() {
            match command {
                Command::Close(_) | Command::StoreClosed => {}
                command => self.handle(command),
            }
        }
        self.flush();
        self.depart_gone();
        self.management.flush_queued();
        drop(self);
        tracing::debug!("chat store closed");
        if let Some(done) = closer {
            let _ = done.send(());
        }
    }

    fn take_quiet_connects(&mut self) {
        for (id, connected_at_ms) in self.quiet.take() {
            self.presence.connect(id, connected_at_ms);
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Connect {
                id,
                connected_at_ms,
            } => self.presence.connect(id, connected_at_ms),
            Command::Disconnect { id } => {
                self.flush();
                self.depart(id);
            }
            Command::Gone(ids) => self.presence.settle_gone(ids, &mut self.gone),
            Command::Request { id, request } if self.held.contains_key(&id) => {
                self.hold(id, Command::Request { id, request });
            }
            Command::Request { id, request } => self.request(id, request),
            Command::Article { id, .. } if self.held.contains_key(&id) => self.hold(id, command),
            Command::Article {
                id,
                action,
                text,
                skip_sender,
            } => {
                let from = self.presence.member(id);
                self.writes.push(Write::Append(NewMessage {
                    room: self.lobby.clone(),
                    from,
                    text,
                    client_id: None,
                    ts_ms: time::now_ms(),
                    delivery: Delivery {
                        skip: skip_sender.then_some(id),
                        bare: true,
                    },
                }));
                self.pending.push(Pending { sender: id, action });
            }
            Command::Announced { write, applied } => {
                // Writes gathered before it are stored first, so their announcements follow.
                self.flush();
                self.deliver(&write, applied);
            }
            Command::Peer(change) => {
                if let Some((room, id)) = self.presence.peer(change, &mut self.gone) {
                    self.joined(room, id);
                }
            }
            Command::JoinExpired { room, id } => self.join_expired(room, id),
            Command::Resync => self.presence.resync(),
            Command::Tick => {
                self.flush();
                self.submit(Job::Prune {
                    now_ms: time::now_ms(),
                });
            }
            Command::Done(done) => self.done(done),
            Command::StoreClosed => {}
            Command::Close(_) => unreachable!("handled by run"),
        }
    }

    fn request(&mut self, id: Id, request: Request) {
        let action = request.action();
        match request {
            Request::Send {
                room,
                text,
                client_id,
            } => {
                if !self.presence.is_member(&room, id) {
                    // After the answers to earlier writes, to keep answers in order.
                    self.flush();
                    return self.refuse(id, action, client_id.as_deref(), &not_member(&room));
                }
                let from = self.presence.member(id);
                self.writes.push(Write::Append(NewMessage {
                    room,
                    from,
                    text,
                    client_id,
                    ts_ms: time::now_ms(),
                    delivery: Delivery::default(),
                }));
                self.pending.push(Pending { sender: id, action });
            }
            Request::React {
                room,
                id: message,
                emoji,
            } => {
                if !self.presence.is_member(&room, id) {
                    self.flush();
                    return self.refuse(id, action, None, &not_member(&room));
                }
                self.writes.push(Write::React {
                    room,
                    id: message,
                    emoji,
                });
                self.pending.push(Pending { sender: id, action });
            }
            other => {
                // Reads and presence changes see every write queued before them.
                self.flush();
                if let Err(e) = self.read_or_presence(id, other) {
                    self.refuse(id, action, None, &e);
                }
            }
        }
    }

    fn read_or_presence(&mut self, id: Id, request: Request) -> Result<(), ChatError> {
        match request {
            Request::Join { room, name, since } => {
                if self.presence.is_member(&room, id) {
                    self.join(id, room, name, since);
                    return Ok(());
                }
                if self.joining.contains_key(&(room.clone(), id)) {
                    // Answered when the first one is.
                    return Ok(());
                }
                let member = Member {
                    id,
                    name: name
                        .clone()
                        .unwrap_or_else(|| self.presence.member(id).name),
                };
                if let Some(runtime) = &self.runtime
                    && self.presence.order_join(&room, &member)
                {
                    self.joining
                        .insert((room.clone(), id), PendingJoin { name, since });
                    self.held.entry(id).or_default();
                    let tx = self.tx.clone();
                    runtime.spawn(async move {
                        tokio::time::sleep(JOIN_TIMEOUT).await;
                        if let Some(tx) = tx.upgrade() {
                            let _ = tx.send(Command::JoinExpired { room, id }).await;
                        }
                    });
                    return Ok(());
                }
                self.join(id, room, name, since);
            }
            Request::History {
                room,
                before,
                limit,
            } => {
                if !self.presence.is_member(&room, id) {
                    return Err(not_member(&room));
                }
                self.read(
                    id,
                    Job::Page {
                        room,
                        id,
                        before,
                        limit,
                    },
                );
            }
            Request::Leave { room } => {
                if !self.presence.leave(&room, id) {
                    return Err(not_member(&room));
                }
                self.floors.remove(&(room.clone(), id));
                self.reply(id, &protocol::left_frame(&room));
                let member = self.presence.member(id);
                let frame = protocol::presence_frame(&room, PresenceEvent::Leave, &member, None);
                self.presence
                    .publish_local(&room, &frame, &[], &mut self.gone);
            }
            Request::Nick { name } => self.rename(id, name, true),
            Request::Who { room } => {
                let members = self.presence.members(&room);
                self.reply(id, &protocol::members_frame(&room, &members));
            }
            Request::Rooms => {
                let live = self.presence.rooms();
                self.read(id, Job::Rooms { id, live });
            }
            Request::Send { .. } | Request::React { .. } => {
                unreachable!("writes are gathered by request")
            }
        }
        Ok(())
    }

    /// Joins `room` now: reads its history; the join takes effect with the history
    /// ([`Engine::finish_join`]).
    fn join(&mut self, id: Id, room: Room, name: Option<Name>, since: Option<u64>) {
        if self.storage.is_deferred() {
            self.reading.insert((room.clone(), id), Vec::new());
        }
        let job = Job::Join {
            room,
            id,
            name,
            since,
            history_default: self.history_default,
            recovery_max: self.recovery_max,
        };
        self.read(id, job);
    }

    /// The join takes effect: membership, the `joined` answer, the members' news, then the
    /// room's frames that arrived while its history was read and that it does not hold.
    fn finish_join(
        &mut self,
        room: Room,
        id: Id,
        name: Option<Name>,
        read: Result<JoinRead, StoreError>,
    ) {
        let arrived = if self.storage.is_deferred() {
            let Some(arrived) = self.reading.remove(&(room.clone(), id)) else {
                // The connection left while its history was read.
                return;
            };
            arrived
        } else {
            Vec::new()
        };
        let JoinRead {
            last_id,
            messages,
            truncated,
        } = match read {
            Ok(read) => read,
            Err(e) => {
                if !self.presence.is_member(&room, id) {
                    self.presence.retract_join(&room, &self.presence.member(id));
                }
                return self.refuse(id, "join", None, &unavailable(&e));
            }
        };
        if let Some(name) = name {
            self.rename(id, name, false);
        }
        let newly = self.presence.join(&room, id);
        if self.announces {
            self.floors.insert((room.clone(), id), last_id);
        }
        let you = self.presence.member(id);
        let members = self.presence.members(&room);
        self.reply(
            id,
            &protocol::joined_frame(&Joined {
                room: &room,
                you: &you,
                members: &members,
                messages: &messages,
                last_id,
                truncated,
            }),
        );
        if newly {
            let frame = protocol::presence_frame(&room, PresenceEvent::Join, &you, None);
            self.presence
                .publish_local(&room, &frame, &[id], &mut self.gone);
        }
        for (message_id, frame) in arrived {
            if message_id.is_none_or(|m| m > last_id) {
                self.reply(id, &frame);
            }
        }
    }

    /// Calls the store for a connection's read; with the store on the I/O thread, the
    /// connection's later requests wait for the outcome.
    fn read(&mut self, id: Id, job: Job) {
        if self.storage.is_deferred() {
            self.busy.insert(id);
            self.held.entry(id).or_default();
        }
        self.submit(job);
    }

    /// Calls the store; handles the outcome now, or when the I/O thread sends it.
    fn submit(&mut self, job: Job) {
        if let Some(done) = self.storage.submit(job) {
            self.done(done);
        }
    }

    /// Handles a store call's outcome.
    fn done(&mut self, done: Done) {
        match done {
            Done::Applied {
                writes,
                pending,
                result,
            } => self.stored(writes, pending, result),
            Done::Joined {
                room,
                id,
                name,
                result,
            } => {
                self.finish_join(room, id, name, result);
                self.read_done(id);
            }
            Done::Paged { room, id, result } => {
                match result {
                    Ok(page) => self.reply(
                        id,
                        &protocol::history_frame(&room, &page.messages, page.has_more),
                    ),
                    Err(e) => self.refuse(id, "history", None, &unavailable(&e)),
                }
                self.read_done(id);
            }
            Done::Rooms { id, result } => {
                match result {
                    Ok(rooms) => self.reply(id, &protocol::rooms_frame(&rooms)),
                    Err(e) => self.refuse(id, "rooms", None, &unavailable(&e)),
                }
                self.read_done(id);
            }
            Done::Pruned(result) => match result {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "chat retention: old messages deleted"),
                Err(e) => tracing::error!(error = %e, "chat retention failed"),
            },
        }
    }

    fn read_done(&mut self, id: Id) {
        if self.busy.remove(&id) {
            self.release(id);
        }
    }

    /// A join the other nodes have seen (in the order of every node's changes) takes effect.
    fn joined(&mut self, room: Room, id: Id) {
        let Some(pending) = self.joining.remove(&(room.clone(), id)) else {
            return;
        };
        self.join(id, room, pending.name, pending.since);
        self.release(id);
    }

    /// A join the other nodes did not see in time fails; whatever they saw is undone.
    fn join_expired(&mut self, room: Room, id: Id) {
        if self.joining.remove(&(room.clone(), id)).is_some() {
            self.presence.retract_join(&room, &self.presence.member(id));
            let error = ChatError::new(
                ErrorCode::Unavailable,
                "the chat could not reach its other nodes in time; try again",
            );
            self.refuse(id, "join", None, &error);
        }
        self.release(id);
    }

    /// Keeps a request of a connection whose join or read is waiting, to be carried out after
    /// it.
    fn hold(&mut self, id: Id, command: Command) {
        let held = self.held.entry(id).or_default();
        if held.len() < MAX_HELD {
            held.push_back(command);
            return;
        }
        let error = ChatError::new(
            ErrorCode::Unavailable,
            format!("more than {MAX_HELD} requests wait for an earlier one; try again"),
        );
        match command {
            Command::Request { request, .. } => self.refuse(id, request.action(), None, &error),
            Command::Article { action, .. } => self.refuse(id, action, None, &error),
            _ => {}
        }
    }

    /// Carries out the requests held while the connection's joins or reads were waiting, in
    /// order, once none is.
    fn release(&mut self, id: Id) {
        if self.busy.contains(&id) || self.joining.keys().any(|(_, member)| *member == id) {
            return;
        }
        for command in self.held.remove(&id).unwrap_or_default() {
            self.handle(command);
        }
    }

    /// Changes a name and tells every room the connection is in.
    fn rename(&mut self, id: Id, name: Name, acknowledge: bool) {
        let (previous, rooms) = self.presence.rename(id, name.clone());
        let you = Member { id, name };
        if acknowledge {
            self.reply(id, &protocol::nick_frame(&you, &previous));
        }
        if previous != you.name {
            for room in rooms {
                let frame =
                    protocol::presence_frame(&room, PresenceEvent::Rename, &you, Some(&previous));
                self.presence
                    .publish_local(&room, &frame, &[], &mut self.gone);
            }
        }
    }

    /// Stores the gathered writes, then delivers their frames ([`Engine::stored`]).
    fn flush(&mut self) {
        if self.writes.is_empty() {
            return;
        }
        let writes = std::mem::take(&mut self.writes);
        let pending = std::mem::take(&mut self.pending);
        self.submit(Job::Apply { writes, pending });
    }

    /// Delivers stored writes (unless the store announces them: then they are delivered as
    /// their announcements arrive) and tells the senders of refused ones; on a storage failure
    /// nothing is delivered and each sender gets `unavailable`.
    fn stored(
        &mut self,
        mut writes: Vec<Write>,
        mut pending: Vec<Pending>,
        result: Result<Vec<Applied>, StoreError>,
    ) {
        match result {
            Ok(applied) => {
                let announced = self.announces;
                for ((write, p), applied) in writes.iter().zip(&pending).zip(applied) {
                    match applied {
                        Applied::Appended(_) | Applied::Reacted(_) if announced => {}
                        Applied::Appended(_) | Applied::Reacted(_) => self.deliver(write, applied),
                        _ => self.refuse_write(write, p, applied),
                    }
                }
            }
            Err(e) => {
                let error = unavailable(&e);
                for (write, p) in writes.iter().zip(&pending) {
                    self.refuse(p.sender, p.action, client_id(write), &error);
                }
            }
        }
        // Keep the buffers' capacity for the next batch.
        if self.writes.is_empty() && self.writes.capacity() < writes.capacity() {
            writes.clear();
            pending.clear();
            self.writes = writes;
            self.pending = pending;
        }
    }

    /// Delivers a stored write to this node's connections. With a store that announces its
    /// writes, every node does this for every write, as the announcements arrive.
    fn deliver(&mut self, write: &Write, applied: Applied) {
        match (write, applied) {
            (Write::Append(m), Applied::Appended(message_id)) => {
                let frame = protocol::message_frame(m, message_id);
                let mut skip: Vec<Id> = m.delivery.skip.into_iter().collect();
                // Joiners whose history already held this message do not get it again; the
                // floors below it are spent.
                self.floors.retain(|(room, member), floor| {
                    if *room != m.room {
                        return true;
                    }
                    if *floor >= message_id {
                        skip.push(*member);
                    }
                    *floor >= message_id
                });
                for ((room, joiner), arrived) in &mut self.reading {
                    if *room == m.room && m.delivery.skip != Some(*joiner) {
                        arrived.push((Some(message_id), frame.clone()));
                    }
                }
                self.presence
                    .publish_local(&m.room, &frame, &skip, &mut self.gone);
                if &*m.room == LOBBY {
                    let raw = if m.delivery.bare {
                        OutFrame::text(m.text.as_bytes())
                    } else {
                        OutFrame::text(format!("{}: {}", m.from.name, m.text).as_bytes())
                    };
                    let skip: Vec<Id> = m.delivery.skip.into_iter().collect();
                    self.presence
                        .publish_plain_local(&raw, &skip, &mut self.gone);
                }
            }
            (Write::React { room, id, emoji }, Applied::Reacted(count)) => {
                let frame = protocol::reaction_frame(room, *id, emoji, count);
                for ((reading, _), arrived) in &mut self.reading {
                    if reading == room {
                        arrived.push((None, frame.clone()));
                    }
                }
                self.presence
                    .publish_local(room, &frame, &[], &mut self.gone);
            }
            _ => {}
        }
    }

    /// Tells the sender why a write was not stored.
    fn refuse_write(&mut self, write: &Write, p: &Pending, applied: Applied) {
        match (write, applied) {
            (Write::React { room, id, .. }, Applied::UnknownMessage) => {
                let error = ChatError::new(
                    ErrorCode::UnknownMessage,
                    format!("room {room:?} has no message {id} (or no longer keeps it)"),
                );
                self.refuse(p.sender, p.action, None, &error);
            }
            (write, applied) => {
                let e = StoreError::Failed(format!("{applied:?} is no answer to {write:?}"));
                self.refuse(p.sender, p.action, client_id(write), &unavailable(&e));
            }
        }
    }

    /// A connection left (or was found gone): it leaves its rooms, and their members hear it.
    fn depart(&mut self, id: Id) {
        if !self.floors.is_empty() {
            self.floors.retain(|(_, member), _| *member != id);
        }
        self.held.remove(&id);
        if !self.reading.is_empty() {
            self.reading.retain(|(_, member), _| *member != id);
        }
        if !self.joining.is_empty() {
            let rooms: Vec<Room> = self
                .joining
                .keys()
                .filter(|(_, member)| *member == id)
                .map(|(room, _)| room.clone())
                .collect();
            for room in rooms {
                self.joining.remove(&(room.clone(), id));
                self.presence.retract_join(&room, &self.presence.member(id));
            }
        }
        if let Some((member, rooms)) = self.presence.disconnect(id) {
            for room in rooms {
                let frame = protocol::presence_frame(&room, PresenceEvent::Leave, &member, None);
                self.presence
                    .publish_local(&room, &frame, &[], &mut self.gone);
            }
        }
    }

    fn depart_gone(&mut self) {
        while !self.gone.is_empty() {
            for id in std::mem::take(&mut self.gone) {
                tracing::debug!(connection_id = %id, "gone without $disconnect");
                self.depart(id);
            }
        }
    }

    fn refuse(&self, id: Id, action: &str, client_id: Option<&str>, error: &ChatError) {
        self.reply(id, &error.frame(action, client_id));
    }

    fn reply(&self, id: Id, frame: &OutFrame) {
        // Queued like the fan-out, so that a reply and the room's frames keep one order.
        if let Err(e) = self.management.post_frame_queued(&id, frame) {
            tracing::debug!(connection_id = %id, error = %e, "reply not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use crate::apps::chat::presence::LocalPresence;
    use crate::apps::chat::store::{Page, Recovery, RoomInfo};
    use crate::event::ConnectionContext;
    use crate::gateway::conn::Conn;
    use crate::gateway::registry::{LocalRegistry, Registry};

    /// A store whose writes always fail, as on a full or broken disk.
    struct BrokenDisk;

    impl ChatStore for BrokenDisk {
        fn apply(&mut self, _: &[Write]) -> Result<Vec<Applied>, StoreError> {
            Err(StoreError::Failed("disk I/O error".into()))
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
    }

    fn frames(conn: &Conn) -> Vec<serde_json::Value> {
        let mut queued = VecDeque::new();
        conn.drain(&mut queued);
        queued
            .iter()
            .map(|b| {
                let start = if b[1] & 0x7f == 126 { 4 } else { 2 };
                serde_json::from_slice(&b[start..]).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_failed_write_delivers_nothing_and_tells_the_sender() {
        let registry = Arc::new(LocalRegistry::new());
        let management = ManagementApi::new(registry.clone(), 1 << 20);
        let conn = Arc::new(Conn::new(
            ConnectionContext {
                connection_id: Id::random(),
                connected_at_ms: 0,
                source_ip: "127.0.0.1".parse().unwrap(),
                user_agent: None,
                domain_name: "localhost".into(),
                authorizer: None,
            },
            1 << 20,
        ));
        registry.register(conn.clone());
        let id = conn.id();
        let engine = start(
            Box::new(BrokenDisk),
            Arc::new(LocalPresence::new(management.clone())),
            management,
            Arc::new(ChatConfig::default()),
        );
        let room: Room = "r".into();
        for command in [
            Command::Connect {
                id,
                connected_at_ms: 0,
            },
            Command::Request {
                id,
                request: Request::Join {
                    room: room.clone(),
                    name: None,
                    since: None,
                },
            },
            Command::Request {
                id,
                request: Request::Send {
                    room,
                    text: "lost?".into(),
                    client_id: None,
                },
            },
        ] {
            assert!(matches!(
                engine.submit(command, Response::ok()),
                Deferred::Ready(Ok(_))
            ));
        }
        engine.close().await;
        let frames = frames(&conn);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(frames[0]["type"], "joined");
        assert_eq!(frames[1]["type"], "error");
        assert_eq!(frames[1]["code"], "unavailable");
        assert_eq!(frames[1]["action"], "send");
        // After close, requests are refused rather than queued.
        assert!(matches!(
            engine.submit(Command::Tick, Response::ok()),
            Deferred::Ready(Err(_))
        ));
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_sender_wait() {
        let (tx, mut rx) = mpsc::channel(1);
        let engine = EngineHandle {
            tx,
            quiet: Arc::default(),
        };
        assert!(matches!(
            engine.submit(Command::Tick, Response::ok()),
            Deferred::Ready(Ok(_))
        ));
        let Deferred::Pending(waiting) = engine.submit(Command::Tick, Response::ok()) else {
            panic!("a full queue does not refuse or drop: the request waits");
        };
        let waiting = tokio::spawn(waiting);
        assert!(matches!(rx.recv().await, Some(Command::Tick)));
        assert!(waiting.await.unwrap().is_ok(), "queued once there is room");
        assert!(matches!(rx.recv().await, Some(Command::Tick)));
    }
}
