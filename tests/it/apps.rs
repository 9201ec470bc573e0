//! Existing API Gateway WebSocket apps: serverless.yml files and SAM / CloudFormation templates
//! read as they are (`src/template/`), `switchboard check`, and the sample apps under
//! `examples/apps/` run end to end with real node, python, SDKs and clients.

use std::path::{Path, PathBuf};

use serde_json::json;
use switchboard::integration::definition::{AuthorizerKind, IntegrationSpec, LambdaSpec};
use switchboard::template::{self, Format, Loaded, Overrides, TemplateError};

fn apps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apps")
}

fn load(path: &str, overrides: &Overrides) -> Loaded {
    template::load(&apps().join(path), overrides).unwrap_or_else(|e| panic!("{e}"))
}

fn lambda<'a>(loaded: &'a Loaded, route: &str) -> &'a LambdaSpec {
    match &loaded.api.routes[route].integration {
        IntegrationSpec::Lambda(l) => l,
        other => panic!("{route}: {other:?}"),
    }
}

#[test]
fn sam_templates_are_read_with_their_intrinsics() {
    let loaded = load("sam-esm-chat/template.yaml", &Overrides::default());
    assert_eq!(loaded.format, Format::CloudFormation);
    assert_eq!(loaded.stage, "Prod");
    assert_eq!(
        loaded.api.routes.keys().collect::<Vec<_>>(),
        ["$connect", "$disconnect", "sendmessage"]
    );
    let send = lambda(&loaded, "sendmessage");
    assert_eq!(send.runtime.as_deref(), Some("nodejs22.x"));
    assert_eq!(send.handler.as_deref(), Some("app.handler"));
    assert_eq!(send.timeout_ms, 10_000);
    assert_eq!(send.memory_size_mb, 256);
    assert_eq!(send.concurrency, template::DEFAULT_RESERVED_CONCURRENCY);
    assert!(
        send.working_dir
            .as_ref()
            .unwrap()
            .ends_with("sam-esm-chat/sendmessage")
    );
    assert_eq!(send.env["TABLE_NAME"], "esm_chat_connections");
    assert_eq!(loaded.tables.len(), 1);
    assert_eq!(loaded.tables[0].0, "ConnectionsTable");
    assert_eq!(
        loaded.tables[0].1,
        json!({
            "TableName": "esm_chat_connections",
            "AttributeDefinitions": [{"AttributeName": "connectionId", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "connectionId", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST"
        })
    );
    assert!(
        loaded
            .ignored
            .contains(&"OnConnectPermission (AWS::Lambda::Permission)".to_owned())
    );
    assert!(loaded.ignored.contains(&"Outputs".to_owned()));

    // Parameters and the stage from the command line.
    let overrides = Overrides {
        stage: Some("test".into()),
        region: Some("eu-west-3".into()),
        parameters: [("TableName".to_owned(), "other_table".to_owned())].into(),
        ..Overrides::default()
    };
    let loaded = load("sam-esm-chat/template.yaml", &overrides);
    assert_eq!(loaded.stage, "test");
    assert_eq!(loaded.api.region, "eu-west-3");
    assert_eq!(lambda(&loaded, "$connect").env["TABLE_NAME"], "other_table");
    assert_eq!(loaded.tables[0].1["TableName"], "other_table");
}

#[test]
fn globals_authorizers_conditions_and_generated_names() {
    let loaded = load("sam-v2-chat/template.yaml", &Overrides::default());
    assert_eq!(loaded.stage, "production");
    let auth = loaded.api.authorizer.as_ref().expect("an authorizer");
    assert_eq!(auth.identity_sources, ["route.request.querystring.token"]);
    let AuthorizerKind::Lambda(auth) = &auth.kind else {
        panic!("a lambda authorizer");
    };
    assert_eq!(auth.handler.as_deref(), Some("authorize.handler"));
    assert_eq!(auth.env["CHAT_TOKEN"], "let-me-in");
    // Globals: runtime, code, timeout, and the environment merged into each function's.
    let send = lambda(&loaded, "sendmessage");
    assert_eq!(send.runtime.as_deref(), Some("nodejs20.x"));
    assert_eq!(send.timeout_ms, 10_000);
    assert_eq!(send.concurrency, 4);
    let table = &loaded.tables[0].1;
    let name = table["TableName"].as_str().unwrap();
    assert!(name.starts_with("sam-v2-chat-ConnectionsTable-"), "{name}");
    assert_eq!(send.env["TABLE_NAME"], name, "Ref of a table is its name");
    // Fn::If with AWS::NoValue: the production stage keeps the key, another stage drops it.
    assert_eq!(
        table["PointInTimeRecoverySpecification"],
        json!({"PointInTimeRecoveryEnabled": true})
    );
    let other = load(
        "sam-v2-chat/template.yaml",
        &Overrides {
            parameters: [("StageName".to_owned(), "beta".to_owned())].into(),
            ..Overrides::default()
        },
    );
    assert_eq!(other.stage, "beta");
    assert!(
        other.tables[0]
            .1
            .get("PointInTimeRecoverySpecification")
            .is_none()
    );
    assert!(
        loaded
            .ignored
            .contains(&"ChatLogGroup (AWS::Logs::LogGroup)".to_owned())
    );
}

#[test]
fn python_sam_app_with_a_simple_table_and_a_two_way_route() {
    let loaded = load("sam-python/template.yaml", &Overrides::default());
    assert_eq!(
        loaded.api.route_selection_expression.as_deref(),
        Some("$request.body.op")
    );
    assert_eq!(
        loaded.api.routes["ping"].route_response.as_deref(),
        Some("$default")
    );
    assert_eq!(loaded.api.routes["say"].route_response, None);
    let ping = lambda(&loaded, "ping");
    assert_eq!(ping.runtime.as_deref(), Some("python3.12"));
    assert_eq!(ping.env["PING_PREFIX"], "pong");
    let (id, table) = &loaded.tables[0];
    assert_eq!(id, "Connections");
    assert_eq!(
        table["KeySchema"],
        json!([{"AttributeName": "connection_id", "KeyType": "HASH"}])
    );
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(ping.env["TABLE_NAME"], table["TableName"]);
}

#[test]
fn serverless_2018_plugin_syntax() {
    let loaded = load("sls-2018-ts/serverless.yml", &Overrides::default());
    assert_eq!(loaded.format, Format::Serverless);
    assert_eq!(loaded.name, "applause-chat");
    assert_eq!(loaded.stage, "dev");
    assert_eq!(loaded.api.region, "ap-northeast-1");
    assert_eq!(
        loaded.api.routes.keys().collect::<Vec<_>>(),
        ["$connect", "$default", "$disconnect", "sendMessage"]
    );
    let connect = lambda(&loaded, "$connect");
    assert_eq!(
        connect.function_name.as_deref(),
        Some("applause-chat-dev-connectionHandler")
    );
    assert_eq!(
        lambda(&loaded, "$disconnect").function_name,
        connect.function_name,
        "one function, two routes"
    );
    assert_eq!(connect.runtime.as_deref(), Some("nodejs8.10"));
    assert_eq!(
        connect.env["CONNECTIONS_TABLE"],
        "applause-chat-dev-connections"
    );
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("nodejs8.10 is retired")),
        "{:?}",
        loaded.warnings
    );
    assert!(
        loaded
            .ignored
            .iter()
            .any(|i| i.starts_with("custom and plugins")),
        "{:?}",
        loaded.ignored
    );
    let staged = load(
        "sls-2018-ts/serverless.yml",
        &Overrides {
            stage: Some("prod".into()),
            region: Some("us-east-2".into()),
            ..Overrides::default()
        },
    );
    assert_eq!(staged.stage, "prod");
    assert_eq!(staged.api.region, "us-east-2");
    assert_eq!(
        staged.tables[0].1["TableName"],
        "applause-chat-prod-connections"
    );
}

#[test]
fn serverless_v3_with_sls_stage_and_nested_handlers() {
    let loaded = load(
        "sls-v3-nested/serverless.yml",
        &Overrides {
            stage: Some("qa".into()),
            ..Overrides::default()
        },
    );
    assert_eq!(loaded.stage, "qa");
    let default = lambda(&loaded, "$default");
    assert_eq!(
        default.handler.as_deref(),
        Some("src/functions/default/handler.main")
    );
    assert_eq!(default.env["TABLE_NAME"], "tutorial-chat-connections-qa");
    assert_eq!(default.memory_size_mb, 256);
    assert_eq!(lambda(&loaded, "sendmessage").concurrency, 5);
    assert_eq!(
        loaded.tables[0].1["TableName"],
        "tutorial-chat-connections-qa"
    );
    assert!(loaded.ignored.contains(&"provider.iam".to_owned()));
}

/// Writes `files` into a fresh directory; returns it.
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn load_error(dir: &tempfile::TempDir, file: &str) -> String {
    let err = template::load(&dir.path().join(file), &Overrides::default()).unwrap_err();
    err.to_string()
}

const MINIMAL_SLS: &str = "service: s\nprovider:\n  name: aws\n  runtime: nodejs20.x\n\
                           functions:\n  f:\n    handler: app.handler\n    events:\n      - websocket: $default\n";

#[test]
fn errors_say_what_and_where() {
    // YAML errors: line and column.
    let dir = project(&[(
        "serverless.yml",
        "service: s\nprovider:\n  name: [aws\n  x: 1\n",
    )]);
    let e = template::load(&dir.path().join("serverless.yml"), &Overrides::default()).unwrap_err();
    let TemplateError::Syntax { line, column, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!((*line, *column), (4, 4), "{e}");
    assert!(e.to_string().contains("serverless.yml:4:4: "), "{e}");

    // No WebSocket API.
    let dir = project(&[(
        "template.yaml",
        "Resources:\n  Api:\n    Type: AWS::ApiGatewayV2::Api\n    Properties:\n      ProtocolType: HTTP\n",
    )]);
    let e = load_error(&dir, "template.yaml");
    assert!(e.contains("no WebSocket API"), "{e}");
    let dir = project(&[
        (
            "serverless.yml",
            "service: s\nprovider:\n  name: aws\nfunctions:\n  f:\n    handler: app.h\n    events:\n      - http: GET /\n",
        ),
        ("app.js", ""),
    ]);
    let e = load_error(&dir, "serverless.yml");
    assert!(e.contains("no WebSocket API"), "{e}");

    // A handler file that does not exist: the function and the path.
    let dir = project(&[("serverless.yml", MINIMAL_SLS)]);
    let e = load_error(&dir, "serverless.yml");
    assert!(e.contains("functions.f (function s-dev-f)"), "{e}");
    assert!(e.contains("no app.js, .mjs, .cjs or .ts in"), "{e}");

    // An unknown runtime.
    let dir = project(&[
        (
            "serverless.yml",
            &MINIMAL_SLS.replace("nodejs20.x", "java21"),
        ),
        ("app.js", ""),
    ]);
    let e = load_error(&dir, "serverless.yml");
    assert!(e.contains("unknown runtime \"java21\""), "{e}");

    // A reference to a resource that does not exist.
    let dir = project(&[
        (
            "serverless.yml",
            &format!("{MINIMAL_SLS}    environment:\n      T: !Ref Missing\n"),
        ),
        ("app.js", ""),
    ]);
    let e = load_error(&dir, "serverless.yml");
    assert!(e.contains("Ref \"Missing\""), "{e}");
    let dir = project(&[(
        "template.yaml",
        "Resources:\n  Api:\n    Type: AWS::ApiGatewayV2::Api\n    Properties:\n      ProtocolType: WEBSOCKET\n\
         \x20 R:\n    Type: AWS::ApiGatewayV2::Route\n    Properties:\n      ApiId: !Ref Api\n      RouteKey: $default\n      Target: !Sub integrations/${Nope}\n",
    )]);
    let e = load_error(&dir, "template.yaml");
    assert!(e.contains("Resources.R.Target"), "{e}");
    assert!(e.contains("${Nope}"), "{e}");

    // A parameter without a default needs --parameter.
    let dir = project(&[(
        "template.yaml",
        "Parameters:\n  Token:\n    Type: String\nResources: {}\n",
    )]);
    let e = load_error(&dir, "template.yaml");
    assert!(e.contains("pass --parameter Token=VALUE"), "{e}");
}

#[test]
fn cdk_synth_output_with_lambda_functions_and_http_proxy() {
    let template = json!({
        "Resources": {
            "ChatApi1A2B3C": {
                "Type": "AWS::ApiGatewayV2::Api",
                "Properties": {"Name": "chat", "ProtocolType": "WEBSOCKET",
                               "RouteSelectionExpression": "$request.body.type"}
            },
            "Handler886CB40B": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Code": {"S3Bucket": {"Fn::Sub": "cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}"},
                             "S3Key": "0123abcd.zip"},
                    "Handler": "index.handler",
                    "Runtime": "nodejs22.x",
                    "Role": {"Fn::GetAtt": ["HandlerServiceRoleFCDC14AE", "Arn"]},
                    "Environment": {"Variables": {"TABLE": {"Ref": "Connections5A1B2C3D"},
                                                  "TABLE_ARN": {"Fn::GetAtt": ["Connections5A1B2C3D", "Arn"]}}}
                },
                "Metadata": {"aws:asset:path": "asset.0123abcd", "aws:asset:property": "Code"}
            },
            "HandlerServiceRoleFCDC14AE": {"Type": "AWS::IAM::Role", "Properties": {}},
            "DefaultRoute": {
                "Type": "AWS::ApiGatewayV2::Route",
                "Properties": {
                    "ApiId": {"Ref": "ChatApi1A2B3C"},
                    "RouteKey": "$default",
                    "Target": {"Fn::Join": ["", ["integrations/", {"Ref": "DefaultIntegration"}]]}
                }
            },
            "DefaultIntegration": {
                "Type": "AWS::ApiGatewayV2::Integration",
                "Properties": {
                    "ApiId": {"Ref": "ChatApi1A2B3C"},
                    "IntegrationType": "AWS_PROXY",
                    "IntegrationUri": {"Fn::Join": ["", [
                        "arn:", {"Ref": "AWS::Partition"}, ":apigateway:", {"Ref": "AWS::Region"},
                        ":lambda:path/2015-03-31/functions/",
                        {"Fn::GetAtt": ["Handler886CB40B", "Arn"]}, "/invocations"]]}
                }
            },
            "HookRoute": {
                "Type": "AWS::ApiGatewayV2::Route",
                "Properties": {"ApiId": {"Ref": "ChatApi1A2B3C"}, "RouteKey": "hook",
                               "Target": "integrations/HookIntegration"}
            },
            "HookIntegration": {
                "Type": "AWS::ApiGatewayV2::Integration",
                "Properties": {"ApiId": {"Ref": "ChatApi1A2B3C"}, "IntegrationType": "HTTP_PROXY",
                               "IntegrationMethod": "POST", "TimeoutInMillis": 5000,
                               "IntegrationUri": "http://127.0.0.1:9000/hook"}
            },
            "Connections5A1B2C3D": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {"KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                               "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
                               "BillingMode": "PAY_PER_REQUEST"},
                "UpdateReplacePolicy": "Delete",
                "DeletionPolicy": "Delete"
            }
        }
    });
    let dir = project(&[
        ("cdk.out/ChatStack.template.json", &template.to_string()),
        (
            "cdk.out/asset.0123abcd/index.js",
            "exports.handler = async () => ({});",
        ),
    ]);
    let loaded = template::load(
        &dir.path().join("cdk.out/ChatStack.template.json"),
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.name, "ChatStack");
    assert_eq!(
        loaded.api.route_selection_expression.as_deref(),
        Some("$request.body.type")
    );
    let handler = lambda(&loaded, "$default");
    assert!(
        handler
            .working_dir
            .as_ref()
            .unwrap()
            .ends_with("cdk.out/asset.0123abcd")
    );
    let table = loaded.tables[0].1["TableName"].as_str().unwrap();
    assert!(
        table.starts_with("ChatStack-Connections5A1B2C3D-"),
        "{table}"
    );
    assert_eq!(handler.env["TABLE"], table);
    assert_eq!(
        handler.env["TABLE_ARN"],
        format!("arn:aws:dynamodb:us-east-1:123456789012:table/{table}")
    );
    match &loaded.api.routes["hook"].integration {
        IntegrationSpec::Http(http) => {
            assert_eq!(http.url, "http://127.0.0.1:9000/hook");
            assert_eq!(http.timeout_ms, 5000);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        loaded
            .ignored
            .contains(&"HandlerServiceRoleFCDC14AE (AWS::IAM::Role)".to_owned())
    );
    assert!(loaded.ignored.contains(&"Handler886CB40B.Role".to_owned()));
    assert_eq!(loaded.api_id.len(), 10);
}

#[test]
fn serverless_environments_resolve_refs_to_tables_and_functions() {
    let dir = project(&[
        (
            "serverless.yml",
            &format!(
                "{MINIMAL_SLS}    environment:\n      T: !Ref Table\n      A:\n        Fn::GetAtt: [Table, Arn]\n      F: !GetAtt FLambdaFunction.Arn\n\
                 resources:\n  Resources:\n    Table:\n      Type: AWS::DynamoDB::Table\n      Properties:\n        TableName: conns-${{sls:stage}}\n"
            ),
        ),
        ("app.js", ""),
    ]);
    let loaded = template::load(&dir.path().join("serverless.yml"), &Overrides::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let f = lambda(&loaded, "$default");
    assert_eq!(f.env["T"], "conns-dev");
    assert_eq!(
        f.env["A"],
        "arn:aws:dynamodb:us-east-1:123456789012:table/conns-dev"
    );
    assert_eq!(
        f.env["F"],
        "arn:aws:lambda:us-east-1:123456789012:function:s-dev-f"
    );
}

fn switchboard() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

#[test]
fn check_prints_what_was_understood() {
    let out = switchboard()
        .args(["check", "--config"])
        .arg(apps().join("sls-2018-ts/serverless.yml"))
        .args(["--stage", "prod"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "Serverless Framework service \"applause-chat\"",
        "stage: prod",
        "sendMessage -> function applause-chat-prod-sendMessageHandler (nodejs8.10)",
        "runtime nodejs8.10, handler handler.sendMessageHandler",
        "ConnectionsTable: applause-chat-prod-connections",
        "provider.iamRoleStatements",
        "nodejs8.10 is retired",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }

    let out = switchboard()
        .args(["check", "--config"])
        .arg(apps().join("sam-python/template.yaml"))
        .args(["--parameter", "Nope=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the template has no parameter \"Nope\""),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Managed runtimes: switchboard's Node.js and Python runtime loops on the real interpreters.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard::integration::CallError;
use switchboard::integration::lambda::managed::Runtime;
use switchboard::integration::lambda::process::ManagementEndpoint;
use switchboard::integration::lambda::{FunctionSpec, Functions, LambdaFunction};

/// Long enough for a cold start with a first npm install on a loaded machine.
const WAIT: Duration = Duration::from_secs(120);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/runtimes")
}

/// One data directory for every test: the SDK, esbuild and runtime loops are installed once.
fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("apps-data")
}

fn spec(name: &str, root: PathBuf, runtime: &str, handler: &str) -> FunctionSpec {
    FunctionSpec {
        name: name.to_owned(),
        command: Vec::new(),
        env: Default::default(),
        handler: handler.to_owned(),
        task_root: root,
        concurrency: 3,
        memory_size_mb: 256,
        timeout: Duration::from_secs(20),
        queue_size: 16,
        region: "eu-west-1".into(),
        account_id: "123456789012".into(),
        runtime: Some(Runtime::parse(runtime).unwrap()),
        idle_timeout: Some(Duration::from_secs(60)),
        watch_code: false,
    }
}

/// Starts `specs`; the functions are stopped when the returned guard's `stop` is awaited.
async fn start(specs: Vec<FunctionSpec>) -> (Functions, Vec<Arc<LambdaFunction>>) {
    start_with(specs, ManagementEndpoint::default()).await
}

async fn start_with(
    specs: Vec<FunctionSpec>,
    endpoint: ManagementEndpoint,
) -> (Functions, Vec<Arc<LambdaFunction>>) {
    let mut functions = Functions::default();
    functions.set_data_dir(data_dir());
    let list: Vec<_> = specs
        .into_iter()
        .map(|s| Arc::new(LambdaFunction::new(s)))
        .collect();
    for f in &list {
        functions.push(f.clone());
    }
    let management = ManagementEndpoint {
        url: "http://127.0.0.1:9/dev".into(),
        ..endpoint
    };
    tokio::time::timeout(WAIT, functions.start(management))
        .await
        .expect("the functions start in time")
        .unwrap_or_else(|e| panic!("{e}"));
    (functions, list)
}

async fn call(
    f: &LambdaFunction,
    event: serde_json::Value,
) -> Result<serde_json::Value, CallError> {
    let bytes = tokio::time::timeout(WAIT, f.call(event.to_string().into_bytes()))
        .await
        .expect("the call ends in time")?;
    Ok(serde_json::from_slice(&bytes).unwrap())
}

fn body(v: &serde_json::Value) -> String {
    v["body"].as_str().unwrap().to_owned()
}

/// Calls `f` (the `app.slow` fixture) `n` times at once, each call `ms` long; the process ids
/// that answered.
async fn pids_answering(
    f: &LambdaFunction,
    n: usize,
    ms: u64,
) -> std::collections::BTreeSet<String> {
    let calls: Vec<_> = (0..n).map(|_| call(f, json!({ "ms": ms }))).collect();
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| body(&r.unwrap()))
        .collect()
}

/// Calls `f` until its answer's body starts with `prefix` (an edit picked up), and returns it.
async fn answer_starting_with(f: &LambdaFunction, prefix: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let b = body(&call(f, json!({})).await.unwrap());
        if b.starts_with(prefix) {
            return b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer starting with {prefix:?}: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_handlers_load_like_lambda() {
    let root = fixtures();
    let (functions, f) = start(vec![
        spec("cjs", root.join("cjs"), "nodejs20.x", "app.handler"),
        spec(
            "nested-export",
            root.join("cjs"),
            "nodejs20.x",
            "app.api.v1.handler",
        ),
        spec("mjs", root.join("esm"), "nodejs22.x", "app.handler"),
        spec("module", root.join("module"), "nodejs18.x", "app.handler"),
        spec(
            "nested-path",
            root.join("nested"),
            "nodejs20.x",
            "src/functions/send-message/handler.main",
        ),
        spec("ts", root.join("ts"), "nodejs20.x", "handler.hello"),
        spec(
            "retired",
            root.join("cjs"),
            "nodejs8.10",
            "app.api.v1.handler",
        ),
    ])
    .await;
    let out = call(&f[0], json!({"body": "hi"})).await.unwrap();
    let b: serde_json::Value = serde_json::from_str(&body(&out)).unwrap();
    assert_eq!(b["style"], "callback");
    assert_eq!(b["functionName"], "cjs");
    assert_eq!(b["echo"], "hi");
    assert_eq!(b["waits"], true);
    assert_eq!(b["memory"], "256");
    assert_eq!(
        b["arn"],
        "arn:aws:lambda:eu-west-1:123456789012:function:cjs"
    );
    assert_eq!(b["awsRequestId"].as_str().unwrap().len(), 36, "{b}");
    let remaining = b["remaining"].as_i64().unwrap();
    assert!(remaining > 0 && remaining <= 20_000, "{remaining}");
    assert_eq!(
        body(&call(&f[1], json!({})).await.unwrap()),
        "nested export"
    );
    let mjs: serde_json::Value =
        serde_json::from_str(&body(&call(&f[2], json!({})).await.unwrap())).unwrap();
    assert_eq!(mjs["style"], "mjs");
    assert_eq!(mjs["file"], "app.mjs");
    assert_eq!(mjs["fn"], "mjs");
    assert_eq!(body(&call(&f[3], json!({})).await.unwrap()), "type module");
    assert_eq!(body(&call(&f[4], json!({})).await.unwrap()), "nested path");
    assert_eq!(
        body(
            &call(&f[5], json!({"body": "{\"name\":\"ada\"}"}))
                .await
                .unwrap()
        ),
        "hello ada from typescript"
    );
    assert_eq!(
        body(&call(&f[6], json!({})).await.unwrap()),
        "nested export"
    );
    functions.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_function_prints_reaches_the_inspector_with_its_request_id() {
    use switchboard::inspector::{Filter, Inspector, Item};
    let inspector = Arc::new(Inspector::new(true, Vec::new()));
    let mut watching = inspector.subscribe(Filter::default()).unwrap();
    let endpoint = ManagementEndpoint {
        inspector: Some(inspector.clone()),
        ..ManagementEndpoint::default()
    };
    let logs = spec("logs", fixtures().join("logs"), "nodejs20.x", "app.handler");
    let (functions, f) = start_with(vec![logs], endpoint).await;
    assert_eq!(body(&call(&f[0], json!({"n": 7})).await.unwrap()), "7");
    let line = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Item::Event(event)) = watching.next().await {
                let json: serde_json::Value = serde_json::from_str(&event.json).unwrap();
                if json["type"] == "function_log" && json["line"] == "handling 7" {
                    return json;
                }
            }
        }
    })
    .await
    .expect("the function's line is published");
    assert_eq!(line["function"], "logs");
    let request_id = line["request_id"].as_str().unwrap();
    assert!(
        request_id.len() >= 32,
        "the invocation's id, not {request_id:?}"
    );
    functions.stop().await;
}

fn error_type(result: Result<serde_json::Value, CallError>) -> (String, String) {
    match result {
        Err(CallError::Function {
            error_type,
            message,
        }) => (error_type, message),
        other => panic!("expected a function error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_errors_are_reported_as_on_lambda() {
    let root = fixtures();
    let (functions, f) = start(vec![
        spec("not-found", root.join("cjs"), "nodejs20.x", "app.nothere"),
        spec(
            "not-a-function",
            root.join("cjs"),
            "nodejs20.x",
            "app.notAFunction",
        ),
        spec("import", root.join("import"), "nodejs20.x", "app.handler"),
        spec("syntax", root.join("syntax"), "nodejs20.x", "app.handler"),
        spec("throws", root.join("cjs"), "nodejs20.x", "app.fails"),
    ])
    .await;
    let (t, m) = error_type(call(&f[0], json!({})).await);
    assert_eq!(t, "Runtime.HandlerNotFound");
    assert!(
        m.contains("app.nothere is undefined or not exported"),
        "{m}"
    );
    assert_eq!(
        error_type(call(&f[1], json!({})).await).0,
        "Runtime.HandlerNotFound"
    );
    let (t, m) = error_type(call(&f[2], json!({})).await);
    assert_eq!(t, "Runtime.ImportModuleError");
    assert!(m.contains("a-package-nobody-installed"), "{m}");
    assert_eq!(
        error_type(call(&f[3], json!({})).await).0,
        "Runtime.UserCodeSyntaxError"
    );
    assert_eq!(
        error_type(call(&f[4], json!({})).await),
        ("TypeError".to_owned(), "bad input".to_owned())
    );
    functions.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_handlers_load_like_lambda() {
    let root = fixtures();
    let (functions, f) = start(vec![
        spec("py", root.join("py"), "python3.12", "app.handler"),
        spec("py-fails", root.join("py"), "python3.12", "app.fails"),
        spec("py-broken", root.join("py"), "python3.11", "broken.handler"),
        spec("py-not-found", root.join("py"), "python3.7", "app.nothere"),
    ])
    .await;
    let out = call(&f[0], json!({"body": "hey"})).await.unwrap();
    assert_eq!(out["count"], 3, "Decimal results are numbers");
    let b: serde_json::Value = serde_json::from_str(&body(&out)).unwrap();
    assert_eq!(b["style"], "python");
    assert_eq!(b["function_name"], "py");
    assert_eq!(b["echo"], "hey");
    assert_eq!(b["memory"], "256");
    assert_eq!(b["aws_request_id"].as_str().unwrap().len(), 36);
    assert!(b["remaining"].as_i64().unwrap() > 0);
    assert_eq!(
        error_type(call(&f[1], json!({})).await),
        ("ValueError".to_owned(), "no good".to_owned())
    );
    assert_eq!(
        error_type(call(&f[2], json!({})).await).0,
        "Runtime.UserCodeSyntaxError"
    );
    assert_eq!(
        error_type(call(&f[3], json!({})).await).0,
        "Runtime.HandlerNotFound"
    );
    functions.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn environments_start_on_demand_up_to_reserved_concurrency_and_idle_out() {
    let mut slow = spec("slow", fixtures().join("cjs"), "nodejs20.x", "app.slow");
    slow.concurrency = 3;
    slow.idle_timeout = Some(Duration::from_millis(500));
    let (functions, f) = start(vec![slow]).await;
    let slow = &f[0];
    let metrics = slow.metrics().clone();
    assert_eq!(
        metrics.cold_starts.load(Ordering::SeqCst),
        0,
        "nothing runs before a call"
    );

    // Five calls at once: at most three environments, each a cold start.
    let pids = pids_answering(slow, 5, 400).await;
    let started = metrics.cold_starts.load(Ordering::SeqCst);
    assert!(pids.len() >= 2 && pids.len() <= 3, "{pids:?}");
    assert_eq!(started as usize, pids.len(), "{pids:?}");

    // Idle environments stop; the next call is a cold start again.
    eventually("idle environments stop", || {
        metrics.environments.load(Ordering::SeqCst) == 0
    })
    .await;
    call(slow, json!({"ms": 1})).await.unwrap();
    assert_eq!(metrics.cold_starts.load(Ordering::SeqCst), started + 1);
    functions.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_that_a_warm_environment_clears_starts_no_other() {
    let mut quick = spec("quick", fixtures().join("cjs"), "nodejs20.x", "app.slow");
    quick.concurrency = 5;
    quick.idle_timeout = Some(Duration::from_secs(60));
    let (functions, f) = start(vec![quick]).await;
    let quick = &f[0];
    call(quick, json!({"ms": 1})).await.unwrap();
    // Ten quick calls at once: the warm process answers them all well within a cold start
    // (the delay before another environment starts), so none starts.
    let pids = pids_answering(quick, 10, 1).await;
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert_eq!(quick.metrics().cold_starts.load(Ordering::SeqCst), 1);
    functions.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_send_new_invocations_to_fresh_processes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.js");
    std::fs::write(
        &file,
        "exports.handler = async () => ({ statusCode: 200, body: 'v1 ' + process.pid });\n",
    )
    .unwrap();
    let mut s = spec("reload", dir.path().to_owned(), "nodejs20.x", "app.handler");
    s.watch_code = true;
    let (functions, f) = start(vec![s]).await;
    let first = body(&call(&f[0], json!({})).await.unwrap());
    assert!(first.starts_with("v1 "), "{first}");
    std::fs::write(
        &file,
        "exports.handler = async () => ({ statusCode: 200, body: 'v2 ' + process.pid });\n",
    )
    .unwrap();
    // The change is noticed within the watch interval; wait for the new code to answer.
    let second = answer_starting_with(&f[0], "v2 ").await;
    assert_ne!(first[3..], second[3..], "a fresh process");
    functions.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_lets_the_invocation_under_way_finish_then_the_process_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.js");
    let code = |version: &str| {
        format!(
            "exports.handler = async (e) => {{\n\
             await new Promise((r) => setTimeout(r, e.ms || 0));\n\
             return {{ statusCode: 200, body: '{version} ' + process.pid }};\n}};\n"
        )
    };
    std::fs::write(&file, code("v1")).unwrap();
    let mut s = spec("edited", dir.path().to_owned(), "nodejs20.x", "app.handler");
    s.concurrency = 1;
    s.watch_code = true;
    let (functions, f) = start(vec![s]).await;
    let first = body(&call(&f[0], json!({})).await.unwrap());
    assert!(first.starts_with("v1 "), "{first}");

    // A slow invocation is under way when the code changes.
    let function = f[0].clone();
    let slow = tokio::spawn(async move { call(&function, json!({"ms": 1500})).await });
    let metrics = f[0].metrics().clone();
    eventually("the slow call starts", || {
        metrics.busy.load(Ordering::SeqCst) > 0
    })
    .await;
    std::fs::write(&file, code("v2")).unwrap();

    // It finishes on the old process, not killed by the edit...
    let slow = body(&slow.await.unwrap().unwrap());
    assert_eq!(slow, first, "the invocation under way ends on its process");
    // ...which then leaves: the next calls go to a fresh process with the new code.
    let second = answer_starting_with(&f[0], "v2 ").await;
    assert_ne!(first[3..], second[3..], "a fresh process");
    functions.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_the_runtime_provides_is_there() {
    let root = fixtures().join("sdk");
    let (functions, f) = start(vec![
        spec("sdk-v3", root.clone(), "nodejs22.x", "app.handler"),
        spec("boto3", root, "python3.12", "boto.handler"),
    ])
    .await;
    // Installed into the data directory's cache, not into the app.
    assert!(
        data_dir()
            .join("sdk/node/node_modules/@aws-sdk/client-apigatewaymanagementapi/package.json")
            .is_file()
    );
    assert!(!fixtures().join("sdk/node_modules").exists());
    // The SDK's default endpoint is switchboard's, from AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI.
    assert_eq!(
        body(&call(&f[0], json!({})).await.unwrap()),
        "http://127.0.0.1:9/dev/@connections/abc"
    );
    assert_eq!(
        body(&call(&f[1], json!({})).await.unwrap()),
        "http://127.0.0.1:9/dev"
    );
    functions.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A template served for real: handlers reach the management API without a change.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A server started from a template on a port-0 listener; stopped when dropped.
struct AppServer {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl AppServer {
    async fn start(template_path: &Path, overrides: &Overrides, data_dir: PathBuf) -> AppServer {
        let loaded = template::load(template_path, overrides).unwrap_or_else(|e| panic!("{e}"));
        let mut config = switchboard::Config {
            data_dir,
            ..switchboard::Config::default()
        };
        loaded.apply_to(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            switchboard::run(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        });
        AppServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn url(&self, stage: &str) -> String {
        format!("ws://{}/{stage}", self.addr)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Socket {
    let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connects in time")
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    socket
}

async fn next_text(socket: &mut Socket) -> String {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame in time")
            .expect("the connection stays open")
            .unwrap();
        if let Message::Text(text) = frame {
            return text.to_string();
        }
    }
}

/// A data directory of a server's own (its local CA, its tables) that shares the SDK and
/// esbuild caches with the other tests.
fn server_data_dir() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let shared = data_dir();
    for dir in ["sdk", "tools"] {
        std::fs::create_dir_all(shared.join(dir)).unwrap();
        std::os::unix::fs::symlink(shared.join(dir), data.path().join(dir)).unwrap();
    }
    data
}

#[tokio::test(flavor = "multi_thread")]
async fn handlers_reach_the_management_api_however_they_build_its_endpoint() {
    let data = server_data_dir();
    let server = AppServer::start(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/endpoints/template.yaml"),
        &Overrides::default(),
        data.path().to_owned(),
    )
    .await;
    let mut socket = connect(&server.url("dev")).await;
    for (action, how) in [
        ("node-apiid", "node apiId"),
        ("node-domain", "node domainName"),
        ("node-env", "node environment"),
        ("py-apiid", "python apiId"),
        ("py-domain", "python domainName"),
        ("py-env", "python environment"),
    ] {
        socket
            .send(Message::text(format!(r#"{{"action":"{action}"}}"#)))
            .await
            .unwrap();
        let reply = next_text(&mut socket).await;
        assert!(
            reply.starts_with(&format!("{how} ok, connected at 20")),
            "{action}: {reply}"
        );
    }
    assert!(data.path().join("tls/ca.pem").is_file(), "the local CA");
    // One cold start per function, counted in /metrics.
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cold: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("switchboard_function_cold_starts_total{"))
        .collect();
    assert_eq!(cold.len(), 6, "{metrics}");
    assert!(cold.iter().all(|l| l.ends_with(" 1")), "{cold:?}");
    assert!(
        metrics.contains("switchboard_function_environments{function=\"endpoints-NodeApiId-"),
        "{metrics}"
    );
    socket.close(None).await.unwrap();
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The sample apps under examples/apps/, run as they are: real node and python, the SDKs from
// the registries (`npm ci` from the committed lock files; boto3 from pip), real clients (a
// WebSocket client, wscat, boto3, the AWS CLI). Every one keeps its connections in a table.

/// `npm ci` in an app directory, unless its dependencies are installed.
fn npm_ci(dir: &Path) {
    if dir.join("node_modules").is_dir() {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .expect("npm runs (scripts/test.sh installs it)");
    assert!(status.success(), "npm ci in {}", dir.display());
}

/// Runs the AWS CLI against switchboard; returns its standard output. Version 2 takes
/// `--data` as base64 unless told otherwise; version 1 as text.
fn aws(args: &[&str]) -> String {
    let v2 = std::process::Command::new("aws")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).starts_with("aws-cli/2")
                || String::from_utf8_lossy(&o.stderr).starts_with("aws-cli/2")
        })
        .unwrap_or(false);
    let mut command = std::process::Command::new("aws");
    command
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIASWITCHBOARDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    if v2 && args.contains(&"post-to-connection") {
        command.args(["--cli-binary-format", "raw-in-base64-out"]);
    }
    let out = command
        .output()
        .expect("the AWS CLI runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The items of a table, read back with `aws dynamodb scan` on the gateway's listener.
fn scan_with_cli(server: &AppServer, table: &str) -> Vec<serde_json::Value> {
    let endpoint = format!("http://{}", server.addr);
    let out = aws(&[
        "dynamodb",
        "scan",
        "--endpoint-url",
        &endpoint,
        "--table-name",
        table,
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["Items"].as_array().cloned().unwrap_or_default()
}

/// The items of a table, read back with boto3.
fn scan_with_boto3(server: &AppServer, table: &str) -> Vec<serde_json::Value> {
    let script = "import boto3, json, sys\n\
                  t = boto3.resource('dynamodb', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                      aws_access_key_id='x', aws_secret_access_key='y').Table(sys.argv[2])\n\
                  print(json.dumps(t.scan()['Items'], default=str))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, &format!("http://{}", server.addr), table])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until `f` holds, polling (the event is a table write another process makes).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection whose `$connect` succeeded, or the status it was refused with.
async fn try_connect(url: &str) -> Result<Socket, u16> {
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the handshake ends in time")
    {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

async fn send(socket: &mut Socket, frame: serde_json::Value) {
    socket.send(Message::text(frame.to_string())).await.unwrap();
}

/// No frame arrives on `socket` while a frame sent after it reaches `witness`.
async fn nothing_before(socket: &mut Socket, witness: &mut Socket, marker: &str) {
    assert_eq!(next_text(witness).await, marker);
    let early = tokio::time::timeout(Duration::from_millis(200), socket.next()).await;
    assert!(early.is_err(), "unexpected frame: {early:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sam_esm_sdk3_app_with_the_api_id_endpoint() {
    let template = apps().join("sam-esm-chat/template.yaml");
    let data = server_data_dir();
    let server = AppServer::start(&template, &Overrides::default(), data.path().to_owned()).await;
    let url = server.url("Prod");
    let mut a = connect(&url).await;
    let mut b = connect(&url).await;
    let mut c = connect(&url).await;
    // The connections are in the table, read back with boto3 and with the AWS CLI.
    assert_eq!(scan_with_boto3(&server, "esm_chat_connections").len(), 3);
    assert_eq!(scan_with_cli(&server, "esm_chat_connections").len(), 3);
    send(
        &mut a,
        json!({"action": "sendmessage", "data": "hello world"}),
    )
    .await;
    for socket in [&mut a, &mut b, &mut c] {
        assert_eq!(
            next_text(socket).await,
            "hello world",
            "the sender included"
        );
    }
    c.close(None).await.unwrap();
    eventually("$disconnect removes the connection", || {
        scan_with_cli(&server, "esm_chat_connections").len() == 2
    })
    .await;
    send(
        &mut b,
        json!({"action": "sendmessage", "data": "still here"}),
    )
    .await;
    assert_eq!(next_text(&mut a).await, "still here");
    assert_eq!(next_text(&mut b).await, "still here");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sam_sdk2_commonjs_app_with_the_domain_name_endpoint_and_an_authorizer() {
    let template = apps().join("sam-v2-chat/template.yaml");
    npm_ci(&apps().join("sam-v2-chat/src"));
    let loaded = load("sam-v2-chat/template.yaml", &Overrides::default());
    let table = loaded.tables[0].1["TableName"].as_str().unwrap().to_owned();
    let data = server_data_dir();
    let server = AppServer::start(&template, &Overrides::default(), data.path().to_owned()).await;
    let url = server.url("production");
    // The REQUEST authorizer: no token, 401 without a call; a wrong one, 401 from the function.
    assert_eq!(try_connect(&url).await.err(), Some(401));
    assert_eq!(
        try_connect(&format!("{url}?token=nope")).await.err(),
        Some(401)
    );
    let mut ann = try_connect(&format!("{url}?token=let-me-in&nick=ann"))
        .await
        .unwrap();
    let mut bob = try_connect(&format!("{url}?token=let-me-in&nick=bob"))
        .await
        .unwrap();
    let items = scan_with_boto3(&server, &table);
    let mut nicks: Vec<_> = items
        .iter()
        .map(|i| i["nick"].as_str().unwrap().to_owned())
        .collect();
    nicks.sort();
    assert_eq!(
        nicks,
        ["ann", "bob"],
        "the authorizer's context reached $connect"
    );
    send(
        &mut ann,
        json!({"action": "sendmessage", "message": "hi bob"}),
    )
    .await;
    assert_eq!(next_text(&mut bob).await, "ann: hi bob");
    send(
        &mut bob,
        json!({"action": "sendmessage", "message": "hi ann"}),
    )
    .await;
    nothing_before(&mut bob, &mut ann, "bob: hi ann").await;
    bob.close(None).await.unwrap();
    eventually("the callback-style $disconnect removes bob", || {
        scan_with_cli(&server, &table).len() == 1
    })
    .await;
    server.stop().await;
}

/// Sends `messages` with `wscat -c URL -x ... -w SECS` and returns what it printed, one
/// message a line. wscat only works on a terminal, so it runs under `script` (a pseudo
/// terminal); its colours and prompts are dropped.
async fn wscat_exchange(url: &str, messages: &[&str], wait_secs: u32) -> Vec<String> {
    let mut command = format!("wscat -c '{url}'");
    for m in messages {
        assert!(!m.contains('\''), "{m}");
        command.push_str(&format!(" -x '{m}'"));
    }
    command.push_str(&format!(" -w {wait_secs}"));
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("script")
            .args(["-qfc", &command, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("wscat ends in time")
    .expect("script and wscat run (scripts/test.sh installs wscat)");
    let text = String::from_utf8_lossy(&out.stdout);
    // ANSI escapes: ESC [ parameters letter.
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            plain.push(c);
        }
    }
    plain
        .lines()
        .map(|l| l.trim_start_matches("> ").trim_start_matches("< ").trim())
        .filter(|l| !l.is_empty() && *l != ">")
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn serverless_2018_plugin_app_with_a_typescript_handler() {
    let dir = apps().join("sls-2018-ts");
    npm_ci(&dir);
    let data = server_data_dir();
    let server = AppServer::start(
        &dir.join("serverless.yml"),
        &Overrides::default(),
        data.path().to_owned(),
    )
    .await;
    let url = server.url("dev");
    let mut watcher = connect(&url).await;
    // The article's client: wscat. sendMessage reaches everyone, the sender included; an
    // unknown action gets the $default answer.
    let printed = wscat_exchange(
        &url,
        &[
            r#"{"action": "sendMessage", "data": "hello world"}"#,
            r#"{"action": "clap"}"#,
        ],
        5,
    )
    .await;
    // Two functions answer concurrently: in either order.
    let mut printed = printed;
    printed.sort();
    assert_eq!(printed, ["Error: Invalid action type", "hello world"]);
    assert_eq!(next_text(&mut watcher).await, "hello world");
    // A push from outside any handler, with the AWS CLI, to the ids in the table.
    let mut other = connect(&url).await;
    eventually("wscat's connection leaves the table", || {
        scan_with_cli(&server, "applause-chat-dev-connections").len() == 2
    })
    .await;
    let items = scan_with_cli(&server, "applause-chat-dev-connections");
    let endpoint = url.replace("ws://", "http://");
    for item in items {
        let id = item["ConnectionId"]["S"].as_str().unwrap();
        aws(&[
            "apigatewaymanagementapi",
            "post-to-connection",
            "--endpoint-url",
            &endpoint,
            &format!("--connection-id={id}"),
            "--data",
            "applause: 1",
        ]);
    }
    assert_eq!(next_text(&mut watcher).await, "applause: 1");
    assert_eq!(next_text(&mut other).await, "applause: 1");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serverless_v3_app_with_nested_handlers_and_get_connection() {
    let dir = apps().join("sls-v3-nested");
    npm_ci(&dir);
    let data = server_data_dir();
    let overrides = Overrides {
        stage: Some("test".into()),
        ..Overrides::default()
    };
    let server = AppServer::start(
        &dir.join("serverless.yml"),
        &overrides,
        data.path().to_owned(),
    )
    .await;
    let url = server.url("test");
    let mut a = connect(&url).await;
    let mut b = connect(&url).await;
    let mut c = connect(&url).await;
    assert_eq!(
        scan_with_boto3(&server, "tutorial-chat-connections-test").len(),
        3
    );
    send(&mut a, json!({"action": "whoami"})).await;
    let reply = next_text(&mut a).await;
    let prefix = "Use the sendmessage route to send a message. Your info: ";
    let info: serde_json::Value = serde_json::from_str(
        reply
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{reply}")),
    )
    .unwrap();
    assert!(info["ConnectedAt"].is_string(), "{info}");
    assert_eq!(info["Identity"]["SourceIp"], "127.0.0.1", "{info}");
    let id = info["connectionID"].as_str().unwrap();
    let items = scan_with_cli(&server, "tutorial-chat-connections-test");
    assert!(
        items.iter().any(|i| i["connectionId"]["S"] == id),
        "{items:?}"
    );
    send(
        &mut a,
        json!({"action": "sendmessage", "message": "hello, everyone!"}),
    )
    .await;
    assert_eq!(next_text(&mut b).await, "hello, everyone!");
    assert_eq!(next_text(&mut c).await, "hello, everyone!");
    send(
        &mut c,
        json!({"action": "sendmessage", "message": "from c"}),
    )
    .await;
    // Everyone else, not the sender.
    assert_eq!(next_text(&mut a).await, "from c");
    nothing_before(&mut c, &mut b, "from c").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sam_app_with_globals_a_simple_table_and_a_two_way_route() {
    let template = apps().join("sam-python/template.yaml");
    let loaded = load("sam-python/template.yaml", &Overrides::default());
    let table = loaded.tables[0].1["TableName"].as_str().unwrap().to_owned();
    let data = server_data_dir();
    let server = AppServer::start(&template, &Overrides::default(), data.path().to_owned()).await;
    let url = server.url("v1");
    let mut a = connect(&url).await;
    let mut b = connect(&url).await;
    assert_eq!(scan_with_cli(&server, &table).len(), 2);
    // The selection expression is $request.body.op; ping is two-way.
    send(&mut a, json!({"op": "ping", "n": 7})).await;
    let pong: serde_json::Value = serde_json::from_str(&next_text(&mut a).await).unwrap();
    assert_eq!(pong["reply"], "pong 7");
    assert_eq!(pong["remaining_ms_positive"], true);
    assert!(
        pong["function"]
            .as_str()
            .unwrap()
            .starts_with("sam-python-Ping-")
    );
    send(&mut b, json!({"op": "say", "text": "hi from python"})).await;
    assert_eq!(next_text(&mut a).await, "hi from python");
    assert_eq!(next_text(&mut b).await, "hi from python");
    a.close(None).await.unwrap();
    eventually("$disconnect removes a", || {
        scan_with_boto3(&server, &table).len() == 1
    })
    .await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Measurements for docs/benchmarks.md: `cargo test --test it -- --ignored --nocapture apps::measure`.

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement for docs/benchmarks.md; run with --ignored --nocapture"]
async fn measure_invocation_overhead_and_cold_starts() {
    let root = fixtures().join("bench");
    // Warm round trips: switchboard's queue, the Runtime API and the runtime loop, end to end.
    for (runtime, handler) in [("nodejs20.x", "app.handler"), ("python3.11", "app.handler")] {
        let mut s = spec("warm", root.clone(), runtime, handler);
        s.concurrency = 1;
        let (functions, f) = start(vec![s]).await;
        for _ in 0..50 {
            call(&f[0], json!({})).await.unwrap();
        }
        let mut times = Vec::new();
        for _ in 0..1000 {
            let t = std::time::Instant::now();
            call(&f[0], json!({"body": "x"})).await.unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "round trip {runtime}: p50 {:?} p90 {:?} p99 {:?}",
            percentile(&times, 0.5),
            percentile(&times, 0.9),
            percentile(&times, 0.99)
        );
        assert!(percentile(&times, 0.5) < Duration::from_millis(50));
        functions.stop().await;
    }
    // Cold starts: the first invocation of a fresh function (process start, runtime init,
    // handler load, the invocation).
    for (name, dir, runtime, handler) in [
        ("node-cjs", root.clone(), "nodejs20.x", "app.handler"),
        ("node-esm", root.join("esm"), "nodejs20.x", "app.handler"),
        ("node-ts", root.join("ts"), "nodejs20.x", "app.handler"),
        ("python", root.clone(), "python3.11", "app.handler"),
    ] {
        let mut times = Vec::new();
        for _ in 0..10 {
            let (functions, f) = start(vec![spec(name, dir.clone(), runtime, handler)]).await;
            let t = std::time::Instant::now();
            call(&f[0], json!({})).await.unwrap();
            times.push(t.elapsed());
            assert_eq!(f[0].metrics().cold_starts.load(Ordering::SeqCst), 1);
            functions.stop().await;
        }
        times.sort();
        println!(
            "cold start {name}: p50 {:?} min {:?} max {:?}",
            percentile(&times, 0.5),
            times[0],
            times[times.len() - 1]
        );
    }
}

/// `switchboard serve --config FILE` (the binary), stopped with SIGTERM when dropped.
struct ServeProcess {
    child: std::process::Child,
    addr: String,
}

impl ServeProcess {
    fn start(args: &[&str]) -> ServeProcess {
        use std::io::BufRead;
        let mut child = switchboard()
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the server logs until it listens")
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "listening" {
                break v["fields"]["address"].as_str().unwrap().to_owned();
            }
        };
        // Keep draining the log so the server never blocks on it.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        ServeProcess { child, addr }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_takes_a_template_and_wscat_talks_to_its_handlers() {
    let data = server_data_dir();
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/endpoints/template.yaml");
    let server = ServeProcess::start(&[
        "--config",
        template.to_str().unwrap(),
        "--stage",
        "qa",
        "--region",
        "eu-central-1",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let printed = wscat_exchange(
        &format!("ws://{}/qa", server.addr),
        &[r#"{"action":"node-apiid"}"#, r#"{"action":"py-domain"}"#],
        10,
    )
    .await;
    assert_eq!(printed.len(), 2, "{printed:?}");
    assert!(
        printed[0].starts_with("node apiId ok, connected at "),
        "{printed:?}"
    );
    assert!(
        printed[1].starts_with("python domainName ok, connected at "),
        "{printed:?}"
    );
    drop(server);
}
