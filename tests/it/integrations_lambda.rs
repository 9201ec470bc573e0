//! Lambda integrations against the real server with real processes: a Python custom runtime
//! (`tests/functions/runtime.py`) and the shell `bootstrap` example speak the Runtime API.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::integrations_common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard::config::FileConfig;

/// A server whose `$default` route (two-way) runs the Python function with `extra` keys.
async fn server_with(extra: &str) -> TestServer {
    let config = api_config(&format!(
        "[routes.\"$default\"]\nintegration = {}\nroute_response = \"$default\"\n",
        python(extra)
    ));
    TestServer::start(config).await
}

async fn pid(c: &mut Client) -> u32 {
    c.send(r#"{"action":"pid"}"#).await;
    c.recv().await.parse().unwrap()
}

#[tokio::test]
async fn functions_get_lambdas_environment_and_invocation_headers() {
    let server = server_with(r#"function_name = "envcheck", handler = "app.handler", memory_size_mb = 256, env = { GREETING = "hi", AWS_REGION = "eu-west-3" }"#).await;
    let mut c = server.connect().await;
    let keys = [
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "_HANDLER",
        "LAMBDA_TASK_ROOT",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI",
        "SWITCHBOARD_MANAGEMENT_URL",
        "GREETING",
        "HOME",
    ];
    c.send_json(json!({"action": "env", "keys": keys})).await;
    let reply: Value = serde_json::from_str(&c.recv().await).unwrap();
    let env = &reply["env"];
    let runtime_api = env["AWS_LAMBDA_RUNTIME_API"].as_str().unwrap();
    assert!(runtime_api.starts_with("127.0.0.1:"), "{runtime_api}");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "envcheck");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/envcheck");
    assert!(
        env["AWS_LAMBDA_LOG_STREAM_NAME"]
            .as_str()
            .unwrap()
            .contains("/[$LATEST]")
    );
    // `env` wins over what switchboard sets.
    assert_eq!(env["AWS_REGION"], "eu-west-3");
    assert_eq!(env["AWS_DEFAULT_REGION"], "us-east-1");
    assert_eq!(env["_HANDLER"], "app.handler");
    let task_root = functions_dir();
    assert_eq!(env["LAMBDA_TASK_ROOT"], task_root.display().to_string());
    assert_eq!(reply["cwd"], task_root.display().to_string());
    assert!(!env["AWS_ACCESS_KEY_ID"].as_str().unwrap().is_empty());
    assert!(!env["AWS_SECRET_ACCESS_KEY"].as_str().unwrap().is_empty());
    assert!(!env["AWS_SESSION_TOKEN"].as_str().unwrap().is_empty());
    assert_eq!(
        env["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"],
        server.endpoint()
    );
    assert_eq!(env["SWITCHBOARD_MANAGEMENT_URL"], server.endpoint());
    assert_eq!(env["GREETING"], "hi");
    // Like Lambda, the function does not inherit switchboard's environment.
    assert_eq!(env["HOME"], Value::Null);

    let h = &reply["headers"];
    let id = h["lambda-runtime-aws-request-id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
    let deadline: i64 = h["lambda-runtime-deadline-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = crate::common::now_ms();
    assert!(
        deadline > now && deadline <= now + 29_000,
        "{deadline} vs {now}"
    );
    assert_eq!(
        h["lambda-runtime-invoked-function-arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:envcheck"
    );
    assert!(
        h["lambda-runtime-trace-id"]
            .as_str()
            .unwrap()
            .starts_with("Root=1-")
    );

    // The payload is the API Gateway proxy event.
    let event = &reply["event"];
    assert_eq!(event["requestContext"]["eventType"], "MESSAGE");
    assert_eq!(event["requestContext"]["routeKey"], "$default");
    assert_eq!(
        event["requestContext"]["domainName"],
        server.addr.to_string()
    );
}

#[tokio::test]
async fn function_errors_and_invalid_results_are_internal_server_errors() {
    let server = server_with("").await;
    let mut c = server.connect().await;
    c.send(r#"{"action":"fail"}"#).await;
    internal_error(&c.recv_json().await);
    c.send(r#"{"action":"not-json"}"#).await;
    internal_error(&c.recv_json().await);
    c.send(r#"{"action":"echo","data":"fine"}"#).await;
    assert_eq!(c.recv().await, "fine");
}

#[tokio::test]
async fn a_crashed_process_fails_its_invocation_and_is_restarted() {
    let server = server_with("").await;
    let mut c = server.connect().await;
    let first = pid(&mut c).await;
    let started = Instant::now();
    c.send(r#"{"action":"crash"}"#).await;
    internal_error(&c.recv_json().await);
    // The exit is noticed at once, not at the 29 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let second = pid(&mut c).await;
    assert_ne!(first, second, "a new process answers");
    c.send(r#"{"action":"echo","data":"back"}"#).await;
    assert_eq!(c.recv().await, "back");
}

#[tokio::test]
async fn a_timed_out_invocation_resets_the_process() {
    // The deadline counts the wait for a new process to start (queueing included), which took
    // over a second for Python with the whole suite on two busy cores; 3 s leaves room for it
    // and is still far from the function's 30 s.
    let server = server_with("timeout_ms = 3000").await;
    let mut c = server.connect().await;
    let first = pid(&mut c).await;
    let started = Instant::now();
    c.send(r#"{"action":"sleep","seconds":30}"#).await;
    assert!(c.recv().await.starts_with("started"));
    internal_error(&c.recv_json().await);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The stuck process was killed; a new one serves.
    let second = pid(&mut c).await;
    assert_ne!(first, second);
}

#[tokio::test]
async fn concurrency_runs_invocations_in_separate_processes() {
    let server = server_with("concurrency = 2").await;
    let mut c = server.connect().await;
    c.send(r#"{"action":"pid","sleep":1}"#).await;
    c.send(r#"{"action":"pid","sleep":1}"#).await;
    let a: u32 = c.recv().await.parse().unwrap();
    let b: u32 = c.recv().await.parse().unwrap();
    assert_ne!(a, b, "two processes each took one invocation");
}

#[tokio::test]
async fn a_full_invocation_queue_fails_at_once() {
    let server = server_with("concurrency = 1, queue_size = 1").await;
    let mut c = server.connect().await;
    // The only process is busy with the first invocation once it says so...
    c.send(r#"{"action":"sleep","seconds":1,"tag":"one"}"#)
        .await;
    assert_eq!(c.recv().await, "started one");
    // ...the second waits in the queue, the third finds the queue full.
    c.send(r#"{"action":"sleep","seconds":0,"tag":"two"}"#)
        .await;
    c.send(r#"{"action":"echo","data":"three"}"#).await;
    internal_error(&c.recv_json().await);
    assert_eq!(c.recv().await, "slept one");
    assert_eq!(c.recv().await, "started two");
    assert_eq!(c.recv().await, "slept two");
}

#[tokio::test]
async fn init_errors_fail_invocations_without_waiting_for_the_deadline() {
    let server = server_with(r#"env = { FAIL_INIT = "1" }"#).await;
    let mut c = server.connect().await;
    for _ in 0..2 {
        let started = Instant::now();
        c.send(r#"{"action":"echo","data":"x"}"#).await;
        internal_error(&c.recv_json().await);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn output_goes_to_the_log_with_the_function_name() {
    let logs = Logs::capture();
    let server = server_with(r#"function_name = "chatty""#).await;
    let mut c = server.connect().await;
    c.send(r#"{"action":"print","text":"a line"}"#).await;
    assert_eq!(c.recv().await, "printed");
    let out = logs.wait_for(|l| l.contains("to stdout: a line")).await;
    assert!(
        out.contains("function=\"chatty\"") || out.contains("function=chatty"),
        "{out}"
    );
    assert!(
        out.contains("stream=\"stdout\"") || out.contains("stream=stdout"),
        "{out}"
    );
    let err = logs.wait_for(|l| l.contains("to stderr: a line")).await;
    assert!(err.contains("chatty"), "{err}");
}

#[tokio::test]
async fn functions_reach_back_through_the_management_api() {
    let server = server_with("").await;
    let mut c = server.connect().await;
    c.send(r#"{"action":"reach-back"}"#).await;
    let mut got = vec![c.recv().await, c.recv().await, c.recv().await];
    got.sort();
    assert_eq!(
        got,
        [
            "via AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI",
            "via SWITCHBOARD_MANAGEMENT_URL",
            "via domainName/stage"
        ]
    );
}

#[tokio::test]
async fn lifecycle_routes_run_in_lambda_and_processes_stop_with_the_server() {
    let markers = tempfile::tempdir().unwrap();
    let function = python(&format!(
        r#"function_name = "lifecycle", env = {{ MARKER_DIR = "{}" }}"#,
        markers.path().display()
    ));
    let config = api_config(&format!(
        r#"
        [routes."$connect"]
        integration = {function}
        [routes."$disconnect"]
        integration = {function}
        [routes."$default"]
        integration = {function}
        route_response = "$default"
        "#
    ));
    let mut server = TestServer::start(config).await;
    let refused = upgrade_request(server.addr, "/dev?status=403", &[]);
    assert_eq!(status_of(&raw_request(server.addr, &refused).await.0), 403);
    // The function crashes on a status that is not a number: 502, and it is restarted.
    let crashing = upgrade_request(server.addr, "/dev?status=oops", &[]);
    assert_eq!(status_of(&raw_request(server.addr, &crashing).await.0), 502);
    let mut c = server.connect().await;
    let pid = pid(&mut c).await;
    c.send(r#"{"action":"env","keys":[]}"#).await;
    let reply: Value = serde_json::from_str(&c.recv().await).unwrap();
    let id = reply["event"]["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    // Shutdown: the drain runs `$disconnect` in the function, then the process is stopped.
    let stopping = tokio::spawn(async move { server.stop().await });
    assert_eq!(c.expect_close().await.0, 1001);
    // Reading on sends the client's answer to the close.
    while c.ws.next().await.is_some() {}
    stopping.await.unwrap().unwrap();
    let marker = std::fs::read_to_string(markers.path().join(format!("disconnect-{id}"))).unwrap();
    let event: Value = serde_json::from_str(&marker).unwrap();
    assert_eq!(event["requestContext"]["disconnectStatusCode"], 1001);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is gone"
    );
}

#[tokio::test]
async fn a_shell_bootstrap_runs_as_on_aws() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let file = FileConfig::load(&examples.join("bash-bootstrap.toml")).unwrap();
    let mut config = config();
    config.api = file.definition(&examples);
    let server = TestServer::start(config).await;
    let mut c = server.connect().await;
    c.send("hi").await;
    let reply = c.recv().await;
    assert!(
        reply.starts_with("hello from bash-hello: your event had "),
        "{reply}"
    );
}
