//! The fan-out scenario: N clients, S senders at R msg/s each, every delivery timed.
//!
//! Each sent message carries its send time (µs since the common start) and a sequence number,
//! padded to `--payload` bytes and placed in the `--template` where `$MSG` stands. Senders are
//! paced: sender `k` sends at `start + k/(S·R) + i/R`, so sends are spread evenly, not bursty.
//! Receivers read the clock once per read and record `arrival - send` for every message in it.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::LocalSet;

use crate::client::{
    Connected, STAMP_LEN, Target, encode_client_frame, parse_frames, read_stamp, stamp,
};
use crate::workers::{self, Shared};
use crate::{BenchError, check_file_limit, process_cpu_secs, table, thousands, worker_threads};

/// Read buffer each connection starts with; grows only for frames larger than it.
const READ_BUF: usize = 4096;

/// Options of `bench fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutOptions {
    /// WebSocket URL, e.g. ws://127.0.0.1:8080/dev; several, comma-separated, spread the
    /// clients (senders included) round-robin over them: the nodes of a cluster.
    #[arg(long, value_delimiter = ',', required = true)]
    pub url: Vec<String>,
    /// Connections to open. Each is an open file: where a process may open at most 20,000
    /// (a hard limit, even for root), use several bench processes beyond ~19,900.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// How many of them send.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Messages per second each sender sends.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 15.0)]
    pub duration: f64,
    /// Size of each message (`$MSG`) in bytes; at least 25.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// The frame senders send; `$MSG` is replaced by the message.
    #[arg(long, default_value = r#"{"action":"sendmessage","message":"$MSG"}"#)]
    pub template: String,
    /// Whether the server sends a message back to its sender too (`data` instead of
    /// `message` in the articles' chat); sets how many deliveries are expected.
    #[arg(long)]
    pub include_sender: bool,
    /// Each message comes back to its sender only (a two-way route, an echo): one delivery
    /// expected per message, whoever sent it.
    #[arg(long, conflicts_with = "include_sender")]
    pub echo: bool,
    /// Source addresses to bind connections to, round-robin, e.g. 127.0.0.1,127.0.0.2.
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Clients, besides the senders, that never read: each one's deliveries pile up in its
    /// socket and then in the server's outbox for it. Their deliveries are not expected; the
    /// report is about everyone else's.
    #[arg(long, default_value_t = 0)]
    pub stall: usize,
    /// Seconds of sending before the measured `--duration`, left out of every figure: Lambda
    /// environments start, connection pools fill, JIT compilers warm up.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// After the report, keep the connections open until standard input closes, so that a
    /// script can stop the server before the clients leave (no `$disconnect` for each).
    #[arg(long)]
    pub hold: bool,
    /// Seconds to wait after sending stops for deliveries still under way.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Client worker threads [default: the number of cores, at most 4].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Connection attempts each worker thread keeps in flight while connecting. A server
    /// whose `$connect` runs a Lambda function needs few: its invocation queue is bounded, and
    /// a burst beyond it is refused as a throttled Lambda is.
    #[arg(long, default_value_t = workers::CONNECT_CONCURRENCY)]
    pub connect_concurrency: usize,
    /// The server's process id: adds its CPU time per delivery to the report, of the process
    /// alone and of it with its descendants (Lambda function processes, a server started by a
    /// script). Several, comma-separated (a cluster's nodes), add up.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
}

impl FanoutOptions {
    /// Options for `clients` clients against `url`, the other values at their defaults.
    pub fn new(url: impl Into<String>, clients: usize) -> Self {
        FanoutOptions {
            url: vec![url.into()],
            clients,
            senders: 10,
            rate: 10.0,
            duration: 15.0,
            payload: 64,
            template: r#"{"action":"sendmessage","message":"$MSG"}"#.into(),
            include_sender: false,
            echo: false,
            source_ips: Vec::new(),
            stall: 0,
            warmup: 0.0,
            hold: false,
            drain: 3.0,
            threads: None,
            connect_concurrency: workers::CONNECT_CONCURRENCY,
            pid: Vec::new(),
            json: false,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// What `bench fanout` measured.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// Always `"fanout"`.
    pub scenario: &'static str,
    /// The URLs, comma-separated.
    pub url: String,
    /// Connections asked for.
    pub clients: usize,
    /// Connections open when sending started.
    pub connected: u64,
    /// Of them, clients that never read (`--stall`).
    pub stalled: u64,
    /// Connections that failed to open.
    pub connect_errors: u64,
    /// The first connect error, if any.
    pub first_connect_error: Option<String>,
    /// Connects per second during the connect phase.
    pub connects_per_sec: f64,
    /// Senders.
    pub senders: usize,
    /// Messages per second per sender.
    pub rate: f64,
    /// Seconds of sending.
    pub duration_secs: f64,
    /// Message size.
    pub payload: usize,
    /// Messages sent.
    pub sent: u64,
    /// Deliveries expected: each message to every other client (or every client) that reads;
    /// with `--echo`, to its sender.
    pub expected: u64,
    /// Deliveries counted.
    pub delivered: u64,
    /// `delivered / expected`.
    pub delivery_ratio: f64,
    /// Deliveries per second of sending.
    pub delivered_per_sec: f64,
    /// Latency from send to arrival.
    pub latency: Latency,
    /// Connections that closed or failed before the end.
    pub early_closes: u64,
    /// Server CPU seconds (user + system) from the start of sending to the end of the drain.
    pub server_cpu_secs: Option<f64>,
    /// Server CPU microseconds per delivered message.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Server CPU seconds like `server_cpu_secs`, with the processes' descendants added (each
    /// read at both ends; one that started or ended in between counts from or until then).
    pub server_tree_cpu_secs: Option<f64>,
    /// `server_tree_cpu_secs` per delivered message, in microseconds.
    pub server_tree_cpu_us_per_delivery: Option<f64>,
}

impl FanoutReport {
    /// The human summary.
    pub fn table(&self) -> String {
        let mut rows = vec![
            ("url", self.url.clone()),
            (
                "clients",
                format!(
                    "{} connected of {} ({} connect errors), {:.0} connects/s",
                    thousands(self.connected),
                    thousands(self.clients as u64),
                    self.connect_errors,
                    self.connects_per_sec
                ),
            ),
            (
                "load",
                format!(
                    "{} senders x {} msg/s, {}-byte messages, {} s",
                    self.senders, self.rate, self.payload, self.duration_secs
                ),
            ),
            ("sent", thousands(self.sent)),
            ("expected", thousands(self.expected)),
            ("delivered", thousands(self.delivered)),
            ("delivery ratio", format!("{:.4}", self.delivery_ratio)),
            ("delivered/s", thousands(self.delivered_per_sec as u64)),
            (
                "latency p50/p90/p99/max",
                format!(
                    "{} / {} / {} / {}",
                    ms(self.latency.p50_us),
                    ms(self.latency.p90_us),
                    ms(self.latency.p99_us),
                    ms(self.latency.max_us)
                ),
            ),
            ("early closes", self.early_closes.to_string()),
        ];
        if self.stalled > 0 {
            rows.insert(
                2,
                (
                    "stalled clients",
                    format!("{} (never read; not counted below)", self.stalled),
                ),
            );
        }
        if let Some(error) = &self.first_connect_error {
            rows.push(("first connect error", error.clone()));
        }
        if let (Some(cpu), Some(per)) = (self.server_cpu_secs, self.server_cpu_us_per_delivery) {
            rows.push(("server CPU", format!("{cpu:.2} s, {per:.2} us/delivery")));
        }
        if let (Some(cpu), Some(per)) = (
            self.server_tree_cpu_secs,
            self.server_tree_cpu_us_per_delivery,
        ) && self.server_tree_cpu_secs != self.server_cpu_secs
        {
            rows.push((
                "with descendants",
                format!("{cpu:.2} s, {per:.2} us/delivery"),
            ));
        }
        table(&rows)
    }
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// Counters one worker keeps for itself.
struct WorkerStats {
    latency: RefCell<Histogram<u64>>,
    early_closes: Cell<u64>,
}

/// What every connection task of one worker shares.
struct Ctx {
    stats: WorkerStats,
    /// Deliveries of this worker, read by the main thread for progress.
    delivered: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    start: Instant,
    /// Messages sent before this (µs after `start`, the warm-up) are not counted.
    measured_from_us: u64,
    end: Instant,
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    payload: usize,
    interval: Duration,
}

/// Runs the fan-out scenario and returns its report. Blocks; call it off any async runtime.
pub fn run_fanout(options: &FanoutOptions) -> Result<FanoutReport, BenchError> {
    run_fanout_then(options, |_| ())
}

/// What the main thread tells the workers once sending and the drain are over.
const STAGE_REPORT: u8 = 1;
const STAGE_CLOSE: u8 = 2;

/// [`run_fanout`], calling `before_close` with the report while the connections are still open.
pub fn run_fanout_then(
    options: &FanoutOptions,
    before_close: impl FnOnce(&FanoutReport),
) -> Result<FanoutReport, BenchError> {
    let targets = options
        .url
        .iter()
        .map(|url| Target::parse(url))
        .collect::<Result<Vec<_>, _>>()?;
    let (prefix, suffix) = options
        .template
        .split_once("$MSG")
        .ok_or_else(|| BenchError::Options("the template must contain $MSG".into()))?;
    if options.payload < STAMP_LEN {
        return Err(BenchError::Options(format!(
            "--payload must be at least {STAMP_LEN} bytes"
        )));
    }
    if options.senders + options.stall > options.clients
        || options.rate <= 0.0
        || options.duration <= 0.0
        || options.warmup < 0.0
    {
        return Err(BenchError::Options(
            "need senders + stall <= clients, a positive rate and duration and no negative \
             warm-up"
                .into(),
        ));
    }
    check_file_limit(options.clients)?;
    let threads = worker_threads(options.threads);
    let shared = Arc::new(Shared::new(threads));
    let sent = Arc::new(AtomicU64::new(0));
    let stalled = Arc::new(AtomicU64::new(0));
    // The stalled clients are the last ones, so never senders.
    let first_stalled = options.clients - options.stall;
    let delivered: Vec<Arc<AtomicU64>> = (0..threads).map(|_| Arc::default()).collect();
    let (stop_tx, stop_rx) = watch::channel(0u8);
    let (stats_tx, stats_rx) = std::sync::mpsc::channel::<(Histogram<u64>, u64)>();
    let began = Instant::now();
    let mut handles = Vec::with_capacity(threads);
    for w in 0..threads {
        let targets = targets.clone();
        let stalled = stalled.clone();
        let shared = shared.clone();
        let options = options.clone();
        let mut stop = stop_rx.clone();
        let stats_tx = stats_tx.clone();
        let ctx = (
            delivered[w].clone(),
            sent.clone(),
            prefix.as_bytes().to_vec(),
            suffix.as_bytes().to_vec(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("bench-{w}"))
            .spawn(move || -> std::io::Result<()> {
                let runtime = workers::runtime()?;
                let local = LocalSet::new();
                let indices = (w..options.clients).step_by(threads).collect();
                let conns = runtime.block_on(local.run_until(workers::connect_share(
                    &targets,
                    indices,
                    &options.source_ips,
                    options.connect_concurrency,
                    &shared,
                )));
                let mine = conns.iter().filter(|(i, _)| *i >= first_stalled).count();
                stalled.fetch_add(mine as u64, Ordering::Relaxed);
                let start = shared.worker_ready();
                let (delivered, sent, prefix, suffix) = ctx;
                let ctx = Rc::new(Ctx {
                    stats: WorkerStats {
                        latency: RefCell::new(new_histogram()),
                        early_closes: Cell::new(0),
                    },
                    delivered,
                    sent,
                    start,
                    measured_from_us: (options.warmup * 1e6) as u64,
                    end: start + Duration::from_secs_f64(options.warmup + options.duration),
                    prefix,
                    suffix,
                    payload: options.payload,
                    interval: Duration::from_secs_f64(1.0 / options.rate),
                });
                let spacing = 1.0 / (options.senders as f64 * options.rate);
                runtime.block_on(local.run_until(async {
                    for (i, conn) in conns {
                        if i >= first_stalled {
                            // Holds the socket open, unread, until the tasks are dropped.
                            tokio::task::spawn_local(async move {
                                let _conn = conn;
                                std::future::pending::<()>().await
                            });
                            continue;
                        }
                        let first_send = (i < options.senders)
                            .then(|| start + Duration::from_secs_f64(i as f64 * spacing));
                        tokio::task::spawn_local(run_connection(conn, first_send, ctx.clone()));
                    }
                    let _ = stop.wait_for(|stage| *stage >= STAGE_REPORT).await;
                    let stats = &ctx.stats;
                    let _ =
                        stats_tx.send((stats.latency.borrow().clone(), stats.early_closes.get()));
                    // The main thread reads until every sender is gone.
                    drop(stats_tx);
                    let _ = stop.wait_for(|stage| *stage >= STAGE_CLOSE).await;
                }));
                // Dropping the tasks closes their sockets.
                drop(local);
                Ok(())
            })?;
        handles.push(handle);
    }

    let connect_time = shared.wait_connected(threads, options.clients, began);
    let connected = shared.connected.load(Ordering::Relaxed);
    let stalled = stalled.load(Ordering::Relaxed);
    let reading = connected - stalled;
    let recipients = if options.echo {
        1
    } else if options.include_sender {
        reading
    } else {
        reading.saturating_sub(1)
    };
    drop(stats_tx);
    let first_send = Instant::now() + Duration::from_millis(20);
    shared.release(first_send);
    let start = first_send + Duration::from_secs_f64(options.warmup);
    if options.warmup > 0.0 {
        eprintln!("warming up for {} s", options.warmup);
        std::thread::sleep(start.saturating_duration_since(Instant::now()));
    }
    let cpu_before = servers_cpu_secs(&options.pid);
    let tree_before = crate::process_tree_cpu(&options.pid);

    let end = start + Duration::from_secs_f64(options.duration);
    let drain_end = end + Duration::from_secs_f64(options.drain);
    let total_delivered = || {
        delivered
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let mut last = (start, 0u64);
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = Instant::now();
        let done = total_delivered();
        let expected = sent.load(Ordering::Relaxed) * recipients;
        if now >= end && (done >= expected || now >= drain_end) {
            break;
        }
        if now.duration_since(last.0) >= Duration::from_secs(1) {
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            eprintln!(
                "[{:>5.1}s] sent {} delivered {} of {} ({}/s)",
                now.saturating_duration_since(start).as_secs_f64(),
                thousands(sent.load(Ordering::Relaxed)),
                thousands(done),
                thousands(expected),
                thousands(rate as u64),
            );
            last = (now, done);
        }
    }
    let cpu_after = servers_cpu_secs(&options.pid);
    let tree_after = crate::process_tree_cpu(&options.pid);
    let _ = stop_tx.send(STAGE_REPORT);

    let mut latency = new_histogram();
    let mut early_closes = 0;
    let mut reported = 0;
    // Every worker reports and drops its sender (a worker that failed drops it unsent).
    while let Ok((histogram, closes)) = stats_rx.recv() {
        latency
            .add(&histogram)
            .expect("histograms share their bounds");
        early_closes += closes;
        reported += 1;
    }
    let join_all = |handles: Vec<std::thread::JoinHandle<std::io::Result<()>>>| {
        handles.into_iter().try_for_each(|handle| {
            handle
                .join()
                .map_err(|_| BenchError::Options("a worker panicked".into()))?
                .map_err(BenchError::from)
        })
    };
    if reported < threads {
        let _ = stop_tx.send(STAGE_CLOSE);
        join_all(handles)?;
        return Err(BenchError::Options("a worker stopped early".into()));
    }
    let sent = sent.load(Ordering::Relaxed);
    let delivered = total_delivered();
    let expected = sent * recipients;
    let server_cpu_secs = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let server_tree_cpu_secs = (!options.pid.is_empty() && server_cpu_secs.is_some())
        .then(|| crate::tree_cpu_spent(&tree_before, &tree_after));
    let per_delivery = |cpu: Option<f64>| {
        cpu.filter(|_| delivered > 0)
            .map(|cpu| cpu * 1e6 / delivered as f64)
    };
    let report = FanoutReport {
        scenario: "fanout",
        url: options.url.join(","),
        clients: options.clients,
        connected,
        stalled,
        connect_errors: shared.connect_errors.load(Ordering::Relaxed),
        first_connect_error: shared.first_error(),
        connects_per_sec: connected as f64 / connect_time.as_secs_f64(),
        senders: options.senders,
        rate: options.rate,
        duration_secs: options.duration,
        payload: options.payload,
        sent,
        expected,
        delivered,
        delivery_ratio: if expected == 0 {
            0.0
        } else {
            delivered as f64 / expected as f64
        },
        delivered_per_sec: delivered as f64 / options.duration,
        latency: Latency {
            p50_us: latency.value_at_quantile(0.50),
            p90_us: latency.value_at_quantile(0.90),
            p99_us: latency.value_at_quantile(0.99),
            max_us: latency.max(),
        },
        early_closes,
        server_cpu_secs,
        server_cpu_us_per_delivery: per_delivery(server_cpu_secs),
        server_tree_cpu_secs,
        server_tree_cpu_us_per_delivery: per_delivery(server_tree_cpu_secs),
    };
    before_close(&report);
    let _ = stop_tx.send(STAGE_CLOSE);
    join_all(handles)?;
    Ok(report)
}

/// The CPU seconds of the given processes added up; `None` without any or when one is gone.
fn servers_cpu_secs(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| process_cpu_secs(*pid)).sum()
}

/// Latencies from 1 µs to an hour, three significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One connection: reads and times deliveries; a sender (one with a `first_send`) also sends
/// on its schedule.
async fn run_connection(conn: Connected, first_send: Option<Instant>, ctx: Rc<Ctx>) {
    let Connected {
        mut stream,
        leftover,
    } = conn;
    let mut buf = Vec::with_capacity(READ_BUF.max(leftover.len()));
    buf.extend_from_slice(&leftover);
    let mut next_send = first_send;
    let mut seq = 0u32;
    let mut message = Vec::with_capacity(ctx.payload);
    let mut body = Vec::new();
    if !buf.is_empty() && !ctx.take_frames(&mut buf) {
        return;
    }
    loop {
        let send_at = next_send.unwrap_or(ctx.end);
        tokio::select! {
            read = stream.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) || !ctx.take_frames(&mut buf) {
                    ctx.stats.early_closes.set(ctx.stats.early_closes.get() + 1);
                    return;
                }
            }
            _ = tokio::time::sleep_until(send_at.into()), if next_send.is_some() => {
                let now_us = ctx.start.elapsed().as_micros() as u64;
                stamp(now_us, seq, ctx.payload, &mut message);
                body.clear();
                body.extend_from_slice(&ctx.prefix);
                body.extend_from_slice(&message);
                body.extend_from_slice(&ctx.suffix);
                let frame = encode_client_frame(1, true, &body, seq.to_ne_bytes());
                if stream.write_all(&frame).await.is_err() {
                    ctx.stats.early_closes.set(ctx.stats.early_closes.get() + 1);
                    return;
                }
                if now_us >= ctx.measured_from_us {
                    ctx.sent.fetch_add(1, Ordering::Relaxed);
                }
                seq = seq.wrapping_add(1);
                let next = send_at + ctx.interval;
                next_send = (next < ctx.end).then_some(next);
            }
        }
    }
}

impl Ctx {
    /// Records the whole frames in `buf` and removes them; false when a close frame came.
    fn take_frames(&self, buf: &mut Vec<u8>) -> bool {
        let now_us = self.start.elapsed().as_micros() as u64;
        let mut count = 0;
        let parsed = {
            let mut latency = self.stats.latency.borrow_mut();
            parse_frames(buf, |payload| match read_stamp(payload) {
                // Sent during the warm-up.
                Some(sent_us) if sent_us < self.measured_from_us => {}
                Some(sent_us) => {
                    count += 1;
                    latency.saturating_record(now_us.saturating_sub(sent_us).max(1));
                }
                None => count += 1,
            })
        };
        buf.drain(..parsed.consumed);
        if let Some(need) = parsed.need {
            buf.reserve(need.saturating_sub(buf.len()));
        } else if buf.capacity() - buf.len() < READ_BUF / 4 {
            buf.reserve(READ_BUF);
        }
        if count > 0 {
            self.delivered.fetch_add(count, Ordering::Relaxed);
        }
        !parsed.closed
    }
}
