//! The Python HTTP-backend example (`examples/http-backend/`) behind the real server: the
//! tutorial's chat, with handlers that reach back through `domainName` and `stage`.

use std::path::Path;
use std::process::Stdio;

use crate::common::*;
use switchboard::config::FileConfig;
use switchboard::integration::definition::IntegrationSpec;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn the_python_backend_serves_the_tutorial_chat() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut backend = Command::new("python3")
        .arg(examples.join("http-backend/app.py"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (scripts/test.sh installs it)");
    let mut lines = BufReader::new(backend.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the backend starts")
        .unwrap()
        .unwrap();
    let base = first.strip_prefix("listening on ").unwrap().to_owned();

    // The example file, pointed at the port the backend got.
    let file = FileConfig::load(&examples.join("http-backend.toml")).unwrap();
    let mut definition = file.definition(&examples);
    for route in definition.routes.values_mut() {
        let IntegrationSpec::Http(http) = &mut route.integration else {
            panic!("every route is HTTP");
        };
        http.url = http.url.replace("http://127.0.0.1:9000", &base);
    }
    let mut config = config();
    config.api = definition;
    let server = TestServer::start(config).await;

    let mut a = server.connect().await;
    let mut b = server.connect().await;
    let mut c = server.connect().await;
    let id_a = a.chat_id().await;
    assert!(!id_a.is_empty());
    a.send(r#"{"action": "sendmessage", "message": "hello from python"}"#)
        .await;
    assert_eq!(b.recv().await, "hello from python");
    assert_eq!(c.recv().await, "hello from python");
    a.send(r#"{"action": "whoami"}"#).await;
    let reply = a.recv().await;
    assert!(
        reply.starts_with("Use the sendmessage route to send a message. Your info: {"),
        "{reply}"
    );
    assert!(
        reply.contains(&format!(r#""connectionID":"{id_a}""#)),
        "{reply}"
    );

    c.close(1000, "bye").await;
    b.send(r#"{"action": "sendmessage", "message": "who is left?"}"#)
        .await;
    assert_eq!(a.recv().await, "who is left?");
}
