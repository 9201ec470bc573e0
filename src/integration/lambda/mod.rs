//! Lambda functions run by switchboard: the AWS Lambda Runtime API, served locally.
//!
//! A function is a command (a custom-runtime `bootstrap`, a Rust `lambda_runtime` binary, a Go
//! `aws-lambda-go` binary, a script) that polls the Runtime API for invocations, as it does on
//! AWS. Each function runs `concurrency` processes, its *environments*; each environment has its
//! own Runtime API on a loopback port (`AWS_LAMBDA_RUNTIME_API`) and handles one invocation at
//! a time.
//!
//! - [`LambdaFunction::call`] puts an invocation in the function's queue; the next environment
//!   that asks for one (`GET /2018-06-01/runtime/invocation/next`) gets it.
//! - The queue is bounded (`queue_size`): when it is full, the call fails at once (API Gateway
//!   answers a throttled Lambda with an error too: the `Internal server error` frame on message
//!   routes, 502 on `$connect`).
//! - Every invocation has a deadline (the integration timeout, queueing included). A process
//!   still busy with an invocation at its deadline is killed and restarted, as Lambda resets an
//!   environment after a timeout; the call fails with [`CallError::Timeout`].
//! - A process that exits fails the invocation it was handling (`Runtime.ExitError`) and is
//!   started again after a back-off (see [`process`]).
//!
//! [`runtime_api`] serves the Runtime API; [`process`] runs and supervises the processes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::integration::CallError;

pub mod managed;
pub mod process;
pub mod runtime_api;

/// Everything needed to run one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The function name (`AWS_LAMBDA_FUNCTION_NAME`).
    pub name: String,
    /// The program and its arguments; the program is an absolute path or a name on `PATH`.
    pub command: Vec<String>,
    /// Extra environment variables; they win over the ones switchboard sets.
    pub env: BTreeMap<String, String>,
    /// `_HANDLER`.
    pub handler: String,
    /// The working directory and `LAMBDA_TASK_ROOT`.
    pub task_root: PathBuf,
    /// Processes run at once, each handling one invocation at a time.
    pub concurrency: usize,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, in MB (informative: nothing enforces it).
    pub memory_size_mb: u32,
    /// How long an invocation may take, queueing included.
    pub timeout: Duration,
    /// Invocations that may wait for a free process; beyond, calls fail at once.
    pub queue_size: usize,
    /// `AWS_REGION` and the region in the function's ARN.
    pub region: String,
    /// The account id in the function's ARN.
    pub account_id: String,
    /// The Lambda runtime a template named; managed runtimes (`nodejs*`, `python3.*`) run
    /// through switchboard's runtime loop (`command` is empty for them).
    pub runtime: Option<managed::Runtime>,
    /// `Some`: processes start on demand, up to `concurrency`, and one idle this long stops.
    /// `None`: all `concurrency` processes run from the start.
    pub idle_timeout: Option<Duration>,
    /// Whether a change under `task_root` sends new invocations to fresh processes.
    pub watch_code: bool,
}

impl FunctionSpec {
    /// The function's ARN (`Lambda-Runtime-Invoked-Function-Arn`).
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{}",
            self.region, self.account_id, self.name
        )
    }
}

/// One invocation waiting in a function's queue.
struct Job {
    /// The Lambda request id (a UUID).
    request_id: String,
    payload: Bytes,
    deadline: tokio::time::Instant,
    /// The deadline as epoch milliseconds (`Lambda-Runtime-Deadline-Ms`).
    deadline_ms: i64,
    trace_id: String,
    reply: oneshot::Sender<Result<Bytes, CallError>>,
}

/// A function: its specification and its invocation queue.
pub struct LambdaFunction {
    spec: FunctionSpec,
    queue: mpsc::Sender<Job>,
    /// The receiving end, shared by the function's environments.
    jobs: tokio::sync::Mutex<mpsc::Receiver<Job>>,
    /// Processes waiting in `next` for an invocation.
    waiting: std::sync::atomic::AtomicUsize,
    /// On-demand processes started and not yet asking for an invocation.
    starting: std::sync::atomic::AtomicUsize,
    /// Woken when an invocation is queued and no environment is free (on-demand environments
    /// decide whether to start).
    demand: tokio::sync::Notify,
    /// Invocations ever put into the queue and ever taken out of it: the ones waiting at one
    /// moment have all been taken once `dequeued` reaches what `enqueued` was then.
    enqueued: std::sync::atomic::AtomicU64,
    dequeued: std::sync::atomic::AtomicU64,
    /// How long the last process took from its start to its first `GET /next`, in µs (0: none
    /// yet): while an environment runs, an invocation waits this long before another starts.
    cold_start_us: std::sync::atomic::AtomicU64,
    /// The process ids of its running processes.
    pids: std::sync::Mutex<Vec<u32>>,
    /// Bumped when a file under the code directory changes.
    code_generation: std::sync::atomic::AtomicU64,
    /// Woken when `code_generation` changes.
    code_changed: tokio::sync::Notify,
    /// How a managed runtime's process is started (set by `Functions::start`).
    launch: std::sync::OnceLock<managed::Launch>,
    /// Its environments (cold starts, restarts, running, warm, busy) and invocations, for
    /// `/metrics` and the inspector. `warm` also tells the supervisors whether any process got
    /// through its init.
    metrics: Arc<crate::metrics::FunctionMetrics>,
}

impl std::fmt::Debug for LambdaFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaFunction")
            .field("name", &self.spec.name)
            .field("command", &self.spec.command)
            .finish_non_exhaustive()
    }
}

impl LambdaFunction {
    /// A function that is not running yet: calls wait in its queue until [`Functions::start`].
    pub fn new(spec: FunctionSpec) -> Self {
        let (queue, jobs) = mpsc::channel(spec.queue_size.max(1));
        let metrics = Arc::new(crate::metrics::FunctionMetrics {
            name: spec.name.clone(),
            ..Default::default()
        });
        LambdaFunction {
            spec,
            queue,
            jobs: tokio::sync::Mutex::new(jobs),
            waiting: Default::default(),
            starting: Default::default(),
            demand: Default::default(),
            enqueued: Default::default(),
            dequeued: Default::default(),
            cold_start_us: Default::default(),
            pids: Default::default(),
            code_generation: Default::default(),
            code_changed: Default::default(),
            launch: Default::default(),
            metrics,
        }
    }

    /// The function's counters, for `/metrics` and the inspector.
    pub fn metrics(&self) -> &Arc<crate::metrics::FunctionMetrics> {
        &self.metrics
    }

    /// Invocations in the queue.
    fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Runs `f` on the process ids of the function's running processes.
    fn processes<T>(&self, f: impl FnOnce(&mut Vec<u32>) -> T) -> T {
        f(&mut self.pids.lock().expect("process ids lock"))
    }

    /// Invocations in the queue that no process is free (or starting) to take.
    fn unserved(&self) -> usize {
        let free = self.waiting.load(Ordering::SeqCst) + self.starting.load(Ordering::SeqCst);
        self.queued().saturating_sub(free)
    }

    /// Puts `job` into the queue; on-demand environments are woken when no process is free to
    /// take it.
    fn enqueue(&self, job: Job) -> Result<(), mpsc::error::TrySendError<Job>> {
        self.queue.try_send(job)?;
        self.enqueued.fetch_add(1, Ordering::SeqCst);
        // A process waiting in `next` takes the job. Idle on-demand environments are woken only
        // when none is free: waking them all on every call cost a task wake-up each. An
        // environment that leaves without the job passes through `wait_for_demand`, which
        // checks the queue before it waits.
        if self.unserved() > 0 {
            self.demand.notify_waiters();
        }
        Ok(())
    }

    /// How long an invocation waits, while an environment runs, before another environment
    /// starts for it: the function's last cold start (1 ms to 1 s). A warm environment usually
    /// takes it sooner, and a cold start costs a process's start and its code's load, so on a
    /// machine with few cores a burst does not start as many processes as it has invocations.
    fn scale_up_delay(&self) -> std::time::Duration {
        std::time::Duration::from_micros(
            self.cold_start_us
                .load(Ordering::SeqCst)
                .clamp(1_000, 1_000_000),
        )
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The function's specification.
    pub fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    /// Invokes the function with `payload`; the future resolves to the function's result.
    ///
    /// Fails at once when the queue is full; fails with [`CallError::Timeout`] at the deadline;
    /// a function error is [`CallError::Function`].
    pub fn call(
        &self,
        payload: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Bytes, CallError>> + Send + 'static {
        let deadline = tokio::time::Instant::now() + self.spec.timeout;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request_id: crate::management::request_uuid(),
            payload: Bytes::from(payload),
            deadline,
            deadline_ms: crate::time::now_ms() + self.spec.timeout.as_millis() as i64,
            trace_id: trace_id(),
            reply,
        };
        let queued = self.enqueue(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => CallError::Failed(format!(
                "function {}: {} invocations are already waiting; try again later",
                self.spec.name, self.spec.queue_size
            )),
            mpsc::error::TrySendError::Closed(_) => {
                CallError::Failed(format!("function {} has stopped", self.spec.name))
            }
        });
        let name = self.spec.name.clone();
        async move {
            queued?;
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(CallError::Failed(format!("function {name} has stopped"))),
                Err(_) => Err(CallError::Timeout),
            }
        }
    }
}

/// Every function of a server, started and stopped together.
#[derive(Debug, Default, Clone)]
pub struct Functions {
    list: Vec<Arc<LambdaFunction>>,
    stop: CancellationToken,
    tracker: TaskTracker,
    /// Where managed runtimes keep their loops, SDK caches and builds.
    data_dir: PathBuf,
}

impl Functions {
    /// Adds a function (before [`start`](Self::start)).
    pub fn push(&mut self, function: Arc<LambdaFunction>) {
        self.list.push(function);
    }

    /// Sets the data directory managed runtimes use (`runtimes/`, `sdk/`, `build/`).
    pub fn set_data_dir(&mut self, data_dir: PathBuf) {
        self.data_dir = data_dir;
    }

    /// Every function's counters, for `/metrics` and the inspector.
    pub fn metrics(&self) -> Vec<Arc<crate::metrics::FunctionMetrics>> {
        self.list.iter().map(|f| f.metrics.clone()).collect()
    }

    /// Whether a function runs on a managed runtime (Node.js, Python).
    pub fn has_managed(&self) -> bool {
        self.list
            .iter()
            .any(|f| f.spec.runtime.is_some_and(managed::Runtime::is_managed))
    }

    /// How many functions there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are no functions.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Starts every function's environments. `management` is the `@connections` endpoint the
    /// functions are given (`AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI`) and the key pair they
    /// sign with.
    /// Managed runtimes are prepared first (runtime loops written, the SDK installed when a
    /// function lacks it, TypeScript compiled): a failure there stops the start.
    pub async fn start(&self, management: process::ManagementEndpoint) -> std::io::Result<()> {
        let management = Arc::new(management);
        for function in &self.list {
            if let Some(runtime) = function.spec.runtime.filter(|r| r.is_managed()) {
                let launch = managed::prepare(&function.spec, runtime, &self.data_dir)
                    .await
                    .map_err(|e| {
                        std::io::Error::other(format!("function {}: {e}", function.spec.name))
                    })?;
                let _ = function.launch.set(launch);
            }
            if function.spec.watch_code {
                self.tracker.spawn(managed::watch_code(
                    function.clone(),
                    self.stop.clone(),
                    self.data_dir.clone(),
                ));
            }
        }
        for function in &self.list {
            for index in 0..function.spec.concurrency {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let runtime_api = listener.local_addr()?.to_string();
                let env = Arc::new(runtime_api::Environment::new(function.clone(), index));
                let router = runtime_api::router(env.clone());
                let stop = self.stop.clone();
                self.tracker.spawn(async move {
                    let serve = axum::serve(listener, router)
                        .with_graceful_shutdown(stop.cancelled_owned());
                    if let Err(error) = serve.await {
                        tracing::error!(%error, "the Runtime API server failed");
                    }
                });
                let supervisor = process::Supervisor {
                    env,
                    runtime_api,
                    management: management.clone(),
                    stop: self.stop.clone(),
                    tracker: self.tracker.clone(),
                };
                self.tracker.spawn(supervisor.run());
            }
            tracing::info!(
                function = %function.spec.name,
                processes = function.spec.concurrency,
                on_demand = function.spec.idle_timeout.is_some(),
                "function started"
            );
        }
        Ok(())
    }

    /// Stops every process (SIGTERM, then SIGKILL after a grace period) and waits for them.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// An X-Ray trace header as Lambda passes it (`Lambda-Runtime-Trace-Id`).
fn trace_id() -> String {
    let root = crate::event::new_trace_id(crate::time::now_ms());
    let parent: [u8; 8] = rand::random();
    format!("{root};Parent={};Sampled=0", hex(&parent))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn spec(queue_size: usize) -> FunctionSpec {
        FunctionSpec {
            name: "f".into(),
            command: vec!["true".into()],
            env: BTreeMap::new(),
            handler: "h".into(),
            task_root: PathBuf::from("/"),
            concurrency: 1,
            memory_size_mb: 128,
            timeout: Duration::from_secs(5),
            queue_size,
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            runtime: None,
            idle_timeout: None,
            watch_code: false,
        }
    }

    #[test]
    fn ids_look_like_lambdas() {
        assert!(trace_id().starts_with("Root=1-"));
        assert_eq!(
            spec(1).arn(),
            "arn:aws:lambda:us-east-1:123456789012:function:f"
        );
    }

    #[tokio::test]
    async fn a_full_queue_fails_at_once() {
        let f = LambdaFunction::new(spec(2));
        let _waiting = [f.call(b"1".to_vec()), f.call(b"2".to_vec())];
        let third = f.call(b"3".to_vec()).await.unwrap_err();
        assert!(
            third
                .to_string()
                .contains("2 invocations are already waiting"),
            "{third}"
        );
    }
}
