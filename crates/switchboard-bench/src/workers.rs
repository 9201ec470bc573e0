//! Worker threads and the connect phase shared by every scenario.
//!
//! Each worker is an OS thread with a single-threaded runtime; connection `i` belongs to
//! worker `i % threads`. Workers connect their share, report it, then wait at a barrier until
//! the main thread releases them (with a common start time) into the scenario.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::client::{self, Connected, Target};

/// Connection attempts one worker keeps in flight unless told otherwise.
pub(crate) const CONNECT_CONCURRENCY: usize = 128;

/// What workers and the main thread share.
pub(crate) struct Shared {
    pub(crate) connected: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    /// Workers that finished connecting.
    ready: AtomicUsize,
    /// Passed by every worker and the main thread once the start time is set.
    release: Barrier,
    start: OnceLock<Instant>,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn new(threads: usize) -> Self {
        Shared {
            connected: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            ready: AtomicUsize::new(0),
            release: Barrier::new(threads + 1),
            start: OnceLock::new(),
            first_error: Mutex::new(None),
        }
    }

    /// The first connect error seen, for the report.
    pub(crate) fn first_error(&self) -> Option<String> {
        self.first_error.lock().expect("error lock").clone()
    }

    /// Called by a worker after connecting its share: waits for the start time.
    pub(crate) fn worker_ready(&self) -> Instant {
        self.ready.fetch_add(1, Ordering::Release);
        self.release.wait();
        *self
            .start
            .get()
            .expect("the start time is set before the release")
    }

    /// Called by the main thread: waits (printing progress) until every worker connected.
    /// Returns how long connecting took.
    pub(crate) fn wait_connected(
        &self,
        threads: usize,
        clients: usize,
        began: Instant,
    ) -> Duration {
        self.wait_ready(threads, began, || {
            format!(
                "connecting: {} of {clients} connected, {} errors",
                self.connected.load(Ordering::Relaxed),
                self.connect_errors.load(Ordering::Relaxed),
            )
        })
    }

    /// Called by the main thread: waits until every worker is ready, printing `progress()`
    /// once a second. Returns how long it took.
    pub(crate) fn wait_ready(
        &self,
        threads: usize,
        began: Instant,
        progress: impl Fn() -> String,
    ) -> Duration {
        let mut last_print = Instant::now();
        while self.ready.load(Ordering::Acquire) < threads {
            std::thread::sleep(Duration::from_millis(5));
            if last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                eprintln!("[{:>5.1}s] {}", began.elapsed().as_secs_f64(), progress());
            }
        }
        began.elapsed()
    }

    /// Called by the main thread: sets the common start time and releases the workers.
    pub(crate) fn release(&self, start: Instant) {
        let _ = self.start.set(start);
        self.release.wait();
    }
}

/// A single-threaded runtime for one worker.
pub(crate) fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Connects the connections `indices`, targets and source addresses round-robin by index,
/// `concurrency` attempts at a time.
pub(crate) async fn connect_share(
    targets: &[Target],
    indices: Vec<usize>,
    sources: &[IpAddr],
    concurrency: usize,
    shared: &Shared,
) -> Vec<(usize, Connected)> {
    futures_util::stream::iter(indices)
        .map(|i| {
            let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
            let target = &targets[i % targets.len()];
            async move { (i, client::connect(target, source).await) }
        })
        .buffer_unordered(concurrency.max(1))
        .filter_map(|(i, result)| async move {
            match result {
                Ok(conn) => {
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                    Some((i, conn))
                }
                Err(error) => {
                    shared.connect_errors.fetch_add(1, Ordering::Relaxed);
                    let mut first = shared.first_error.lock().expect("error lock");
                    first.get_or_insert_with(|| error.to_string());
                    None
                }
            }
        })
        .collect()
        .await
}
