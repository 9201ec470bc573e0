//! The `switchboard` binary: parses arguments, sets up logging, and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use switchboard::cli::{self, ConnectOptions, ManageCall};
use switchboard::cluster::ClusterConfig;
use switchboard::config::{BuiltinApp, Config, FileConfig, default_node_id};
use switchboard::template::{self, Format, Loaded, Overrides};

#[derive(Parser)]
#[command(
    version,
    about = "A WebSocket gateway compatible with AWS API Gateway WebSocket APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Read a configuration file (TOML, serverless.yml, SAM / CloudFormation template) and
    /// print what was understood, without serving.
    Check(CheckArgs),
    /// Connect to a WebSocket URL like `wscat -c`: send stdin lines, print frames.
    Connect(ConnectArgs),
    /// PostToConnection: send data to a connection.
    Post(PostArgs),
    /// GetConnection: print a connection's info.
    Get(ManageArgs),
    /// DeleteConnection: close a connection.
    Delete(ManageArgs),
    /// Load-test a WebSocket chat server (this one or another).
    #[command(subcommand)]
    Bench(switchboard::bench::BenchCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SWITCHBOARD_LISTEN")]
    listen: SocketAddr,
    /// Stage name: the WebSocket path and the management API prefix [default: dev].
    #[arg(long)]
    stage: Option<String>,
    /// Directory for persistent state, created on demand.
    #[arg(long, default_value = "./switchboard-data")]
    data_dir: PathBuf,
    /// Configuration file: switchboard's TOML, a serverless.yml (.yaml, .json) or a SAM /
    /// CloudFormation template (YAML or JSON), told apart by content.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Region of a template's functions and ARNs (`${opt:region}`, `AWS::Region`).
    #[arg(long)]
    region: Option<String>,
    /// A template parameter, `NAME=VALUE` (repeatable); also `${param:NAME}` in serverless.yml.
    #[arg(long = "parameter", value_name = "NAME=VALUE")]
    parameters: Vec<String>,
    /// Keep a template's function processes when files under their code directory change
    /// (by default new invocations go to fresh processes).
    #[arg(long)]
    no_reload: bool,
    /// Built-in API to serve [default: chat].
    #[arg(long, value_enum)]
    app: Option<BuiltinApp>,
    /// Largest frame in bytes; larger closes with 1009 [default: 32768].
    #[arg(long)]
    max_frame_bytes: Option<usize>,
    /// Largest message in bytes; larger closes with 1009 [default: 131072].
    #[arg(long)]
    max_message_bytes: Option<usize>,
    /// Accept binary frames instead of closing with 1003.
    #[arg(long)]
    accept_binary: bool,
    /// Idle timeout in seconds [default: 600].
    #[arg(long)]
    idle_timeout_secs: Option<u64>,
    /// Maximum connection lifetime in seconds [default: 7200].
    #[arg(long)]
    max_lifetime_secs: Option<u64>,
    /// Unsent bytes a connection may queue before posts answer 429 [default: 1048576].
    #[arg(long)]
    max_outbox_bytes: Option<usize>,
    /// Seconds a graceful shutdown waits for connections to close [default: 10].
    #[arg(long)]
    drain_timeout_secs: Option<u64>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Join a cluster: the Redis (or Valkey) URL shared by every node.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// This node's name in the cluster [default: HOSTNAME-PID].
    #[arg(long)]
    node_id: Option<String>,
    /// PEM certificate chain: serve wss:// and https:// (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    /// The configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Stage (`${opt:stage}`); wins over the file's.
    #[arg(long)]
    stage: Option<String>,
    /// Region (`${opt:region}`, `AWS::Region`).
    #[arg(long)]
    region: Option<String>,
    /// A template parameter, `NAME=VALUE` (repeatable).
    #[arg(long = "parameter", value_name = "NAME=VALUE")]
    parameters: Vec<String>,
}

#[derive(Args)]
struct ConnectArgs {
    /// WebSocket URL, e.g. ws://127.0.0.1:8080/dev
    url: String,
    /// Extra handshake header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Subprotocol to request.
    #[arg(short = 's', long)]
    subprotocol: Option<String>,
    /// Send this message after connecting instead of reading stdin (repeatable).
    #[arg(short = 'x', long)]
    execute: Vec<String>,
    /// Seconds to wait for replies after the last message [default: 1 with --execute].
    #[arg(short = 'w', long)]
    wait: Option<f64>,
}

#[derive(Args)]
struct ManageArgs {
    /// The management endpoint, e.g. http://127.0.0.1:8080/dev
    #[arg(long, default_value = "http://127.0.0.1:8080/dev")]
    endpoint: String,
    /// The connection id (ids may start with `-`).
    #[arg(long, allow_hyphen_values = true)]
    connection_id: String,
}

#[derive(Args)]
struct PostArgs {
    #[command(flatten)]
    target: ManageArgs,
    /// The data to send, as text.
    #[arg(long)]
    data: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Check(args) => {
            init_logging(LogFormat::Text, "warn");
            check(&args)
        }
        Command::Connect(args) => {
            init_logging(LogFormat::Text, "warn");
            runtime.block_on(cli::connect(ConnectOptions {
                url: args.url,
                headers: args.headers,
                subprotocol: args.subprotocol,
                execute: args.execute,
                wait: args.wait,
            }))?;
            Ok(())
        }
        Command::Post(args) => {
            runtime.block_on(cli::manage(
                &args.target.endpoint,
                &args.target.connection_id,
                ManageCall::Post(args.data.into_bytes()),
            ))?;
            Ok(())
        }
        Command::Get(args) => {
            let body = runtime.block_on(cli::manage(
                &args.endpoint,
                &args.connection_id,
                ManageCall::Get,
            ))?;
            println!("{body}");
            Ok(())
        }
        Command::Delete(args) => {
            runtime.block_on(cli::manage(
                &args.endpoint,
                &args.connection_id,
                ManageCall::Delete,
            ))?;
            Ok(())
        }
        Command::Bench(command) => {
            init_logging(LogFormat::Text, "warn");
            switchboard::bench::run(command)?;
            Ok(())
        }
    }
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // If the log's reader goes away, keep serving: reporting the failed write on stderr
        // would panic.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `--stage`, `--region` and `--parameter` for templates.
fn overrides(
    stage: &Option<String>,
    region: &Option<String>,
    parameters: &[String],
) -> anyhow::Result<Overrides> {
    let mut out = Overrides {
        stage: stage.clone(),
        region: region.clone(),
        ..Overrides::default()
    };
    for p in parameters {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--parameter {p:?}: use NAME=VALUE"))?;
        out.parameters.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let overrides = overrides(&args.stage, &args.region, &args.parameters)?;
    let loaded = match template::detect(&args.config)? {
        Format::Toml => {
            let file = FileConfig::load(&args.config)?;
            let base_dir = match args.config.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                _ => PathBuf::from("."),
            };
            let mut api = file.definition(&base_dir);
            if let Some(region) = &args.region {
                api.region = region.clone();
            }
            let stage = args
                .stage
                .clone()
                .or(file.stage)
                .unwrap_or_else(|| "dev".into());
            Loaded::from_definition(args.config.display().to_string(), api, stage)
        }
        _ => template::load(&args.config, &overrides)?,
    };
    // The same checks as at start (commands, handlers, timeouts), without starting anything.
    loaded.api.prepare("check")?;
    print!("{}", loaded.describe());
    Ok(())
}

fn config_from(args: &ServeArgs) -> anyhow::Result<Config> {
    let template = match &args.config {
        Some(path) => match template::detect(path)? {
            Format::Toml => None,
            _ => {
                let mut overrides = overrides(&args.stage, &args.region, &args.parameters)?;
                overrides.no_reload = args.no_reload;
                Some(template::load(path, &overrides)?)
            }
        },
        None => None,
    };
    let file = match (&args.config, &template) {
        (Some(path), None) => FileConfig::load(path)?,
        _ => FileConfig::default(),
    };
    let base_dir = match args.config.as_deref().and_then(std::path::Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let api = file.definition(&base_dir);
    // Relative certificate paths are relative to the configuration file, like every path in it.
    let tls = file.tls.map(|t| switchboard::tls::TlsFiles {
        cert: base_dir.join(t.cert),
        key: base_dir.join(t.key),
    });
    let mut config = Config {
        data_dir: args.data_dir.clone(),
        management_credentials: file.management.credentials()?,
        tls,
        cluster: file.cluster.as_ref().map(|c| c.to_config()).transpose()?,
        api,
        limits: file.limits,
        chat: file.chat,
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
    // Flags win over the file.
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(switchboard::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    if let Some(url) = &args.redis {
        let mut cluster = config
            .cluster
            .take()
            .unwrap_or_else(|| ClusterConfig::new(url.clone(), default_node_id()));
        cluster.redis_url = url.clone();
        config.cluster = Some(cluster);
    }
    if let Some(node_id) = &args.node_id {
        let Some(cluster) = config.cluster.as_mut() else {
            anyhow::bail!("--node-id needs --redis or a [cluster] section in the configuration");
        };
        cluster.node_id = node_id.clone();
    }
    if let Some(stage) = &args.stage {
        config.stage = stage.clone();
    }
    if let Some(app) = args.app {
        config.app = app;
    }
    let limits = &mut config.limits;
    if let Some(v) = args.max_frame_bytes {
        limits.max_frame_bytes = v;
    }
    if let Some(v) = args.max_message_bytes {
        limits.max_message_bytes = v;
    }
    if args.accept_binary {
        limits.accept_binary = true;
    }
    if let Some(v) = args.idle_timeout_secs {
        limits.idle_timeout_secs = v;
    }
    if let Some(v) = args.max_lifetime_secs {
        limits.max_lifetime_secs = v;
    }
    if let Some(v) = args.max_outbox_bytes {
        limits.max_outbox_bytes = v;
    }
    if let Some(v) = args.drain_timeout_secs {
        config.drain_timeout = Duration::from_secs(v);
    }
    if let Some(region) = &args.region {
        config.api.region = region.clone();
    }
    if let Some(loaded) = template {
        loaded.apply_to(&mut config);
    }
    config.validate()?;
    Ok(config)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format, "info");
    let config = config_from(&args)?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let listener = switchboard::server::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    switchboard::run(listener, config, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
