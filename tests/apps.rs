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
