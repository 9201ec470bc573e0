//! The `switchboard` binary: parses arguments, sets up logging, and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use switchboard::cli::{self, ConnectOptions, ManageCall, TailOptions};
use switchboard::config::{Config, FileConfig, Settings};
use switchboard::template::{self, Format, Loaded};

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
    /// Follow the inspector's live event stream, one line per event.
    Tail(TailArgs),
    /// Load-test a WebSocket chat server (this one or another).
    #[command(subcommand)]
    Bench(switchboard_bench::BenchCommand),
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
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    settings: Settings,
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
struct TailArgs {
    /// The server, e.g. http://127.0.0.1:8080
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// Only events of this route.
    #[arg(long)]
    route: Option<String>,
    /// Only events of this connection (ids may start with `-`).
    #[arg(long, allow_hyphen_values = true)]
    connection: Option<String>,
    /// Only events of this function (integration name).
    #[arg(long)]
    function: Option<String>,
    /// Print each event as its JSON.
    #[arg(long)]
    json: bool,
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
    // Only the commands that need one build it (`serve` its own, sized by its configuration).
    let runtime = || shared_runtime(None);
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => {
            init_logging(LogFormat::Text, "warn");
            check(&args)
        }
        Command::Connect(args) => {
            init_logging(LogFormat::Text, "warn");
            runtime()?.block_on(cli::connect(ConnectOptions {
                url: args.url,
                headers: args.headers,
                subprotocol: args.subprotocol,
                execute: args.execute,
                wait: args.wait,
            }))?;
            Ok(())
        }
        Command::Post(args) => {
            runtime()?.block_on(cli::manage(
                &args.target.endpoint,
                &args.target.connection_id,
                ManageCall::Post(args.data.into_bytes()),
            ))?;
            Ok(())
        }
        Command::Get(args) => {
            let body = runtime()?.block_on(cli::manage(
                &args.endpoint,
                &args.connection_id,
                ManageCall::Get,
            ))?;
            println!("{body}");
            Ok(())
        }
        Command::Delete(args) => {
            runtime()?.block_on(cli::manage(
                &args.endpoint,
                &args.connection_id,
                ManageCall::Delete,
            ))?;
            Ok(())
        }
        Command::Tail(args) => {
            use std::io::IsTerminal;
            let stdout = std::io::stdout();
            let colour = stdout.is_terminal();
            let credentials = std::env::var("AWS_ACCESS_KEY_ID")
                .ok()
                .zip(std::env::var("AWS_SECRET_ACCESS_KEY").ok());
            let mut out = stdout;
            runtime()?.block_on(cli::tail(
                TailOptions {
                    endpoint: args.endpoint,
                    route: args.route,
                    connection: args.connection,
                    function: args.function,
                    json: args.json,
                    colour,
                    credentials,
                },
                &mut out,
            ))?;
            Ok(())
        }
        Command::Bench(command) => {
            init_logging(LogFormat::Text, "warn");
            switchboard_bench::run(command)?;
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

fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let overrides = Settings {
        stage: args.stage.clone(),
        region: args.region.clone(),
        parameters: args.parameters.clone(),
        ..Settings::default()
    }
    .template_overrides()?;
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

/// The process's runtime: `threads` worker threads, or tokio's default (one per core).
fn shared_runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format, "info");
    let config = Config::load(&args.settings)?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    // With worker threads the connections and their HTTP requests run on the workers; the
    // shared runtime keeps only background work (Runtime APIs, sweeper, Redis links, tables),
    // and a second thread of it would only contend with the workers for the cores
    // (docs/operations.md, "Worker threads").
    let runtime = shared_runtime((config.workers > 0).then_some(1))?;
    runtime.block_on(async {
        let listener = switchboard::bind(args.listen)
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        switchboard::run(listener, config, shutdown_signal()).await?;
        Ok(())
    })
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
