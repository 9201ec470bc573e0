//! The four functions under switchboard, from `examples/lambda-chat.toml`, driven by real
//! WebSocket clients: the second article's chat, end to end.

#[path = "../../../tests/it/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use switchboard::config::FileConfig;
use switchboard::integration::definition::IntegrationSpec;

/// The example's configuration, with the binary cargo built for this test and a fresh table.
fn config(table: &Path) -> switchboard::Config {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let file = FileConfig::load(&examples.join("lambda-chat.toml")).unwrap();
    let mut definition = file.definition(examples);
    for route in definition.routes.values_mut() {
        let IntegrationSpec::Lambda(function) = &mut route.integration else {
            panic!("every route is a Lambda function");
        };
        function.command = vec![env!("CARGO_BIN_EXE_lambda-chat").to_owned()];
        function
            .env
            .insert("CONNECTIONS_DIR".into(), table.display().to_string());
    }
    switchboard::Config {
        api: definition,
        ..switchboard::Config::default()
    }
}

fn ids(table: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(table)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    ids.sort();
    ids
}

/// Waits until the table holds exactly `expected`.
async fn table_becomes(table: &Path, mut expected: Vec<String>) {
    expected.sort();
    tokio::time::timeout(WAIT, async {
        while ids(table) != expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("table {:?}, expected {expected:?}", ids(table)));
}

#[tokio::test]
async fn the_tutorial_chat_runs_unchanged() {
    let table_dir = tempfile::tempdir().unwrap();
    let table: PathBuf = table_dir.path().join("connections");
    let server = TestServer::start(config(&table)).await;

    let mut a = server.connect().await;
    let mut b = server.connect().await;
    let mut c = server.connect().await;
    // `$default` answers with GetConnection's info, as in the tutorial.
    let (id_a, id_b, id_c) = (a.chat_id().await, b.chat_id().await, c.chat_id().await);
    table_becomes(&table, vec![id_a.clone(), id_b.clone(), id_c.clone()]).await;

    a.send(r#"{"action": "whoami"}"#).await;
    let reply = a.recv().await;
    let info = reply
        .strip_prefix("Use the sendmessage route to send a message. Your info: ")
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(info).unwrap();
    assert_eq!(info["connectionID"], id_a);
    assert_eq!(info["Identity"]["SourceIp"], "127.0.0.1");
    assert!(info["ConnectedAt"].as_str().unwrap().ends_with('Z'));

    // sendmessage reaches everyone but the sender.
    a.send(r#"{"action": "sendmessage", "message": "hello, everyone!"}"#)
        .await;
    assert_eq!(b.recv().await, "hello, everyone!");
    assert_eq!(c.recv().await, "hello, everyone!");
    a.send(r#"{"action": "whoami"}"#).await;
    assert!(
        a.recv().await.starts_with("Use the sendmessage route"),
        "the sender got nothing else"
    );

    // `$disconnect` deletes the id; a stale id answers GoneException and is deleted too.
    b.close(1000, "bye").await;
    table_becomes(&table, vec![id_a.clone(), id_c.clone()]).await;
    std::fs::write(table.join("Tq3mxb7WNjMCFhA="), b"").unwrap();
    c.send(r#"{"action": "sendmessage", "message": "still here?"}"#)
        .await;
    assert_eq!(a.recv().await, "still here?");
    table_becomes(&table, vec![id_a, id_c]).await;
}
