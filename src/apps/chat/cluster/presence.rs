//! [`ClusterPresence`]: membership across nodes, in memory on every node.
//!
//! Each node owns its own connections' membership (a [`LocalPresence`]) and keeps a copy of
//! the other nodes' members, so that `joined`, `who` and `rooms` list members on every node
//! without asking anyone. Every change a node makes (a join, a leave, a rename, a departure)
//! goes on the bus as a [`PeerChange`]; the other nodes update their copy and tell their own
//! members with the presence frame they build from it. Nothing here waits on the network:
//! publishing queues the change (see [`Bus`]).
//!
//! A join takes effect on its own node only when the node gets its own change back from the
//! bus (see [`Presence::order_join`]): the bus has one order for every node's changes, so
//! every node has applied a join before any join answered after it, and a `joined` answer
//! lists every member whose `joined` answer came before, whatever their node.
//!
//! The bus is best effort, so copies are made whole again from snapshots: when the node
//! reaches Redis (at start, and after Redis was unreachable), it publishes everything its
//! connections are in and asks the others for theirs. When a node dies, the node that notices
//! tells every node ([`PeerChange::NodeDown`]), and each removes the dead node's members and
//! tells its members of those rooms that they left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{ChatEvent, PeerChange, WireMember};
use crate::apps::chat::presence::{LocalPresence, Presence};
use crate::apps::chat::protocol::{self, Member, Name, PresenceEvent, Room};
use crate::cluster::bus::Bus;
use crate::gateway::frame::OutFrame;
use crate::ids::Id;
use crate::management::ManagementApi;

/// Another node's member of a room.
#[derive(Debug, Clone)]
struct Remote {
    name: Name,
    node: Arc<str>,
}

type Rooms = HashMap<Room, HashMap<Id, Remote, foldhash::fast::RandomState>>;

/// Membership across nodes: this node's connections, and a copy of everyone else's.
pub struct ClusterPresence {
    local: LocalPresence,
    node: Arc<str>,
    bus: Arc<dyn Bus>,
    channel: String,
    /// The other nodes' members, by room.
    remote: Mutex<Rooms>,
    /// This node's joins shared but not in effect yet: part of this node's state for the
    /// others (a snapshot taken meanwhile must not undo the join they were told of).
    joining: Mutex<HashMap<(Room, Id), Name>>,
}

impl std::fmt::Debug for ClusterPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPresence")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl ClusterPresence {
    /// Presence for node `node`, sharing its changes on `bus` under the key prefix `prefix`,
    /// delivering through `management`.
    pub fn new(node: &str, prefix: &str, bus: Arc<dyn Bus>, management: ManagementApi) -> Self {
        ClusterPresence {
            local: LocalPresence::new(management),
            node: node.into(),
            bus,
            channel: super::channel(prefix),
            remote: Mutex::default(),
            joining: Mutex::default(),
        }
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.remote.lock().expect("remote presence lock")
    }

    /// Tells the other nodes; a full bus loses the change (the next snapshot repairs it).
    fn share(&self, change: PeerChange) {
        let payload = serde_json::to_vec(&ChatEvent::Peer(change)).expect("serialisable");
        if let Err(error) = self.bus.publish(&self.channel, Bytes::from(payload)) {
            tracing::warn!(%error, "chat: a membership change was not shared with the other nodes");
        }
    }

    fn state(&self, ask: bool) -> PeerChange {
        let mut members: Vec<(String, WireMember)> = self
            .local
            .memberships()
            .into_iter()
            .map(|(room, member)| (room.to_string(), WireMember::from(&member)))
            .collect();
        let joining = self.joining.lock().expect("joining lock");
        members.extend(joining.iter().map(|((room, id), name)| {
            let member = Member {
                id: *id,
                name: name.clone(),
            };
            (room.to_string(), WireMember::from(&member))
        }));
        PeerChange::State {
            node: self.node.to_string(),
            members,
            ask,
        }
    }

    fn joining(&self) -> std::sync::MutexGuard<'_, HashMap<(Room, Id), Name>> {
        self.joining.lock().expect("joining lock")
    }

    /// Sends a presence frame about `member` to this node's members of `room`.
    fn tell(
        &self,
        room: &str,
        event: PresenceEvent,
        member: &Member,
        previous: Option<&Name>,
        gone: &mut Vec<Id>,
    ) {
        let frame = protocol::presence_frame(room, event, member, previous.map(|n| &**n));
        self.local.publish_local(room, &frame, &[], gone);
    }
}

impl Presence for ClusterPresence {
    fn connect(&self, id: Id, connected_at_ms: i64) {
        self.local.connect(id, connected_at_ms);
    }

    fn disconnect(&self, id: Id) -> Option<(Member, Vec<Room>)> {
        let (member, rooms) = self.local.disconnect(id)?;
        for room in &rooms {
            self.share(PeerChange::Leave {
                node: self.node.to_string(),
                room: room.to_string(),
                member: WireMember::from(&member),
            });
        }
        Some((member, rooms))
    }

    fn member(&self, id: Id) -> Member {
        self.local.member(id)
    }

    fn join(&self, room: &Room, id: Id) -> bool {
        // Shared before, by `order_join`.
        self.joining().remove(&(room.clone(), id));
        self.local.join(room, id)
    }

    fn order_join(&self, room: &Room, member: &Member) -> bool {
        self.joining()
            .insert((room.clone(), member.id), member.name.clone());
        self.share(PeerChange::Join {
            node: self.node.to_string(),
            room: room.to_string(),
            member: WireMember::from(member),
        });
        true
    }

    fn retract_join(&self, room: &Room, member: &Member) {
        self.joining().remove(&(room.clone(), member.id));
        self.share(PeerChange::Leave {
            node: self.node.to_string(),
            room: room.to_string(),
            member: WireMember::from(member),
        });
    }

    fn leave(&self, room: &str, id: Id) -> bool {
        let left = self.local.leave(room, id);
        if left {
            self.share(PeerChange::Leave {
                node: self.node.to_string(),
                room: room.to_owned(),
                member: WireMember::from(&self.local.member(id)),
            });
        }
        left
    }

    fn rename(&self, id: Id, name: Name) -> (Name, Vec<Room>) {
        let (previous, rooms) = self.local.rename(id, name.clone());
        if previous != name && !rooms.is_empty() {
            self.share(PeerChange::Rename {
                node: self.node.to_string(),
                member: WireMember::from(&Member { id, name }),
                previous: previous.to_string(),
            });
        }
        (previous, rooms)
    }

    fn is_member(&self, room: &str, id: Id) -> bool {
        self.local.is_member(room, id)
    }

    fn members(&self, room: &str) -> Vec<Member> {
        let mut members = self.local.members(room);
        if let Some(remote) = self.remote().get(room) {
            members.extend(remote.iter().map(|(id, r)| Member {
                id: *id,
                name: r.name.clone(),
            }));
        }
        members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        members
    }

    fn rooms(&self) -> Vec<(Room, usize)> {
        let mut rooms: HashMap<Room, usize> = self.local.rooms().into_iter().collect();
        for (room, members) in self.remote().iter() {
            *rooms.entry(room.clone()).or_default() += members.len();
        }
        rooms.into_iter().collect()
    }

    fn publish_local(&self, room: &str, frame: &OutFrame, skip: &[Id], gone: &mut Vec<Id>) {
        self.local.publish_local(room, frame, skip, gone);
    }

    fn publish_plain_local(&self, frame: &OutFrame, skip: &[Id], gone: &mut Vec<Id>) {
        self.local.publish_plain_local(frame, skip, gone);
    }

    fn settle_gone(&self, ids: Vec<Id>, gone: &mut Vec<Id>) {
        self.local.settle_gone(ids, gone);
    }

    fn resync(&self) {
        self.share(self.state(true));
    }

    fn peer(&self, change: PeerChange, gone: &mut Vec<Id>) -> Option<(Room, Id)> {
        if change.node() == &*self.node {
            // This node's own change: applied when it was made, except a join, which takes
            // effect now that every node has seen it.
            return match change {
                PeerChange::Join { room, member, .. } => {
                    Some((Room::from(room), Id::parse(&member.id)?))
                }
                _ => None,
            };
        }
        match change {
            PeerChange::Join { node, room, member } => {
                let member = member.parse()?;
                let room = Room::from(room);
                self.remote().entry(room.clone()).or_default().insert(
                    member.id,
                    Remote {
                        name: member.name.clone(),
                        node: node.into(),
                    },
                );
                self.tell(&room, PresenceEvent::Join, &member, None, gone);
            }
            PeerChange::Leave { room, member, .. } => {
                let member = member.parse()?;
                {
                    let mut remote = self.remote();
                    if let Some(members) = remote.get_mut(room.as_str()) {
                        members.remove(&member.id);
                        if members.is_empty() {
                            remote.remove(room.as_str());
                        }
                    }
                }
                self.tell(&room, PresenceEvent::Leave, &member, None, gone);
            }
            PeerChange::Rename {
                member, previous, ..
            } => {
                let member = member.parse()?;
                let previous = Name::from(previous);
                let mut rooms = Vec::new();
                for (room, members) in self.remote().iter_mut() {
                    if let Some(r) = members.get_mut(&member.id) {
                        r.name = member.name.clone();
                        rooms.push(room.clone());
                    }
                }
                for room in rooms {
                    self.tell(&room, PresenceEvent::Rename, &member, Some(&previous), gone);
                }
            }
            PeerChange::State { node, members, ask } => {
                let node: Arc<str> = node.into();
                let mut remote = self.remote();
                for members in remote.values_mut() {
                    members.retain(|_, r| r.node != node);
                }
                for (room, member) in members {
                    let Some(member) = member.parse() else {
                        continue;
                    };
                    remote.entry(Room::from(room)).or_default().insert(
                        member.id,
                        Remote {
                            name: member.name,
                            node: node.clone(),
                        },
                    );
                }
                remote.retain(|_, members| !members.is_empty());
                drop(remote);
                if ask {
                    self.share(self.state(false));
                }
            }
            PeerChange::NodeDown { node } => {
                // Every member of the node leaves at once: one frame per room lists them all
                // (a frame per member would give each recipient as many frames as members
                // left, thousands when a busy node dies).
                let mut left: Vec<(Room, Vec<Id>)> = Vec::new();
                {
                    let mut remote = self.remote();
                    for (room, members) in remote.iter_mut() {
                        let mut gone_here = Vec::new();
                        members.retain(|id, r| {
                            let dead = *r.node == *node;
                            if dead {
                                gone_here.push(*id);
                            }
                            !dead
                        });
                        if !gone_here.is_empty() {
                            left.push((room.clone(), gone_here));
                        }
                    }
                    remote.retain(|_, members| !members.is_empty());
                }
                for (room, mut ids) in left {
                    ids.sort_unstable();
                    let frame = protocol::presence_left_frame(&room, &ids);
                    self.local.publish_local(&room, &frame, &[], gone);
                }
            }
        }
        None
    }
}
