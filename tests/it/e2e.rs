//! End to end with the clients users have: `wscat`, the AWS CLI, boto3, and our own binary.
//!
//! These need `wscat`, `aws` and `boto3` installed; `scripts/test.sh` installs them.

use std::process::Stdio;

use crate::common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn require(tool: &str) {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: run ./scripts/test.sh, which installs it"
    );
}

struct Wscat {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Wscat {
    fn spawn(url: &str, extra: &[&str]) -> Self {
        require("wscat");
        let mut child = Command::new("wscat")
            .arg("-c")
            .arg(url)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("wscat starts");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Wscat { child, lines }
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    async fn line(&mut self) -> String {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("wscat prints in time")
            .unwrap()
            .expect("wscat is running");
        // Without a terminal, wscat prints incoming frames after its `> ` prompt.
        line.trim_start_matches("> ").to_owned()
    }
}

#[tokio::test]
async fn both_articles_work_with_wscat() {
    let server = TestServer::start(config()).await;
    let mut browser = server.connect().await;
    browser.chat_id().await;
    let mut wscat = Wscat::spawn(&server.ws_url(), &[]);
    server.wait_for_connections(2).await;

    // Article 2: `message` goes to everyone else.
    wscat
        .send(r#"{"action": "sendmessage", "message": "hello from wscat"}"#)
        .await;
    assert_eq!(browser.recv().await, "hello from wscat");
    // Article 1: `sendMessage` with `data` goes to everyone, the sender included.
    browser
        .send(r#"{ "action": "sendMessage", "data": "hello world" }"#)
        .await;
    assert_eq!(
        wscat.line().await,
        "hello world",
        "wscat did not get its own message first"
    );
    assert_eq!(browser.recv().await, "hello world");
    // Unknown actions get the $default reply.
    wscat.send(r#"{"action": "nope"}"#).await;
    let reply = wscat.line().await;
    assert!(
        reply.starts_with(
            "Use the sendmessage route to send a message. Your info: {\"ConnectedAt\""
        ),
        "{reply}"
    );
}

#[tokio::test]
async fn wscat_execute_mode() {
    let server = TestServer::start(config()).await;
    let mut listener = server.connect().await;
    listener.chat_id().await;
    let mut wscat = Wscat::spawn(
        &server.ws_url(),
        &[
            "-x",
            r#"{"action":"sendmessage","data":"scripted"}"#,
            "-w",
            "1",
        ],
    );
    assert_eq!(listener.recv().await, "scripted");
    assert_eq!(wscat.line().await, "scripted");
    let status = tokio::time::timeout(WAIT, wscat.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

async fn aws(args: &[&str]) -> std::process::Output {
    require("aws");
    let v2 = Command::new("aws")
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).starts_with("aws-cli/2"))
        .unwrap_or(false);
    let mut command = Command::new("aws");
    command
        .arg("apigatewaymanagementapi")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    if v2 && args[0] == "post-to-connection" {
        command.args(["--cli-binary-format", "raw-in-base64-out"]);
    }
    command.output().await.expect("aws runs")
}

#[tokio::test]
async fn the_aws_cli_drives_the_management_api() {
    let server = TestServer::start(config()).await;
    let mut client = server.connect().await;
    let id = client.chat_id().await;
    let endpoint = server.endpoint();
    // One argument: an id may start with `-`, which the AWS CLI would take for an option.
    let id_arg = format!("--connection-id={id}");
    let args = |op: &'static str| vec![op, "--endpoint-url", &endpoint, &id_arg];

    let mut post = args("post-to-connection");
    post.extend(["--data", "pushed by the AWS CLI"]);
    let out = aws(&post).await;
    assert_success(&out);
    assert_eq!(client.recv().await, "pushed by the AWS CLI");

    let out = aws(&args("get-connection")).await;
    assert_success(&out);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Identity"]["SourceIp"], "127.0.0.1");
    assert!(info["ConnectedAt"].is_string());

    let out = aws(&args("delete-connection")).await;
    assert_success(&out);
    assert_eq!(client.expect_close().await.0, 1000);

    let out = aws(&post).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GoneException"), "{stderr}");
}

#[tokio::test]
async fn boto3_drives_the_management_api() {
    let server = TestServer::start(config()).await;
    let mut client = server.connect().await;
    let id = client.chat_id().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/boto3_management.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(server.endpoint())
        .arg(&id)
        .output()
        .await
        .expect("python3 runs");
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(client.recv().await, "hello from boto3");
    assert_eq!(client.recv().await, "text data");
    assert_eq!(client.expect_close().await.0, 1000);
    assert_eq!(v["source_ip"], "127.0.0.1");
    assert_eq!(v["too_large"], "PayloadTooLargeException");
    assert_eq!(v["gone"], 410);
    assert_eq!(v["bad_id"][0], "BadRequestException");
    assert_eq!(v["bad_id"][1], "Invalid connectionId: not-an-id");
}

fn switchboard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    c.kill_on_drop(true);
    c
}

#[tokio::test]
async fn the_switchboard_cli_clients() {
    let server = TestServer::start(config()).await;
    let mut client = server.connect().await;
    let id = client.chat_id().await;

    let out = switchboard()
        .args([
            "connect",
            &server.ws_url(),
            "-x",
            r#"{"action":"sendmessage","data":"via cli"}"#,
            "-w",
            "1",
        ])
        .output()
        .await
        .unwrap();
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Connected (press CTRL+C to quit)"),
        "{stdout}"
    );
    assert!(stdout.contains("< via cli"), "{stdout}");
    assert_eq!(client.recv().await, "via cli");

    let endpoint = server.endpoint();
    let out = switchboard()
        .args([
            "post",
            "--endpoint",
            &endpoint,
            "--connection-id",
            &id,
            "--data",
            "posted",
        ])
        .output()
        .await
        .unwrap();
    assert_success(&out);
    assert_eq!(client.recv().await, "posted");

    let out = switchboard()
        .args(["get", "--endpoint", &endpoint, "--connection-id", &id])
        .output()
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1");

    let out = switchboard()
        .args(["delete", "--endpoint", &endpoint, "--connection-id", &id])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(client.expect_close().await.0, 1000);

    let out = switchboard()
        .args([
            "post",
            "--endpoint",
            &endpoint,
            "--connection-id",
            &id,
            "--data",
            "late",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GoneException (410)"));

    // Piped stdin: every line is sent, and the client exits when stdin ends.
    let mut child = switchboard()
        .args(["connect", &server.ws_url(), "-w", "0.5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"action\":\"sendmessage\",\"data\":\"line one\"}\n")
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("< line one"));
}

#[tokio::test]
async fn sigterm_drains_connections_and_logs_each_one() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr, mut logs) = spawn_binary(data.path(), &[]).await;
    let mut a = Client::connect(&format!("ws://{addr}/dev")).await;
    let id = a.chat_id().await;
    sigterm(&child);
    assert_eq!(a.expect_close().await, (1001, "Going away".to_owned()));
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    while let Ok(Some(line)) = logs.next_line().await {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(log.contains(&format!("id={id}")), "{log}");
    assert!(
        log.contains("disconnected") && log.contains("code=1001"),
        "{log}"
    );
    assert!(data.path().exists());
}

#[tokio::test]
async fn configured_credentials_require_valid_signatures() {
    let mut cfg = config();
    cfg.management_credentials = vec![switchboard::config::Credential {
        access_key_id: "AKIDSWITCHBOARD".into(),
        secret_access_key: "s3cr3t/with+chars".into(),
    }];
    let server = TestServer::start(cfg).await;
    let mut client = server.connect().await;
    let id = client.chat_id().await;

    // boto3 signing with the configured pair works; a wrong secret is refused.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/boto3_signed.py");
    let out = Command::new("python3")
        .args([
            script,
            &server.endpoint(),
            &id,
            "AKIDSWITCHBOARD",
            "s3cr3t/with+chars",
        ])
        .output()
        .await
        .unwrap();
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["get"], "127.0.0.1");
    assert_eq!(
        v["wrong_secret"],
        serde_json::json!(["ForbiddenException", 403])
    );
    assert_eq!(client.recv().await, "signed and verified");

    // The AWS CLI with the pair in its environment works too.
    let out = Command::new("aws")
        .args([
            "apigatewaymanagementapi",
            "get-connection",
            "--endpoint-url",
            &server.endpoint(),
            &format!("--connection-id={id}"),
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDSWITCHBOARD")
        .env("AWS_SECRET_ACCESS_KEY", "s3cr3t/with+chars")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .await
        .unwrap();
    assert_success(&out);

    // Unsigned calls are refused, even from loopback.
    let r = reqwest::Client::new()
        .post(format!(
            "{}/@connections/{}",
            server.endpoint(),
            id.replace('=', "%3D")
        ))
        .body("unsigned")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-amzn-errortype"], "ForbiddenException");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("missing Authentication Token")
    );
}

#[tokio::test]
async fn the_server_keeps_serving_when_its_log_reader_goes_away() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr, logs) = spawn_binary(data.path(), &[]).await;
    // Whoever read the log (a supervisor, a pipe) is gone: every log write now fails.
    drop(logs);
    let mut a = Client::connect(&format!("ws://{addr}/dev")).await;
    a.chat_id().await;
    a.close(1000, "bye").await;
    let mut b = Client::connect(&format!("ws://{addr}/dev")).await;
    b.chat_id().await;
    sigterm(&child);
    assert_eq!(b.expect_close().await.0, 1001);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
