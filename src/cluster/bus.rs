//! Cross-node messaging: the [`Bus`] trait (publish, subscribe) and [`MemoryBus`], which links
//! several nodes in one process. The cluster's Redis implements the trait too
//! ([`ClusterRegistry`](super::ClusterRegistry), on its pub/sub connection).
//!
//! A bus carries payloads on named channels; each user serialises its own messages (with serde,
//! once per message) and reads them back on the other nodes. Every subscriber of a channel, on
//! every node (the publisher's included), gets every message published on it, all in one order
//! (the order the bus saw the publishes in: Redis runs one command at a time).
//!
//! Nothing on either side waits:
//! - [`Bus::publish`] queues the payload and returns; sending it is the bus's business. When
//!   its queue is full the payload is dropped and the publisher is told ([`BusError::Full`]).
//! - [`Bus::subscribe`] returns the receiving end of a bounded queue. When a subscriber's queue
//!   is full, the messages that do not fit are dropped for that subscriber only, with a
//!   warning; dropping the receiver ends the subscription.
//!
//! So a bus is best effort, like Redis pub/sub itself: a user that needs every message (the
//! chat's membership) must be able to resynchronise from a snapshot.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Publish and subscribe across the nodes of a cluster. Methods never block and never await.
pub trait Bus: Send + Sync + 'static {
    /// Queues `payload` for every subscriber of `channel` on every node, this one included.
    fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BusError>;

    /// Every message published on `channel` from now on, through a queue of `capacity`
    /// messages (see the module documentation for what a full queue does).
    fn subscribe(&self, channel: &str, capacity: usize) -> mpsc::Receiver<Bytes>;
}

/// Why a message was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The bus's outgoing queue is full (its backend is slow or unreachable).
    #[error("the bus's outgoing queue is full; the message was dropped")]
    Full,
    /// The bus has stopped.
    #[error("the bus has stopped")]
    Closed,
}

/// Puts `payload` in a subscriber's queue; false when the subscriber has gone.
pub(crate) fn offer(channel: &str, sink: &mpsc::Sender<Bytes>, payload: Bytes) -> bool {
    match sink.try_send(payload) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            tracing::warn!(
                channel,
                "a subscriber's queue is full; a message was dropped"
            );
            true
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

#[cfg(test)]
pub(crate) use memory::MemoryBus;

#[cfg(test)]
mod memory {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use bytes::Bytes;
    use tokio::sync::mpsc;

    use super::{Bus, BusError, offer};

    /// A bus inside one process: every node given the same `MemoryBus` is linked to the others, as
    /// nodes on one Redis are. Publishing hands the payload to every subscriber's queue at once,
    /// under one lock, so every subscriber sees one order.
    #[derive(Debug, Default)]
    pub(crate) struct MemoryBus {
        pub(super) channels: Mutex<HashMap<String, Vec<mpsc::Sender<Bytes>>>>,
    }

    impl MemoryBus {
        /// A bus with no subscribers.
        pub(crate) fn new() -> Self {
            Self::default()
        }
    }

    impl Bus for MemoryBus {
        fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BusError> {
            let mut channels = self.channels.lock().expect("bus lock");
            if let Some(sinks) = channels.get_mut(channel) {
                sinks.retain(|sink| offer(channel, sink, payload.clone()));
            }
            Ok(())
        }

        fn subscribe(&self, channel: &str, capacity: usize) -> mpsc::Receiver<Bytes> {
            let (tx, rx) = mpsc::channel(capacity.max(1));
            self.channels
                .lock()
                .expect("bus lock")
                .entry(channel.to_owned())
                .or_default()
                .push(tx);
            rx
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_gets_every_message_in_one_order() {
        let bus = MemoryBus::new();
        let mut a = bus.subscribe("c", 8);
        let mut b = bus.subscribe("c", 8);
        let mut other = bus.subscribe("d", 8);
        for n in 0..5u8 {
            bus.publish("c", Bytes::from(vec![n])).unwrap();
        }
        for rx in [&mut a, &mut b] {
            let got: Vec<u8> = (0..5).map(|_| rx.try_recv().unwrap()[0]).collect();
            assert_eq!(got, [0, 1, 2, 3, 4]);
            assert!(rx.try_recv().is_err());
        }
        assert!(other.try_recv().is_err(), "channels are separate");
    }

    #[test]
    fn a_full_subscriber_loses_messages_alone_and_a_dropped_one_is_forgotten() {
        let bus = MemoryBus::new();
        let mut slow = bus.subscribe("c", 1);
        let mut fast = bus.subscribe("c", 8);
        let gone = bus.subscribe("c", 8);
        drop(gone);
        bus.publish("c", Bytes::from_static(b"1")).unwrap();
        bus.publish("c", Bytes::from_static(b"2")).unwrap();
        assert_eq!(&slow.try_recv().unwrap()[..], b"1");
        assert!(slow.try_recv().is_err(), "the second did not fit");
        assert_eq!(&fast.try_recv().unwrap()[..], b"1");
        assert_eq!(&fast.try_recv().unwrap()[..], b"2");
        assert_eq!(bus.channels.lock().unwrap()["c"].len(), 2);
    }
}
