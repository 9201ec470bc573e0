//! Server configuration: the stage, the built-in app and the limits, from flags or a TOML file.
//!
//! The file may also define the API (`route_selection_expression`, `[routes."<key>"]`,
//! `[authorizer]`): see [`crate::integration::definition`] and `docs/config.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::apps::chat::ChatConfig;
pub use crate::cluster::ClusterConfig;
use crate::integration::definition::{ApiDefinition, AuthorizerSpec, DefinitionError, RouteSpec};
pub use crate::sigv4::Credential;
use crate::template::{self, Format, Overrides, TemplateError};
pub use crate::tls::TlsFiles;

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
    /// Open connections allowed from one source address; beyond, 429. 0: no limit.
    pub max_connections_per_ip: usize,
    /// New connections accepted per second (API Gateway's 500/s analogue); beyond, 429.
    /// 0: no limit.
    pub max_new_connections_per_sec: u32,
    /// Messages one connection may send per second; beyond, the message is not routed and
    /// the client gets a `Too Many Requests` frame. 0: no limit.
    pub max_messages_per_sec: u32,
    /// Origins allowed to open WebSockets (`https://app.example.com`, `https://*.example.com`,
    /// `*`); others get 403. Empty: any. Handshakes without `Origin` (non-browser clients)
    /// are always allowed.
    pub allowed_origins: Vec<String>,
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
            max_connections_per_ip: 0,
            max_new_connections_per_sec: 0,
            max_messages_per_sec: 0,
            allowed_origins: Vec::new(),
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
    /// The chat: rooms, history and presence, with the two articles' routes.
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
    /// The built-in chat's settings.
    pub chat: ChatConfig,
    /// How long a graceful shutdown waits for connections to close.
    pub drain_timeout: Duration,
    /// Key pairs that may call the management API over HTTP (SigV4). Empty: loopback only.
    pub management_credentials: Vec<Credential>,
    /// Serve `wss://` and `https://` with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// Join a cluster of nodes sharing one Redis.
    pub cluster: Option<ClusterConfig>,
    /// Routes and authorizer from the API definition file; with no routes, `app` serves.
    pub api: ApiDefinition,
    /// The DynamoDB-compatible endpoint (`[dynamodb]`).
    pub dynamodb: DynamoDbConfig,
    /// The inspector's page and stream (`/_switchboard/`).
    pub inspector: InspectorSection,
    /// Worker threads that each accept and drive their own connections (see
    /// `docs/operations.md`, "Worker threads"); 0: connections share the process's runtime.
    /// [`Config::load`] (the binary, configuration files) defaults to [`default_workers`];
    /// `Config::default()` to 0, for a program that runs the server on its own runtime.
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stage: "dev".into(),
            api_id: "switchboard".into(),
            data_dir: PathBuf::from("./switchboard-data"),
            app: BuiltinApp::Chat,
            limits: Limits::default(),
            chat: ChatConfig::default(),
            drain_timeout: Duration::from_secs(10),
            management_credentials: Vec::new(),
            tls: None,
            cluster: None,
            api: ApiDefinition::default(),
            dynamodb: DynamoDbConfig::default(),
            inspector: InspectorSection::default(),
            workers: 0,
        }
    }
}

impl Config {
    /// The configuration that `settings` describe: the file's (defaults without one), then the
    /// flags over it, validated.
    pub fn load(settings: &Settings) -> Result<Config, ConfigError> {
        let template = match &settings.config {
            Some(path) if template::detect(path)? != Format::Toml => {
                Some(template::load(path, &settings.template_overrides()?)?)
            }
            _ => None,
        };
        let file = match (&settings.config, &template) {
            (Some(path), None) => FileConfig::load(path)?,
            _ => FileConfig::default(),
        };
        let base_dir = match settings.config.as_deref().and_then(std::path::Path::parent) {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let api = file.definition(&base_dir);
        // Relative certificate paths are relative to the configuration file, like every path in it.
        let tls = file.tls.map(|t| TlsFiles {
            cert: base_dir.join(t.cert),
            key: base_dir.join(t.key),
        });
        let mut config = Config {
            data_dir: settings.data_dir.clone(),
            management_credentials: file.management.credentials()?,
            tls,
            cluster: file.cluster.as_ref().map(|c| c.to_config()).transpose()?,
            api,
            limits: file.limits,
            chat: file.chat,
            dynamodb: file.dynamodb,
            inspector: file.inspector,
            ..Config::default()
        };
        if let Some(stage) = file.stage {
            config.stage = stage;
        }
        if let Some(api_id) = file.api_id {
            config.api_id = api_id;
        }
        if let Some(app) = file.app {
            config.app = app;
        }
        if let Some(secs) = file.drain_timeout_secs {
            config.drain_timeout = Duration::from_secs(secs);
        }
        config.workers = file.workers.unwrap_or_else(default_workers);
        // Flags win over the file.
        if let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) {
            config.tls = Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if let Some(url) = &settings.redis {
            let mut cluster = config
                .cluster
                .take()
                .unwrap_or_else(|| ClusterConfig::new(url.clone(), default_node_id()));
            cluster.redis_url = url.clone();
            config.cluster = Some(cluster);
        }
        if let Some(node_id) = &settings.node_id {
            let Some(cluster) = config.cluster.as_mut() else {
                return Err(ConfigError::Invalid {
                    key: "--node-id".into(),
                    reason: "needs --redis or a [cluster] section in the configuration".into(),
                });
            };
            cluster.node_id = node_id.clone();
        }
        if let Some(stage) = &settings.stage {
            config.stage = stage.clone();
        }
        if let Some(app) = settings.app {
            config.app = app;
        }
        let limits = &mut config.limits;
        if let Some(v) = settings.max_frame_bytes {
            limits.max_frame_bytes = v;
        }
        if let Some(v) = settings.max_message_bytes {
            limits.max_message_bytes = v;
        }
        if settings.accept_binary {
            limits.accept_binary = true;
        }
        if let Some(v) = settings.idle_timeout_secs {
            limits.idle_timeout_secs = v;
        }
        if let Some(v) = settings.max_lifetime_secs {
            limits.max_lifetime_secs = v;
        }
        if let Some(v) = settings.max_outbox_bytes {
            limits.max_outbox_bytes = v;
        }
        if let Some(v) = settings.drain_timeout_secs {
            config.drain_timeout = Duration::from_secs(v);
        }
        if let Some(v) = settings.workers {
            config.workers = v;
        }
        if let Some(region) = &settings.region {
            config.api.region = region.clone();
        }
        if let Some(loaded) = template {
            loaded.apply_to(&mut config);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_stage(&self.stage)?;
        if self.workers > crate::workers::MAX_WORKERS {
            return Err(ConfigError::Invalid {
                key: "workers".into(),
                reason: format!("at most {}", crate::workers::MAX_WORKERS),
            });
        }
        self.limits.validate()?;
        self.chat.validate()?;
        self.dynamodb.validate()?;
        self.dynamodb.check_cluster(
            self.cluster.is_some(),
            !self.management_credentials.is_empty(),
        )
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
    /// Worker threads that own connections; 0: none; unset: one per core.
    pub workers: Option<usize>,
    /// Limits; keys left out keep their defaults.
    #[serde(default)]
    pub limits: Limits,
    /// Who may call the management API.
    #[serde(default)]
    pub management: ManagementSection,
    /// The inspector.
    #[serde(default)]
    pub inspector: InspectorSection,
    /// TLS certificate and key.
    pub tls: Option<TlsFiles>,
    /// Cluster membership.
    pub cluster: Option<ClusterSection>,
    /// The built-in chat (`[chat]`); keys left out keep their defaults.
    #[serde(default)]
    pub chat: ChatConfig,
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
    /// The DynamoDB-compatible endpoint (`[dynamodb]`); keys left out keep their defaults.
    #[serde(default)]
    pub dynamodb: DynamoDbConfig,
}

/// The `[dynamodb]` section: DynamoDB-compatible tables served on the gateway's listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamoDbConfig {
    /// Serve the embedded tables even when no table is declared.
    pub enabled: bool,
    /// A DynamoDB endpoint elsewhere (`http://node-a:8080`, DynamoDB itself, a compatible
    /// engine): functions are pointed at it and this node keeps no tables.
    pub endpoint: Option<String>,
    /// This node serves its embedded tables to the other nodes of a cluster (which set
    /// `endpoint` to this node's URL).
    pub serve_cluster: bool,
    /// The database file's name, in the data directory.
    pub database_file: String,
    /// How hard SQLite works to keep a write before it is answered: `normal` survives the
    /// process being killed, `full` (an `fsync` per write) a power cut too.
    pub synchronous: crate::apps::chat::config::Synchronous,
    /// Seconds between two sweeps of expired items (tables with TTL enabled).
    pub ttl_sweep_interval_secs: u64,
    /// DynamoDB requests handled at once; beyond, the request is answered
    /// `ThrottlingException` (which the SDKs retry).
    pub max_inflight_requests: usize,
    /// Replace a declared table whose schema changed (its items are lost); otherwise the old
    /// table is kept and the change reported.
    pub recreate_changed_tables: bool,
    /// Declared tables: CloudFormation `AWS::DynamoDB::Table` properties (or, with
    /// `Type = "AWS::Serverless::SimpleTable"`, a SAM simple table's).
    pub tables: Vec<serde_json::Value>,
}

impl Default for DynamoDbConfig {
    fn default() -> Self {
        DynamoDbConfig {
            enabled: false,
            endpoint: None,
            serve_cluster: false,
            database_file: "dynamodb.sqlite3".into(),
            synchronous: crate::apps::chat::config::Synchronous::Normal,
            ttl_sweep_interval_secs: 30,
            max_inflight_requests: 1024,
            recreate_changed_tables: false,
            tables: Vec::new(),
        }
    }
}

impl DynamoDbConfig {
    /// Whether this process runs the embedded tables: enabled, or tables declared, and no
    /// endpoint elsewhere.
    pub fn is_embedded(&self) -> bool {
        self.endpoint.is_none() && (self.enabled || !self.tables.is_empty())
    }

    /// Checks the section on its own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: format!("dynamodb.{key}"),
                reason,
            })
        };
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return bad(
                "endpoint",
                format!("{endpoint:?} is not an http:// or https:// URL"),
            );
        }
        let file = &self.database_file;
        if file.is_empty() || file.contains(['/', '\\']) || file == "." || file == ".." {
            return bad(
                "database_file",
                format!("{file:?} is not a file name (the file lives in the data directory)"),
            );
        }
        if self.ttl_sweep_interval_secs == 0 {
            return bad("ttl_sweep_interval_secs", "must be at least 1".into());
        }
        if self.max_inflight_requests == 0 {
            return bad("max_inflight_requests", "must be at least 1".into());
        }
        for (i, table) in self.tables.iter().enumerate() {
            if let Err(e) = crate::dynamodb::tables::TableSpec::from_declaration(table) {
                return bad(&format!("tables[{i}]"), e.to_string());
            }
        }
        Ok(())
    }

    /// The cluster rule: every node's functions must see the same tables, so in a cluster a
    /// node keeps embedded tables only when it serves them to the others (`serve_cluster`,
    /// which needs credentials: the others call it over the network).
    pub fn check_cluster(&self, clustered: bool, has_credentials: bool) -> Result<(), ConfigError> {
        if !clustered || !self.is_embedded() {
            return Ok(());
        }
        if !self.serve_cluster {
            return Err(ConfigError::Invalid {
                key: "dynamodb".into(),
                reason: "in a cluster each node would keep tables of its own: set \
                    `endpoint = \"http://<node>:<port>\"` in [dynamodb] on every node (one node's \
                    URL, DynamoDB itself or a DynamoDB-compatible engine), and \
                    `serve_cluster = true` without `endpoint` on the one node that keeps the tables"
                    .into(),
            });
        }
        if !has_credentials {
            return Err(ConfigError::Invalid {
                key: "dynamodb.serve_cluster".into(),
                reason: "the other nodes reach the tables over the network, which needs \
                    [management] credentials (off loopback, calls must be signed)"
                    .into(),
            });
        }
        Ok(())
    }
}

/// The `[cluster]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `redis://host:port/db`.
    pub redis: String,
    /// This node's name; defaults to `{hostname}-{pid}`.
    pub node_id: Option<String>,
    /// Seconds a node's heartbeat lives (a dead node's connections answer 410 within this).
    #[serde(default = "default_node_ttl")]
    pub node_ttl_secs: u64,
    /// Prefix of every Redis key and channel.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Milliseconds a request to another node may take.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
}

fn default_node_ttl() -> u64 {
    10
}

fn default_prefix() -> String {
    "switchboard".into()
}

fn default_request_timeout() -> u64 {
    2000
}

impl ClusterSection {
    /// The cluster configuration this section describes.
    pub fn to_config(&self) -> Result<ClusterConfig, ConfigError> {
        if self.node_ttl_secs * 1000 < self.request_timeout_ms + 1000 {
            return Err(ConfigError::Invalid {
                key: "cluster.node_ttl_secs".into(),
                reason: "must be at least one second more than request_timeout_ms".into(),
            });
        }
        let mut config = ClusterConfig::new(
            self.redis.clone(),
            self.node_id.clone().unwrap_or_else(default_node_id),
        );
        config.node_ttl = Duration::from_secs(self.node_ttl_secs);
        config.key_prefix = self.key_prefix.clone();
        config.request_timeout = Duration::from_millis(self.request_timeout_ms);
        Ok(config)
    }
}

/// What the command line sets: the configuration file and the flags that override it (see
/// `switchboard serve --help`). [`Config::load`] turns it into a [`Config`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Settings {
    /// Stage name: the WebSocket path and the management API prefix [default: dev].
    #[arg(long)]
    pub stage: Option<String>,
    /// Directory for persistent state, created on demand.
    #[arg(long, default_value = "./switchboard-data")]
    pub data_dir: PathBuf,
    /// Configuration file: switchboard's TOML, a serverless.yml (.yaml, .json) or a SAM /
    /// CloudFormation template (YAML or JSON), told apart by content.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Region of a template's functions and ARNs (`${opt:region}`, `AWS::Region`).
    #[arg(long)]
    pub region: Option<String>,
    /// A template parameter, `NAME=VALUE` (repeatable); also `${param:NAME}` in serverless.yml.
    #[arg(long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// Keep a template's function processes when files under their code directory change
    /// (by default new invocations go to fresh processes).
    #[arg(long)]
    pub no_reload: bool,
    /// Built-in API to serve [default: chat].
    #[arg(long, value_enum)]
    pub app: Option<BuiltinApp>,
    /// Largest frame in bytes; larger closes with 1009 [default: 32768].
    #[arg(long)]
    pub max_frame_bytes: Option<usize>,
    /// Largest message in bytes; larger closes with 1009 [default: 131072].
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Accept binary frames instead of closing with 1003.
    #[arg(long)]
    pub accept_binary: bool,
    /// Idle timeout in seconds [default: 600].
    #[arg(long)]
    pub idle_timeout_secs: Option<u64>,
    /// Maximum connection lifetime in seconds [default: 7200].
    #[arg(long)]
    pub max_lifetime_secs: Option<u64>,
    /// Unsent bytes a connection may queue before posts answer 429 [default: 1048576].
    #[arg(long)]
    pub max_outbox_bytes: Option<usize>,
    /// Seconds a graceful shutdown waits for connections to close [default: 10].
    #[arg(long)]
    pub drain_timeout_secs: Option<u64>,
    /// Worker threads that each accept and drive their own connections, at most 64; 0:
    /// connections share the process's runtime [default: the number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Join a cluster: the Redis (or Valkey) URL shared by every node.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// This node's name in the cluster [default: HOSTNAME-PID].
    #[arg(long)]
    pub node_id: Option<String>,
    /// PEM certificate chain: serve wss:// and https:// (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl Settings {
    /// What a template is read with: `--stage`, `--region`, `--parameter`, `--no-reload`.
    pub fn template_overrides(&self) -> Result<Overrides, ConfigError> {
        let mut overrides = Overrides {
            stage: self.stage.clone(),
            region: self.region.clone(),
            no_reload: self.no_reload,
            ..Overrides::default()
        };
        for p in &self.parameters {
            let (k, v) = p.split_once('=').ok_or_else(|| ConfigError::Invalid {
                key: format!("--parameter {p:?}"),
                reason: "use NAME=VALUE".into(),
            })?;
            overrides.parameters.insert(k.to_owned(), v.to_owned());
        }
        Ok(overrides)
    }
}

/// The worker threads a server loaded from flags and files runs: one per core the process
/// may use, at most [`crate::workers::MAX_WORKERS`].
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(crate::workers::MAX_WORKERS)
}

/// `{hostname}-{pid}`: unique among the processes of a cluster.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}-{}", std::process::id())
}

/// The `[inspector]` section: the live page at `/_switchboard/` and `switchboard tail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectorSection {
    /// Serve the page, its API and its stream (loopback callers only unless management
    /// credentials are configured). `false` turns them off entirely.
    pub enabled: bool,
}

impl Default for InspectorSection {
    fn default() -> Self {
        InspectorSection { enabled: true }
    }
}

/// The `[management]` section: credentials for SigV4-signed management calls.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementSection {
    /// One key pair's id (with `secret_access_key`).
    pub access_key_id: Option<String>,
    /// One key pair's secret (with `access_key_id`).
    pub secret_access_key: Option<String>,
    /// More key pairs.
    #[serde(default)]
    pub credentials: Vec<Credential>,
}

impl ManagementSection {
    /// Every configured key pair.
    pub fn credentials(&self) -> Result<Vec<Credential>, ConfigError> {
        let mut all = self.credentials.clone();
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => all.push(Credential {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
            }),
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid {
                    key: "management.access_key_id".into(),
                    reason: "access_key_id and secret_access_key go together".into(),
                });
            }
        }
        if let Some(c) = all
            .iter()
            .find(|c| c.access_key_id.is_empty() || c.secret_access_key.is_empty())
        {
            return Err(ConfigError::Invalid {
                key: "management.credentials".into(),
                reason: format!("empty key or secret for {:?}", c.access_key_id),
            });
        }
        Ok(all)
    }
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
    /// A serverless.yml or SAM / CloudFormation template could not be used (the message
    /// names the file, and the line and column where there is one).
    #[error("{0}")]
    Template(String),
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

impl From<TemplateError> for ConfigError {
    fn from(e: TemplateError) -> Self {
        ConfigError::Template(e.to_string())
    }
}

impl From<DefinitionError> for ConfigError {
    fn from(e: DefinitionError) -> Self {
        ConfigError::Invalid {
            key: e.key,
            reason: e.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_reads_the_file_then_applies_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchboard.toml");
        std::fs::write(
            &path,
            "stage = \"prod\"\ndrain_timeout_secs = 3\n[limits]\nidle_timeout_secs = 30\nmax_frame_bytes = 1000\n",
        )
        .unwrap();
        let settings = Settings {
            config: Some(path),
            data_dir: dir.path().join("data"),
            max_frame_bytes: Some(2000),
            ..Settings::default()
        };
        let config = Config::load(&settings).unwrap();
        assert_eq!(config.stage, "prod");
        assert_eq!(config.drain_timeout, Duration::from_secs(3));
        assert_eq!(config.limits.idle_timeout_secs, 30);
        assert_eq!(
            config.limits.max_frame_bytes, 2000,
            "a flag wins over the file"
        );
        assert_eq!(config.data_dir, dir.path().join("data"));
        assert_eq!(config.workers, default_workers(), "one worker per core");
        assert!(config.workers >= 1);

        let staged = Settings {
            stage: Some("dev2".into()),
            workers: Some(0),
            ..settings
        };
        let staged = Config::load(&staged).unwrap();
        assert_eq!(staged.stage, "dev2");
        assert_eq!(staged.workers, 0, "--workers 0: the shared runtime");
        assert_eq!(Config::default().workers, 0, "a library user's runtime");
    }

    #[test]
    fn load_refuses_what_cannot_work() {
        let lone_node = Settings {
            node_id: Some("a".into()),
            ..Settings::default()
        };
        let e = Config::load(&lone_node).unwrap_err();
        assert!(e.to_string().contains("--node-id"), "{e}");
        let bad_stage = Settings {
            stage: Some("no/slash".into()),
            ..Settings::default()
        };
        assert!(Config::load(&bad_stage).is_err());
        let missing = Settings {
            config: Some("/nonexistent/switchboard.toml".into()),
            ..Settings::default()
        };
        assert!(matches!(
            Config::load(&missing),
            Err(ConfigError::Read { .. })
        ));
    }

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
    fn management_credentials() {
        let f = FileConfig::parse(
            "[management]\naccess_key_id = \"A\"\nsecret_access_key = \"s\"\n\n[[management.credentials]]\naccess_key_id = \"B\"\nsecret_access_key = \"t\"\n",
        )
        .unwrap();
        let ids: Vec<String> = f
            .management
            .credentials()
            .unwrap()
            .into_iter()
            .map(|c| c.access_key_id)
            .collect();
        assert_eq!(ids, ["B", "A"]);
        let f = FileConfig::parse("[management]\naccess_key_id = \"A\"\n").unwrap();
        assert!(
            f.management
                .credentials()
                .unwrap_err()
                .to_string()
                .contains("go together")
        );
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
