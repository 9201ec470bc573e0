//! What `/metrics` shows of the DynamoDB endpoint: requests and latency per operation,
//! throttled requests, items the TTL sweep deleted; the table count and the database's size
//! are read when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::Histogram;

/// The operations counted by name; anything else is counted as `other`.
pub(crate) const OPERATIONS: &[&str] = &[
    "BatchExecuteStatement",
    "BatchGetItem",
    "BatchWriteItem",
    "CreateTable",
    "DeleteItem",
    "DeleteTable",
    "DescribeStream",
    "DescribeTable",
    "DescribeTimeToLive",
    "ExecuteStatement",
    "ExecuteTransaction",
    "GetItem",
    "GetRecords",
    "GetShardIterator",
    "ListStreams",
    "ListTables",
    "ListTagsOfResource",
    "PutItem",
    "Query",
    "Scan",
    "TagResource",
    "TransactGetItems",
    "TransactWriteItems",
    "UntagResource",
    "UpdateItem",
    "UpdateTable",
    "UpdateTimeToLive",
];

/// One operation's counters.
#[derive(Debug, Default)]
struct Operation {
    ok: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    latency: Histogram,
}

/// The endpoint's counters: relaxed atomics, one set per operation (a fixed array, so a
/// request costs a short search and three atomic adds, never an allocation).
#[derive(Debug)]
pub(crate) struct DynamoMetrics {
    /// Indexed like [`OPERATIONS`], then `other`.
    operations: Vec<Operation>,
    /// Requests refused because `max_inflight_requests` were being handled.
    pub(crate) throttled: AtomicU64,
    /// Items the TTL sweep deleted.
    pub(crate) ttl_deleted: AtomicU64,
    /// TTL sweeps that failed.
    pub(crate) ttl_failures: AtomicU64,
}

impl Default for DynamoMetrics {
    fn default() -> Self {
        DynamoMetrics {
            operations: (0..=OPERATIONS.len())
                .map(|_| Operation::default())
                .collect(),
            throttled: AtomicU64::new(0),
            ttl_deleted: AtomicU64::new(0),
            ttl_failures: AtomicU64::new(0),
        }
    }
}

/// The engine's state read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Gauges {
    pub(crate) tables: u64,
    pub(crate) database_bytes: u64,
}

impl DynamoMetrics {
    /// Counts a request for `operation` answered with `status` after `elapsed`.
    pub(crate) fn observe(&self, operation: &str, status: u16, elapsed: Duration) {
        let i = OPERATIONS
            .iter()
            .position(|o| *o == operation)
            .unwrap_or(OPERATIONS.len());
        let op = &self.operations[i];
        let counter = match status {
            200..=299 => &op.ok,
            500.. => &op.server_errors,
            _ => &op.client_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        op.latency.observe(elapsed);
    }

    /// The Prometheus text, appended to the gateway's.
    pub(crate) fn render(&self, out: &mut String, gauges: Option<Gauges>) {
        let _ = writeln!(
            out,
            "# HELP switchboard_dynamodb_requests_total DynamoDB requests, by operation and outcome.\n# TYPE switchboard_dynamodb_requests_total counter"
        );
        let names = OPERATIONS.iter().copied().chain(["other"]);
        for (name, op) in names.clone().zip(&self.operations) {
            for (outcome, n) in [
                ("ok", &op.ok),
                ("client_error", &op.client_errors),
                ("server_error", &op.server_errors),
            ] {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "switchboard_dynamodb_requests_total{{operation=\"{name}\",outcome=\"{outcome}\"}} {n}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_dynamodb_request_seconds DynamoDB request latency, by operation.\n# TYPE switchboard_dynamodb_request_seconds histogram"
        );
        for (name, op) in names.zip(&self.operations) {
            if op.ok.load(Ordering::Relaxed)
                + op.client_errors.load(Ordering::Relaxed)
                + op.server_errors.load(Ordering::Relaxed)
                > 0
            {
                op.latency.render(
                    out,
                    "switchboard_dynamodb_request_seconds",
                    &format!("operation=\"{name}\""),
                );
            }
        }
        for (name, help, value) in [
            (
                "switchboard_dynamodb_throttled_total",
                "DynamoDB requests refused with ThrottlingException (max_inflight_requests).",
                &self.throttled,
            ),
            (
                "switchboard_dynamodb_ttl_deleted_total",
                "Expired items the TTL sweep deleted.",
                &self.ttl_deleted,
            ),
            (
                "switchboard_dynamodb_ttl_sweep_failures_total",
                "TTL sweeps that failed.",
                &self.ttl_failures,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        if let Some(g) = gauges {
            let _ = writeln!(
                out,
                "# HELP switchboard_dynamodb_tables DynamoDB tables.\n# TYPE switchboard_dynamodb_tables gauge\nswitchboard_dynamodb_tables {}",
                g.tables
            );
            let _ = writeln!(
                out,
                "# HELP switchboard_dynamodb_database_bytes Size of the tables' database file.\n# TYPE switchboard_dynamodb_database_bytes gauge\nswitchboard_dynamodb_database_bytes {}",
                g.database_bytes
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_operation_and_outcome() {
        let m = DynamoMetrics::default();
        m.observe("PutItem", 200, Duration::from_micros(300));
        m.observe("PutItem", 400, Duration::from_micros(300));
        m.observe("Nonsense", 400, Duration::from_millis(2));
        let mut out = String::new();
        m.render(
            &mut out,
            Some(Gauges {
                tables: 2,
                database_bytes: 4096,
            }),
        );
        assert!(
            out.contains(
                "switchboard_dynamodb_requests_total{operation=\"PutItem\",outcome=\"ok\"} 1"
            ),
            "{out}"
        );
        assert!(out.contains("switchboard_dynamodb_requests_total{operation=\"PutItem\",outcome=\"client_error\"} 1"), "{out}");
        assert!(out.contains("switchboard_dynamodb_requests_total{operation=\"other\",outcome=\"client_error\"} 1"), "{out}");
        assert!(
            out.contains("switchboard_dynamodb_request_seconds_count{operation=\"PutItem\"} 2"),
            "{out}"
        );
        assert!(!out.contains("operation=\"GetItem\""), "{out}");
        assert!(out.contains("switchboard_dynamodb_tables 2"), "{out}");
        assert!(
            out.contains("switchboard_dynamodb_database_bytes 4096"),
            "{out}"
        );
    }
}
