//! The shared half of a connection: its identity, activity clock, message counts and bounded
//! outbox.
//!
//! Everything that wants to reach a client (the management API, built-in apps, the gateway's
//! own replies) pushes pre-encoded frames into the connection's [`Outbox`]. The connection's
//! task drains it with vectored writes. The outbox is bounded by bytes. A push that would pass
//! the bound is refused with [`PushError::Full`], and the connection is closed as a slow
//! consumer: its unsent frames are dropped (freeing their memory) and it is closed with 1008
//! [`SLOW_CONSUMER`]. Until it is gone, further pushes keep answering `Full` (the management
//! API's 429); after, `Gone` (410). Nothing here blocks or awaits.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::Context;
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::event::ConnectionContext;
use crate::gateway::frame::OutFrame;
use crate::ids::Id;
use crate::time;

/// One live connection, shared by its task, the registry and anyone posting to it.
#[derive(Debug)]
pub struct Conn {
    /// What every event repeats about the connection.
    pub context: ConnectionContext,
    /// When the connection last had traffic, epoch milliseconds (GetConnection's
    /// `lastActiveAt`), from the coarse wall clock.
    last_active_ms: AtomicI64,
    /// Since when the sweeper has seen no traffic, for the idle timeout: [`SweepClock`]
    /// milliseconds, plus one; [`TRAFFIC`] once traffic came after the last sweep (and at
    /// first). Traffic stores the constant (no clock read on the hot path); the sweeper,
    /// which reads its clock once per sweep, turns it into a time.
    quiet_since: AtomicU64,
    /// Set once the outbox overflowed; the connection is then being closed.
    overflowed: AtomicBool,
    /// Set once a close was requested (read without the lock on every turn of the task).
    close_requested: AtomicBool,
    /// Set once the connection closed: later pushes answer `Gone`. Read and written under the
    /// outbox lock only; kept here, beside the other flags, so that the outbox state has room
    /// for its counter without growing.
    closed: AtomicBool,
    /// Messages received from the client, up to `u32::MAX` (where it stays). Only the
    /// connection's task writes it (a load and a store, no read-modify-write); the inspector
    /// reads it. A `u32` beside the flags: no padding of its own.
    messages_in: AtomicU32,
    outbox: Outbox,
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The connection is closing or closed.
    #[error("the connection is gone")]
    Gone,
    /// The outbox holds too many unsent bytes.
    #[error("the connection's outbox is full")]
    Full,
}

/// [`Conn::quiet_since`] after traffic the sweeper has not seen yet.
const TRAFFIC: u64 = 0;

/// The sweeper's clock: tokio's, which tests pause and advance, so the idle and lifetime
/// limits pass in virtual time there; read as milliseconds since the sweeper started and as
/// epoch milliseconds (the wall clock's reading at the start, moved on by tokio's clock) to
/// compare with `connected_at_ms`. Traffic never reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SweepClock {
    start: tokio::time::Instant,
    start_epoch_ms: i64,
}

/// One reading of the [`SweepClock`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SweepTime {
    elapsed_ms: u64,
    epoch_ms: i64,
}

impl SweepClock {
    pub(crate) fn start() -> Self {
        SweepClock {
            start: tokio::time::Instant::now(),
            start_epoch_ms: time::now_ms(),
        }
    }

    pub(crate) fn now(&self) -> SweepTime {
        let elapsed_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        SweepTime {
            elapsed_ms,
            epoch_ms: self
                .start_epoch_ms
                .saturating_add(i64::try_from(elapsed_ms).unwrap_or(i64::MAX)),
        }
    }
}

/// The close reason of a connection whose outbox overflowed (code 1008).
pub const SLOW_CONSUMER: &str = "Outbox overflow: the client is not reading";

/// A close the connection's task should perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The close code sent to the client and reported to `$disconnect`.
    pub code: u16,
    /// The close reason.
    pub reason: &'static str,
}

/// What the outbox lock guards. Its two `u32`s fill what would be padding: a larger `Conn`
/// moves its allocation into the allocator's next size class, which `bench/ab` measured at
/// about 150 bytes more per idle connection, not the 16 added.
#[derive(Debug, Default)]
struct OutboxState {
    frames: VecDeque<Bytes>,
    close: Option<CloseRequest>,
    /// At most this many unsent bytes.
    limit: u32,
    /// Messages queued for the client (control frames aside), up to `u32::MAX` (where it
    /// stays).
    messages: u32,
}

#[derive(Debug)]
struct Outbox {
    state: Mutex<OutboxState>,
    /// Bytes queued or being written; bounded by [`OutboxState::limit`].
    bytes: AtomicUsize,
    waker: AtomicWaker,
}

impl Conn {
    /// A connection with an empty outbox bounded to `outbox_limit` bytes (4 GiB at most).
    pub fn new(context: ConnectionContext, outbox_limit: usize) -> Self {
        let now = context.connected_at_ms;
        Conn {
            context,
            last_active_ms: AtomicI64::new(now),
            // Opening is traffic: the first sweep starts the idle clock.
            quiet_since: AtomicU64::new(TRAFFIC),
            overflowed: AtomicBool::new(false),
            close_requested: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            messages_in: AtomicU32::new(0),
            outbox: Outbox {
                state: Mutex::new(OutboxState {
                    limit: u32::try_from(outbox_limit).unwrap_or(u32::MAX),
                    ..OutboxState::default()
                }),
                bytes: AtomicUsize::new(0),
                waker: AtomicWaker::new(),
            },
        }
    }

    /// The connection id.
    pub fn id(&self) -> Id {
        self.context.connection_id
    }

    /// When the connection last had traffic, epoch milliseconds.
    pub fn last_active_ms(&self) -> i64 {
        // The coarse clock may run a few ms behind the connect time.
        self.last_active_ms
            .load(Ordering::Relaxed)
            .max(self.context.connected_at_ms)
    }

    /// Records traffic now (to the coarse clock's few milliseconds).
    pub fn touch(&self) {
        self.last_active_ms
            .store(time::coarse_now_ms(), Ordering::Relaxed);
        self.quiet_since.store(TRAFFIC, Ordering::Relaxed);
    }

    /// How long the connection has been open at `now`.
    pub(crate) fn age(&self, now: SweepTime) -> Duration {
        Duration::from_millis(
            u64::try_from(now.epoch_ms - self.context.connected_at_ms).unwrap_or(0),
        )
    }

    /// How long the connection has had no traffic at `now`, to one sweep: traffic since the
    /// previous call counts as traffic at `now`, so a connection is never found idle early,
    /// and at most one sweep late. For the sweeper, the only caller.
    pub(crate) fn quiet_for(&self, now: SweepTime) -> Duration {
        match self.quiet_since.load(Ordering::Relaxed) {
            TRAFFIC => {
                // Traffic racing this store is traffic at `now` too.
                self.quiet_since
                    .store(now.elapsed_ms + 1, Ordering::Relaxed);
                Duration::ZERO
            }
            since => Duration::from_millis((now.elapsed_ms + 1).saturating_sub(since)),
        }
    }

    /// Unsent bytes in the outbox.
    pub fn queued_bytes(&self) -> usize {
        self.outbox.bytes.load(Ordering::Relaxed)
    }

    /// Messages received from the client so far (`u32::MAX` at most).
    pub fn messages_in(&self) -> u32 {
        self.messages_in.load(Ordering::Relaxed)
    }

    /// Messages queued for the client so far (posts, broadcasts, the gateway's replies; not
    /// pings, pongs or closes; `u32::MAX` at most). A message refused because the outbox was
    /// full is not counted. Takes the outbox lock: for the inspector, not the message path.
    pub fn messages_out(&self) -> u32 {
        self.outbox.state.lock().expect("outbox lock").messages
    }

    /// Counts a message received from the client. For the connection's task, the only writer.
    pub(crate) fn count_message_in(&self) {
        let n = self.messages_in.load(Ordering::Relaxed);
        self.messages_in
            .store(n.saturating_add(1), Ordering::Relaxed);
    }

    /// Queues a frame for the client. Counts as traffic for the idle timeout.
    pub fn push(&self, frame: &OutFrame) -> Result<(), PushError> {
        self.push_inner(frame, true)
    }

    /// Queues a frame that does not count as traffic (the gateway's own replies do).
    pub(crate) fn push_quiet(&self, frame: &OutFrame) -> Result<(), PushError> {
        self.push_inner(frame, false)
    }

    fn push_inner(&self, frame: &OutFrame, touch: bool) -> Result<(), PushError> {
        let outbox = &self.outbox;
        let len = frame.len();
        let was_empty = {
            let mut state = outbox.state.lock().expect("outbox lock");
            if self.closed.load(Ordering::Relaxed) {
                return Err(PushError::Gone);
            }
            if self.overflowed.load(Ordering::Relaxed) {
                return Err(PushError::Full);
            }
            if state.close.is_some() {
                return Err(PushError::Gone);
            }
            let queued = outbox.bytes.load(Ordering::Relaxed);
            if queued + len > state.limit as usize {
                self.overflow(&mut state);
                drop(state);
                outbox.waker.wake();
                return Err(PushError::Full);
            }
            // An add, not a store of `queued + len`: the task gives bytes back without the
            // lock, and a store would undo a release made since the load.
            outbox.bytes.fetch_add(len, Ordering::Relaxed);
            state.messages = state.messages.saturating_add(1);
            state.frames.push_back(frame.bytes().clone());
            state.frames.len() == 1
        };
        if touch {
            self.touch();
        }
        // The task takes every queued frame at once, so only the first push after a drain
        // needs to wake it.
        if was_empty {
            outbox.waker.wake();
        }
        Ok(())
    }

    /// Starts closing a slow consumer: drops its unsent frames and asks for a 1008 close.
    fn overflow(&self, state: &mut OutboxState) {
        self.overflowed.store(true, Ordering::Relaxed);
        let dropped: usize = state.frames.drain(..).map(|f| f.len()).sum();
        self.outbox.bytes.fetch_sub(dropped, Ordering::Relaxed);
        state.close = Some(CloseRequest {
            code: 1008,
            reason: SLOW_CONSUMER,
        });
        self.close_requested.store(true, Ordering::Release);
    }

    /// Whether the outbox overflowed (the connection is a slow consumer being closed).
    pub fn is_overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Queues a control frame (pong, close) from the connection's own task: never refused.
    pub(crate) fn push_control(&self, frame: &OutFrame) {
        let mut state = self.outbox.state.lock().expect("outbox lock");
        self.outbox.bytes.fetch_add(frame.len(), Ordering::Relaxed);
        state.frames.push_back(frame.bytes().clone());
    }

    /// Asks the connection's task to close with this code; the first request wins.
    pub fn request_close(&self, code: u16, reason: &'static str) -> bool {
        let first = {
            let mut state = self.outbox.state.lock().expect("outbox lock");
            if self.closed.load(Ordering::Relaxed) || state.close.is_some() {
                false
            } else {
                state.close = Some(CloseRequest { code, reason });
                self.close_requested.store(true, Ordering::Release);
                true
            }
        };
        if first {
            self.outbox.waker.wake();
        }
        first
    }

    /// Whether a close was requested or the connection is closed.
    pub fn is_closing(&self) -> bool {
        let state = self.outbox.state.lock().expect("outbox lock");
        self.closed.load(Ordering::Relaxed) || state.close.is_some()
    }

    /// Registers the task's waker, to be woken by pushes, close requests and overflows.
    pub(crate) fn register(&self, cx: &Context<'_>) {
        self.outbox.waker.register(cx.waker());
    }

    /// The close requested for this connection, if any.
    pub(crate) fn close_request(&self) -> Option<CloseRequest> {
        if !self.close_requested.load(Ordering::Acquire) {
            return None;
        }
        self.outbox.state.lock().expect("outbox lock").close.clone()
    }

    /// Moves queued frames into `into`. The task registers its waker (`register`) first in
    /// the same poll, so a push that comes after this drain wakes it.
    pub(crate) fn drain(&self, into: &mut VecDeque<Bytes>) {
        let mut state = self.outbox.state.lock().expect("outbox lock");
        if into.is_empty() {
            // Swap so that the task's and the outbox's buffers keep their capacity.
            std::mem::swap(into, &mut state.frames);
        } else {
            into.extend(state.frames.drain(..));
        }
    }

    /// Gives back the byte budget of frames that have been written.
    pub(crate) fn release(&self, bytes: usize) {
        self.outbox.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Marks the connection closed: later pushes answer [`PushError::Gone`].
    pub(crate) fn mark_closed(&self) {
        let mut state = self.outbox.state.lock().expect("outbox lock");
        self.closed.store(true, Ordering::Relaxed);
        state.frames = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn conn(limit: usize) -> Conn {
        Conn::new(
            ConnectionContext {
                connection_id: Id::random(),
                connected_at_ms: 1,
                source_ip: "127.0.0.1".parse().unwrap(),
                user_agent: None,
                domain_name: "localhost".into(),
                authorizer: None,
            },
            limit,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_sees_quiet_and_age_on_tokios_clock() {
        let clock = SweepClock::start();
        let c = conn(10);
        let step = Duration::from_secs(3);
        // Opening counts as traffic at the first sweep.
        assert_eq!(c.quiet_for(clock.now()), Duration::ZERO);
        tokio::time::advance(step).await;
        assert_eq!(c.quiet_for(clock.now()), step);
        // Traffic counts as traffic at the next sweep, and only `touch` and pushes count.
        c.touch();
        tokio::time::advance(step).await;
        assert_eq!(c.quiet_for(clock.now()), Duration::ZERO);
        tokio::time::advance(step).await;
        assert_eq!(c.quiet_for(clock.now()), step);
        assert_eq!(c.push(&OutFrame::text(b"a")), Ok(()));
        assert_eq!(c.push_quiet(&OutFrame::text(b"b")), Ok(()));
        assert_eq!(c.quiet_for(clock.now()), Duration::ZERO);
        tokio::time::advance(step).await;
        let now = clock.now();
        assert_eq!(c.quiet_for(now), step);
        // The age runs from `connected_at_ms` on the sweeper's clock; traffic never makes a
        // connection younger.
        let opened_ms = c.context.connected_at_ms;
        assert_eq!(
            c.age(now),
            step * 4 + Duration::from_millis((clock.start_epoch_ms - opened_ms) as u64)
        );
    }

    #[test]
    fn outbox_is_bounded_by_bytes() {
        let c = conn(10);
        let f = OutFrame::text(b"abc"); // 5 bytes encoded
        assert_eq!(c.push(&f), Ok(()));
        assert_eq!(c.push(&f), Ok(()));
        let mut into = VecDeque::new();
        c.drain(&mut into);
        assert_eq!(into.len(), 2);
        // Drained but unwritten bytes still count against the bound...
        assert_eq!(c.queued_bytes(), 10);
        // ...until they are written.
        c.release(10);
        assert_eq!(c.push(&f), Ok(()));
    }

    #[test]
    fn overflow_closes_a_slow_consumer_and_frees_its_backlog() {
        let c = conn(10);
        let f = OutFrame::text(b"abc");
        assert_eq!(c.push(&f), Ok(()));
        assert_eq!(c.push(&f), Ok(()));
        assert_eq!(c.push(&f), Err(PushError::Full));
        assert_eq!(c.queued_bytes(), 0, "the unsent frames were dropped");
        assert_eq!(c.push(&f), Err(PushError::Full), "full until it is gone");
        let mut into = VecDeque::new();
        c.drain(&mut into);
        assert!(into.is_empty());
        let close = c.close_request().unwrap();
        assert_eq!((close.code, close.reason), (1008, SLOW_CONSUMER));
        assert!(c.is_overflowed());
        c.mark_closed();
        assert_eq!(c.push(&f), Err(PushError::Gone));
    }

    #[test]
    fn messages_are_counted_each_way_without_control_frames_or_refusals() {
        let c = conn(10);
        let f = OutFrame::text(b"abc"); // 5 bytes encoded
        c.push(&f).unwrap();
        c.push_quiet(&f).unwrap();
        c.push_control(&OutFrame::pong(b""));
        assert_eq!(c.messages_out(), 2, "a pong is no message");
        assert_eq!(c.push(&f), Err(PushError::Full));
        assert_eq!(c.messages_out(), 2, "a refused frame is not counted");
        c.count_message_in();
        c.count_message_in();
        assert_eq!(c.messages_in(), 2);
        // The counts stop at their maximum rather than start over.
        c.messages_in.store(u32::MAX, Ordering::Relaxed);
        c.count_message_in();
        assert_eq!(c.messages_in(), u32::MAX);
        let roomy = conn(100);
        roomy.outbox.state.lock().unwrap().messages = u32::MAX;
        roomy.push(&f).unwrap();
        assert_eq!(roomy.messages_out(), u32::MAX);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_connection_stays_in_its_allocation_size_class() {
        // `Arc<Conn>` is 16 bytes of counts and the `Conn`: 232 bytes, the most a 240-byte
        // malloc chunk holds. One byte more and every connection's allocation moves up a
        // size class (see `OutboxState`).
        assert!(
            std::mem::size_of::<Conn>() <= 216,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }

    #[test]
    fn pushes_after_close_are_gone() {
        let c = conn(100);
        assert!(c.request_close(1000, "bye"));
        assert!(!c.request_close(1001, "again"), "first request wins");
        assert_eq!(c.push(&OutFrame::text(b"x")), Err(PushError::Gone));
        c.drain(&mut VecDeque::new());
        assert_eq!(c.close_request().unwrap().code, 1000);
        c.mark_closed();
        assert_eq!(c.push(&OutFrame::text(b"x")), Err(PushError::Gone));
    }

    #[test]
    fn the_same_frame_is_shared_not_copied() {
        let a = conn(100);
        let b = conn(100);
        let f = OutFrame::text(b"shared");
        a.push(&f).unwrap();
        b.push(&f).unwrap();
        let (mut qa, mut qb) = (VecDeque::new(), VecDeque::new());
        a.drain(&mut qa);
        b.drain(&mut qb);
        assert_eq!(qa[0].as_ptr(), qb[0].as_ptr());
    }

    #[test]
    fn the_byte_count_survives_pushes_racing_with_writes() {
        // The task gives bytes back without the outbox lock while pushes add under it; the
        // count must end at zero once everything pushed has been written.
        let c = Arc::new(conn(usize::MAX));
        const PUSHES: usize = 200_000;
        let pusher = {
            let c = c.clone();
            std::thread::spawn(move || {
                let f = OutFrame::text(b"x");
                for _ in 0..PUSHES {
                    c.push(&f).unwrap();
                }
            })
        };
        let mut written = 0;
        let mut into = VecDeque::new();
        while written < PUSHES {
            c.drain(&mut into);
            for frame in into.drain(..) {
                c.release(frame.len());
                written += 1;
            }
        }
        pusher.join().unwrap();
        assert_eq!(c.queued_bytes(), 0);
    }
}
