//! The idle scenario: open N connections, measure connects per second and what each one costs
//! the server in resident memory (`VmRSS` of `/proc/PID/status`, before and after).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::Target;
use crate::workers::{self, Shared};
use crate::{
    BenchError, check_file_limit, process_cpu_secs, process_rss_kib, table, thousands,
    worker_threads,
};

/// How long the connections stay idle before the server's memory is read.
const SETTLE: Duration = Duration::from_secs(1);

/// Options of `bench idle`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleOptions {
    /// WebSocket URL, e.g. ws://127.0.0.1:8080/dev
    #[arg(long)]
    pub url: String,
    /// Connections to open. Each is an open file: where a process may open at most 20,000
    /// (a hard limit, even for root), use several bench processes beyond ~19,900.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// The server's process id, for its memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Source addresses to bind connections to, round-robin, e.g. 127.0.0.1,127.0.0.2.
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Client worker threads [default: the number of cores, at most 4].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// What `bench idle` measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Always `"idle"`.
    pub scenario: &'static str,
    /// The URL.
    pub url: String,
    /// Connections asked for.
    pub clients: usize,
    /// Connections opened.
    pub connected: u64,
    /// Connections that failed to open.
    pub connect_errors: u64,
    /// The first connect error, if any.
    pub first_connect_error: Option<String>,
    /// Seconds to open them all.
    pub connect_secs: f64,
    /// Connects per second.
    pub connects_per_sec: f64,
    /// Server RSS before connecting, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server RSS with every connection open and idle, KiB.
    pub rss_after_kib: Option<u64>,
    /// `(after - before) / connected`, in bytes.
    pub rss_bytes_per_connection: Option<f64>,
    /// The server's CPU time (user + system) from the first connect until every connection
    /// is open and settled, per connection, µs (10 ms ticks: meaningful over thousands).
    pub server_cpu_us_per_connect: Option<f64>,
}

impl IdleReport {
    /// The human summary.
    pub fn table(&self) -> String {
        let mut rows = vec![
            ("url", self.url.clone()),
            (
                "connected",
                format!(
                    "{} of {} ({} errors)",
                    thousands(self.connected),
                    thousands(self.clients as u64),
                    self.connect_errors
                ),
            ),
            (
                "connects/s",
                format!(
                    "{} ({:.2} s)",
                    thousands(self.connects_per_sec as u64),
                    self.connect_secs
                ),
            ),
        ];
        if let Some(error) = &self.first_connect_error {
            rows.push(("first connect error", error.clone()));
        }
        if let (Some(before), Some(after), Some(per)) = (
            self.rss_before_kib,
            self.rss_after_kib,
            self.rss_bytes_per_connection,
        ) {
            rows.push((
                "server RSS",
                format!("{before} KiB -> {after} KiB: {per:.0} bytes/connection"),
            ));
        }
        if let Some(us) = self.server_cpu_us_per_connect {
            rows.push(("server CPU", format!("{us:.1} µs per connection")));
        }
        table(&rows)
    }
}

/// Runs the idle scenario and returns its report. Blocks; call it off any async runtime.
pub fn run_idle(options: &IdleOptions) -> Result<IdleReport, BenchError> {
    let target = Target::parse(&options.url)?;
    check_file_limit(options.clients)?;
    let threads = worker_threads(options.threads);
    let shared = Arc::new(Shared::new(threads));
    let rss_before = options.pid.and_then(process_rss_kib);
    let cpu_before = options.pid.and_then(process_cpu_secs);
    let began = Instant::now();
    let mut handles = Vec::with_capacity(threads);
    for w in 0..threads {
        let target = target.clone();
        let shared = shared.clone();
        let options = options.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-{w}"))
                .spawn(move || -> std::io::Result<()> {
                    let runtime = workers::runtime()?;
                    let indices = (w..options.clients).step_by(threads).collect();
                    let conns = runtime.block_on(workers::connect_share(
                        std::slice::from_ref(&target),
                        indices,
                        &options.source_ips,
                        workers::CONNECT_CONCURRENCY,
                        &shared,
                    ));
                    // Hold the connections until the main thread has read the server's memory.
                    shared.worker_ready();
                    drop(conns);
                    Ok(())
                })?,
        );
    }
    let connect_time = shared.wait_connected(threads, options.clients, began);
    std::thread::sleep(SETTLE);
    let rss_after = options.pid.and_then(process_rss_kib);
    let cpu_after = options.pid.and_then(process_cpu_secs);
    shared.release(Instant::now());
    for handle in handles {
        handle
            .join()
            .map_err(|_| BenchError::Options("a worker panicked".into()))??;
    }
    let connected = shared.connected.load(Ordering::Relaxed);
    Ok(IdleReport {
        scenario: "idle",
        url: options.url.clone(),
        clients: options.clients,
        connected,
        connect_errors: shared.connect_errors.load(Ordering::Relaxed),
        first_connect_error: shared.first_error(),
        connect_secs: connect_time.as_secs_f64(),
        connects_per_sec: connected as f64 / connect_time.as_secs_f64(),
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_bytes_per_connection: match (rss_before, rss_after) {
            (Some(b), Some(a)) if connected > 0 => {
                Some((a as f64 - b as f64) * 1024.0 / connected as f64)
            }
            _ => None,
        },
        server_cpu_us_per_connect: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if connected > 0 => Some((a - b) * 1e6 / connected as f64),
            _ => None,
        },
    })
}
