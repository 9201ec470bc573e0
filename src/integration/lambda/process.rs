//! Running a function's processes: the environment, log forwarding, restarts.
//!
//! Each environment's [`Supervisor`] starts the command in its own process group with Lambda's
//! environment variables, forwards its output to the log, and waits for one of:
//! - the process exits: the invocation it was handling fails with `Runtime.ExitError`, and the
//!   process is started again after a back-off (100 ms, doubling up to 10 s; back to 100 ms once
//!   a process has answered an invocation);
//! - the current invocation's deadline passes: the process is killed and started again at once;
//! - the runtime posts `/runtime/init/error`: the process is killed, and restarted after the
//!   back-off;
//! - the server stops: SIGTERM, then SIGKILL after 500 ms.
//!
//! While a function has no process that got through its init (a command that does not exist,
//! a runtime that crashes on start), invocations fail at once with the start-up error instead
//! of waiting for their deadline.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::FunctionSpec;
use super::runtime_api::{Environment, exit_error};
use crate::integration::CallError;

/// Dummy credentials given to functions, so that SDKs sign their calls (the management API
/// accepts any signature from loopback). `env` can set real ones.
pub const ACCESS_KEY_ID: &str = "AKIASWITCHBOARDLOCAL";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "switchboard-local-secret-access-key";

/// The switchboard-specific variable holding the `@connections` endpoint
/// (`http://127.0.0.1:8080/dev`).
pub const MANAGEMENT_URL_VAR: &str = "SWITCHBOARD_MANAGEMENT_URL";

/// The variable holding where AWS hostnames go inside managed runtimes
/// (`http://127.0.0.1:8080`); read by the Node.js preload and the Python `sitecustomize`.
pub const REDIRECT_VAR: &str = "SWITCHBOARD_REDIRECT";

/// Longest output line forwarded as one log record; longer lines are split.
const MAX_LOG_LINE: usize = 16 * 1024;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_millis(500);

/// How functions reach the `@connections` API.
#[derive(Debug, Clone, Default)]
pub struct ManagementEndpoint {
    /// The endpoint URL (`http(s)://127.0.0.1:PORT/{stage}`).
    pub url: String,
    /// The key pair functions sign with, when the management API requires signatures.
    pub credential: Option<crate::sigv4::Credential>,
    /// The DynamoDB endpoint functions use (`AWS_ENDPOINT_URL_DYNAMODB`), when there is one.
    pub dynamodb_url: Option<String>,
    /// A CA bundle (the system's plus switchboard's local CA) functions are told to trust.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// `http://127.0.0.1:PORT`: where AWS hostnames of the services switchboard serves are
    /// sent inside managed runtimes' processes (`*.execute-api.*.amazonaws.com`,
    /// `dynamodb.*.amazonaws.com`).
    pub redirect: Option<String>,
    /// Where a function's output lines are published with the invocation they belong to.
    pub inspector: Option<Arc<crate::inspector::Inspector>>,
}

/// The environment variables a function's process gets, as on Lambda.
pub fn environment(
    spec: &FunctionSpec,
    runtime_api: &str,
    management: &ManagementEndpoint,
) -> Vec<(String, String)> {
    let management_url = management.url.as_str();
    // Functions sign their `@connections` calls with a configured key pair when the
    // management API requires one; otherwise any credentials do.
    let (key_id, secret) = match &management.credential {
        Some(c) => (c.access_key_id.clone(), c.secret_access_key.clone()),
        None => (ACCESS_KEY_ID.to_owned(), SECRET_ACCESS_KEY.to_owned()),
    };
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let stream = format!(
        "{}/[$LATEST]{}",
        chrono::Utc::now().format("%Y/%m/%d"),
        super::hex(&rand::random::<[u8; 16]>())
    );
    let task_root = spec.task_root.display().to_string();
    let mut vars: Vec<(String, String)> = [
        ("PATH", path),
        ("TZ", ":UTC".into()),
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.into()),
        ("AWS_LAMBDA_FUNCTION_NAME", spec.name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.memory_size_mb.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", spec.name),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
        ("AWS_REGION", spec.region.clone()),
        ("AWS_DEFAULT_REGION", spec.region.clone()),
        ("_HANDLER", spec.handler.clone()),
        ("LAMBDA_TASK_ROOT", task_root.clone()),
        ("LAMBDA_RUNTIME_DIR", task_root),
        ("AWS_ACCESS_KEY_ID", key_id),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_SESSION_TOKEN", "switchboard-local-session".into()),
        (
            "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI",
            management_url.into(),
        ),
        (MANAGEMENT_URL_VAR, management_url.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(url) = &management.dynamodb_url {
        // The SDKs read these (the JavaScript SDK v3, boto3, the AWS CLI, Go, Java).
        vars.push(("AWS_ENDPOINT_URL_DYNAMODB".into(), url.clone()));
        vars.push(("AWS_ENDPOINT_URL_DYNAMODB_STREAMS".into(), url.clone()));
    }
    if let Some(bundle) = &management.ca_bundle {
        let bundle = bundle.display().to_string();
        for var in [
            "NODE_EXTRA_CA_CERTS",
            "AWS_CA_BUNDLE",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
        ] {
            vars.push((var.to_owned(), bundle.clone()));
        }
    }
    if let Some(redirect) = &management.redirect {
        vars.push((REDIRECT_VAR.to_owned(), redirect.clone()));
    }
    for (k, v) in &spec.env {
        vars.retain(|(existing, _)| existing != k);
        vars.push((k.clone(), v.clone()));
    }
    vars
}

/// Adds a managed runtime's variables to a process's: the function's own win, except that
/// search paths and Node's options are joined (the function's `NODE_OPTIONS` keeps the
/// preload that sends AWS host names to switchboard).
fn merge_launch_env(
    vars: &mut Vec<(String, String)>,
    runtime: &[(String, String)],
    own: &std::collections::BTreeMap<String, String>,
) {
    for (k, v) in runtime {
        let joined = match (own.get(k), k.as_str()) {
            (None, _) => v.clone(),
            (Some(mine), "NODE_OPTIONS") => format!("{v} {mine}"),
            (Some(mine), "NODE_PATH" | "PYTHONPATH") => format!("{mine}:{v}"),
            (Some(_), _) => continue,
        };
        vars.retain(|(existing, _)| existing != k);
        vars.push((k.clone(), joined));
    }
}

/// How a process ended.
enum Exit {
    /// It could not be started.
    SpawnFailed(String),
    /// It exited by itself.
    Exited(ExitStatus),
    /// It was killed at its invocation's deadline.
    TimedOut,
    /// It reported an init error and was killed.
    InitError(CallError),
    /// The server is stopping.
    Stopped,
    /// It was idle for the function's idle timeout and was stopped (on-demand functions).
    Idle,
    /// The code changed while it was idle (or it exited after that): a fresh process takes
    /// the next invocations.
    Reload,
}

impl Exit {
    /// Whether the process ended by itself or failed (a restart), rather than being stopped
    /// on purpose.
    fn restarts(&self) -> bool {
        match self {
            Exit::SpawnFailed(_) | Exit::Exited(_) | Exit::TimedOut | Exit::InitError(_) => true,
            Exit::Stopped | Exit::Idle | Exit::Reload => false,
        }
    }

    /// The error an invocation handled by the process gets, as Lambda reports it.
    fn error(&self, function: &str, request_id: &str) -> CallError {
        match self {
            Exit::SpawnFailed(why) => CallError::Function {
                error_type: "Runtime.InvalidEntrypoint".into(),
                message: why.clone(),
            },
            Exit::Exited(status) => {
                let how = match status.code() {
                    Some(0) => "Runtime exited without providing a reason".to_owned(),
                    Some(code) => format!("Runtime exited with error: exit status {code}"),
                    None => format!("Runtime exited with error: {status}"),
                };
                exit_error(request_id, &how)
            }
            Exit::TimedOut => CallError::Timeout,
            Exit::InitError(error) => error.clone(),
            Exit::Stopped | Exit::Idle | Exit::Reload => {
                CallError::Failed(format!("function {function} has stopped"))
            }
        }
    }
}

/// Runs one environment's processes until the server stops.
#[derive(Debug)]
pub struct Supervisor {
    /// The environment.
    pub env: Arc<Environment>,
    /// Its Runtime API address (`127.0.0.1:port`).
    pub runtime_api: String,
    /// The `@connections` endpoint.
    pub management: Arc<ManagementEndpoint>,
    /// Cancelled when the server stops.
    pub stop: CancellationToken,
    /// Tracks the log forwarders.
    pub tracker: TaskTracker,
}

impl Supervisor {
    /// Starts, watches and restarts the process until `stop` is cancelled. An on-demand
    /// environment starts its process only when an invocation is waiting and no other
    /// process is free, and goes back to waiting when the process idles out.
    pub async fn run(self) {
        let function = self.env.function.clone();
        let spec = &function.spec;
        let on_demand = spec.idle_timeout.is_some();
        let mut failures: u32 = 0;
        loop {
            if on_demand && !self.wait_for_demand().await {
                return;
            }
            self.env.begin(&self.stop);
            let generation = function.code_generation.load(Ordering::SeqCst);
            self.env.code_generation.store(generation, Ordering::SeqCst);
            let exit = match self.start(generation).await {
                Ok(child) => {
                    let metrics = &function.metrics;
                    metrics.cold_starts.fetch_add(1, Ordering::Relaxed);
                    metrics.environments.fetch_add(1, Ordering::Relaxed);
                    let pid = child.id();
                    function.processes(|pids| pids.extend(pid));
                    let exit = self.watch(child, generation).await;
                    function.processes(|pids| pids.retain(|&p| Some(p) != pid));
                    metrics.environments.fetch_sub(1, Ordering::Relaxed);
                    exit
                }
                Err(exit) => exit,
            };
            self.env.started();
            let polled = self.env.polled.load(Ordering::SeqCst);
            let answered = self.env.answered.load(Ordering::SeqCst);
            // Counted before the invocation it held fails, so whoever sees the failure sees it.
            if exit.restarts() {
                function.metrics.restarts.fetch_add(1, Ordering::Relaxed);
            }
            let failed = self.env.end(|id| exit.error(&spec.name, id));
            match exit {
                Exit::Stopped => return,
                Exit::Idle | Exit::Reload => {
                    tracing::debug!(
                        function = %spec.name,
                        process = self.env.index,
                        reason = if matches!(exit, Exit::Idle) { "idle" } else { "code changed" },
                        "process stopped"
                    );
                    failures = 0;
                    continue;
                }
                Exit::TimedOut => {
                    tracing::warn!(
                        function = %spec.name,
                        process = self.env.index,
                        request_id = failed.as_deref().unwrap_or("-"),
                        "task timed out after {:?}; restarting the process",
                        spec.timeout
                    );
                    failures = 0;
                    continue;
                }
                _ => {}
            }
            failures = if answered {
                1
            } else {
                failures.saturating_add(1)
            };
            let delay = backoff(failures);
            tracing::warn!(
                function = %spec.name,
                process = self.env.index,
                request_id = failed.as_deref().unwrap_or("-"),
                error = %exit.error(&spec.name, failed.as_deref().unwrap_or("-")),
                ?delay,
                "function process ended; restarting"
            );
            let fail_waiting = (!polled).then_some(&exit);
            if !self.back_off(delay, fail_waiting).await {
                return;
            }
        }
    }

    /// Waits until this environment should start a process: more invocations are queued
    /// than processes are free or starting and, while another environment runs, one of them
    /// has waited the function's scale-up delay (its last cold start; while the first one is
    /// under way, until it ends). Returns `false` when the server is stopping.
    async fn wait_for_demand(&self) -> bool {
        let function = &self.env.function;
        loop {
            let notified = function.demand.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let running = function.metrics.warm.load(Ordering::SeqCst) > 0
                || function.starting.load(Ordering::SeqCst) > 0;
            // Nothing waits that no process is free to take, or the first cold start is under
            // way (it tells how long one takes): wait for that to change.
            if function.unserved() == 0
                || (running && function.cold_start_us.load(Ordering::SeqCst) == 0)
            {
                tokio::select! {
                    _ = &mut notified => continue,
                    _ = self.stop.cancelled() => return false,
                }
            }
            if running {
                let waiting = function.enqueued.load(Ordering::SeqCst);
                let cpu = CpuTimes::read(function);
                tokio::select! {
                    _ = tokio::time::sleep(function.scale_up_delay()) => {}
                    _ = self.stop.cancelled() => return false,
                }
                if function.dequeued.load(Ordering::SeqCst) >= waiting {
                    // What waited was taken in time by the processes running.
                    continue;
                }
                if cpu.is_some_and(|before| before.cpu_bound_until_now(function)) {
                    // The running processes keep their cores busy and no core is to spare:
                    // another process would not add throughput, only its own start and a
                    // share of the CPU the running ones use.
                    continue;
                }
            }
            let starting = function.starting.load(Ordering::SeqCst);
            let free = function.waiting.load(Ordering::SeqCst) + starting;
            if function.queued() > free
                && function
                    .starting
                    .compare_exchange(starting, starting + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                self.env.starting.store(true, Ordering::SeqCst);
                return true;
            }
        }
    }

    /// Compiles what needs compiling (TypeScript) and starts the process.
    async fn start(&self, generation: u64) -> Result<Child, Exit> {
        if let Some(launch) = self.env.function.launch.get() {
            launch.compile(generation).await.map_err(|message| {
                Exit::InitError(CallError::Function {
                    error_type: "Runtime.UserCodeSyntaxError".into(),
                    message,
                })
            })?;
        }
        self.spawn().map_err(Exit::SpawnFailed)
    }

    fn spawn(&self) -> Result<Child, String> {
        let spec = &self.env.function.spec;
        let launch = self.env.function.launch.get();
        let (program, args) = launch
            .map_or(spec.command.as_slice(), |l| l.command.as_slice())
            .split_first()
            .ok_or_else(|| "the command is empty".to_owned())?;
        let mut vars = environment(spec, &self.runtime_api, &self.management);
        if let Some(launch) = launch {
            merge_launch_env(&mut vars, &launch.env, &spec.env);
        }
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(vars)
            .current_dir(&spec.task_root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let sink = LogSink {
            function: Arc::from(spec.name.as_str()),
            env: self.env.clone(),
            inspector: self.management.inspector.clone(),
        };
        if let Some(out) = child.stdout.take() {
            self.tracker.spawn(forward(out, sink.clone(), "stdout"));
        }
        if let Some(err) = child.stderr.take() {
            self.tracker.spawn(forward(err, sink, "stderr"));
        }
        tracing::debug!(function = %spec.name, process = self.env.index, pid = child.id(), "process started");
        Ok(child)
    }

    async fn watch(&self, mut child: Child, generation: u64) -> Exit {
        let spec = &self.env.function.spec;
        let idle_timeout = spec.idle_timeout.unwrap_or(Duration::MAX);
        let exit = tokio::select! {
            status = child.wait() => match status {
                // A process whose code went stale leaves when it asks for more work.
                Ok(_) if self.env.stale() => Exit::Reload,
                Ok(status) => Exit::Exited(status),
                Err(error) => Exit::SpawnFailed(format!("cannot wait for the process: {error}")),
            },
            _ = self.idle_for(idle_timeout), if spec.idle_timeout.is_some() => Exit::Idle,
            _ = self.stale_and_idle(generation), if spec.watch_code => Exit::Reload,
            _ = self.stop.cancelled() => {
                terminate(&mut child).await;
                return Exit::Stopped;
            }
            _ = self.deadline_passed() => Exit::TimedOut,
            error = self.init_failed() => Exit::InitError(error),
        };
        // Whatever happened, nothing of this process may survive it (a `bootstrap` script's
        // children included): they would keep polling the Runtime API.
        kill_group(&mut child).await;
        exit
    }

    /// Completes when the code changed since `generation` and the process holds no
    /// invocation (it finishes the one it holds first).
    async fn stale_and_idle(&self, generation: u64) {
        let function = &self.env.function;
        loop {
            let notified = function.code_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let idle = self.env.went_idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let changed = function.code_generation.load(Ordering::SeqCst) != generation;
            if changed && self.env.retire_if_idle() {
                return;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = &mut idle, if changed => {}
            }
        }
    }

    /// Completes when the process, past its init, has held no invocation for `timeout`; it
    /// is then retired (a job handed to it meanwhile goes back into the queue). It sleeps until
    /// that time as it stands and looks again then: a busy environment's invocations do not
    /// wake it.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let at = self.env.idle_until(timeout);
            let now = tokio::time::Instant::now();
            if at <= now {
                if self.env.polled.load(Ordering::SeqCst) && self.env.retire_if_idle() {
                    return;
                }
                // Still in its init, or an invocation came meanwhile.
                tokio::time::sleep(timeout).await;
            } else {
                tokio::time::sleep_until(at).await;
            }
        }
    }

    /// Completes when the current invocation's deadline passes. It sleeps until the deadline
    /// of the invocation it sees and looks again then; a later invocation (with a later
    /// deadline) does not wake it, only one handed out while it waits for one or one whose
    /// deadline is earlier (`Environment::hand_out`).
    async fn deadline_passed(&self) {
        loop {
            let handed_out = self.env.handed_out.notified();
            tokio::pin!(handed_out);
            handed_out.as_mut().enable();
            match self.env.watch_deadline() {
                Some(at) if at <= tokio::time::Instant::now() => return,
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = &mut handed_out => {}
                },
                None => handed_out.await,
            }
        }
    }

    /// Completes when the current process posts `/runtime/init/error`. A wake-up left over
    /// from an earlier process finds no error (`begin` clears it) and is ignored.
    async fn init_failed(&self) -> CallError {
        loop {
            self.env.init_failed.notified().await;
            if let Some(error) = self.env.init_error.lock().expect("init error lock").take() {
                return error;
            }
        }
    }

    /// Waits `delay`; meanwhile, if the function has no process past its init, fails waiting
    /// invocations with the error `init_failure` ended with. Returns `false` when the server is
    /// stopping.
    async fn back_off(&self, delay: Duration, init_failure: Option<&Exit>) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let function = &self.env.function;
        loop {
            let fail_waiting =
                init_failure.is_some() && function.metrics.warm.load(Ordering::SeqCst) == 0;
            tokio::select! {
                _ = &mut sleep => return true,
                _ = self.stop.cancelled() => return false,
                job = async { function.jobs.lock().await.recv().await }, if fail_waiting => {
                    if let (Some(job), Some(exit)) = (job, init_failure) {
                        let error = exit.error(&function.spec.name, &job.request_id);
                        let _ = job.reply.send(Err(error));
                    }
                }
            }
        }
    }
}

/// The back-off before restart number `failures` (1-based).
fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    (FIRST_BACKOFF * factor).min(MAX_BACKOFF)
}

/// SIGTERM to the process group, SIGKILL after a grace period.
async fn terminate(child: &mut Child) {
    signal_group(child, Signal::Term);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        kill_group(child).await;
    } else {
        signal_group(child, Signal::Kill);
    }
}

/// SIGKILL to the process group; waits for the process.
async fn kill_group(child: &mut Child) {
    signal_group(child, Signal::Kill);
    let _ = child.start_kill();
    let _ = child.wait().await;
}

enum Signal {
    Term,
    Kill,
}

#[cfg(unix)]
fn signal_group(child: &Child, signal: Signal) {
    use nix::sys::signal::{Signal as S, killpg};
    use nix::unistd::Pid;
    // The group id is the child's pid (`process_group(0)`); it outlives the child as long as
    // a member does.
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let signal = match signal {
            Signal::Term => S::SIGTERM,
            Signal::Kill => S::SIGKILL,
        };
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

#[cfg(not(unix))]
fn signal_group(_child: &Child, _signal: Signal) {}

/// Where a process's output lines go: the log, and the inspector when someone watches.
#[derive(Clone)]
struct LogSink {
    function: Arc<str>,
    env: Arc<Environment>,
    inspector: Option<Arc<crate::inspector::Inspector>>,
}

/// Forwards a process's output to the log, one record per line.
async fn forward(stream: impl AsyncRead + Unpin, sink: LogSink, name: &'static str) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        let (done, used) = match reader.fill_buf().await {
            Ok([]) | Err(_) => {
                emit(&sink, name, &line);
                return;
            }
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&buf[..i]);
                    (true, i + 1)
                }
                None => {
                    let take = buf.len().min(MAX_LOG_LINE - line.len());
                    line.extend_from_slice(&buf[..take]);
                    (line.len() >= MAX_LOG_LINE, take)
                }
            },
        };
        reader.consume(used);
        if done {
            emit(&sink, name, &line);
            line.clear();
        }
    }
}

fn emit(sink: &LogSink, stream: &str, line: &[u8]) {
    if line.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let function = &*sink.function;
    tracing::info!(target: "switchboard::function", function, stream, "{text}");
    if let Some(inspector) = sink.inspector.as_deref().filter(|i| i.is_watched()) {
        // A line printed between invocations (at init, say) belongs to none.
        let request_id = sink.env.current_request_id();
        inspector.function_log(function, request_id.as_deref().unwrap_or("-"), text);
    }
}

/// CPU time from `/proc` (Linux), read before and after an invocation waited: another
/// environment starts for it unless the function's busy processes were using their cores
/// (not waiting on I/O) and no core of the machine was idle.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuTimes {
    /// The machine's idle (and I/O wait) time, summed over the cores, in ticks.
    idle: u64,
    /// The machine's time, summed over the cores, in ticks.
    total: u64,
    /// The machine's cores (the `cpuN` lines: the cores `/proc/stat` counts, whatever this
    /// process's share of them).
    cores: usize,
    /// The function's processes' user and system time, in ticks.
    function: u64,
}

impl CpuTimes {
    /// The times now; `None` where `/proc/stat` does not exist.
    fn read(function: &super::LambdaFunction) -> Option<Self> {
        let (idle, total, cores) = Self::machine(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let function = function.processes(|pids| {
            pids.iter()
                .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
                .filter_map(|stat: String| Self::process(&stat))
                .sum()
        });
        Some(CpuTimes {
            idle,
            total,
            cores,
            function,
        })
    }

    /// Idle and all time from the aggregate `cpu` line of `/proc/stat` (user nice system idle
    /// iowait irq softirq steal; guest time is already in user and nice), and the cores.
    fn machine(stat: &str) -> Option<(u64, u64, usize)> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let cores = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        (fields.len() >= 5).then(|| (fields[3] + fields[4], fields.iter().sum(), cores.max(1)))
    }

    /// utime + stime from a `/proc/PID/stat` line (fields 14 and 15; the command name before
    /// them is in parentheses and may hold spaces).
    fn process(stat: &str) -> Option<u64> {
        let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(utime + stime)
    }

    /// Whether, from these times to `now`, the function's `busy` processes used at least half
    /// a core each while the machine had less than one core idle.
    fn cpu_bound(self, now: CpuTimes, busy: usize) -> bool {
        let Some(total) = now.total.checked_sub(self.total).filter(|&t| t > 0) else {
            return false;
        };
        let per_core = total as f64 / now.cores as f64;
        let idle_cores = now.idle.saturating_sub(self.idle) as f64 / per_core;
        let function_cores = now.function.saturating_sub(self.function) as f64 / per_core;
        function_cores >= 0.5 * busy.max(1) as f64 && idle_cores < 1.0
    }

    fn cpu_bound_until_now(self, function: &super::LambdaFunction) -> bool {
        let busy = function.metrics.busy.load(Ordering::SeqCst) as usize;
        Self::read(function).is_some_and(|now| self.cpu_bound(now, busy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_bound_processes_on_a_busy_machine_hold_back_scale_up() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
        assert_eq!(CpuTimes::machine(stat), Some((850, 1000, 1)));
        assert_eq!(CpuTimes::machine("intr 1\n"), None);
        assert_eq!(CpuTimes::machine("cpu  1 2 x 4 5\n"), None);
        let line = "4321 (node my app.js) S 1 4321 4321 0 -1 4194560 100 0 0 0 250 30 0 0 20 0";
        assert_eq!(CpuTimes::process(line), Some(280));
        assert_eq!(CpuTimes::process("4321 (node) S 1"), None);

        // Two cores, 200 ticks of machine time: 100 per core.
        let before = CpuTimes {
            idle: 0,
            total: 0,
            cores: 2,
            function: 0,
        };
        let at = |idle, function| CpuTimes {
            idle,
            total: 200,
            cores: 2,
            function,
        };
        // One busy process on a core, the other core busy too: held back.
        assert!(before.cpu_bound(at(20, 95), 1));
        // The same with a core idle: another process can use it.
        assert!(!before.cpu_bound(at(100, 95), 1));
        // Busy processes waiting on I/O (a tenth of a core each): they are not the limit.
        assert!(!before.cpu_bound(at(0, 20), 2));
        assert!(!before.cpu_bound(before, 1), "no time passed");
    }

    #[test]
    fn runtime_variables_join_the_functions_own() {
        let mut vars = vec![
            (
                "NODE_OPTIONS".to_owned(),
                "--max-old-space-size=64".to_owned(),
            ),
            ("TZ".to_owned(), ":UTC".to_owned()),
        ];
        let own = [
            (
                "NODE_OPTIONS".to_owned(),
                "--max-old-space-size=64".to_owned(),
            ),
            ("NODE_PATH".to_owned(), "/mine".to_owned()),
            ("SWITCHBOARD_SDK_NODE_MODULES".to_owned(), "/own".to_owned()),
        ]
        .into();
        let runtime = [
            ("NODE_OPTIONS".to_owned(), "--require /r.js".to_owned()),
            ("NODE_PATH".to_owned(), "/sdk".to_owned()),
            ("SWITCHBOARD_SDK_NODE_MODULES".to_owned(), "/sdk".to_owned()),
        ];
        merge_launch_env(&mut vars, &runtime, &own);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("NODE_OPTIONS"),
            Some("--require /r.js --max-old-space-size=64")
        );
        assert_eq!(get("NODE_PATH"), Some("/mine:/sdk"));
        assert_eq!(
            get("SWITCHBOARD_SDK_NODE_MODULES"),
            None,
            "left to environment()"
        );
        assert_eq!(get("TZ"), Some(":UTC"));
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
