//! `switchboard bench`: a load generator for WebSocket chat servers (this one and its peers).
//!
//! Three scenarios:
//! - [`fanout`](run_fanout): N clients, S of them sending R messages a second each, paced;
//!   every receiver timestamps arrivals; reports deliveries and latency percentiles;
//! - [`idle`](run_idle): N idle clients; reports connects per second and the server's RSS
//!   growth per connection;
//! - [`post`](run_post): HTTP clients POST to connected clients through `@connections`, one
//!   request in flight per keep-alive connection; reports POSTs per second and their latency.
//! - [`rooms`](run_rooms): N clients held in rooms (or as plain clients of the lobby), S of
//!   them sending; reports latency and each message's last arrival, and can be split over
//!   several processes that start sending together and whose reports merge.
//!
//! The client is built to stay out of the way of the server it measures: a few OS threads,
//! each with its own single-threaded runtime and its own statistics (no shared locks), one
//! lean task per connection that parses server frames in place and reads the clock once per
//! read, not once per message.
//!
//! **File limits.** Every connection is a file descriptor. On the machine these figures are
//! taken on, a process may open at most 20,000 files, a hard limit even for root: one server
//! process holds at most about 19,900 connections and one bench process opens as many. Past
//! about 28,000 connections from one source address the ephemeral ports run out, so the tool
//! binds connections round-robin to `--source-ips` (any of `127.0.0.0/8` works on Linux);
//! for more connections than one process may hold, run several bench processes.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;

mod client;
mod fanout;
mod idle;
mod post;
mod rooms;
mod workers;

pub use client::encode_client_frame;
pub use fanout::{FanoutOptions, FanoutReport, Latency, run_fanout, run_fanout_then};
pub use idle::{IdleOptions, IdleReport, run_idle};
pub use post::{PostOptions, PostReport, run_post};
pub use rooms::{Arrivals, RoomsOptions, RoomsReport, SecondLatencies, run_rooms};

/// Why a bench run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The URL is not a usable `ws://` URL.
    #[error("bad url {0}")]
    Url(String),
    /// An option is out of range.
    #[error("{0}")]
    Options(String),
    /// The process may not open enough files for the connections asked for.
    #[error(
        "{clients} clients need more than this process's limit of {limit} open files; \
         run several bench processes (a process here may open at most 20,000 files)"
    )]
    TooManyClients {
        /// Clients asked for.
        clients: usize,
        /// The soft `RLIMIT_NOFILE`.
        limit: u64,
    },
    /// A worker thread could not be started.
    #[error("cannot start a worker: {0}")]
    Io(#[from] std::io::Error),
}

/// The bench subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// N clients, S of them sending R msg/s each; reports deliveries and latency.
    Fanout(FanoutOptions),
    /// N idle clients; reports connects/s and the server's RSS per connection.
    Idle(IdleOptions),
    /// POSTs to connected clients through `@connections` over keep-alive connections;
    /// reports POSTs/s and their latency.
    Post(PostOptions),
    /// N clients in rooms (or plain clients of the lobby), S sending; reports latency and
    /// each message's last arrival. Splits over several processes (--first-index,
    /// --start-from-stdin) whose JSON reports merge.
    Rooms(RoomsOptions),
}

/// Runs a bench subcommand: progress on stderr, the report on stdout.
pub fn run(command: BenchCommand) -> Result<(), BenchError> {
    match command {
        BenchCommand::Fanout(options) => {
            run_fanout_then(&options, |report| {
                print(options.json, report, report.table());
                if options.hold {
                    // Until standard input closes.
                    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
                }
            })?;
        }
        BenchCommand::Idle(options) => {
            let json = options.json;
            let report = run_idle(&options)?;
            print(json, &report, report.table());
        }
        BenchCommand::Post(options) => {
            let report = run_post(&options)?;
            print(options.json, &report, report.table());
        }
        BenchCommand::Rooms(options) => {
            let json = options.json;
            let report = run_rooms(&options)?;
            print(json, &report, report.table());
        }
    }
    Ok(())
}

fn print(json: bool, report: &impl serde::Serialize, table: String) {
    let mut out = std::io::stdout().lock();
    if json {
        let line = serde_json::to_string(report).expect("reports serialise");
        let _ = writeln!(out, "{line}");
    } else {
        let _ = write!(out, "{table}");
    }
    let _ = out.flush();
}

/// Checks that `clients` sockets fit under this process's open-file limit.
fn check_file_limit(clients: usize) -> Result<(), BenchError> {
    if let Some(limit) = soft_file_limit()
        && clients as u64 + 64 > limit
    {
        return Err(BenchError::TooManyClients { clients, limit });
    }
    Ok(())
}

fn soft_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A process's CPU time (user + system) in seconds, from `/proc/PID/stat`.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    read_stat(pid).map(|stat| stat.cpu_secs)
}

/// The CPU seconds of `roots` and all their descendants, by process (pid and start time, so a
/// reused pid is another process), read from `/proc`.
pub fn process_tree_cpu(roots: &[u32]) -> HashMap<(u32, u64), f64> {
    let mut stats = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(stat) = read_stat(pid) {
                stats.push(stat);
            }
        }
    }
    let mut tree: HashSet<u32> = roots.iter().copied().collect();
    // Parents are not always listed before their children: repeat until nothing is added.
    loop {
        let before = tree.len();
        for stat in &stats {
            if tree.contains(&stat.ppid) {
                tree.insert(stat.pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    stats
        .into_iter()
        .filter(|stat| tree.contains(&stat.pid))
        .map(|stat| ((stat.pid, stat.start), stat.cpu_secs))
        .collect()
}

/// The CPU seconds spent between two readings of [`process_tree_cpu`]: a process that started
/// in between counts whole; one that ended in between is not counted.
pub fn tree_cpu_spent(before: &HashMap<(u32, u64), f64>, after: &HashMap<(u32, u64), f64>) -> f64 {
    after
        .iter()
        .map(|(key, cpu)| cpu - before.get(key).copied().unwrap_or(0.0))
        .sum()
}

/// What `/proc/PID/stat` says of a process.
struct Stat {
    pid: u32,
    ppid: u32,
    /// Clock ticks after boot.
    start: u64,
    cpu_secs: f64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name may hold spaces; the fields after it are space-separated.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        pid,
        ppid: u32::try_from(number(1)?).ok()?,
        start: number(19)?,
        // USER_HZ is 100 on every Linux this runs on.
        cpu_secs: (number(11)? + number(12)?) as f64 / 100.0,
    })
}

/// A process's resident set size in KiB, from `/proc/PID/status`.
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Now in microseconds on `CLOCK_MONOTONIC`: one clock for every process of the machine, so
/// that processes can stamp and time each other's messages.
#[cfg(unix)]
pub fn mono_us() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there");
    now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000
}

/// Now in microseconds since this process first asked (elsewhere there is no clock shared by
/// processes that this crate reads).
#[cfg(not(unix))]
pub fn mono_us() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

/// Worker threads: as asked, else the number of cores, at most 4.
fn worker_threads(asked: Option<usize>) -> usize {
    asked
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
        .max(1)
}

/// A two-column summary, keys aligned.
fn table(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// Formats a count with thousands separators.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(process_cpu_secs(std::process::id()).is_some());
        let tree = process_tree_cpu(&[std::process::id()]);
        assert!(tree.keys().any(|(pid, _)| *pid == std::process::id()));
        assert!(tree_cpu_spent(&tree, &tree).abs() < 1e-9);
        assert!(process_rss_kib(std::process::id()).unwrap() > 0);
        assert!(soft_file_limit().unwrap() > 0);
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = mono_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(mono_us() >= a + 2_000);
    }

    #[test]
    fn formats_and_parses() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
