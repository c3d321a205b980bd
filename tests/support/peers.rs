//! Third-party test peers written in Python (tests/peers/): servers the tests start
//! and clients they run, with the packages `scripts/install-deps` installs.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::KillOnDrop;

/// The path of a script in tests/peers/.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// Whether `python3` can import every module in `modules`. When it cannot, prints why
/// and returns false so the test can skip; under `CI=true` it panics instead, since CI
/// runs `scripts/install-deps`, which installs them.
pub fn python_usable(test: &str, modules: &[&str]) -> bool {
    let imports = format!("import {}", modules.join(", "));
    let why = match Command::new("python3").args(["-c", &imports]).output() {
        Ok(out) if out.status.success() => return true,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("python3: {e}"),
    };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "{test}: cannot run under CI=true: {why} (scripts/install-deps installs it)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (run scripts/install-deps; CI=true makes this fail)"
    );
    false
}

/// Starts a Python server script and waits (up to 20 s) for it to print `listening`.
pub fn start_server(name: &str, args: &[&str]) -> KillOnDrop {
    let mut child = Command::new("python3")
        .arg(script(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim() == "listening" {
                let _ = tx.send(());
            }
        }
    });
    let guard = KillOnDrop(child);
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{name} did not print `listening` within 20 s"));
    guard
}

/// What a client script printed: its `ok <check>` and `FAIL <check>: why` lines.
#[derive(Debug)]
pub struct ClientRun {
    pub success: bool,
    pub output: String,
}

impl ClientRun {
    /// Whether the script printed `ok <check>`.
    pub fn passed(&self, check: &str) -> bool {
        self.output
            .lines()
            .any(|l| l.trim() == format!("ok {check}"))
    }
}

/// Runs a Python client script to completion, bounded by `limit` (coreutils timeout).
pub fn run_client(name: &str, args: &[&str], limit: Duration) -> ClientRun {
    let out = Command::new("timeout")
        .arg(limit.as_secs().to_string())
        .arg("python3")
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    ClientRun {
        success: out.status.success(),
        output: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    }
}
