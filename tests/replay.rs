//! `prescale replay` end to end: the real binary on the real traces in
//! `testdata/traces/` (a missing one fails under `CI=true`), and on bad input.

#[path = "support/replay_cli.rs"]
mod replay_cli;
#[path = "support/require.rs"]
mod require;

use replay_cli::replay;

use serde_json::Value;
use std::path::Path;

/// Checks every output exists and summary.json is internally consistent.
fn check_outputs(out: &Path) -> Value {
    for f in [
        "summary.json",
        "timeline.csv",
        "signatures.json",
        "report.html",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let policies = &summary["policies"];
    let oracle = &policies["oracle"];
    for name in ["predictive", "hpa", "oracle", "static-peak"] {
        let p = &policies[name];
        for field in [
            "under_provisioned_seconds",
            "under_provisioned_fraction",
            "overload_request_fraction",
            "replica_hours",
            "scaling_actions",
            "reversals",
            "mean_lead_seconds_before_steps",
        ] {
            assert!(p.get(field).is_some(), "{name}.{field} missing");
        }
        let f = p["under_provisioned_fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f), "{name}: {f}");
        assert!(
            oracle["replica_hours"].as_f64().unwrap()
                <= p["replica_hours"].as_f64().unwrap() + 1e-9,
            "oracle costs more than {name}"
        );
    }
    assert_eq!(
        oracle["under_provisioned_seconds"], 0,
        "oracle foresees exactly"
    );
    assert_eq!(policies["static-peak"]["scaling_actions"], 0);
    for field in ["mase", "smape", "coverage"] {
        assert!(summary["forecast"][field].is_number(), "forecast.{field}");
    }
    assert!(summary["inputs"]["replica_capacity_rps"].as_f64().unwrap() > 0.0);

    let timeline = std::fs::read_to_string(out.join("timeline.csv")).unwrap();
    let mut lines = timeline.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("ts,demand,forecast_point,forecast_lower,forecast_upper,"));
    for name in ["predictive", "hpa", "oracle", "static-peak"] {
        assert!(header.contains(&format!("{name}_desired,{name}_ready")));
    }
    let columns = header.split(',').count();
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() > 100);
    assert!(rows.iter().all(|r| r.split(',').count() == columns));
    // Forecast bands, once there are any, are ordered.
    let banded = rows
        .iter()
        .filter_map(|r| {
            let c: Vec<&str> = r.split(',').collect();
            let (p, lo, hi) = (
                c[2].parse::<f64>(),
                c[3].parse::<f64>(),
                c[4].parse::<f64>(),
            );
            Some((p.ok()?, lo.ok()?, hi.ok()?))
        })
        .inspect(|(p, lo, hi)| assert!(lo <= p && p <= hi, "{lo} {p} {hi}"))
        .count();
    assert!(
        banded > rows.len() / 2,
        "{banded} of {} rows have a band",
        rows.len()
    );

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 4, "four plots");
    summary
}

#[test]
fn replays_the_nab_elb_rate_series() {
    let Some(input) = require::trace(
        "replays_the_nab_elb_rate_series",
        "nab_elb_request_count_8c0756.csv",
    ) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let run = replay(&input, out.path(), &[]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("predictive") && stdout.contains("oracle"));
    let summary = check_outputs(out.path());
    assert_eq!(summary["inputs"]["format"], "RateCsv");
    // A two-week rate series: the forecast must be usable, not a flat line.
    let coverage = summary["forecast"]["coverage"].as_f64().unwrap();
    assert!((0.8..=0.99).contains(&coverage), "coverage {coverage}");
    let signatures: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("signatures.json")).unwrap())
            .unwrap();
    assert_eq!(signatures["signatures"], serde_json::json!([]));
}

#[test]
fn replays_the_apache_combined_log_with_a_sweep() {
    let Some(input) = require::trace(
        "replays_the_apache_combined_log_with_a_sweep",
        "apache_access_semicomplete_2015-05-17_20.log",
    ) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let run = replay(
        &input,
        out.path(),
        &["--sweep", "--replica-capacity", "0.2"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = check_outputs(out.path());
    assert_eq!(summary["inputs"]["format"], "Combined");
    assert_eq!(summary["inputs"]["requests"], 10_000);
    assert_eq!(summary["inputs"]["replica_capacity_rps"], 0.2);
    // More headroom never makes the predictive policy cheaper.
    let sweep = summary["sweep"].as_array().unwrap();
    let predictive: Vec<f64> = sweep
        .iter()
        .filter(|p| p["policy"] == "predictive")
        .map(|p| p["replica_hours"].as_f64().unwrap())
        .collect();
    assert!(predictive.len() >= 5);
    assert!(
        predictive.windows(2).all(|w| w[0] <= w[1] + 1e-9),
        "{predictive:?}"
    );
    // Request logs are profiled: the real profiler found signatures.
    let signatures: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("signatures.json")).unwrap())
            .unwrap();
    let found = signatures["profile"]["signatures"].as_array().unwrap();
    assert!(!found.is_empty());
    let mixed: u64 = signatures["mix"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(mixed, 10_000, "every request is in the mix");
}

#[test]
fn malformed_input_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.log");
    let good = r#"10.0.0.1 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 512 "-" "curl""#;
    let mut text = String::new();
    for i in 0..20 {
        if i % 2 == 0 {
            text.push_str(good);
        } else {
            text.push_str("this is not a log line");
        }
        text.push('\n');
    }
    std::fs::write(&input, text).unwrap();
    let run = replay(&input, &dir.path().join("out"), &["--format", "combined"]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("bad.log"), "{stderr}");
    assert!(stderr.contains(":2"), "names the first bad line: {stderr}");

    // Under the threshold the same lines are skipped and reported, not fatal.
    let run = replay(
        &input,
        &dir.path().join("out"),
        &["--format", "combined", "--max-malformed", "0.6"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out").join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["inputs"]["malformed"], 10);
    assert_eq!(summary["inputs"]["first_malformed"][0]["line"], 2);

    let missing = replay(&dir.path().join("nope.log"), &dir.path().join("o2"), &[]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.log"));
}

/// Decisions of a replay, without its clock: every column of `decisions.csv` but the
/// times, and the times (`ts`'s seconds are in `at_ms`).
fn decisions(out: &Path) -> (Vec<String>, Vec<u64>) {
    let text = std::fs::read_to_string(out.join("decisions.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|c| *c == "at_ms").unwrap();
    let clock = ["ts", "at_ms", "measured_from_ms", "measured_to_ms"];
    let (mut rows, mut times) = (Vec::new(), Vec::new());
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        times.push(cells[at].parse().unwrap());
        let kept: Vec<&str> = cells
            .iter()
            .zip(&header)
            .filter(|(_, h)| !clock.contains(h))
            .map(|(c, _)| *c)
            .collect();
        rows.push(kept.join(","));
    }
    (rows, times)
}

#[test]
fn a_count_series_is_decided_alike_whatever_the_second_its_rows_start_at() {
    // Twitter GOOG's 5-minute rows start at :42:53. Replay puts a count series' first
    // row on the minute on its engine's clock, so that no minute bucket or reading
    // straddles two rows; the same rows moved onto the minute (+7 s) must then give the
    // same decisions, 7 s later. (Without it every minute of the recorded rows mixed
    // two rows, and about 14 % of the HPA's replica-hours went to that blur.)
    let Some(input) = require::trace(
        "a_count_series_is_decided_alike_whatever_the_second_its_rows_start_at",
        "nab_Twitter_volume_GOOG.csv",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(input).unwrap();
    // Four days of rows, as recorded and moved by +7 s.
    let rows: Vec<&str> = text.lines().skip(1).take(4 * 288).collect();
    let recorded = dir.path().join("recorded.csv");
    let moved = dir.path().join("moved.csv");
    let mut a = String::from("timestamp,value\n");
    let mut b = a.clone();
    for row in &rows {
        let (ts, v) = row.split_once(',').unwrap();
        let t = humantime::parse_rfc3339_weak(ts).unwrap();
        let later = humantime::format_rfc3339_seconds(t + std::time::Duration::from_secs(7));
        let later = later.to_string().replace('T', " ").replace('Z', "");
        a.push_str(&format!("{ts},{v}\n"));
        b.push_str(&format!("{later},{v}\n"));
    }
    std::fs::write(&recorded, a).unwrap();
    std::fs::write(&moved, b).unwrap();
    assert!(rows[0].starts_with("2015-02-26 21:42:53"), "{}", rows[0]);
    let run = |input: &Path, name: &str| {
        let out = dir.path().join(name);
        let r = replay(input, &out, &["--replica-capacity", "0.11"]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        decisions(&out)
    };
    let (a_rows, a_at) = run(&recorded, "a");
    let (b_rows, b_at) = run(&moved, "b");
    assert!(a_rows.len() > 20_000, "{} decisions", a_rows.len());
    assert_eq!(a_rows.len(), b_rows.len());
    for (k, (x, y)) in a_rows.iter().zip(&b_rows).enumerate() {
        assert_eq!(x, y, "decision {k} differs");
        assert_eq!(b_at[k], a_at[k] + 7_000, "decision {k}'s time");
    }
}
