//! Who is connected and in which rooms: the [`Presence`] trait and its in-memory version.
//!
//! Presence owns room membership, display names and the *plain* clients (connections that
//! never joined a room: the articles' clients), and fans frames out to them. The chat calls
//! it from its store thread only. A cluster implements the same trait to hold membership
//! across nodes (`cluster::ClusterPresence`): each node delivers frames to its own
//! connections only; what crosses nodes is the membership change itself ([`Presence::peer`]),
//! from which each node makes its own members' frames. A join waits for the other nodes to
//! have seen it ([`Presence::order_join`]).
//!
//! Fan-out goes through the [`ManagementApi`] by connection id, like any handler's posts: a
//! full outbox refuses the frame for that recipient only (the gateway's slow-client rule
//! decides what becomes of the connection); an id that answers 410 is reported as gone,
//! unless it connected less than [`GONE_GRACE_MS`] ago (it may be between `$connect` and the
//! end of its handshake, when posts answer 410 too).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::apps::chat::cluster::PeerChange;
use crate::apps::chat::protocol::{Member, Name, Room, default_name};
use crate::gateway::frame::OutFrame;
use crate::gateway::registry::ManageError;
use crate::ids::Id;
use crate::management::ManagementApi;
use crate::time;

/// How long after `$connect` a 410 is not taken as proof that a connection is gone.
pub const GONE_GRACE_MS: i64 = 30_000;

/// Membership, names and fan-out. Methods touch memory only: they never block, never await
/// and never wait on the network (a cluster's implementation queues what it shares).
pub trait Presence: Send + Sync + 'static {
    /// A connection arrived (its `$connect`): a plain client until it joins a room.
    fn connect(&self, id: Id, connected_at_ms: i64);

    /// A connection left: it leaves every room. Returns who it was and the rooms it was in.
    fn disconnect(&self, id: Id) -> Option<(Member, Vec<Room>)>;

    /// The connection as others see it.
    fn member(&self, id: Id) -> Member;

    /// Joins a room; false if the connection was already in it.
    fn join(&self, room: &Room, id: Id) -> bool;

    /// Leaves a room; false if the connection was not in it.
    fn leave(&self, room: &str, id: Id) -> bool;

    /// Changes the connection's name; returns the old name and the rooms it is in.
    fn rename(&self, id: Id, name: Name) -> (Name, Vec<Room>);

    /// Whether the connection is in the room.
    fn is_member(&self, room: &str, id: Id) -> bool;

    /// The room's members, by name.
    fn members(&self, room: &str) -> Vec<Member>;

    /// Rooms with members, and how many.
    fn rooms(&self) -> Vec<(Room, usize)>;

    /// Sends `frame` to this node's members of `room`, except those in `skip`; ids found
    /// gone go to `gone`. (Other nodes deliver to their own members: stored writes as they
    /// are announced, presence frames from the membership change.)
    fn publish_local(&self, room: &str, frame: &OutFrame, skip: &[Id], gone: &mut Vec<Id>);

    /// Sends `frame` to this node's plain clients, except those in `skip`.
    fn publish_plain_local(&self, frame: &OutFrame, skip: &[Id], gone: &mut Vec<Id>);

    /// Of `ids`, which a worker thread found gone after a fan-out, those to take as gone
    /// (into `gone`): the grace of [`GONE_GRACE_MS`] applies as to a fan-out's own 410s.
    fn settle_gone(&self, ids: Vec<Id>, gone: &mut Vec<Id>);

    /// Shares this node's whole membership again with the other nodes (after the link
    /// between them was lost). Nothing to do for presence of one process.
    fn resync(&self) {}

    /// Before `member` joins `room`: whether the join must wait until the other nodes have
    /// seen it. A cluster shares the join and answers true; the join takes effect when
    /// [`peer`](Self::peer) hands it back, in the one order every node sees every node's
    /// changes in, so that a join answered on one node is known to any join answered after it
    /// on any node. Presence of one process answers false: join now.
    fn order_join(&self, room: &Room, member: &Member) -> bool {
        let _ = (room, member);
        false
    }

    /// Undoes a join shared by [`order_join`](Self::order_join) that did not take effect.
    fn retract_join(&self, room: &Room, member: &Member) {
        let _ = (room, member);
    }

    /// Applies a membership change another node made and tells this node's members of it.
    /// Returns this node's own join, when the change is one [`order_join`](Self::order_join)
    /// shared. Nothing to do for presence of one process.
    fn peer(&self, change: PeerChange, gone: &mut Vec<Id>) -> Option<(Room, Id)> {
        let _ = (change, gone);
        None
    }
}

type Set = HashSet<Id, foldhash::fast::RandomState>;

/// A connection that joined a room or chose a name.
#[derive(Debug)]
struct Connection {
    name: Name,
    rooms: Vec<Room>,
    connected_at_ms: i64,
}

/// Plain clients are only an id and a time (a map entry of 24 bytes): most connections of
/// the articles' chat never join or pick a name, and a [`Connection`] with its default name
/// would more than double what each one costs here.
#[derive(Debug, Default)]
struct State {
    connections: HashMap<Id, Connection, foldhash::fast::RandomState>,
    rooms: HashMap<Room, Set, foldhash::fast::RandomState>,
    /// Plain clients and when they connected.
    plain: HashMap<Id, i64, foldhash::fast::RandomState>,
}

impl State {
    fn connection(&mut self, id: Id) -> &mut Connection {
        let connected_at_ms = self.plain.get(&id).copied();
        self.connections.entry(id).or_insert_with(|| Connection {
            name: default_name(id),
            rooms: Vec::new(),
            connected_at_ms: connected_at_ms.unwrap_or_else(time::now_ms),
        })
    }

    fn connected_at_ms(&self, id: &Id) -> Option<i64> {
        self.connections
            .get(id)
            .map(|c| c.connected_at_ms)
            .or_else(|| self.plain.get(id).copied())
    }

    /// Whether a 410 for the connection may only mean that its handshake is not over.
    fn is_young(&self, id: &Id, now_ms: i64) -> bool {
        self.connected_at_ms(id)
            .is_some_and(|at| now_ms - at < GONE_GRACE_MS)
    }

    fn name(&self, id: Id) -> Name {
        self.connections
            .get(&id)
            .map_or_else(|| default_name(id), |c| c.name.clone())
    }
}

/// Presence for the connections of this process.
pub struct LocalPresence {
    management: ManagementApi,
    state: Mutex<State>,
}

impl std::fmt::Debug for LocalPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPresence").finish_non_exhaustive()
    }
}

impl LocalPresence {
    /// Presence that delivers through `management` (without waiting: see
    /// [`ManagementApi::post_frame_queued`]).
    pub fn new(management: ManagementApi) -> Self {
        LocalPresence {
            management,
            state: Mutex::default(),
        }
    }

    /// Every (room, member) pair of this process's connections.
    pub fn memberships(&self) -> Vec<(Room, Member)> {
        let state = self.state();
        state
            .connections
            .iter()
            .flat_map(|(id, c)| {
                c.rooms.iter().map(move |room| {
                    (
                        room.clone(),
                        Member {
                            id: *id,
                            name: c.name.clone(),
                        },
                    )
                })
            })
            .collect()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("presence lock")
    }

    fn post_each<'a>(
        &self,
        state: &State,
        ids: impl Iterator<Item = &'a Id>,
        frame: &OutFrame,
        skip: &[Id],
        gone: &mut Vec<Id>,
    ) {
        let now = time::now_ms();
        for id in ids {
            if skip.contains(id) {
                continue;
            }
            match self.management.post_frame_queued(id, frame) {
                Ok(()) => {}
                Err(ManageError::Gone) => {
                    if !state.is_young(id, now) {
                        gone.push(*id);
                    }
                }
                Err(ManageError::Full) => {
                    tracing::debug!(connection_id = %id, "outbox full, frame not queued for this client");
                }
                Err(e) => {
                    tracing::warn!(connection_id = %id, error = %e, "post failed");
                }
            }
        }
    }
}

impl Presence for LocalPresence {
    fn connect(&self, id: Id, connected_at_ms: i64) {
        let mut state = self.state();
        if let Some(conn) = state.connections.get_mut(&id) {
            conn.connected_at_ms = connected_at_ms;
        }
        state.plain.insert(id, connected_at_ms);
    }

    fn disconnect(&self, id: Id) -> Option<(Member, Vec<Room>)> {
        let mut state = self.state();
        let was_plain = state.plain.remove(&id).is_some();
        let Some(conn) = state.connections.remove(&id) else {
            return was_plain.then(|| {
                (
                    Member {
                        id,
                        name: default_name(id),
                    },
                    Vec::new(),
                )
            });
        };
        for room in &conn.rooms {
            if let Some(members) = state.rooms.get_mut(room) {
                members.remove(&id);
                if members.is_empty() {
                    state.rooms.remove(room);
                }
            }
        }
        Some((
            Member {
                id,
                name: conn.name,
            },
            conn.rooms,
        ))
    }

    fn member(&self, id: Id) -> Member {
        Member {
            id,
            name: self.state().name(id),
        }
    }

    fn join(&self, room: &Room, id: Id) -> bool {
        let mut state = self.state();
        let newly = state.rooms.entry(room.clone()).or_default().insert(id);
        if newly {
            state.connection(id).rooms.push(room.clone());
        }
        state.plain.remove(&id);
        newly
    }

    fn leave(&self, room: &str, id: Id) -> bool {
        let mut state = self.state();
        let Some(members) = state.rooms.get_mut(room) else {
            return false;
        };
        if !members.remove(&id) {
            return false;
        }
        if members.is_empty() {
            state.rooms.remove(room);
        }
        if let Some(conn) = state.connections.get_mut(&id) {
            conn.rooms.retain(|r| &**r != room);
        }
        true
    }

    fn rename(&self, id: Id, name: Name) -> (Name, Vec<Room>) {
        let mut state = self.state();
        let conn = state.connection(id);
        let previous = std::mem::replace(&mut conn.name, name);
        (previous, conn.rooms.clone())
    }

    fn is_member(&self, room: &str, id: Id) -> bool {
        self.state()
            .rooms
            .get(room)
            .is_some_and(|members| members.contains(&id))
    }

    fn members(&self, room: &str) -> Vec<Member> {
        let state = self.state();
        let mut members: Vec<Member> = state
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .map(|id| Member {
                id: *id,
                name: state.name(*id),
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        members
    }

    fn rooms(&self) -> Vec<(Room, usize)> {
        self.state()
            .rooms
            .iter()
            .map(|(room, members)| (room.clone(), members.len()))
            .collect()
    }

    fn publish_local(&self, room: &str, frame: &OutFrame, skip: &[Id], gone: &mut Vec<Id>) {
        let state = self.state();
        if let Some(members) = state.rooms.get(room) {
            self.post_each(&state, members.iter(), frame, skip, gone);
        }
    }

    fn publish_plain_local(&self, frame: &OutFrame, skip: &[Id], gone: &mut Vec<Id>) {
        let state = self.state();
        self.post_each(&state, state.plain.keys(), frame, skip, gone);
    }

    fn settle_gone(&self, ids: Vec<Id>, gone: &mut Vec<Id>) {
        let state = self.state();
        let now = time::now_ms();
        gone.extend(ids.into_iter().filter(|id| !state.is_young(id, now)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ConnectionContext;
    use crate::gateway::conn::Conn;
    use crate::gateway::registry::{LocalRegistry, Registry};
    use std::sync::Arc;

    fn conn(registry: &LocalRegistry) -> Arc<Conn> {
        let conn = Arc::new(Conn::new(
            ConnectionContext {
                connection_id: Id::random(),
                connected_at_ms: 0,
                source_ip: "127.0.0.1".parse().unwrap(),
                user_agent: None,
                domain_name: "localhost".into(),
                authorizer: None,
            },
            4096,
        ));
        registry.register(conn.clone());
        conn
    }

    #[test]
    fn rooms_plain_clients_and_names() {
        let registry = Arc::new(LocalRegistry::new());
        let p = LocalPresence::new(ManagementApi::new(registry.clone(), 1024));
        let (a, b) = (conn(&registry), conn(&registry));
        p.connect(a.id(), 0);
        p.connect(b.id(), 0);
        let lobby: Room = "lobby".into();
        assert!(p.join(&lobby, a.id()));
        assert!(!p.join(&lobby, a.id()), "already in");
        assert!(p.is_member("lobby", a.id()));
        assert!(!p.is_member("lobby", b.id()));
        let mut gone = Vec::new();
        p.publish_plain_local(&OutFrame::text(b"plain"), &[], &mut gone);
        p.publish_local("lobby", &OutFrame::text(b"room"), &[], &mut gone);
        assert!(gone.is_empty());
        assert_eq!(
            a.queued_bytes(),
            6,
            "a is no longer plain: only the room frame"
        );
        assert_eq!(b.queued_bytes(), 7, "b is plain: only the plain frame");

        let (old, rooms) = p.rename(a.id(), "alice".into());
        assert!(old.starts_with("guest-"));
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms[0], lobby);
        assert_eq!(&*p.members("lobby")[0].name, "alice");
        assert_eq!(p.rooms(), [(lobby.clone(), 1)]);

        assert!(p.leave("lobby", a.id()));
        assert!(!p.leave("lobby", a.id()));
        assert!(p.rooms().is_empty());
        let (member, rooms) = p.disconnect(a.id()).unwrap();
        assert_eq!(&*member.name, "alice");
        assert!(rooms.is_empty());
        assert!(p.disconnect(a.id()).is_none());

        // A plain client has no entry of its own: its name is the default, and it leaves
        // like anyone else.
        assert_eq!(p.member(b.id()).name, default_name(b.id()));
        assert!(p.state().connections.is_empty());
        let (member, rooms) = p.disconnect(b.id()).unwrap();
        assert_eq!(member.name, default_name(b.id()));
        assert!(rooms.is_empty());
        assert!(p.disconnect(b.id()).is_none());
    }

    #[test]
    fn ids_that_answer_410_are_reported_gone_after_the_grace_period() {
        let registry = Arc::new(LocalRegistry::new());
        let p = LocalPresence::new(ManagementApi::new(registry.clone(), 1024));
        let live = conn(&registry);
        p.connect(live.id(), 0);
        // Vanished without `$disconnect`: connected long ago, no longer registered.
        let stale = Id::random();
        p.connect(stale, 0);
        // Still in its handshake: connected just now, not registered yet.
        let young = Id::random();
        p.connect(young, time::now_ms());
        let mut gone = Vec::new();
        p.publish_plain_local(&OutFrame::text(b"hi"), &[], &mut gone);
        assert_eq!(gone, [stale]);
        assert_eq!(live.queued_bytes(), 4);
        // The same rule for the ids worker threads report after delivering queued posts.
        let mut settled = Vec::new();
        p.settle_gone(vec![young, stale], &mut settled);
        assert_eq!(settled, [stale]);
    }
}
