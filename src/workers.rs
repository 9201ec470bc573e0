//! Worker threads that own their connections, and the lanes that hand them fan-outs.
//!
//! With `workers = N` the gateway's connections do not run on the process's shared runtime:
//! N threads each run a current-thread runtime that accepts from the listener, handshakes,
//! and drives the connections it accepted. A connection never moves. Its id names its worker
//! (the value of the id's first character, modulo N: [`owner`]), so any thread can tell the
//! owner from the id alone, without a lookup. HTTP requests, the management API's included,
//! are served by the worker that accepted them; the sweeper, functions' Runtime APIs, cluster
//! links and tables stay on the shared runtime.
//!
//! A thread outside the workers that fans out to many connections (the chat's store thread)
//! does not push into every recipient's outbox itself. That would touch each recipient's
//! cache lines from another core and wake each recipient's task across threads. It queues
//! its posts instead ([`Lanes::queue`]), gathered per owning worker, and at the end of its
//! turn hands each worker one batch ([`Lanes::flush`]). The worker pushes into its own
//! connections' outboxes and wakes their tasks on its own thread. One cross-thread wake-up
//! per worker per turn replaces one per recipient.
//!
//! **Order**: each worker takes its batches in the order they were flushed, and a batch's
//! posts in the order they were queued. So everything one thread queues reaches every
//! connection in the order it was queued: the chat's replies and fan-outs keep the store
//! thread's order.
//!
//! **Bound**: each lane holds [`LANE_BATCHES`] batches. When a worker falls that far behind,
//! `flush` waits for room: the store thread slows down, its own bounded queue fills, and
//! connections' requests wait for room in it (the gateway stops reading them meanwhile).
//! Nothing is dropped.

use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::gateway::frame::OutFrame;
use crate::gateway::registry::ManageError;
use crate::ids::Id;
use crate::management::ManagementApi;

/// The most workers: an id's first character has 64 values.
pub(crate) const MAX_WORKERS: usize = 64;

/// Batches a lane holds before [`Lanes::flush`] waits for its worker.
const LANE_BATCHES: usize = 64;

/// Posts for one worker: frames, each with its recipients, in the order they were queued.
type Batch = Vec<(OutFrame, Vec<Id>)>;

/// Told the ids a worker found gone (no such connection) while delivering a batch.
pub(crate) type GoneSink = Box<dyn Fn(Vec<Id>) + Send + Sync>;

thread_local! {
    /// On a worker's thread: its index and the number of workers.
    static WORKER: Cell<Option<(u8, u8)>> = const { Cell::new(None) };
}

/// The worker that owns the connection `id`, of `workers`.
pub(crate) fn owner(id: &Id, workers: usize) -> usize {
    usize::from(id.lead()) % workers
}

/// A new connection id: on a worker's thread, one that names the worker.
pub(crate) fn connection_id() -> Id {
    match WORKER.get() {
        None => Id::random(),
        Some((index, count)) => {
            // Leads below 64 whose remainder is `index`: index, index + count, ...
            let choices = (64 - index).div_ceil(count);
            Id::random_with_lead(index + count * rand::random_range(0..choices))
        }
    }
}

/// One lane per worker: the posts queued for it and the queue that carries them over.
pub(crate) struct Lanes {
    lanes: Box<[Lane]>,
    gone: OnceLock<GoneSink>,
}

struct Lane {
    tx: mpsc::Sender<Batch>,
    /// Taken by the worker when it starts.
    rx: Mutex<Option<mpsc::Receiver<Batch>>>,
    /// Queued, not yet flushed. Only the queueing thread takes this lock.
    pending: Mutex<Batch>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("workers", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

impl Lanes {
    /// Lanes to `workers` workers (1 to [`MAX_WORKERS`]).
    pub(crate) fn new(workers: usize) -> Self {
        let lanes = (0..workers.clamp(1, MAX_WORKERS))
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_BATCHES);
                Lane {
                    tx,
                    rx: Mutex::new(Some(rx)),
                    pending: Mutex::default(),
                }
            })
            .collect();
        Lanes {
            lanes,
            gone: OnceLock::new(),
        }
    }

    /// How many workers there are.
    pub(crate) fn workers(&self) -> usize {
        self.lanes.len()
    }

    /// Where the ids found gone are reported (the chat: they leave their rooms). Set once.
    pub(crate) fn on_gone(&self, sink: GoneSink) {
        if self.gone.set(sink).is_err() {
            tracing::warn!("a second receiver of gone connections was ignored");
        }
    }

    /// Queues `frame` for the connection `id`, for the next [`flush`](Self::flush).
    pub(crate) fn queue(&self, id: Id, frame: &OutFrame) {
        let lane = &self.lanes[owner(&id, self.lanes.len())];
        let mut pending = lane.pending.lock().expect("lane lock");
        match pending.last_mut() {
            // One frame to many recipients (a fan-out) is one entry.
            Some((last, ids)) if last.shares(frame) => ids.push(id),
            _ => pending.push((frame.clone(), vec![id])),
        }
    }

    /// Hands every worker the posts queued for it, waiting while its lane is full. For a
    /// thread outside the runtime (it blocks).
    pub(crate) fn flush(&self) {
        for lane in self.lanes.iter() {
            let batch = std::mem::take(&mut *lane.pending.lock().expect("lane lock"));
            if batch.is_empty() {
                continue;
            }
            if lane.tx.blocking_send(batch).is_err() {
                // The worker has stopped: the server is past its drain.
                tracing::debug!("a worker has stopped; posts to its connections dropped");
            }
        }
    }

    /// Delivers worker `index`'s batches until `exit` is cancelled (or the lane closes).
    async fn deliver(&self, index: usize, management: ManagementApi, exit: CancellationToken) {
        let Some(mut rx) = self.lanes[index].rx.lock().expect("lane lock").take() else {
            return;
        };
        loop {
            let batch = tokio::select! {
                batch = rx.recv() => batch,
                _ = exit.cancelled() => None,
            };
            let Some(batch) = batch else {
                return;
            };
            let mut gone = Vec::new();
            for (frame, ids) in batch {
                for id in ids {
                    match management.post_frame_detached(&id, &frame) {
                        Ok(()) => {}
                        Err(ManageError::Gone) => gone.push(id),
                        Err(ManageError::Full) => {
                            tracing::debug!(connection_id = %id, "outbox full, frame not queued for this client");
                        }
                        Err(e) => tracing::warn!(connection_id = %id, error = %e, "post failed"),
                    }
                }
            }
            if !gone.is_empty()
                && let Some(sink) = self.gone.get()
            {
                sink(gone);
            }
        }
    }
}

/// The running workers.
#[derive(Debug)]
pub(crate) struct Workers {
    exited: Vec<oneshot::Receiver<()>>,
    exit: CancellationToken,
}

impl Workers {
    /// Starts one thread per lane. Each runs `accept(its own handle on listener)` until it
    /// returns, and delivers its lane's batches through `management` until [`stop`](Self::stop).
    pub(crate) fn start<F, Fut>(
        lanes: Arc<Lanes>,
        listener: std::net::TcpListener,
        management: ManagementApi,
        accept: F,
    ) -> std::io::Result<Self>
    where
        F: Fn(tokio::net::TcpListener) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()>,
    {
        let accept = Arc::new(accept);
        let exit = CancellationToken::new();
        let count = lanes.workers();
        let mut exited = Vec::with_capacity(count);
        for index in 0..count {
            let listener = listener.try_clone()?;
            let (lanes, management, accept, exit) = (
                lanes.clone(),
                management.clone(),
                accept.clone(),
                exit.clone(),
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (done, finished) = oneshot::channel();
            exited.push(finished);
            std::thread::Builder::new()
                .name(format!("switchboard-worker-{index}"))
                .spawn(move || {
                    WORKER.set(Some((index as u8, count as u8)));
                    runtime.block_on(async move {
                        let deliver = lanes.clone();
                        let exit_deliver = exit.clone();
                        tokio::spawn(async move {
                            deliver.deliver(index, management, exit_deliver).await;
                        });
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => accept(listener).await,
                            Err(error) => tracing::error!(%error, "a worker cannot listen"),
                        }
                        exit.cancelled().await;
                    });
                    // Tasks still running (connections abandoned at the drain deadline) are
                    // dropped; blocking tasks are not waited for.
                    runtime.shutdown_background();
                    let _ = done.send(());
                })?;
        }
        Ok(Workers { exited, exit })
    }

    /// Stops the workers (after the drain: their connections are closed) and waits for them.
    pub(crate) async fn stop(self) {
        self.exit.cancel();
        for exited in self.exited {
            let _ = exited.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_on_a_worker_name_it() {
        for count in [1u8, 2, 3, 7, 16, 64] {
            for index in 0..count {
                WORKER.set(Some((index, count)));
                for _ in 0..50 {
                    let id = connection_id();
                    assert_eq!(owner(&id, usize::from(count)), usize::from(index));
                    assert_eq!(Id::parse(id.as_str()), Some(id));
                }
            }
        }
        WORKER.set(None);
    }

    #[test]
    fn a_full_lane_makes_flush_wait_for_its_worker_and_drops_nothing() {
        let lanes = Arc::new(Lanes::new(1));
        let frame = OutFrame::text(b"x");
        for _ in 0..LANE_BATCHES {
            lanes.queue(Id::random_with_lead(0), &frame);
            lanes.flush();
        }
        let mut rx = lanes.lanes[0].rx.lock().unwrap().take().unwrap();
        let (flushed, done) = std::sync::mpsc::channel();
        let last = Id::random_with_lead(0);
        let flusher = {
            let lanes = lanes.clone();
            std::thread::spawn(move || {
                lanes.queue(last, &frame);
                lanes.flush();
                flushed.send(()).unwrap();
            })
        };
        // The lane is full: the flush cannot finish before the worker takes a batch.
        assert!(done.try_recv().is_err());
        let mut received = Vec::new();
        while received.len() <= LANE_BATCHES {
            received.push(rx.blocking_recv().expect("a batch"));
        }
        done.recv().expect("the flush finished once there was room");
        flusher.join().unwrap();
        assert!(received.iter().all(|batch| batch.len() == 1));
        assert_eq!(received.last().unwrap()[0].1, vec![last], "kept, and last");
    }

    #[test]
    fn a_fan_out_is_one_entry_and_order_is_kept() {
        let lanes = Lanes::new(2);
        let (a, b) = (OutFrame::text(b"a"), OutFrame::text(b"b"));
        let (x0, x1, y0) = (
            Id::random_with_lead(0),
            Id::random_with_lead(2),
            Id::random_with_lead(1),
        );
        for id in [x0, y0, x1] {
            lanes.queue(id, &a);
        }
        lanes.queue(x0, &b);
        lanes.queue(x1, &a);
        let pending = |index: usize| lanes.lanes[index].pending.lock().unwrap().clone();
        assert_eq!(
            pending(0),
            vec![
                (a.clone(), vec![x0, x1]),
                (b, vec![x0]),
                (a.clone(), vec![x1])
            ]
        );
        assert_eq!(pending(1), vec![(a, vec![y0])]);
    }
}
