//! The Autobahn TestSuite cases, driven by `kosoku`, against the built-in echo API.
//!
//! Sections 12 and 13 test permessage-deflate, which switchboard (like API Gateway) does not
//! negotiate, so they do not apply. `scripts/test.sh` installs `kosoku`.

use crate::common::*;
use switchboard::config::BuiltinApp;

#[tokio::test]
async fn every_applicable_autobahn_case_passes() {
    let mut cfg = config();
    cfg.app = BuiltinApp::Echo;
    // The suite sends binary messages and messages up to 16 MiB.
    cfg.limits.accept_binary = true;
    cfg.limits.max_frame_bytes = 16 << 20;
    cfg.limits.max_message_bytes = 16 << 20;
    cfg.limits.max_outbox_bytes = 64 << 20;
    let server = TestServer::start(cfg).await;
    let report = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("kosoku")
        .arg(server.ws_url())
        .args(["-x", "12.*", "-x", "13.*", "-p", "4", "-o"])
        .arg(report.path())
        .output()
        .await
        .expect("kosoku is installed (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("301 cases passed"), "{stdout}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.path().join("index.json")).unwrap()).unwrap();
    let mut not_ok = Vec::new();
    for cases in index.as_object().unwrap().values() {
        for (case, result) in cases.as_object().unwrap() {
            let behavior = result["behavior"].as_str().unwrap();
            if behavior != "OK" && behavior != "INFORMATIONAL" {
                not_ok.push(format!("{case}: {behavior}"));
            }
        }
    }
    assert!(not_ok.is_empty(), "{not_ok:?}");
}
