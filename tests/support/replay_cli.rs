//! Runs the real `prescale replay` binary and reads its `summary.json` (shared by the
//! replay tests; loaded with `#[path]` where the rest of `support` is not needed).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `prescale replay --input INPUT --out OUT --quiet EXTRA…`.
pub fn replay(input: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("replay")
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .args(extra)
        .output()
        .expect("run prescale replay")
}

/// The run's `summary.json`; panics with the run's output when it failed.
pub fn summary(run: &Output, out: &Path) -> serde_json::Value {
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}
