//! The browser tests: `tests/browser/*.test.mjs` drive Debian's headless chromium with
//! playwright-core against the real binary (which they start, stop and restart themselves).
//!
//! Needs `node`, `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci` in `tests/browser`;
//! `scripts/test.sh` installs all three.

use std::path::Path;
use std::process::Command;

#[test]
fn chat_ui_in_a_real_browser() {
    run_browser_test("chat.test.mjs");
}

/// Runs one `tests/browser/` script with node's test runner against the real binary; fails
/// with the runner's report.
pub(crate) fn run_browser_test(script: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run ./scripts/test.sh (or `npm ci` in tests/browser)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run ./scripts/test.sh (or `apt-get install chromium`)"
    );
    let output = Command::new("node")
        .args(["--test", "--test-reporter=spec", script])
        .current_dir(&dir)
        .env("SWITCHBOARD_BIN", env!("CARGO_BIN_EXE_switchboard"))
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(output.status.success(), "{script} failed:\n{report}");
}
