//! `prescale demo` end to end: the real binary runs a short compressed day through the
//! real sidecar (its own child process) and must exit 0, report successful requests,
//! show a forecast within seconds (from the seeded synthetic history, and say so), and
//! leave no sidecar process behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The number after `key` among whitespace-separated words of `line`.
fn value_after(line: &str, key: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// A progress line's elapsed seconds and its forecast (point, upper), when it has one:
/// `[   3s/10s 07:12] … forecast 1.32/1.37 (seeded) …`.
fn forecast_at(line: &str) -> Option<(u64, f64, f64)> {
    let elapsed = line
        .strip_prefix('[')?
        .trim_start()
        .split('s')
        .next()?
        .parse()
        .ok()?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "forecast")?;
    let (point, upper) = words.next()?.split_once('/')?;
    Some((elapsed, point.parse().ok()?, upper.parse().ok()?))
}

#[test]
fn demo_runs_a_short_day_and_cleans_up() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["demo", "--duration", "10s", "--rate", "100"])
        .stdin(Stdio::null())
        .output()
        .expect("run prescale demo");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!(
        "exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(out.status.success(), "{report}");
    assert!(took < Duration::from_secs(60), "took {took:?}\n{report}");

    // Not a terminal: one compact progress line per refresh, no screen clearing.
    assert!(!stdout.contains("\x1b[2J"), "{report}");
    assert!(
        stdout.lines().filter(|l| l.starts_with('[')).count() >= 5,
        "{report}"
    );
    assert!(stdout.contains("curl http://127.0.0.1:"), "{report}");

    // The store was seeded with synthetic history, and the output says so.
    let note = "forecast seeded with 2 days of synthetic history (demo only)";
    assert!(
        stdout.contains(&format!("prescale demo: {note}")),
        "{report}"
    );
    assert!(stdout.contains(&format!("history     {note}")), "{report}");
    // So a forecast shows within the first 5 s, not after whole live minutes: a
    // positive point with an upper bound at or above it, tagged as seeded.
    let first = stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .find_map(forecast_at)
        .unwrap_or_else(|| panic!("no forecast shown\n{report}"));
    let (at, point, upper) = first;
    assert!(at <= 5, "first forecast at {at} s\n{report}");
    assert!(point > 0.0 && upper >= point, "{first:?}\n{report}");
    assert!(stdout.contains(" (seeded)"), "{report}");
    assert!(stdout.contains("  forecast    next "), "{report}");

    let requests = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("requests"))
        .unwrap_or_else(|| panic!("no requests line\n{report}"));
    let sent = value_after(requests, "sent").expect("sent");
    let ok = value_after(requests, "ok").expect("ok");
    let failed = value_after(requests, "failed").expect("failed");
    assert!(ok > 0, "{report}");
    assert_eq!(ok + failed, sent, "{report}");
    assert!(failed * 20 <= sent, "more than 5 % failed\n{report}");
    // A 10 s day at a 100 req/s peak offers roughly 500 requests (the mean of the
    // shape is ~0.6 of the peak), and never more than peak × duration.
    assert!((200..=1000).contains(&sent), "{report}");
    assert!(stdout.contains("latency     p50 "), "{report}");
    assert!(
        stdout.contains("stopped after POST /shutdown (exit status: 0)"),
        "{report}"
    );

    // The sidecar child is gone (the demo reaped it): its pid no longer exists.
    let pid = stdout
        .lines()
        .find_map(|l| {
            l.split_once("sidecar pid ")
                .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<u32>().ok())
        })
        .unwrap_or_else(|| panic!("no sidecar pid\n{report}"));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "sidecar pid {pid} still exists\n{report}"
    );
}

#[test]
fn demo_refuses_bad_arguments() {
    // `--no-history` is accepted (the usage error is about the address, exit 64).
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["demo", "--no-history", "--admin", "0.0.0.0:0"])
        .output()
        .expect("run prescale demo");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["demo", "--admin", "0.0.0.0:0"])
        .output()
        .expect("run prescale demo");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
