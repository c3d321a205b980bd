//! `prescale demo` end to end: the real binary runs its default day (time scale 600, so
//! 60 s cover 03:00 to 13:00: the night, the morning ramp and the lunch spike) through
//! the real sidecar (its own child process) and must exit 0, show the forecast changing
//! and the predictive rule asking for the ramp's replicas before the reactive rule
//! does, pre-shed batch requests (and no critical one) during the spike and raise an
//! anomaly for it, write an HTML report with inline SVG, and leave no sidecar process
//! behind.

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

/// The word after `key` among whitespace-separated words of `line`.
fn word_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == key)?;
    words.next()
}

/// The summary line that starts with `prefix`.
fn summary_line<'a>(stdout: &'a str, prefix: &str, report: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line\n{report}"))
}

#[test]
fn demo_shows_the_forecast_leading_the_ramp_and_writes_a_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let html = dir.path().join("report.html");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args([
            "demo",
            "--duration",
            "60s",
            "--time-scale",
            "600",
            "--report",
        ])
        .arg(&html)
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
    assert!(took < Duration::from_secs(110), "took {took:?}\n{report}");

    // Not a terminal: one compact progress line a second, no screen clearing.
    assert!(!stdout.contains("\x1b[2J"), "{report}");
    assert!(
        stdout.lines().filter(|l| l.starts_with('[')).count() >= 20,
        "{report}"
    );
    assert!(stdout.contains("curl http://127.0.0.1:"), "{report}");
    let note = "forecast warm-started from 3 earlier days of the same shape (demo only)";
    assert!(stdout.contains(&format!("history     {note}")), "{report}");

    // The forecast moved with the day: a new one per closed step, at least 10.
    let changes = value_after(
        summary_line(&stdout, "forecast    changed", &report),
        "changed",
    )
    .expect("forecast changes");
    assert!(changes >= 10, "{report}");

    // The ramp's middle level: the predictive rule asked for it before the reactive
    // rule did (or the reactive rule never did within the morning).
    let level = summary_line(&stdout, "ramp level", &report);
    let predictive = word_after(level, "predictive").expect("predictive time");
    let reactive = word_after(level, "reactive").expect("reactive time");
    assert_ne!(predictive, "never", "{report}");
    assert!(
        reactive == "never" || predictive < reactive,
        "predictive {predictive} not before reactive {reactive}\n{report}"
    );
    // And by a median of at least half the start-up time (20 min) over the ramp.
    let lead = summary_line(&stdout, "lead ", &report);
    let minutes: f64 = word_after(lead, "median")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no median lead\n{report}"));
    assert!(minutes >= 10.0, "{report}");
    assert!(
        summary_line(&stdout, "hpa ", &report).contains("median "),
        "{report}"
    );

    // The lunch spike (larger than any earlier day, so than the forecast): batch
    // requests pre-shed within its window, and no request of the protected tier
    // (`critical`: not sheddable) over the whole run.
    let spike = summary_line(&stdout, "spike ", &report);
    let (in_spike, over_run) = spike
        .split_once("over the run:")
        .unwrap_or_else(|| panic!("no per-tier counts\n{report}"));
    let count = |text: &str, tier: &str| -> u64 {
        let key = format!("{tier}=");
        text.split_whitespace()
            .find_map(|w| w.trim_end_matches(';').strip_prefix(&key)?.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count(in_spike, "batch") > 0,
        "no batch request pre-shed in the spike\n{report}"
    );
    assert_eq!(count(over_run, "critical"), 0, "{report}");
    assert!(over_run.contains("critical="), "{report}");
    // The spike raised an anomaly of its own, named in the summary.
    let anomaly = summary_line(&stdout, "anomaly ", &report);
    assert!(anomaly.contains("` on "), "{report}");
    assert!(anomaly.contains("in the spike"), "{report}");
    let during = value_after(anomaly, "raised:").expect("anomalies during the spike");
    assert!(during >= 1, "{report}");

    // The HTML report: where the summary says, self-contained, with SVG charts.
    let path = summary_line(&stdout, "report ", &report)
        .trim_start()
        .trim_start_matches("report")
        .trim();
    assert_eq!(std::path::Path::new(path), html, "{report}");
    let page = std::fs::read_to_string(&html).expect("read the report");
    assert!(page.matches("<svg").count() >= 3, "{report}");
    assert!(!page.contains("src=\"http"), "no external assets");

    let requests = summary_line(&stdout, "requests", &report);
    let sent = value_after(requests, "sent").expect("sent");
    let ok = value_after(requests, "ok").expect("ok");
    let failed = value_after(requests, "failed").expect("failed");
    let shed = value_after(requests, "shed").expect("batch shed");
    assert!(ok > 0, "{report}");
    assert_eq!(ok + failed + shed, sent, "{report}");
    assert!(failed * 20 <= sent, "more than 5 % failed\n{report}");
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
