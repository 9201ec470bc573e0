//! The API definition file through the real binary: broken files stop the start with the key
//! and why; every shipped example parses; relative paths start at the file's directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use switchboard::config::FileConfig;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `switchboard serve --config <text>` and returns its stderr; the start must fail.
fn refused(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&path)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the start must fail for:\n{text}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn broken_files_name_the_key_and_the_place() {
    let cases: &[(&str, &[&str])] = &[
        (
            "stage = \"dev\"\nrouets = {}\n",
            &["line 2, column 1", "unknown field `rouets`"],
        ),
        (
            "[routes.x]\nintegration = { type = \"http\", url = \"http://h/\", timeot_ms = 5 }\n",
            &["line 2", "unknown field `timeot_ms`"],
        ),
        (
            "[routes.x]\nintegration = { type = \"http\", url = \"http://h/\", timeout_ms = \"5\" }\n",
            &["line 2", "invalid type: string \"5\""],
        ),
        (
            "[routes.x]\nintegration = { type = \"grpc\", url = \"http://h/\" }\n",
            &["line 2", "unknown variant `grpc`"],
        ),
        (
            "[routes.x]\nintegration = { type = \"http\" }\n",
            &["line 2", "missing field `url`"],
        ),
        (
            "[routes.x]\nintegration = { type = \"builtin\", name = \"echo\" }\nroute_respone = \"$default\"\n",
            &["line 3, column 1", "unknown field `route_respone`"],
        ),
        (
            "[authorizer]\ntype = \"http\"\nurl = \"http://h/\"\nidentity_source = []\n",
            &["line 1", "unknown field `identity_source`"],
        ),
        (
            "[routes.x]\nintegration = { type = \"http\", url = \"http://h/\", timeout_ms = 30000 }\n",
            &["routes.x.integration.timeout_ms: must be between 50 and 29000"],
        ),
        (
            "[routes.\"$connect\"]\nintegration = { type = \"lambda\", command = [\"./missing/bootstrap\"] }\n",
            &[
                "routes.\"$connect\".integration.command:",
                "bootstrap does not exist",
            ],
        ),
        (
            "[routes.x]\nintegration = { type = \"builtin\", name = \"echo\" }\nroute_response = \"$other\"\n",
            &["routes.x.route_response:", "only \"$default\""],
        ),
        (
            "route_selection_expression = \"$request.body.\"\n[routes.x]\nintegration = { type = \"builtin\", name = \"echo\" }\n",
            &["route_selection_expression:"],
        ),
        (
            "[routes.\"$custom\"]\nintegration = { type = \"builtin\", name = \"echo\" }\n",
            &["route key \"$custom\" is not allowed"],
        ),
        (
            "[authorizer]\ntype = \"http\"\nurl = \"http://h/\"\nidentity_sources = [\"stageVariables.x\"]\n",
            &["authorizer.identity_sources:", "stageVariables.x"],
        ),
        (
            "[authorizer]\ntype = \"jwt\"\nalgorithm = \"RS256\"\npublic_key_file = \"nope.pem\"\nidentity_sources = [\"route.request.header.A\"]\n",
            &["authorizer:", "cannot read", "nope.pem"],
        ),
    ];
    for (text, expected) in cases {
        let stderr = refused(text);
        for needle in *expected {
            assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_and_the_documented_example_parse() {
    let files = examples();
    assert!(files.len() >= 4, "{files:?}");
    for file in &files {
        let parsed = FileConfig::load(file).unwrap_or_else(|e| panic!("{e}"));
        let definition = parsed.definition(file.parent().unwrap());
        // Examples whose programs must be built first are checked where they are built.
        if file.ends_with("lambda-chat.toml") {
            continue;
        }
        definition
            .prepare("switchboard")
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    let docs = std::fs::read_to_string(root().join("docs/config.md")).unwrap();
    let blocks: Vec<&str> = docs
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert!(!blocks.is_empty());
    for block in blocks {
        FileConfig::parse(block).unwrap_or_else(|e| panic!("{e}\nin docs/config.md:\n{block}"));
    }
}

#[tokio::test]
async fn the_binary_serves_a_definition_with_paths_relative_to_the_file() {
    let data = tempfile::tempdir().unwrap();
    // The function's `./bash-bootstrap/bootstrap` is found next to the file, not in the
    // working directory (the package's root, where there is none).
    let file = root().join("examples/bash-bootstrap.toml");
    let (mut child, address, log) =
        spawn_binary(data.path(), &["--config", file.to_str().unwrap()]).await;
    drain_log(log);
    let mut c = Client::connect(&format!("ws://{address}/dev")).await;
    c.send("hi").await;
    assert!(c.recv().await.starts_with("hello from bash-hello"));

    sigterm(&child);
    assert_eq!(c.expect_close().await.0, 1001);
    drop(c);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the server stops")
        .unwrap();
    assert!(status.success(), "{status}");
}
