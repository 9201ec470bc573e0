//! The Autobahn TestSuite cases, driven by `kosoku`, against the built-in echo API.
//!
//! Sections 12 and 13 test permessage-deflate, which switchboard (like API Gateway) does not
//! negotiate, so they do not apply. `scripts/test.sh` installs `kosoku`.
//!
//! The cases time themselves on the wall clock: a UTF-8 case kills its connection if the echo and
//! the closing handshake take more than 0.5 s. `.config/nextest.toml` gives this test the machine
//! to itself, but a CI host can still stall a process for that long, so a case that fails is run
//! once more on its own; it passes only if that second run is OK. A protocol fault fails both.

use crate::common::*;
use std::path::Path;
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
    let selection = ["-x", "12.*", "-x", "13.*", "-p", "4"];
    let cases = kosoku(&server.ws_url(), &selection, report.path()).await;
    assert_eq!(cases.len(), 301, "the applicable cases");
    for (case, verdict) in cases.iter().filter(|(_, v)| !v.ok()) {
        let again = report.path().join(case);
        let rerun = kosoku(&server.ws_url(), &["-i", case], &again).await;
        assert!(
            rerun.len() == 1 && rerun[0].1.ok(),
            "case {case} failed twice: {verdict:?}, then {rerun:?}; reports in {}",
            report.keep().display()
        );
        eprintln!("case {case} passed when run again ({verdict:?} the first time)");
    }
}

#[derive(Debug)]
struct Verdict {
    behavior: String,
    behavior_close: String,
}

impl Verdict {
    fn ok(&self) -> bool {
        ["OK", "INFORMATIONAL"].contains(&self.behavior.as_str())
            && ["OK", "INFORMATIONAL"].contains(&self.behavior_close.as_str())
    }
}

/// Runs the selected cases against `url`, writing the reports to `out`, and returns each case's
/// verdict from the report index.
async fn kosoku(url: &str, selection: &[&str], out: &Path) -> Vec<(String, Verdict)> {
    let run = tokio::process::Command::new("kosoku")
        .arg(url)
        .args(selection)
        .arg("-o")
        .arg(out)
        .output()
        .await
        .expect("kosoku is installed (scripts/test.sh installs it)");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap_or_else(|e| {
            panic!(
                "kosoku wrote no report ({e}): {}\n{}",
                String::from_utf8_lossy(&run.stdout),
                String::from_utf8_lossy(&run.stderr)
            )
        }))
        .unwrap();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    index
        .as_object()
        .unwrap()
        .values()
        .flat_map(|cases| cases.as_object().unwrap())
        .map(|(case, result)| {
            let verdict = Verdict {
                behavior: text(&result["behavior"]),
                behavior_close: text(&result["behaviorClose"]),
            };
            (case.clone(), verdict)
        })
        .collect()
}
