//! The rooms scenario: N clients held open, in rooms or as plain clients of the lobby, S of
//! them sending; every delivery timed, and each message's first and last arrival kept, so that
//! the time until the *last* recipient has a message can be read.
//!
//! Built to be split over several processes, since one process here holds at most about
//! 19,900 sockets: `--first-index` places this process's clients among everyone's (client
//! `g` of all of them joins room `g % rooms`), `--start-from-stdin` starts every process's
//! senders at one time, and `--per-message` / `--per-second` report what merging the
//! processes' reports needs. Times in reports are microseconds on `CLOCK_MONOTONIC`, which
//! every process of the machine shares (Python's `time.monotonic()` reads the same clock).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::LocalSet;

use crate::client::{
    Connected, STAMP_LEN, Target, encode_client_frame, parse_frames, read_stamp, stamp,
};
use crate::fanout::Latency;
use crate::workers::{self, Shared};
use crate::{
    BenchError, check_file_limit, mono_us, process_cpu_secs, table, thousands, worker_threads,
};

/// Read buffer each connection starts with; grows only for frames larger than it.
const READ_BUF: usize = 4096;
/// Joins one worker keeps in flight: each costs the server a fan-out to the room's members.
const JOIN_CONCURRENCY: usize = 64;
/// How often a join answered `unavailable` (the cluster was busy) is tried again.
const JOIN_ATTEMPTS: u32 = 20;
/// The pause before trying such a join again.
const JOIN_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Options of `bench rooms`.
#[derive(Debug, Clone, clap::Args)]
pub struct RoomsOptions {
    /// WebSocket URL, e.g. ws://127.0.0.1:8080/dev; several, comma-separated, spread the
    /// clients round-robin over them.
    #[arg(long, value_delimiter = ',', required = true)]
    pub url: Vec<String>,
    /// Connections this process opens (each is an open file: use several processes beyond
    /// ~19,900).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Where this process's clients start among all processes' clients: client `i` of this
    /// process is client `first-index + i` of all of them (its room, below).
    #[arg(long, default_value_t = 0)]
    pub first_index: usize,
    /// Rooms: client `g` of all clients joins room `{room-prefix}{g % rooms}` (the chat's
    /// `join`, retried while the answer is `unavailable`) before anyone sends. 0: nobody
    /// joins, every client is a plain client of the lobby and gets every `sendmessage`.
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// The start of every room name.
    #[arg(long, default_value = "room-")]
    pub room_prefix: String,
    /// How many of this process's clients send (its first ones): with rooms, the first
    /// `rooms` of all clients are one in each room.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Messages per second each sender sends (fractions are fine: 0.2 is one every 5 s).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Seconds after the start at which the first sender sends; sender `k` sends at
    /// `start + offset + k/(senders*rate) + i/rate`, until `duration`.
    #[arg(long, default_value_t = 0.0)]
    pub offset: f64,
    /// Seconds of sending, from the start.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds to keep reading after sending stops.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Size of each message (`$MSG`) in bytes; at least 25.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// The frame senders send; `$MSG` is replaced by the message and `$ROOM` by the sender's
    /// room [default: the articles' `sendmessage` without rooms, the chat's `send` with them].
    #[arg(long)]
    pub template: Option<String>,
    /// After connecting (and joining), print one JSON line `{"ready":...}` on stdout, then
    /// start when a line arrives on stdin: the start time in µs on CLOCK_MONOTONIC (an empty
    /// line: now). For runs split over several processes.
    #[arg(long)]
    pub start_from_stdin: bool,
    /// Report each message's arrivals in this process (count, first, last).
    #[arg(long)]
    pub per_message: bool,
    /// Report a latency histogram for each second of sending (by send time).
    #[arg(long)]
    pub per_second: bool,
    /// Source addresses to bind connections to, round-robin, e.g. 127.0.0.1,127.0.0.2.
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Client worker threads [default: the number of cores, at most 4].
    #[arg(long)]
    pub threads: Option<usize>,
    /// The servers' process ids: adds their CPU time while sending to the report.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
}

impl RoomsOptions {
    /// Options for `clients` plain clients against `url`, the other values at their defaults.
    pub fn new(url: impl Into<String>, clients: usize) -> Self {
        RoomsOptions {
            url: vec![url.into()],
            clients,
            first_index: 0,
            rooms: 0,
            room_prefix: "room-".into(),
            senders: 1,
            rate: 1.0,
            offset: 0.0,
            duration: 20.0,
            drain: 3.0,
            payload: 64,
            template: None,
            start_from_stdin: false,
            per_message: false,
            per_second: false,
            source_ips: Vec::new(),
            threads: None,
            pid: Vec::new(),
            json: false,
        }
    }

    /// The room of this process's client `i`, if clients join rooms.
    fn room_of(&self, i: usize) -> Option<String> {
        (self.rooms > 0).then(|| {
            format!(
                "{}{}",
                self.room_prefix,
                (self.first_index + i) % self.rooms
            )
        })
    }

    fn template(&self) -> &str {
        match &self.template {
            Some(t) => t,
            None if self.rooms == 0 => r#"{"action":"sendmessage","message":"$MSG"}"#,
            None => r#"{"action":"send","room":"$ROOM","text":"$MSG"}"#,
        }
    }
}

/// One message's arrivals at this process's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Arrivals {
    /// When it was sent, µs on CLOCK_MONOTONIC.
    pub send_us: u64,
    /// The sender's sequence number.
    pub seq: u32,
    /// How many clients got it.
    pub count: u64,
    /// The first arrival, µs on CLOCK_MONOTONIC.
    pub first_us: u64,
    /// The last arrival.
    pub last_us: u64,
}

impl Arrivals {
    fn merge(&mut self, other: &Arrivals) {
        self.count += other.count;
        self.first_us = self.first_us.min(other.first_us);
        self.last_us = self.last_us.max(other.last_us);
    }
}

/// The latencies of the messages sent in one second: `[value_us, count]` pairs (each value
/// stands for its histogram bucket, two significant digits).
#[derive(Debug, Clone, Serialize)]
pub struct SecondLatencies {
    /// Seconds from the start to the send times.
    pub second: u64,
    /// `[latency µs, deliveries]`, ascending.
    pub counts: Vec<(u64, u64)>,
}

/// What `bench rooms` measured.
#[derive(Debug, Clone, Serialize)]
pub struct RoomsReport {
    /// Always `"rooms"`.
    pub scenario: &'static str,
    /// The URLs, comma-separated.
    pub url: String,
    /// Connections asked for.
    pub clients: usize,
    /// This process's place among all clients.
    pub first_index: usize,
    /// Rooms (0: plain clients).
    pub rooms: usize,
    /// Connections opened.
    pub connected: u64,
    /// Connections that failed to open.
    pub connect_errors: u64,
    /// The first connect error, if any.
    pub first_connect_error: Option<String>,
    /// When connecting began, µs on CLOCK_MONOTONIC.
    pub connect_began_us: u64,
    /// When the last connection was open.
    pub connect_ended_us: u64,
    /// Connections per second of connecting.
    pub connects_per_sec: f64,
    /// Clients in their room.
    pub joined: u64,
    /// Joins answered `unavailable` and tried again.
    pub join_retries: u64,
    /// Clients that could not join (a refusal other than `unavailable`, or too many).
    pub join_failures: u64,
    /// Seconds from the last connection to the last join.
    pub join_secs: f64,
    /// The start of sending, µs on CLOCK_MONOTONIC.
    pub start_us: u64,
    /// Senders in this process.
    pub senders: usize,
    /// Messages per second per sender.
    pub rate: f64,
    /// Seconds of sending.
    pub duration_secs: f64,
    /// Messages this process sent.
    pub sent: u64,
    /// Messages (of any process) this process's clients got, each counted per recipient.
    pub delivered: u64,
    /// Distinct messages among them.
    pub messages: u64,
    /// Latency of every delivery, send to arrival.
    pub latency: Latency,
    /// Latency of the last arrival of each message in this process.
    pub last_arrival: Latency,
    /// Connections that closed or failed before the end.
    pub early_closes: u64,
    /// The servers' CPU seconds from the start to the end of the drain.
    pub server_cpu_secs: Option<f64>,
    /// Each message's arrivals (with `--per-message`), by send time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrivals: Option<Vec<Arrivals>>,
    /// Latencies by second of sending (with `--per-second`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<Vec<SecondLatencies>>,
}

impl RoomsReport {
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
        ];
        if self.rooms > 0 {
            rows.push((
                "rooms",
                format!(
                    "{} joined {} rooms in {:.2} s ({} retries, {} failures)",
                    thousands(self.joined),
                    self.rooms,
                    self.join_secs,
                    self.join_retries,
                    self.join_failures
                ),
            ));
        }
        rows.extend([
            (
                "load",
                format!(
                    "{} senders x {} msg/s, {} s",
                    self.senders, self.rate, self.duration_secs
                ),
            ),
            ("sent", thousands(self.sent)),
            (
                "delivered",
                format!(
                    "{} ({} messages)",
                    thousands(self.delivered),
                    thousands(self.messages)
                ),
            ),
            ("latency p50/p90/p99/max", latency_row(&self.latency)),
            (
                "last arrival p50/p90/p99/max",
                latency_row(&self.last_arrival),
            ),
            ("early closes", self.early_closes.to_string()),
        ]);
        if let Some(error) = &self.first_connect_error {
            rows.push(("first connect error", error.clone()));
        }
        if let Some(cpu) = self.server_cpu_secs {
            rows.push(("server CPU", format!("{cpu:.2} s")));
        }
        table(&rows)
    }
}

fn latency_row(l: &Latency) -> String {
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    format!(
        "{} / {} / {} / {}",
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.max_us)
    )
}

/// What one worker recorded.
struct Record {
    latency: Histogram<u64>,
    /// By second of sending, from the start.
    seconds: Vec<Histogram<u64>>,
    messages: HashMap<(u64, u32), Arrivals>,
}

impl Record {
    fn new(seconds: usize) -> Self {
        Record {
            latency: histogram(3),
            seconds: (0..seconds).map(|_| histogram(2)).collect(),
            messages: HashMap::new(),
        }
    }

    /// Records one delivery of the message stamped `(send_us, seq)` that arrived at `now_us`.
    fn delivery(&mut self, start_us: u64, send_us: u64, seq: u32, now_us: u64) {
        let latency = now_us.saturating_sub(send_us).max(1);
        self.latency.saturating_record(latency);
        let second = ((send_us - start_us) / 1_000_000) as usize;
        if let Some(h) = self.seconds.get_mut(second) {
            h.saturating_record(latency);
        }
        self.messages
            .entry((send_us, seq))
            .and_modify(|a| {
                a.count += 1;
                a.first_us = a.first_us.min(now_us);
                a.last_us = a.last_us.max(now_us);
            })
            .or_insert(Arrivals {
                send_us,
                seq,
                count: 1,
                first_us: now_us,
                last_us: now_us,
            });
    }

    fn merge(&mut self, other: Record) {
        self.latency
            .add(&other.latency)
            .expect("histograms share their bounds");
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.add(theirs).expect("histograms share their bounds");
        }
        for (key, arrivals) in other.messages {
            self.messages
                .entry(key)
                .and_modify(|a| a.merge(&arrivals))
                .or_insert(arrivals);
        }
    }

    /// The latency of each message's last arrival.
    fn last_arrivals(&self) -> Histogram<u64> {
        let mut h = histogram(3);
        for a in self.messages.values() {
            h.saturating_record(a.last_us.saturating_sub(a.send_us).max(1));
        }
        h
    }
}

/// Latencies from 1 µs to an hour.
fn histogram(digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, digits).expect("valid histogram bounds")
}

fn summary(h: &Histogram<u64>) -> Latency {
    Latency {
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    }
}

/// `[value, count]` pairs of a histogram, ascending.
fn counts(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| {
            (
                h.highest_equivalent(v.value_iterated_to()),
                v.count_at_value(),
            )
        })
        .collect()
}

/// What a connection's task learns from a frame while it waits for its `joined`.
#[derive(Debug, PartialEq, Eq)]
enum JoinAnswer {
    Joined,
    /// `unavailable`: try again.
    Busy,
    /// Any other refusal of the join.
    Refused,
    /// Something else (presence, another member's message): not the answer.
    Other,
}

fn join_answer(payload: &[u8]) -> JoinAnswer {
    let has = |needle: &[u8]| payload.windows(needle.len()).any(|w| w == needle);
    if payload.starts_with(br#"{"type":"joined""#) {
        JoinAnswer::Joined
    } else if payload.starts_with(br#"{"type":"error""#) && has(br#""action":"join""#) {
        if has(br#""code":"unavailable""#) {
            JoinAnswer::Busy
        } else {
            JoinAnswer::Refused
        }
    } else {
        JoinAnswer::Other
    }
}

/// The start of sending, as each clock sees it.
#[derive(Debug, Clone, Copy)]
struct Start {
    at: Instant,
    us: u64,
}

/// What every connection task of one worker shares.
struct Ctx {
    record: RefCell<Record>,
    early_closes: Cell<u64>,
    joined: Arc<AtomicU64>,
    join_retries: Arc<AtomicU64>,
    join_failures: Arc<AtomicU64>,
    /// Tasks done with joining (in, or given up); `settled_changed` wakes the worker.
    settled: Cell<usize>,
    settled_changed: Notify,
    joins: Semaphore,
    start: watch::Receiver<Option<Start>>,
    delivered: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    payload: usize,
    interval: Duration,
    duration: Duration,
}

impl Ctx {
    fn settle(&self) {
        self.settled.set(self.settled.get() + 1);
        self.settled_changed.notify_one();
    }

    fn close_early(&self) {
        self.early_closes.set(self.early_closes.get() + 1);
    }

    /// Records the stamped frames in `buf` and removes every whole frame; false when a close
    /// frame came.
    fn take_frames(&self, buf: &mut Vec<u8>, start_us: u64) -> bool {
        let now_us = mono_us();
        let mut count = 0;
        let parsed = {
            let mut record = self.record.borrow_mut();
            parse_frames(buf, |payload| {
                if let Some((send_us, seq)) =
                    read_stamp(payload).and_then(|at| Some((at, read_seq(payload)?)))
                    && send_us >= start_us
                {
                    count += 1;
                    record.delivery(start_us, send_us, seq, now_us);
                }
            })
        };
        consume(buf, parsed.consumed, parsed.need);
        if count > 0 {
            self.delivered.fetch_add(count, Ordering::Relaxed);
        }
        !parsed.closed
    }
}

/// The sequence number of a stamp (after its send time).
fn read_seq(payload: &[u8]) -> Option<u32> {
    let start = payload.iter().position(|b| *b == b'~')? + 17;
    let hex = std::str::from_utf8(payload.get(start..start + 8)?).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

fn consume(buf: &mut Vec<u8>, consumed: usize, need: Option<usize>) {
    buf.drain(..consumed);
    if let Some(need) = need {
        buf.reserve(need.saturating_sub(buf.len()));
    } else if buf.capacity() - buf.len() < READ_BUF / 4 {
        buf.reserve(READ_BUF);
    }
}

/// What one connection does.
struct Plan {
    room: Option<String>,
    /// The frame it sends, split around `$MSG`, when it is a sender.
    sends: Option<(Vec<u8>, Vec<u8>, Duration)>,
}

/// Runs the rooms scenario and returns its report. Blocks; call it off any async runtime.
pub fn run_rooms(options: &RoomsOptions) -> Result<RoomsReport, BenchError> {
    let targets = options
        .url
        .iter()
        .map(|url| Target::parse(url))
        .collect::<Result<Vec<_>, _>>()?;
    let template = options.template();
    if !template.contains("$MSG") {
        return Err(BenchError::Options("the template must contain $MSG".into()));
    }
    if options.payload < STAMP_LEN {
        return Err(BenchError::Options(format!(
            "--payload must be at least {STAMP_LEN} bytes"
        )));
    }
    if options.senders > options.clients
        || options.rate <= 0.0
        || options.duration <= 0.0
        || options.offset < 0.0
    {
        return Err(BenchError::Options(
            "need senders <= clients, a positive rate and duration, and offset >= 0".into(),
        ));
    }
    check_file_limit(options.clients)?;
    let threads = worker_threads(options.threads);
    let shared = Arc::new(Shared::new(threads));
    let counters: [Arc<AtomicU64>; 5] = Default::default();
    let [sent, joined, join_retries, join_failures, connect_ended] = counters.clone();
    let delivered: Vec<Arc<AtomicU64>> = (0..threads).map(|_| Arc::default()).collect();
    let seconds = (options.duration + options.drain).ceil() as usize + 1;
    let start_us = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let connect_began_us = mono_us();
    let began = Instant::now();
    let mut handles = Vec::with_capacity(threads);
    for w in 0..threads {
        let targets = targets.clone();
        let shared = shared.clone();
        let options = options.clone();
        let counters = counters.clone();
        let delivered = delivered[w].clone();
        let start_us = start_us.clone();
        let mut stop = stop_rx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("bench-{w}"))
            .spawn(move || -> std::io::Result<(Record, u64)> {
                let [sent, joined, join_retries, join_failures, connect_ended] = counters;
                let runtime = workers::runtime()?;
                let local = LocalSet::new();
                let (start_tx, start_rx) = watch::channel(None);
                let ctx = Rc::new(Ctx {
                    record: RefCell::new(Record::new(seconds)),
                    early_closes: Cell::new(0),
                    joined,
                    join_retries,
                    join_failures,
                    settled: Cell::new(0),
                    settled_changed: Notify::new(),
                    joins: Semaphore::new(JOIN_CONCURRENCY),
                    start: start_rx,
                    delivered,
                    sent,
                    payload: options.payload,
                    interval: Duration::from_secs_f64(1.0 / options.rate),
                    duration: Duration::from_secs_f64(options.duration),
                });
                let spacing = 1.0 / (options.senders as f64 * options.rate);
                let template = options.template().to_owned();
                runtime.block_on(local.run_until(async {
                    let indices = (w..options.clients).step_by(threads).collect();
                    let conns = workers::connect_share(
                        &targets,
                        indices,
                        &options.source_ips,
                        workers::CONNECT_CONCURRENCY,
                        &shared,
                    )
                    .await;
                    connect_ended.fetch_max(mono_us(), Ordering::Relaxed);
                    let tasks = conns.len();
                    for (i, conn) in conns {
                        let room = options.room_of(i);
                        let sends = (i < options.senders).then(|| {
                            let frame = template.replace("$ROOM", room.as_deref().unwrap_or(""));
                            let (prefix, suffix) = frame.split_once("$MSG").expect("checked above");
                            let first = options.offset + i as f64 * spacing;
                            (
                                prefix.as_bytes().to_vec(),
                                suffix.as_bytes().to_vec(),
                                Duration::from_secs_f64(first),
                            )
                        });
                        let plan = Plan { room, sends };
                        tokio::task::spawn_local(run_client(conn, plan, ctx.clone()));
                    }
                    while ctx.settled.get() < tasks {
                        ctx.settled_changed.notified().await;
                    }
                    let ready = shared.clone();
                    let at = tokio::task::spawn_blocking(move || ready.worker_ready())
                        .await
                        .expect("the barrier does not panic");
                    let us = start_us.load(Ordering::Acquire);
                    let _ = start_tx.send(Some(Start { at, us }));
                    let _ = stop.wait_for(|stopped| *stopped).await;
                }));
                drop(local);
                let ctx = Rc::try_unwrap(ctx).map_err(|_| std::io::Error::other("tasks leaked"))?;
                Ok((ctx.record.into_inner(), ctx.early_closes.get()))
            })?;
        handles.push(handle);
    }

    let ready_after = shared.wait_ready(threads, began, || {
        format!(
            "{} of {} connected ({} errors), {} joined",
            thousands(shared.connected.load(Ordering::Relaxed)),
            thousands(options.clients as u64),
            shared.connect_errors.load(Ordering::Relaxed),
            thousands(joined.load(Ordering::Relaxed)),
        )
    });
    let connected = shared.connected.load(Ordering::Relaxed);
    let connect_ended_us = connect_ended.load(Ordering::Relaxed).max(connect_began_us);
    let ready_us = connect_began_us + ready_after.as_micros() as u64;
    let connect_secs = (connect_ended_us - connect_began_us) as f64 / 1e6;
    let join_secs = ready_us.saturating_sub(connect_ended_us) as f64 / 1e6;
    let start = if options.start_from_stdin {
        let ready = serde_json::json!({
            "ready": true,
            "connected": connected,
            "connect_errors": shared.connect_errors.load(Ordering::Relaxed),
            "connect_began_us": connect_began_us,
            "connect_ended_us": connect_ended_us,
            "joined": joined.load(Ordering::Relaxed),
            "join_secs": join_secs,
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
        drop(out);
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        match line.trim() {
            "" => now_plus(Duration::from_millis(20)),
            at => {
                let us: u64 = at.parse().map_err(|_| {
                    BenchError::Options(format!(
                        "not a start time in µs on CLOCK_MONOTONIC: {at:?}"
                    ))
                })?;
                let now = mono_us();
                Start {
                    at: Instant::now() + Duration::from_micros(us.saturating_sub(now)),
                    us: us.max(now),
                }
            }
        }
    } else {
        now_plus(Duration::from_millis(20))
    };
    start_us.store(start.us, Ordering::Release);
    let cpu_before = servers_cpu_secs(&options.pid);
    shared.release(start.at);

    let end = start.at + Duration::from_secs_f64(options.duration + options.drain);
    let mut last = (start.at, 0u64);
    let total_delivered = || {
        delivered
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if now.duration_since(last.0) >= Duration::from_secs(1) {
            let done = total_delivered();
            eprintln!(
                "[{:>5.1}s] sent {} delivered {} ({}/s)",
                now.saturating_duration_since(start.at).as_secs_f64(),
                thousands(sent.load(Ordering::Relaxed)),
                thousands(done),
                thousands(
                    ((done - last.1) as f64 / now.duration_since(last.0).as_secs_f64()) as u64
                ),
            );
            last = (now, done);
        }
    }
    let cpu_after = servers_cpu_secs(&options.pid);
    let _ = stop_tx.send(true);

    let mut record = Record::new(seconds);
    let mut early_closes = 0;
    for handle in handles {
        let (theirs, closes) = handle
            .join()
            .map_err(|_| BenchError::Options("a worker panicked".into()))??;
        record.merge(theirs);
        early_closes += closes;
    }
    let mut arrivals: Vec<Arrivals> = record.messages.values().copied().collect();
    arrivals.sort_by_key(|a| (a.send_us, a.seq));
    Ok(RoomsReport {
        scenario: "rooms",
        url: options.url.join(","),
        clients: options.clients,
        first_index: options.first_index,
        rooms: options.rooms,
        connected,
        connect_errors: shared.connect_errors.load(Ordering::Relaxed),
        first_connect_error: shared.first_error(),
        connect_began_us,
        connect_ended_us,
        connects_per_sec: if connect_secs > 0.0 {
            connected as f64 / connect_secs
        } else {
            0.0
        },
        joined: joined.load(Ordering::Relaxed),
        join_retries: join_retries.load(Ordering::Relaxed),
        join_failures: join_failures.load(Ordering::Relaxed),
        join_secs,
        start_us: start.us,
        senders: options.senders,
        rate: options.rate,
        duration_secs: options.duration,
        sent: sent.load(Ordering::Relaxed),
        delivered: total_delivered(),
        messages: arrivals.len() as u64,
        latency: summary(&record.latency),
        last_arrival: summary(&record.last_arrivals()),
        early_closes,
        server_cpu_secs: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
        arrivals: options.per_message.then_some(arrivals),
        seconds: options.per_second.then(|| {
            record
                .seconds
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.is_empty())
                .map(|(second, h)| SecondLatencies {
                    second: second as u64,
                    counts: counts(h),
                })
                .collect()
        }),
    })
}

fn now_plus(delay: Duration) -> Start {
    Start {
        at: Instant::now() + delay,
        us: mono_us() + delay.as_micros() as u64,
    }
}

/// The CPU seconds of the given processes added up; `None` without any or when one is gone.
fn servers_cpu_secs(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| process_cpu_secs(*pid)).sum()
}

/// One client: joins its room, waits for the start (reading and dropping what comes), then
/// reads and times deliveries, and sends on its schedule if it is a sender.
async fn run_client(conn: Connected, plan: Plan, ctx: Rc<Ctx>) {
    let Connected {
        mut stream,
        leftover,
    } = conn;
    let mut buf = Vec::with_capacity(READ_BUF.max(leftover.len()));
    buf.extend_from_slice(&leftover);
    if let Some(room) = &plan.room {
        // A refused join (Err) leaves the client connected, in no room.
        let closed = join(&mut stream, &mut buf, room, &ctx).await == Ok(false);
        ctx.settle();
        if closed {
            ctx.close_early();
            return;
        }
    } else {
        ctx.settle();
    }
    // Until the start, whatever arrives (presence, others' joins) is read and dropped.
    let mut start_rx = ctx.start.clone();
    let start = loop {
        if let Some(start) = *start_rx.borrow_and_update() {
            break start;
        }
        tokio::select! {
            changed = start_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = stream.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    ctx.close_early();
                    return;
                }
                let parsed = parse_frames(&buf, |_| {});
                consume(&mut buf, parsed.consumed, parsed.need);
                if parsed.closed {
                    ctx.close_early();
                    return;
                }
            }
        }
    };
    let end = start.at + ctx.duration;
    let mut next_send = plan
        .sends
        .as_ref()
        .map(|(_, _, first)| start.at + *first)
        .filter(|at| *at < end);
    let mut seq = 0u32;
    let mut message = Vec::with_capacity(ctx.payload);
    let mut body = Vec::new();
    if !buf.is_empty() && !ctx.take_frames(&mut buf, start.us) {
        ctx.close_early();
        return;
    }
    if next_send.is_none() {
        // Only reading: no timer to build on every turn.
        loop {
            let read = stream.read_buf(&mut buf).await;
            if !matches!(read, Ok(n) if n > 0) || !ctx.take_frames(&mut buf, start.us) {
                ctx.close_early();
                return;
            }
        }
    }
    loop {
        tokio::select! {
            read = stream.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) || !ctx.take_frames(&mut buf, start.us) {
                    ctx.close_early();
                    return;
                }
            }
            _ = tokio::time::sleep_until(next_send.unwrap_or(end).into()), if next_send.is_some() => {
                let Some((prefix, suffix, _)) = &plan.sends else { return };
                stamp(mono_us(), seq, ctx.payload, &mut message);
                body.clear();
                body.extend_from_slice(prefix);
                body.extend_from_slice(&message);
                body.extend_from_slice(suffix);
                let frame = encode_client_frame(1, true, &body, seq.to_ne_bytes());
                if stream.write_all(&frame).await.is_err() {
                    ctx.close_early();
                    return;
                }
                ctx.sent.fetch_add(1, Ordering::Relaxed);
                seq = seq.wrapping_add(1);
                next_send = next_send.map(|at| at + ctx.interval).filter(|at| *at < end);
            }
        }
    }
}

/// Joins `room`: Ok(true) when in, Ok(false) when the connection closed, Err(()) when the
/// join was refused for good.
async fn join(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    room: &str,
    ctx: &Ctx,
) -> Result<bool, ()> {
    let _permit = ctx
        .joins
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let request = format!(r#"{{"action":"join","room":"{room}"}}"#);
    for attempt in 0..JOIN_ATTEMPTS {
        if attempt > 0 {
            ctx.join_retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(JOIN_RETRY_PAUSE).await;
        }
        let frame = encode_client_frame(1, true, request.as_bytes(), [7, 1, 8, 2]);
        if stream.write_all(&frame).await.is_err() {
            return Ok(false);
        }
        let answer = loop {
            let mut answer = JoinAnswer::Other;
            let parsed = parse_frames(buf, |payload| {
                if answer == JoinAnswer::Other {
                    answer = join_answer(payload);
                }
            });
            consume(buf, parsed.consumed, parsed.need);
            if parsed.closed {
                return Ok(false);
            }
            if answer != JoinAnswer::Other {
                break answer;
            }
            if !matches!(stream.read_buf(buf).await, Ok(n) if n > 0) {
                return Ok(false);
            }
        };
        match answer {
            JoinAnswer::Joined => {
                ctx.joined.fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
            JoinAnswer::Busy => {}
            JoinAnswer::Refused | JoinAnswer::Other => break,
        }
    }
    ctx.join_failures.fetch_add(1, Ordering::Relaxed);
    Err(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_placed_in_rooms_by_their_index_among_all() {
        let mut options = RoomsOptions::new("ws://127.0.0.1:1/dev", 10);
        assert_eq!(options.room_of(3), None);
        assert!(options.template().contains(r#""action":"sendmessage""#));
        options.rooms = 4;
        options.first_index = 10;
        assert_eq!(options.room_of(0).as_deref(), Some("room-2"));
        assert_eq!(options.room_of(5).as_deref(), Some("room-3"));
        assert_eq!(
            options.template().replace("$ROOM", "room-2"),
            r#"{"action":"send","room":"room-2","text":"$MSG"}"#
        );
    }

    #[test]
    fn join_answers_are_told_apart() {
        assert_eq!(
            join_answer(br#"{"type":"joined","room":"a","members":[]}"#),
            JoinAnswer::Joined
        );
        assert_eq!(
            join_answer(
                br#"{"type":"error","code":"unavailable","message":"busy","action":"join"}"#
            ),
            JoinAnswer::Busy
        );
        assert_eq!(
            join_answer(br#"{"type":"error","code":"bad_room","message":"x","action":"join"}"#),
            JoinAnswer::Refused
        );
        assert_eq!(
            join_answer(br#"{"type":"presence","room":"a","event":"join"}"#),
            JoinAnswer::Other
        );
        assert_eq!(
            join_answer(br#"{"type":"error","code":"unavailable","action":"send"}"#),
            JoinAnswer::Other
        );
    }

    #[test]
    fn stamps_carry_their_sequence_number() {
        let mut out = Vec::new();
        stamp(99, 0xabcd, 64, &mut out);
        let framed = [br#"{"text":""#.as_slice(), &out, b"\"}"].concat();
        assert_eq!(read_seq(&framed), Some(0xabcd));
        assert_eq!(read_stamp(&framed), Some(99));
        assert_eq!(read_seq(b"~12"), None);
    }

    #[test]
    fn arrivals_keep_the_first_and_last_and_merge_across_workers() {
        let start = 1_000_000;
        let mut a = Record::new(3);
        a.delivery(start, 1_500_000, 0, 1_600_000);
        a.delivery(start, 1_500_000, 0, 1_900_000);
        a.delivery(start, 2_100_000, 1, 2_200_000);
        let mut b = Record::new(3);
        b.delivery(start, 1_500_000, 0, 1_550_000);
        b.delivery(start, 1_500_000, 0, 2_500_000);
        a.merge(b);
        let first = a.messages[&(1_500_000, 0)];
        assert_eq!(
            (first.count, first.first_us, first.last_us),
            (4, 1_550_000, 2_500_000)
        );
        assert_eq!(a.latency.len(), 5);
        // Seconds are counted from the start by send time: 0.5 s and 1.1 s after it.
        assert_eq!(a.seconds[0].len(), 4);
        assert_eq!(a.seconds[1].len(), 1);
        let last = a.last_arrivals();
        assert_eq!(last.len(), 2);
        assert!(last.max() >= 999_000 && last.max() <= 1_001_000);
        let pairs = counts(&a.seconds[0]);
        assert_eq!(pairs.iter().map(|(_, c)| c).sum::<u64>(), 4);
        assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
