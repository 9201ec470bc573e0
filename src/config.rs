//! Server configuration: the stage, the built-in app and the limits, from flags or a TOML file.
//!
//! The file may also define the API (`route_selection_expression`, `[routes."<key>"]`,
//! `[authorizer]`): see [`crate::integration::definition`] and `docs/config.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::integration::definition::{ApiDefinition, AuthorizerSpec, RouteSpec};

/// Limits, with API Gateway's values as defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest frame payload; larger closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Largest message, after reassembling fragments; larger closes with 1009. Also the
    /// largest `@connections` POST body (larger answers 413).
    pub max_message_bytes: usize,
    /// Whether binary frames are accepted; API Gateway closes with 1003.
    pub accept_binary: bool,
    /// Seconds without traffic either way before the connection is closed with 1001.
    pub idle_timeout_secs: u64,
    /// Seconds a connection may live before it is closed with 1001.
    pub max_lifetime_secs: u64,
    /// Unsent bytes a connection may have queued; a POST beyond answers 429.
    pub max_outbox_bytes: usize,
    /// Milliseconds an integration may take (API Gateway allows 50 to 29,000).
    pub integration_timeout_ms: u64,
    /// Seconds a client has to send its handshake request.
    pub handshake_timeout_secs: u64,
    /// Longest request URL, in bytes; longer answers 414.
    pub max_url_bytes: usize,
    /// Most connections held at once (WebSocket and HTTP); beyond, new ones wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// Integration calls one connection may have running at once; beyond, the gateway stops
    /// reading that connection until one finishes.
    pub max_inflight_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 32 * 1024,
            max_message_bytes: 128 * 1024,
            accept_binary: false,
            idle_timeout_secs: 600,
            max_lifetime_secs: 7200,
            max_outbox_bytes: 1024 * 1024,
            integration_timeout_ms: 29_000,
            handshake_timeout_secs: 10,
            max_url_bytes: 4096,
            max_connections: 100_000,
            max_inflight_per_connection: 16,
        }
    }
}

impl Limits {
    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The maximum lifetime.
    pub fn max_lifetime(&self) -> Duration {
        Duration::from_secs(self.max_lifetime_secs)
    }

    /// The integration timeout.
    pub fn integration_timeout(&self) -> Duration {
        Duration::from_millis(self.integration_timeout_ms)
    }

    /// Checks that the limits make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| {
            Err(ConfigError::Invalid {
                key: format!("limits.{key}"),
                reason: why.to_owned(),
            })
        };
        if self.max_frame_bytes == 0 {
            return bad("max_frame_bytes", "must be at least 1");
        }
        if self.max_message_bytes < self.max_frame_bytes {
            return bad("max_message_bytes", "must be at least max_frame_bytes");
        }
        if self.idle_timeout_secs == 0 || self.max_lifetime_secs == 0 {
            return bad("idle_timeout_secs", "timeouts must be at least 1 second");
        }
        if self.max_outbox_bytes < self.max_message_bytes + 14 {
            return bad(
                "max_outbox_bytes",
                "must hold at least one message of max_message_bytes",
            );
        }
        if !(50..=29_000).contains(&self.integration_timeout_ms) {
            return bad(
                "integration_timeout_ms",
                "must be between 50 and 29000, as on API Gateway",
            );
        }
        if self.max_connections == 0 || self.max_inflight_per_connection == 0 {
            return bad("max_connections", "must be at least 1");
        }
        Ok(())
    }
}

/// Which built-in API runs when no routes are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinApp {
    /// The chat from the two articles.
    #[default]
    Chat,
    /// Every message is sent back to its sender (for protocol conformance runs).
    Echo,
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The stage: the WebSocket URL's path and the management API's prefix.
    pub stage: String,
    /// The API id reported in events.
    pub api_id: String,
    /// Where persistent state lives.
    pub data_dir: PathBuf,
    /// The built-in API.
    pub app: BuiltinApp,
    /// Limits.
    pub limits: Limits,
    /// How long a graceful shutdown waits for connections to close.
    pub drain_timeout: Duration,
    /// Routes and authorizer from the API definition file; with no routes, `app` serves.
    pub api: ApiDefinition,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stage: "dev".into(),
            api_id: "switchboard".into(),
            data_dir: PathBuf::from("./switchboard-data"),
            app: BuiltinApp::Chat,
            limits: Limits::default(),
            drain_timeout: Duration::from_secs(10),
            api: ApiDefinition::default(),
        }
    }
}

impl Config {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_stage(&self.stage)?;
        self.limits.validate()
    }
}

/// Stage names: letters, digits, `-` and `_`, as on API Gateway.
pub fn validate_stage(stage: &str) -> Result<(), ConfigError> {
    let ok = !stage.is_empty()
        && stage.len() <= 128
        && stage
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: "stage".into(),
            reason: format!(
                "{stage:?} is not a stage name: use 1 to 128 letters, digits, `-` or `_`"
            ),
        })
    }
}

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The stage.
    pub stage: Option<String>,
    /// The API id reported in events.
    pub api_id: Option<String>,
    /// The built-in app.
    pub app: Option<BuiltinApp>,
    /// Seconds a graceful shutdown waits.
    pub drain_timeout_secs: Option<u64>,
    /// Limits; keys left out keep their defaults.
    #[serde(default)]
    pub limits: Limits,
    /// The region in ARNs and given to functions (`us-east-1` when not set).
    pub region: Option<String>,
    /// The account id in ARNs (`123456789012` when not set).
    pub account_id: Option<String>,
    /// The route selection expression (`$request.body.action` when not set).
    pub route_selection_expression: Option<String>,
    /// The routes; when there are any, they replace the built-in app.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteSpec>,
    /// The `$connect` authorizer.
    pub authorizer: Option<AuthorizerSpec>,
}

impl FileConfig {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// The API definition part of the file; relative paths in it are relative to `base_dir`
    /// (the file's directory).
    pub fn definition(&self, base_dir: &Path) -> ApiDefinition {
        let defaults = ApiDefinition::default();
        ApiDefinition {
            route_selection_expression: self.route_selection_expression.clone(),
            routes: self.routes.clone(),
            authorizer: self.authorizer.clone(),
            region: self.region.clone().unwrap_or(defaults.region),
            account_id: self.account_id.clone().unwrap_or(defaults.account_id),
            base_dir: base_dir.to_owned(),
        }
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })
    }
}

/// A configuration problem, naming the key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        error: String,
    },
    /// The file is not valid.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_api_gateways() {
        let l = Limits::default();
        assert_eq!(l.max_frame_bytes, 32768);
        assert_eq!(l.max_message_bytes, 131072);
        assert_eq!(l.idle_timeout_secs, 600);
        assert_eq!(l.max_lifetime_secs, 7200);
        assert_eq!(l.integration_timeout_ms, 29000);
        assert!(!l.accept_binary);
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_overrides_some_limits() {
        let f = FileConfig::parse("stage = \"prod\"\n[limits]\nidle_timeout_secs = 5\n").unwrap();
        assert_eq!(f.stage.as_deref(), Some("prod"));
        assert_eq!(f.limits.idle_timeout_secs, 5);
        assert_eq!(f.limits.max_frame_bytes, 32768);
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        let e = FileConfig::parse("[limits]\nidle_timeout = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("idle_timeout"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let mut c = Config::default();
        c.limits.max_message_bytes = 10;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_message_bytes")
        );
        c = Config {
            stage: "a/b".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().starts_with("stage"));
    }
}
