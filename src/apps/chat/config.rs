//! The `[chat]` section of the configuration file: history, retention, limits, durability.

use serde::Deserialize;

use crate::config::ConfigError;

/// How hard SQLite works to keep a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// A commit has reached the operating system before anyone receives the message: it
    /// survives the process being killed (`kill -9`, a crash), not a power cut.
    #[default]
    Normal,
    /// Every commit is also flushed to the disk (`fsync`): it survives a power cut too.
    Full,
}

/// The chat's settings; every key has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Messages a `join` without `since`, and a `history` without `limit`, return.
    pub history_default: usize,
    /// The largest `limit` a `history` request may ask for.
    pub history_max: usize,
    /// The most messages a `join` with `since` returns; when more were missed, the newest ones
    /// come with `"truncated": true`.
    pub recovery_max: usize,
    /// Messages kept per room; older ones are deleted as new ones arrive, in steps of 1 % of
    /// this (0 keeps every one).
    pub retention_count: u64,
    /// Seconds a message is kept (0 keeps messages forever). Checked every tenth of this,
    /// and at least once a minute.
    pub retention_age_secs: u64,
    /// The longest `send` text, in characters (Unicode scalar values).
    pub max_text_chars: usize,
    /// Chat requests a connection may make per second, on average (0 turns the limit off).
    pub rate_per_sec: u32,
    /// Chat requests a connection may make in a burst, above the average.
    pub rate_burst: u32,
    /// Requests waiting for the chat's store thread. When the queue is full the connection
    /// whose request does not fit waits, and the gateway stops reading it meanwhile.
    pub queue_capacity: usize,
    /// `normal` (survives `kill -9`) or `full` (survives a power cut; slower).
    pub synchronous: Synchronous,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            history_default: 50,
            history_max: 200,
            recovery_max: 1000,
            retention_count: 10_000,
            retention_age_secs: 30 * 24 * 3600,
            max_text_chars: 4000,
            rate_per_sec: 10,
            rate_burst: 30,
            queue_capacity: 4096,
            synchronous: Synchronous::Normal,
        }
    }
}

impl ChatConfig {
    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| {
            Err(ConfigError::Invalid {
                key: format!("chat.{key}"),
                reason: why.to_owned(),
            })
        };
        if self.history_max == 0 || self.history_max > 1000 {
            return bad("history_max", "must be between 1 and 1000");
        }
        if self.history_default == 0 || self.history_default > self.history_max {
            return bad("history_default", "must be between 1 and history_max");
        }
        if self.recovery_max < self.history_default || self.recovery_max > 10_000 {
            return bad("recovery_max", "must be between history_default and 10000");
        }
        if self.max_text_chars == 0 {
            return bad("max_text_chars", "must be at least 1");
        }
        if self.rate_per_sec > 0 && self.rate_burst == 0 {
            return bad("rate_burst", "must be at least 1 when rate_per_sec is set");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = ChatConfig::default();
        c.validate().unwrap();
        assert_eq!(c.history_default, 50);
        assert_eq!(c.max_text_chars, 4000);
    }

    #[test]
    fn invalid_values_name_the_key() {
        let c = ChatConfig {
            history_default: 500,
            ..ChatConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("chat.history_default"), "{e}");
    }
}
