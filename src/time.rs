//! Clock readings and the two time formats API Gateway uses.

use chrono::{DateTime, Utc};

/// Milliseconds since the Unix epoch.
///
/// Without a detour through a calendar date.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since the Unix epoch from the kernel's coarse clock (the time of the last
/// scheduler tick, a few ms behind; a third of the cost of [`now_ms`]).
///
/// For the activity clock, which every queued frame sets: a broadcast to 1,000 clients reads
/// it 1,000 times, and the idle timeout it serves counts minutes.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn coarse_now_ms() -> i64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_REALTIME_COARSE).map_or_else(
        |_| now_ms(),
        |t| t.tv_sec() * 1000 + t.tv_nsec() / 1_000_000,
    )
}

/// Milliseconds since the Unix epoch (no coarse clock on this system).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn coarse_now_ms() -> i64 {
    now_ms()
}

fn datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// `requestTime`: Common Log Format in UTC, `20/Jan/2024:11:54:57 +0000`.
pub(crate) fn clf(ms: i64) -> String {
    datetime(ms).format("%d/%b/%Y:%H:%M:%S +0000").to_string()
}

/// `connectedAt` of GetConnection: ISO-8601 with milliseconds, `2020-04-30T20:10:33.236Z`.
pub(crate) fn iso_ms(ms: i64) -> String {
    datetime(ms).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_is_within_a_few_ticks_of_the_precise_one() {
        let (coarse, precise) = (coarse_now_ms(), now_ms());
        assert!((precise - coarse).abs() < 100, "{coarse} vs {precise}");
    }

    #[test]
    fn formats() {
        assert_eq!(clf(1705751697421), "20/Jan/2024:11:54:57 +0000");
        assert_eq!(clf(1704153600000), "02/Jan/2024:00:00:00 +0000");
        assert_eq!(iso_ms(1588277433236), "2020-04-30T20:10:33.236Z");
        assert_eq!(iso_ms(1588277433000), "2020-04-30T20:10:33.000Z");
    }
}
