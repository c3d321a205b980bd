//! `prescale replay` on the input formats a new user brings (a per-request LLM CSV, a
//! `[DD:HH:MM:SS]` log, a series with missing rows): the real binary on small cuts of
//! real traces in `testdata/replay/` (a missing one fails under `CI=true`).

#[path = "support/require.rs"]
mod require;

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(test: &str, name: &str) -> Option<PathBuf> {
    let p = require::traces_dir()
        .parent()
        .map(|d| d.join("replay").join(name))
        .unwrap_or_default();
    if p.is_file() {
        Some(p)
    } else {
        require::unmet(test, &format!("{} is absent", p.display()));
        None
    }
}

fn replay(input: &PathBuf, out: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["replay", "--quiet", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run prescale replay")
}

#[test]
fn a_per_request_csv_is_refused_unnamed_and_replayed_with_its_columns() {
    let test = "a_per_request_csv_is_refused_unnamed_and_replayed_with_its_columns";
    let Some(input) = fixture(test, "azure_llm_code_head.csv") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let refused = replay(&input, &dir.path().join("a"), &[]);
    assert_eq!(refused.status.code(), Some(64));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--format request-csv --columns"), "{err}");
    assert!(
        !dir.path().join("a").exists(),
        "nothing written for a refused input"
    );

    let out = dir.path().join("b");
    let run = replay(
        &input,
        &out,
        &["--columns", "TIMESTAMP,ContextTokens,GeneratedTokens"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    // One request a row: 72 rows, 72 requests (not the sum of a token column).
    assert!(stdout.contains(": 72 requests over"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["inputs"]["format"], "RequestCsv");
    assert_eq!(summary["inputs"]["requests"], 72);
}

#[test]
fn missing_rows_are_counted_and_the_report_shows_dates() {
    let test = "missing_rows_are_counted_and_the_report_shows_dates";
    let Some(input) = fixture(test, "elb_gap.csv") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = replay(&input, dir.path(), &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("1 gaps in the input (1 missing rows"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["inputs"]["missing_rows"], 1);
    assert_eq!(
        summary["inputs"]["gaps"][0]["start"],
        "2014-04-10T11:34:00Z"
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("from 2014-04-10T10:44:00Z"), "{html}");
    let demand = std::fs::read_to_string(dir.path().join("plots/demand.svg")).unwrap();
    assert!(demand.contains("time (UTC)") && demand.contains("04-10 11:"));
}

#[test]
fn a_day_and_clock_log_is_replayed_in_hours_from_start() {
    let test = "a_day_and_clock_log_is_replayed_in_hours_from_start";
    let Some(input) = fixture(test, "epa_http_head.log") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = replay(&input, dir.path(), &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["inputs"]["dated"], false);
    assert_eq!(summary["inputs"]["requests"], 9);
    let demand = std::fs::read_to_string(dir.path().join("plots/demand.svg")).unwrap();
    assert!(demand.contains("hours from start") && !demand.contains("(UTC)"));
}
