//! Clock readings and the two time formats API Gateway uses.

use chrono::{DateTime, Utc};

/// Milliseconds since the Unix epoch.
///
/// Read on every frame queued (the activity clock), so without a detour through a calendar
/// date.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// `requestTime`: Common Log Format in UTC, `20/Jan/2024:11:54:57 +0000`.
pub fn clf(ms: i64) -> String {
    datetime(ms).format("%d/%b/%Y:%H:%M:%S +0000").to_string()
}

/// `connectedAt` of GetConnection: ISO-8601 with milliseconds, `2020-04-30T20:10:33.236Z`.
pub fn iso_ms(ms: i64) -> String {
    datetime(ms).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(clf(1705751697421), "20/Jan/2024:11:54:57 +0000");
        assert_eq!(clf(1704153600000), "02/Jan/2024:00:00:00 +0000");
        assert_eq!(iso_ms(1588277433236), "2020-04-30T20:10:33.236Z");
        assert_eq!(iso_ms(1588277433000), "2020-04-30T20:10:33.000Z");
    }
}
