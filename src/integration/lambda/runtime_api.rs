//! The AWS Lambda Runtime API (`2018-06-01`) for one environment.
//!
//! - `GET  /2018-06-01/runtime/invocation/next`: waits for the next invocation; the event is
//!   the body, with `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms`,
//!   `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id`.
//! - `POST /2018-06-01/runtime/invocation/{id}/response`: the result (at most 6 MB).
//! - `POST /2018-06-01/runtime/invocation/{id}/error`: a function error,
//!   `{"errorMessage", "errorType"}`, or the `Lambda-Runtime-Function-Error-Type` header.
//! - `POST /2018-06-01/runtime/init/error`: the runtime could not start; the process is killed
//!   and started again.
//!
//! Answers are Lambda's: 202 `{"status":"OK"}`; 400 `InvalidRequestID` for an id that is not
//! the environment's current invocation; 413 `RequestEntityTooLarge`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Job, LambdaFunction};
use crate::integration::CallError;

/// Largest response or error a function may post, as on Lambda (6 MB).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// The invocation an environment's process is handling.
struct Current {
    request_id: String,
    reply: tokio::sync::oneshot::Sender<Result<bytes::Bytes, CallError>>,
    deadline: tokio::time::Instant,
}

struct Slot {
    /// Bumped each time a process ends: a stale `next` cannot hand out work for a process that
    /// is gone.
    generation: u64,
    current: Option<Current>,
    /// Cancelled when the current process ends.
    token: CancellationToken,
    /// When the current process was started (its cold start ends at its first `next`).
    began: tokio::time::Instant,
    /// When the current process last asked for an invocation (or started): its idle time
    /// counts from there while it holds none.
    idle_since: tokio::time::Instant,
    /// The deadline the supervisor sleeps until before it looks at the current invocation
    /// again (`None`: it waits for one to be handed out).
    watched: Option<tokio::time::Instant>,
}

/// One environment: what its Runtime API and its supervisor share.
pub struct Environment {
    pub(super) function: Arc<LambdaFunction>,
    pub(super) index: usize,
    slot: Mutex<Slot>,
    /// Woken when an invocation is handed out whose deadline the supervisor would not wake up
    /// for (`Slot::watched`): not on every invocation, so a busy environment's supervisor
    /// sleeps through them.
    pub(super) handed_out: Notify,
    /// Woken when the current invocation ends (answered, abandoned, its process gone); only a
    /// supervisor waiting to reload the code listens.
    pub(super) went_idle: Notify,
    /// Whether the current process asked for an invocation (it got through its init).
    pub(super) polled: AtomicBool,
    /// Whether the current process answered an invocation (response or function error).
    pub(super) answered: AtomicBool,
    /// Set by `POST /runtime/init/error`.
    pub(super) init_error: Mutex<Option<CallError>>,
    pub(super) init_failed: Notify,
    /// Whether the current process counts in the function's `starting` (started on demand,
    /// not yet asking for an invocation).
    pub(super) starting: AtomicBool,
    /// The function's code generation the current process started with.
    pub(super) code_generation: AtomicU64,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("function", &self.function.spec.name)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Environment {
    /// Environment `index` of `function`.
    pub fn new(function: Arc<LambdaFunction>, index: usize) -> Self {
        Environment {
            function,
            index,
            slot: Mutex::new(Slot {
                generation: 0,
                current: None,
                token: CancellationToken::new(),
                began: tokio::time::Instant::now(),
                idle_since: tokio::time::Instant::now(),
                watched: None,
            }),
            handed_out: Notify::new(),
            went_idle: Notify::new(),
            polled: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            init_error: Mutex::new(None),
            init_failed: Notify::new(),
            starting: AtomicBool::new(false),
            code_generation: AtomicU64::new(0),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().expect("environment lock")
    }

    /// Starts a new process generation; the token is cancelled when it ends.
    pub(super) fn begin(&self, stop: &CancellationToken) -> CancellationToken {
        let token = stop.child_token();
        {
            let mut slot = self.slot();
            slot.token = token.clone();
            slot.began = tokio::time::Instant::now();
            slot.idle_since = slot.began;
        }
        self.polled.store(false, Ordering::SeqCst);
        self.answered.store(false, Ordering::SeqCst);
        *self.init_error.lock().expect("init error lock") = None;
        token
    }

    /// Ends the current generation: its `next` calls stop waiting, and the invocation it was
    /// handling (if any) fails with `error(request_id)`. Returns the failed invocation's id.
    pub(super) fn end(&self, error: impl FnOnce(&str) -> CallError) -> Option<String> {
        let current = {
            let mut slot = self.slot();
            slot.generation += 1;
            slot.token.cancel();
            self.finish(&mut slot)
        };
        if self.polled.swap(false, Ordering::SeqCst) {
            self.function.metrics.warm.fetch_sub(1, Ordering::SeqCst);
        }
        current.map(|c| {
            let _ = c.reply.send(Err(error(&c.request_id)));
            c.request_id
        })
    }

    /// Takes the current invocation out of `slot`, however it ends (answered, abandoned, its
    /// process gone): the process is no longer busy.
    fn finish(&self, slot: &mut Slot) -> Option<Current> {
        let current = slot.current.take();
        if current.is_some() {
            self.function.metrics.busy.fetch_sub(1, Ordering::Relaxed);
            self.went_idle.notify_waiters();
        }
        current
    }

    /// The request id of the invocation the current process holds, if any.
    pub(crate) fn current_request_id(&self) -> Option<String> {
        self.slot().current.as_ref().map(|c| c.request_id.clone())
    }

    /// The current invocation's deadline, which the supervisor now sleeps until (`None`: it
    /// holds none, and the supervisor waits for `handed_out`).
    pub(super) fn watch_deadline(&self) -> Option<tokio::time::Instant> {
        let mut slot = self.slot();
        slot.watched = slot.current.as_ref().map(|c| c.deadline);
        slot.watched
    }

    /// When the current process has been idle for `timeout`, as it stands: it holds no
    /// invocation and asked for none since then. A busy process is `timeout` from now at the
    /// earliest.
    pub(super) fn idle_until(&self, timeout: std::time::Duration) -> tokio::time::Instant {
        let slot = self.slot();
        match slot.current {
            Some(_) => tokio::time::Instant::now() + timeout,
            None => slot.idle_since + timeout,
        }
    }

    /// The current process no longer counts as starting (it asked for work, or it ended).
    pub(super) fn started(&self) {
        if self.starting.swap(false, Ordering::SeqCst) {
            self.function.starting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Ends the current process's right to work if it holds no invocation: a `next` waiting
    /// for one returns, and a job it receives meanwhile goes back into the queue. Returns
    /// whether it was idle.
    pub(super) fn retire_if_idle(&self) -> bool {
        let mut slot = self.slot();
        if slot.current.is_some() {
            return false;
        }
        slot.generation += 1;
        slot.token.cancel();
        true
    }

    /// Whether the code changed since the current process started.
    pub(super) fn stale(&self) -> bool {
        self.function.spec.watch_code
            && self.code_generation.load(Ordering::SeqCst)
                != self.function.code_generation.load(Ordering::SeqCst)
    }

    /// Makes `job` the current invocation, unless its process has ended meanwhile (then the
    /// job goes back into the queue for another process).
    fn hand_out(&self, job: Job, generation: u64) -> Option<Bytes> {
        let mut slot = self.slot();
        if slot.generation != generation {
            drop(slot);
            match self.function.enqueue(job) {
                Ok(()) => {}
                Err(e) => {
                    let job = e.into_inner();
                    let _ = job
                        .reply
                        .send(Err(exit_error(&job.request_id, "the runtime exited")));
                }
            }
            return None;
        }
        let metrics = &self.function.metrics;
        metrics.invocations.fetch_add(1, Ordering::Relaxed);
        let previous = slot.current.replace(Current {
            request_id: job.request_id,
            reply: job.reply,
            deadline: job.deadline,
        });
        // A runtime asking twice at once loses the first invocation (its caller is told the
        // function stopped); the process stays busy once.
        if previous.is_none() {
            metrics.busy.fetch_add(1, Ordering::Relaxed);
        }
        // Invocations leave the queue in the order they entered it with the same timeout, so
        // a later one's deadline is later: the supervisor, asleep until an earlier one's, looks
        // again in time. Only one it is not asleep for (it waits for one, or the job was put
        // back into the queue) wakes it.
        if slot.watched.is_none_or(|watched| job.deadline < watched) {
            self.handed_out.notify_waiters();
        }
        Some(job.payload)
    }

    /// Takes the current invocation if its id is `id`.
    fn take(&self, id: &str) -> Option<Current> {
        let mut slot = self.slot();
        if slot.current.as_ref().is_some_and(|c| c.request_id == id) {
            self.finish(&mut slot)
        } else {
            None
        }
    }
}

/// The error Lambda reports for an invocation whose runtime process exited.
pub(super) fn exit_error(request_id: &str, how: &str) -> CallError {
    CallError::Function {
        error_type: "Runtime.ExitError".into(),
        message: format!("RequestId: {request_id} Error: {how}"),
    }
}

/// The Runtime API of one environment.
pub fn router(env: Arc<Environment>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(env)
}

/// Counts a process waiting in `next` for as long as it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

fn lambda_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn next(State(env): State<Arc<Environment>>) -> Response {
    let (generation, token, began, abandoned) = {
        let mut slot = env.slot();
        let abandoned = env.finish(&mut slot);
        // Waiting starts the idle clock over.
        slot.idle_since = tokio::time::Instant::now();
        (slot.generation, slot.token.clone(), slot.began, abandoned)
    };
    if let Some(abandoned) = abandoned {
        let _ = abandoned.reply.send(Err(CallError::Failed(format!(
            "the runtime asked for the next invocation without answering {}",
            abandoned.request_id
        ))));
    }
    if !env.polled.swap(true, Ordering::SeqCst) {
        // Before `warm` counts it: a supervisor that sees a warm environment reads the delay.
        let cold_start = began.elapsed().as_micros().max(1) as u64;
        env.function
            .cold_start_us
            .store(cold_start, Ordering::SeqCst);
        env.function.metrics.warm.fetch_add(1, Ordering::SeqCst);
        // Supervisors waiting for the first cold start to end decide again.
        env.function.demand.notify_waiters();
    }
    let waiting = Waiting::new(&env.function.waiting);
    env.started();
    let stopped = || {
        lambda_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.Stopped",
            "the environment is shutting down",
        )
    };
    // A process started before the code changed takes no new work: it exits, and the
    // supervisor starts a fresh one when there is work.
    if env.stale() {
        return stopped();
    }
    let job = loop {
        let received = {
            let mut jobs = tokio::select! {
                jobs = env.function.jobs.lock() => jobs,
                _ = token.cancelled() => return stopped(),
            };
            tokio::select! {
                job = jobs.recv() => job,
                _ = token.cancelled() => return stopped(),
            }
        };
        let Some(job) = received else {
            return stopped();
        };
        env.function.dequeued.fetch_add(1, Ordering::SeqCst);
        // The caller gave up (timed out, or its connection closed) while the job waited.
        if job.reply.is_closed() || job.deadline <= tokio::time::Instant::now() {
            continue;
        }
        break job;
    };
    drop(waiting);
    let mut headers = HeaderMap::new();
    let spec = &env.function.spec;
    let values = [
        ("lambda-runtime-aws-request-id", job.request_id.clone()),
        ("lambda-runtime-deadline-ms", job.deadline_ms.to_string()),
        ("lambda-runtime-invoked-function-arn", spec.arn()),
        ("lambda-runtime-trace-id", job.trace_id.clone()),
        ("content-type", "application/json".to_owned()),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    tracing::debug!(function = %spec.name, request_id = %job.request_id, "invocation handed out");
    match env.hand_out(job, generation) {
        Some(payload) => (StatusCode::OK, headers, payload).into_response(),
        None => stopped(),
    }
}

async fn response(
    State(env): State<Arc<Environment>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_RESPONSE_BYTES).await else {
        let message = format!(
            "Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
        );
        if let Some(current) = env.take(&id) {
            let _ = current.reply.send(Err(CallError::Function {
                error_type: "Function.ResponseSizeTooLarge".into(),
                message: message.clone(),
            }));
        }
        return lambda_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &message,
        );
    };
    match env.take(&id) {
        Some(current) => {
            env.answered.store(true, Ordering::SeqCst);
            let _ = current.reply.send(Ok(body));
            accepted()
        }
        None => invalid_request_id(),
    }
}

fn invalid_request_id() -> Response {
    lambda_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        "Invalid request ID",
    )
}

#[derive(Deserialize)]
struct ErrorRequest {
    #[serde(rename = "errorMessage")]
    error_message: Option<serde_json::Value>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
}

/// `errorType` and `errorMessage` of a posted error, as Lambda reads them.
fn function_error(headers: &HeaderMap, body: &[u8]) -> CallError {
    let parsed: Option<ErrorRequest> = serde_json::from_slice(body).ok();
    let header_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (error_type, message) = match parsed {
        Some(e) => (
            e.error_type,
            match e.error_message {
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => String::new(),
            },
        ),
        None => (None, String::from_utf8_lossy(body).into_owned()),
    };
    CallError::Function {
        error_type: error_type
            .or(header_type)
            .unwrap_or_else(|| "Unhandled".into()),
        message,
    }
}

async fn error(
    State(env): State<Arc<Environment>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = axum::body::to_bytes(body, MAX_RESPONSE_BYTES)
        .await
        .unwrap_or_default();
    let error = function_error(&headers, &body);
    match env.take(&id) {
        Some(current) => {
            env.answered.store(true, Ordering::SeqCst);
            tracing::warn!(function = %env.function.spec.name, request_id = %id, %error, "function error");
            let _ = current.reply.send(Err(error));
            accepted()
        }
        None => invalid_request_id(),
    }
}

async fn init_error(
    State(env): State<Arc<Environment>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = axum::body::to_bytes(body, MAX_RESPONSE_BYTES)
        .await
        .unwrap_or_default();
    let error = function_error(&headers, &body);
    tracing::warn!(function = %env.function.spec.name, %error, "function init error");
    *env.init_error.lock().expect("init error lock") = Some(error);
    env.init_failed.notify_one();
    accepted()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;
    use tokio::time::Instant;

    use super::*;

    fn job(
        id: &str,
        deadline: Instant,
    ) -> (
        Job,
        tokio::sync::oneshot::Receiver<Result<Bytes, CallError>>,
    ) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            request_id: id.to_owned(),
            payload: Bytes::from_static(b"{}"),
            deadline,
            deadline_ms: 0,
            trace_id: String::new(),
            reply,
        };
        (job, answer)
    }

    #[tokio::test]
    async fn the_supervisor_wakes_only_for_a_deadline_it_does_not_sleep_until() {
        let function = Arc::new(LambdaFunction::new(super::super::tests::spec(4)));
        let env = Environment::new(function, 0);
        env.begin(&CancellationToken::new());
        let generation = env.slot().generation;
        let now = Instant::now();
        let woken = |env: &Environment, job: Job| {
            let mut handed_out = Box::pin(env.handed_out.notified());
            handed_out.as_mut().enable();
            assert!(env.hand_out(job, generation).is_some());
            handed_out.now_or_never().is_some()
        };

        // Waiting for an invocation (nothing watched yet): the first one wakes it.
        assert_eq!(env.watch_deadline(), None);
        let (a, _a) = job("a", now + Duration::from_secs(10));
        assert!(woken(&env, a));
        assert_eq!(env.watch_deadline(), Some(now + Duration::from_secs(10)));
        assert!(env.take("a").is_some());
        // A later deadline: it sleeps on, and finds this one when it wakes.
        let (b, _b) = job("b", now + Duration::from_secs(20));
        assert!(!woken(&env, b));
        assert_eq!(env.watch_deadline(), Some(now + Duration::from_secs(20)));
        assert!(env.take("b").is_some());
        // An earlier one (a job put back into the queue) wakes it.
        let (c, _c) = job("c", now + Duration::from_secs(5));
        assert!(woken(&env, c));
        // Idle from the last `next`; busy, from now at the earliest.
        let timeout = Duration::from_secs(60);
        assert!(env.idle_until(timeout) >= Instant::now() + timeout - Duration::from_millis(1));
        assert!(env.take("c").is_some());
        assert!(env.idle_until(timeout) <= now + timeout);
    }

    #[test]
    fn function_errors_are_read_like_lambda() {
        let mut h = HeaderMap::new();
        let e = function_error(&h, br#"{"errorMessage":"boom","errorType":"Oops"}"#);
        assert_eq!(e.to_string(), "Oops: boom");
        h.insert(
            "lambda-runtime-function-error-type",
            HeaderValue::from_static("Custom"),
        );
        assert_eq!(
            function_error(&h, br#"{"errorMessage":"x"}"#).to_string(),
            "Custom: x"
        );
        assert_eq!(
            function_error(&HeaderMap::new(), b"plain").to_string(),
            "Unhandled: plain"
        );
    }
}
