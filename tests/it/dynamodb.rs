//! DynamoDB-compatible tables on the gateway's listener, driven by real clients: boto3, the
//! JavaScript SDKs v3 and v2, the AWS CLI (scripts in `tests/dynamodb/`), moto's server for a
//! differential run, the real binary for restarts and `kill -9`, and a Lambda function that
//! keeps its connection table in them.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::common::*;
use crate::integrations_common::{dynamodb_call, dynamodb_call_ok};
use serde_json::{Value, json};
use switchboard::config::{Config, FileConfig};
use tokio::process::Command;

/// How long a client script may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dynamodb")
}

/// A configuration from TOML text: its `[dynamodb]`, `[management]` and API sections.
fn config_from(text: &str) -> Config {
    let file = FileConfig::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let mut config = crate::common::config();
    config.app = switchboard::config::BuiltinApp::Echo;
    config.api = file.definition(&scripts());
    config.management_credentials = file.management.credentials().unwrap();
    config.dynamodb = file.dynamodb;
    config
}

fn enabled() -> Config {
    config_from("[dynamodb]\nenabled = true\n")
}

fn endpoint(server: &TestServer) -> String {
    format!("http://{}", server.addr)
}

/// Runs a client program to completion and returns its output; fails the test, with what it
/// printed, when it fails.
async fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(scripts())
        // Nothing from the machine's AWS configuration.
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("NODE_NO_WARNINGS", "1")
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} finishes in time"))
        .unwrap_or_else(|e| panic!("{program} runs (scripts/test.sh installs it): {e}"))
}

async fn run_ok(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run(program, args, env).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The AWS CLI's `dynamodb` command against `url`, answering JSON.
async fn aws(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["dynamodb", "--endpoint-url", url, "--output", "json"];
    all.extend_from_slice(args);
    let out = run_ok("aws", &all, &[]).await;
    if out.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

fn require_node_modules() {
    assert!(
        scripts()
            .join("node_modules/@aws-sdk/lib-dynamodb")
            .is_dir()
            && scripts().join("node_modules/aws-sdk").is_dir(),
        "the JavaScript SDKs are missing: run `npm ci` in tests/dynamodb (scripts/test.sh does)"
    );
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn boto3_client_and_resource_with_key_and_attr_conditions() {
    let server = TestServer::start(enabled()).await;
    let out = run_ok(
        "python3",
        &["boto3_suite.py", &endpoint(&server), "py"],
        &[],
    )
    .await;
    assert!(out.contains("boto3 suite passed"), "{out}");
    // Every call was counted by operation.
    let metrics = server.metrics().await;
    for line in [
        "switchboard_dynamodb_requests_total{operation=\"CreateTable\",outcome=\"ok\"} 2",
        "switchboard_dynamodb_requests_total{operation=\"TransactWriteItems\",outcome=\"client_error\"} 1",
        "switchboard_dynamodb_request_seconds_count{operation=\"BatchWriteItem\"}",
        "switchboard_dynamodb_tables 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // 50 increments with their conditional retries: at least 50 successful UpdateItems.
    let updates: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "switchboard_dynamodb_requests_total{operation=\"UpdateItem\",outcome=\"ok\"} ",
            )
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(updates >= 50, "{updates}");
}

#[tokio::test]
async fn javascript_sdk_v3_client_and_document_client() {
    require_node_modules();
    let server = TestServer::start(enabled()).await;
    let out = run_ok("node", &["sdk_v3.mjs", &endpoint(&server), "js"], &[]).await;
    assert!(out.contains("sdk v3 suite passed"), "{out}");
}

#[tokio::test]
async fn javascript_sdk_v2_document_client() {
    require_node_modules();
    let server = TestServer::start(enabled()).await;
    let out = run_ok("node", &["sdk_v2.js", &endpoint(&server), "js"], &[]).await;
    assert!(out.contains("sdk v2 suite passed"), "{out}");
}

#[tokio::test]
async fn the_aws_cli_creates_writes_reads_pages_and_deletes() {
    let server = TestServer::start(enabled()).await;
    let url = endpoint(&server);
    let created = aws(
        &url,
        &[
            "create-table",
            "--table-name",
            "cli",
            "--attribute-definitions",
            "AttributeName=pk,AttributeType=S",
            "AttributeName=sk,AttributeType=N",
            "--key-schema",
            "AttributeName=pk,KeyType=HASH",
            "AttributeName=sk,KeyType=RANGE",
            "--billing-mode",
            "PAY_PER_REQUEST",
        ],
    )
    .await;
    assert_eq!(created["TableDescription"]["TableName"], "cli");
    aws(&url, &["wait", "table-exists", "--table-name", "cli"]).await;
    for sk in 1..=12 {
        let item = json!({"pk": {"S": "p"}, "sk": {"N": sk.to_string()}, "n": {"N": "0"}});
        aws(
            &url,
            &[
                "put-item",
                "--table-name",
                "cli",
                "--item",
                &item.to_string(),
            ],
        )
        .await;
    }
    // A conditional put that fails answers the error type.
    let output = run(
        "aws",
        &[
            "dynamodb",
            "--endpoint-url",
            &url,
            "put-item",
            "--table-name",
            "cli",
            "--item",
            r#"{"pk": {"S": "p"}, "sk": {"N": "1"}}"#,
            "--condition-expression",
            "attribute_not_exists(pk)",
        ],
        &[],
    )
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ConditionalCheckFailedException"),
        "{stderr}"
    );
    let updated = aws(
        &url,
        &[
            "update-item",
            "--table-name",
            "cli",
            "--key",
            r#"{"pk": {"S": "p"}, "sk": {"N": "3"}}"#,
            "--update-expression",
            "SET n = n + :one",
            "--condition-expression",
            "n = :zero",
            "--expression-attribute-values",
            r#"{":one": {"N": "1"}, ":zero": {"N": "0"}}"#,
            "--return-values",
            "UPDATED_NEW",
        ],
    )
    .await;
    assert_eq!(updated["Attributes"]["n"]["N"], "1");
    let got = aws(
        &url,
        &[
            "get-item",
            "--table-name",
            "cli",
            "--key",
            r#"{"pk": {"S": "p"}, "sk": {"N": "3"}}"#,
        ],
    )
    .await;
    assert_eq!(got["Item"]["n"]["N"], "1");
    let queried = aws(
        &url,
        &[
            "query",
            "--table-name",
            "cli",
            "--key-condition-expression",
            "pk = :p AND sk > :s",
            "--expression-attribute-values",
            r#"{":p": {"S": "p"}, ":s": {"N": "9"}}"#,
        ],
    )
    .await;
    assert_eq!(queried["Count"], 3);
    // The CLI follows LastEvaluatedKey itself: 12 items in pages of 5.
    let scanned = aws(&url, &["scan", "--table-name", "cli", "--page-size", "5"]).await;
    assert_eq!(scanned["Count"], 12);
    let first_page = aws(&url, &["scan", "--table-name", "cli", "--max-items", "5"]).await;
    assert_eq!(first_page["Items"].as_array().unwrap().len(), 5);
    assert!(first_page["NextToken"].is_string(), "{first_page}");
    aws(
        &url,
        &[
            "delete-item",
            "--table-name",
            "cli",
            "--key",
            r#"{"pk": {"S": "p"}, "sk": {"N": "3"}}"#,
        ],
    )
    .await;
    let tables = aws(&url, &["list-tables"]).await;
    assert_eq!(tables["TableNames"], json!(["cli"]));
    let described = aws(&url, &["describe-table", "--table-name", "cli"]).await;
    assert_eq!(described["Table"]["ItemCount"], 11);
    aws(&url, &["delete-table", "--table-name", "cli"]).await;
    assert_eq!(aws(&url, &["list-tables"]).await["TableNames"], json!([]));
}

#[tokio::test]
async fn one_sequence_answers_like_motos_server() {
    let server = TestServer::start(enabled()).await;
    let out = run_ok("python3", &["differential.py", &endpoint(&server)], &[]).await;
    assert!(out.contains("steps agree"), "{out}");
}

const DECLARED: &str = r#"
[dynamodb]
ttl_sweep_interval_secs = 1

[[dynamodb.tables]]
TableName = "sessions"
KeySchema = [{ AttributeName = "id", KeyType = "HASH" }]
AttributeDefinitions = [{ AttributeName = "id", AttributeType = "S" }]
BillingMode = "PAY_PER_REQUEST"
TimeToLiveSpecification = { AttributeName = "expiresAt", Enabled = true }
StreamSpecification = { StreamViewType = "NEW_IMAGE" }

[[dynamodb.tables]]
Type = "AWS::Serverless::SimpleTable"
TableName = "connections"
PrimaryKey = { Name = "connectionId", Type = "String" }
"#;

#[tokio::test]
async fn declared_tables_exist_at_start_and_expired_items_disappear() {
    let server = TestServer::start(config_from(DECLARED)).await;
    let addr = server.addr.to_string();
    let tables = dynamodb_call_ok(&addr, "ListTables", json!({})).await;
    assert_eq!(tables["TableNames"], json!(["connections", "sessions"]));
    let described =
        dynamodb_call_ok(&addr, "DescribeTable", json!({"TableName": "sessions"})).await;
    assert_eq!(
        described["Table"]["StreamSpecification"]["StreamViewType"],
        "NEW_IMAGE"
    );
    let ttl = dynamodb_call_ok(
        &addr,
        "DescribeTimeToLive",
        json!({"TableName": "sessions"}),
    )
    .await;
    assert_eq!(
        ttl["TimeToLiveDescription"],
        json!({"AttributeName": "expiresAt", "TimeToLiveStatus": "ENABLED"})
    );
    let now = now_secs();
    for (id, expires) in [("gone", now - 60), ("kept", now + 3600)] {
        dynamodb_call_ok(
            &addr,
            "PutItem",
            json!({"TableName": "sessions", "Item": {
                "id": {"S": id}, "expiresAt": {"N": expires.to_string()},
            }}),
        )
        .await;
    }
    // The sweep runs every second: wait for it to take the expired item.
    eventually(WAIT, || async {
        let answer = dynamodb_call_ok(&addr, "Scan", json!({"TableName": "sessions"})).await;
        answer["Count"] == 1
    })
    .await;
    let left = dynamodb_call_ok(&addr, "Scan", json!({"TableName": "sessions"})).await;
    assert_eq!(left["Items"][0]["id"]["S"], "kept");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("switchboard_dynamodb_ttl_deleted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_dynamodb_tables 2"),
        "{metrics}"
    );
    let size: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_dynamodb_database_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 0);
}

#[tokio::test]
async fn a_bad_table_declaration_stops_the_server_with_the_property_named() {
    let text = DECLARED.replace("KeyType = \"HASH\"", "KeyType = \"RANGE\"");
    let file = FileConfig::parse(&text).unwrap();
    let mut config = crate::common::config();
    config.dynamodb = file.dynamodb;
    let error = switchboard::Server::new(config).unwrap_err().to_string();
    assert_eq!(
        error,
        "dynamodb.tables[0]: KeySchema[0].KeyType: must be HASH (the partition key first, then the sort key)"
    );
}

/// The binary with DynamoDB on, in `data_dir`.
async fn binary(
    data_dir: &Path,
) -> (
    tokio::process::Child,
    String,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
) {
    let config = data_dir.join("switchboard.toml");
    std::fs::write(&config, "app = \"echo\"\n[dynamodb]\nenabled = true\n").unwrap();
    spawn_binary(data_dir, &["--config", config.to_str().unwrap()]).await
}

#[tokio::test]
async fn a_restart_and_a_kill_9_keep_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _log) = binary(dir.path()).await;
    dynamodb_call_ok(
        &addr,
        "CreateTable",
        json!({
            "TableName": "durable",
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        }),
    )
    .await;
    dynamodb_call_ok(
        &addr,
        "PutItem",
        json!({"TableName": "durable", "Item": {"id": {"S": "before-restart"}}}),
    )
    .await;
    // A graceful restart.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let (mut child, addr, _log) = binary(dir.path()).await;
    let got = dynamodb_call_ok(
        &addr,
        "GetItem",
        json!({"TableName": "durable", "Key": {"id": {"S": "before-restart"}}}),
    )
    .await;
    assert_eq!(got["Item"]["id"]["S"], "before-restart");
    // Acknowledged writes, then SIGKILL: no chance to flush anything.
    for i in 0..20 {
        dynamodb_call_ok(
            &addr,
            "PutItem",
            json!({"TableName": "durable", "Item": {"id": {"S": format!("acked-{i}")}}}),
        )
        .await;
    }
    dynamodb_call_ok(
        &addr,
        "UpdateItem",
        json!({
            "TableName": "durable", "Key": {"id": {"S": "acked-19"}},
            "UpdateExpression": "SET n = :n", "ExpressionAttributeValues": {":n": {"N": "7"}},
        }),
    )
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let (_child, addr, _log) = binary(dir.path()).await;
    let scanned = dynamodb_call_ok(&addr, "Scan", json!({"TableName": "durable"})).await;
    assert_eq!(scanned["Count"], 21, "{scanned}");
    let got = dynamodb_call_ok(
        &addr,
        "GetItem",
        json!({"TableName": "durable", "Key": {"id": {"S": "acked-19"}}}),
    )
    .await;
    assert_eq!(got["Item"]["n"]["N"], "7");
    assert!(dir.path().join("dynamodb.sqlite3").is_file());
}

#[tokio::test]
async fn with_credentials_calls_must_be_signed_with_them() {
    let server = TestServer::start(config_from(
        "[management]\naccess_key_id = \"SBKEY\"\nsecret_access_key = \"sbsecret\"\n[dynamodb]\nenabled = true\n",
    ))
    .await;
    let url = endpoint(&server);
    let keys = [
        ("AWS_ACCESS_KEY_ID", "SBKEY"),
        ("AWS_SECRET_ACCESS_KEY", "sbsecret"),
    ];
    let out = run_ok(
        "aws",
        &["dynamodb", "--endpoint-url", &url, "list-tables"],
        &keys,
    )
    .await;
    assert!(out.contains("TableNames"), "{out}");
    for (env, expected) in [
        (
            [
                ("AWS_ACCESS_KEY_ID", "OTHER"),
                ("AWS_SECRET_ACCESS_KEY", "sbsecret"),
            ],
            "UnrecognizedClientException",
        ),
        (
            [
                ("AWS_ACCESS_KEY_ID", "SBKEY"),
                ("AWS_SECRET_ACCESS_KEY", "wrong"),
            ],
            "InvalidSignatureException",
        ),
    ] {
        let output = run(
            "aws",
            &[
                "dynamodb",
                "--endpoint-url",
                &url,
                "list-tables",
                "--cli-read-timeout",
                "10",
            ],
            &env,
        )
        .await;
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{expected} in {stderr}");
    }
    // An unsigned call is refused with DynamoDB's shape.
    let response = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("x-amz-target", "DynamoDB_20120810.ListTables")
        .header("content-type", "application/x-amz-json-1.0")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["__type"],
        "com.amazon.coral.service#MissingAuthenticationTokenException"
    );
}

#[tokio::test]
async fn without_dynamodb_a_post_to_the_root_is_what_it_was() {
    let server = TestServer::start(crate::common::config()).await;
    let (status, _) = dynamodb_call(&server.addr.to_string(), "ListTables", json!({})).await;
    assert_eq!(status, 405);
    assert!(!server.metrics().await.contains("switchboard_dynamodb"));
}

#[tokio::test]
async fn a_cluster_whose_nodes_would_each_keep_tables_refuses_to_start() {
    let mut config = enabled();
    config.cluster = Some(switchboard::config::ClusterConfig::new(
        "redis://127.0.0.1:1/",
        "node-a",
    ));
    let error = switchboard::Server::new(config.clone())
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("dynamodb: in a cluster"), "{error}");
    assert!(
        error.contains("endpoint = \"http://<node>:<port>\""),
        "{error}"
    );
    assert!(error.contains("serve_cluster = true"), "{error}");
    // The serving node must be reachable with signatures.
    config.dynamodb.serve_cluster = true;
    let error = switchboard::Server::new(config.clone())
        .unwrap_err()
        .to_string();
    assert!(error.contains("needs [management] credentials"), "{error}");
    // The other nodes point at it and keep nothing.
    config.dynamodb.serve_cluster = false;
    config.dynamodb.endpoint = Some("http://10.0.0.1:8080".into());
    config.validate().unwrap();
}

/// The usual WebSocket app's connection table, kept by a Lambda function that finds the
/// tables through `AWS_ENDPOINT_URL_DYNAMODB` alone.
#[tokio::test]
async fn a_function_keeps_its_connection_table_here() {
    let function = r#"{ type = "lambda", command = ["python3", "connections_function.py"], function_name = "connections" }"#;
    let server = TestServer::start(config_from(&format!(
        r#"
[routes."$connect"]
integration = {function}
[routes."$disconnect"]
integration = {function}
[routes.sendmessage]
integration = {function}
[routes.endpoint]
integration = {function}
route_response = "$default"

[[dynamodb.tables]]
Type = "AWS::Serverless::SimpleTable"
TableName = "connections"
PrimaryKey = {{ Name = "connectionId", Type = "String" }}
"#
    )))
    .await;
    let addr = server.addr.to_string();
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    a.send(r#"{"action": "endpoint"}"#).await;
    assert_eq!(a.recv().await, format!("http://{addr}"));
    let scanned = dynamodb_call_ok(&addr, "Scan", json!({"TableName": "connections"})).await;
    assert_eq!(scanned["Count"], 2, "{scanned}");
    a.send(r#"{"action": "sendmessage", "data": "hello all"}"#)
        .await;
    assert_eq!(a.recv().await, "hello all");
    assert_eq!(b.recv().await, "hello all");
    b.close(1000, "bye").await;
    eventually(WAIT, || async {
        dynamodb_call_ok(&addr, "Scan", json!({"TableName": "connections"})).await["Count"] == 1
    })
    .await;
}
