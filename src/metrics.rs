//! Counters and histograms, rendered in the Prometheus text format at `GET /metrics`.
//!
//! Everything is a relaxed atomic updated where the event happens: per route on the
//! [`Route`](crate::api::Route) itself (no map lookup per message), per gateway in
//! [`Metrics`]. Nothing here allocates on the message path.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds (29 s is API Gateway's
/// integration timeout).
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 29.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The upper bound (seconds) of the bucket holding the `q` quantile (0..=1); `None` with
    /// no observations, `f64::INFINITY` when it lies beyond the last bucket.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return None;
        }
        let rank = ((count as f64) * q).ceil().max(1.0) as u64;
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            if cumulative >= rank {
                return Some(*bound);
            }
        }
        Some(f64::INFINITY)
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// What is counted per route.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// Messages routed here.
    pub messages: AtomicU64,
    /// Integration calls that failed or timed out.
    pub errors: AtomicU64,
    /// Integration latency.
    pub latency: Histogram,
}

/// A counter bumped on the broadcast path by every worker thread.
///
/// One shared atomic would move its cache line between cores on every write to every client;
/// here each thread adds to a shard of its own (threads take shards in turn) and a scrape sums
/// the shards.
#[derive(Debug, Default)]
pub struct ShardedCounter([Shard; SHARDS]);

const SHARDS: usize = 8;

/// One shard on a cache line of its own (128 bytes: adjacent-line prefetch pairs 64-byte lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(AtomicU64);

impl ShardedCounter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
        }
        let shard = SHARD.with(|s| *s);
        self.0[shard].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum over all shards.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// What is counted per Lambda function (`integration/lambda/`): its execution environments
/// (processes) and what they do. Updated once per process start or end and once per
/// invocation, never per frame.
#[derive(Debug, Default)]
pub struct FunctionMetrics {
    /// The function's name.
    pub name: String,
    /// Processes started (each one a cold start).
    pub cold_starts: AtomicU64,
    /// Processes that exited, crashed, timed out or reported an init error (each one is
    /// started again); not those stopped because they idled out, the code changed or the
    /// server stops.
    pub restarts: AtomicU64,
    /// Processes running now.
    pub environments: AtomicU64,
    /// Processes running now that got through their init (they asked for an invocation):
    /// the warm ones, busy or idle.
    pub warm: AtomicU64,
    /// Processes holding an invocation now.
    pub busy: AtomicU64,
    /// Invocations handed to a process.
    pub invocations: AtomicU64,
}

impl FunctionMetrics {
    /// Warm processes waiting for an invocation.
    pub fn idle(&self) -> u64 {
        let warm = self.warm.load(Ordering::Relaxed);
        warm.saturating_sub(self.busy.load(Ordering::Relaxed))
    }
}

/// What is counted per gateway.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The API's Lambda functions, registered when they start.
    pub functions: Mutex<Vec<std::sync::Arc<FunctionMetrics>>>,
    /// Connections that completed the handshake.
    pub connections_opened: AtomicU64,
    closed: Mutex<BTreeMap<u16, u64>>,
    rejected: Mutex<BTreeMap<u16, u64>>,
    /// Messages no route took (answered `Forbidden`).
    pub unrouted: AtomicU64,
    /// Messages refused by the per-connection message rate.
    pub throttled: AtomicU64,
    /// Frames written to clients: counted on every write of every connection, so sharded.
    pub frames_out: ShardedCounter,
    /// Frames refused because the recipient's outbox was full.
    pub outbox_overflows: AtomicU64,
    /// Connections closed because their outbox overflowed.
    pub slow_consumers_closed: AtomicU64,
    management: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl Metrics {
    /// Counts a closed connection by its close code.
    pub fn closed(&self, code: u16) {
        *self
            .closed
            .lock()
            .expect("metrics lock")
            .entry(code)
            .or_default() += 1;
    }

    /// Counts a handshake answered with an HTTP status instead of 101.
    pub fn rejected(&self, status: u16) {
        *self
            .rejected
            .lock()
            .expect("metrics lock")
            .entry(status)
            .or_default() += 1;
    }

    /// Counts a management call by method and status.
    pub fn management(&self, method: &'static str, status: u16) {
        *self
            .management
            .lock()
            .expect("metrics lock")
            .entry((method, status))
            .or_default() += 1;
    }

    /// Renders everything in the Prometheus text format.
    pub fn render<'a>(
        &self,
        open: usize,
        routes: impl Iterator<Item = (&'a str, &'a RouteMetrics)>,
        cluster_up: Option<bool>,
    ) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP switchboard_connections_open WebSocket connections open now.\n# TYPE switchboard_connections_open gauge\nswitchboard_connections_open {open}"
        );
        counter(
            &mut out,
            "switchboard_connections_opened_total",
            "WebSocket connections that completed the handshake.",
            self.connections_opened.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_connections_closed_total WebSocket connections closed, by close code.\n# TYPE switchboard_connections_closed_total counter"
        );
        for (code, n) in self.closed.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "switchboard_connections_closed_total{{code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_handshakes_rejected_total Handshakes answered with an HTTP status instead of 101.\n# TYPE switchboard_handshakes_rejected_total counter"
        );
        for (status, n) in self.rejected.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "switchboard_handshakes_rejected_total{{status=\"{status}\"}} {n}"
            );
        }
        let mut routes: Vec<_> = routes.collect();
        routes.sort_by_key(|(k, _)| *k);
        let _ = writeln!(
            out,
            "# HELP switchboard_messages_in_total Messages received, by selected route.\n# TYPE switchboard_messages_in_total counter"
        );
        for (key, m) in &routes {
            let _ = writeln!(
                out,
                "switchboard_messages_in_total{{route=\"{}\"}} {}",
                escape(key),
                m.messages.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "switchboard_messages_unrouted_total",
            "Messages no route took (answered Forbidden).",
            self.unrouted.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "switchboard_messages_throttled_total",
            "Messages refused by the per-connection message rate.",
            self.throttled.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "switchboard_frames_out_total",
            "Frames written to clients.",
            self.frames_out.get(),
        );
        counter(
            &mut out,
            "switchboard_outbox_overflows_total",
            "Frames refused because the recipient's outbox was full.",
            self.outbox_overflows.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "switchboard_slow_consumers_closed_total",
            "Connections closed because their outbox overflowed.",
            self.slow_consumers_closed.load(Ordering::Relaxed),
        );
        let functions = self.functions.lock().expect("metrics lock").clone();
        if !functions.is_empty() {
            type Read = fn(&FunctionMetrics) -> u64;
            let series: [(&str, &str, &str, Read); 5] = [
                (
                    "switchboard_function_cold_starts_total",
                    "counter",
                    "Lambda execution environments started, by function.",
                    |f| f.cold_starts.load(Ordering::Relaxed),
                ),
                (
                    "switchboard_function_restarts_total",
                    "counter",
                    "Lambda processes that exited, crashed, timed out or failed their init and were started again, by function.",
                    |f| f.restarts.load(Ordering::Relaxed),
                ),
                (
                    "switchboard_function_invocations_total",
                    "counter",
                    "Invocations handed to a Lambda process, by function.",
                    |f| f.invocations.load(Ordering::Relaxed),
                ),
                (
                    "switchboard_function_environments",
                    "gauge",
                    "Lambda execution environments running now, by function.",
                    |f| f.environments.load(Ordering::Relaxed),
                ),
                (
                    "switchboard_function_busy_environments",
                    "gauge",
                    "Lambda execution environments handling an invocation now, by function.",
                    |f| f.busy.load(Ordering::Relaxed),
                ),
            ];
            for (name, kind, help, read) in series {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for f in &functions {
                    let _ = writeln!(
                        out,
                        "{name}{{function=\"{}\"}} {}",
                        escape(&f.name),
                        read(f)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_integration_errors_total Integration calls that failed or timed out, by route.\n# TYPE switchboard_integration_errors_total counter"
        );
        for (key, m) in &routes {
            let _ = writeln!(
                out,
                "switchboard_integration_errors_total{{route=\"{}\"}} {}",
                escape(key),
                m.errors.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_integration_duration_seconds Integration latency, by route.\n# TYPE switchboard_integration_duration_seconds histogram"
        );
        for (key, m) in &routes {
            m.latency.render(
                &mut out,
                "switchboard_integration_duration_seconds",
                &format!("route=\"{}\"", escape(key)),
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_management_requests_total @connections calls over HTTP, by method and status.\n# TYPE switchboard_management_requests_total counter"
        );
        for ((method, status), n) in self.management.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "switchboard_management_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        if let Some(up) = cluster_up {
            let _ = writeln!(
                out,
                "# HELP switchboard_cluster_redis_up Whether the cluster's Redis answers.\n# TYPE switchboard_cluster_redis_up gauge\nswitchboard_cluster_redis_up {}",
                u8::from(up)
            );
        }
        out
    }
}

/// Escapes a label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_counter_sums_what_every_thread_added() {
        let counter = ShardedCounter::default();
        std::thread::scope(|scope| {
            for _ in 0..(2 * SHARDS) {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counter.add(3);
                    }
                });
            }
        });
        assert_eq!(counter.get(), 2 * SHARDS as u64 * 3000);
    }

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(200));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "route=\"r\"");
        assert!(out.contains("x_bucket{route=\"r\",le=\"0.0005\"} 1\n"));
        assert!(out.contains("x_bucket{route=\"r\",le=\"0.025\"} 2\n"));
        assert!(out.contains("x_bucket{route=\"r\",le=\"29\"} 2\n"));
        assert!(out.contains("x_bucket{route=\"r\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count{route=\"r\"} 3\n"));
    }

    #[test]
    fn render_has_every_family() {
        let m = Metrics::default();
        m.closed(1000);
        m.closed(1000);
        m.management("POST", 410);
        let r = RouteMetrics::default();
        r.messages.fetch_add(3, Ordering::Relaxed);
        let text = m.render(2, [("say\"hi", &r)].into_iter(), Some(true));
        assert!(text.contains("switchboard_connections_open 2\n"));
        assert!(text.contains("switchboard_connections_closed_total{code=\"1000\"} 2\n"));
        assert!(text.contains("switchboard_messages_in_total{route=\"say\\\"hi\"} 3\n"));
        assert!(
            text.contains(
                "switchboard_management_requests_total{method=\"POST\",status=\"410\"} 1\n"
            )
        );
        assert!(text.contains("switchboard_cluster_redis_up 1\n"));
    }
}
