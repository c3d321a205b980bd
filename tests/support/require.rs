//! What a test needs but the repository cannot hold (a tool) or holds by path (a data
//! file): under `CI=true` a missing one fails the test, elsewhere it is skipped with a
//! printed reason. Never a silent early return.
//!
//! One file, shared by path: the root crate's integration tests (`tests/support`), its
//! unit tests, and the profiler crate's unit and integration tests all `#[path]` it in.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether this run is CI's (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Records that `test` cannot run because of `why`: panics under `CI=true`; otherwise
/// prints `SKIPPED <test>: <why>` to stderr (not captured by libtest) and returns false,
/// for the caller to return on.
pub fn unmet(test: &str, why: &str) -> bool {
    assert!(!in_ci(), "{test}: cannot run under CI=true: {why}");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (CI=true makes this fail)"
    );
    false
}

/// A real public trace from `testdata/traces/` (see its README), by file name.
/// `None` (after [`unmet`]) when it is absent.
pub fn trace(test: &str, name: &str) -> Option<PathBuf> {
    let p = traces_dir().join(name);
    if p.is_file() {
        Some(p)
    } else {
        unmet(test, &format!("{} is absent", p.display()));
        None
    }
}

/// `testdata/traces/` of the workspace: the nearest one above the crate being tested.
pub fn traces_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|d| d.join("testdata/traces"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| manifest.join("testdata/traces"))
}

/// Whether every one of `tools` runs (`<tool> --version`, also looked up in /usr/sbin
/// and /sbin); the first missing one is reported through [`unmet`].
pub fn tools(test: &str, tools: &[&str]) -> bool {
    match tools.iter().find(|t| !runs(t)) {
        None => true,
        Some(t) => unmet(
            test,
            &format!("`{t}` is not installed (scripts/install-deps installs it)"),
        ),
    }
}

fn runs(tool: &str) -> bool {
    let found = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    found(tool)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| found(&format!("{d}/{tool}")))
}
