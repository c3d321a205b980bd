//! `prescale forecast` end to end: the real binary on a real NAB series and on bad input.

#[path = "support/require.rs"]
mod require;

use std::process::Command;

fn prescale() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prescale"))
}

#[test]
fn forecast_writes_rows_and_a_summary_that_agree() {
    let Some(input) = require::trace(
        "forecast_writes_rows_and_a_summary_that_agree",
        "nab_elb_request_count_8c0756.csv",
    ) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let status = prescale()
        .args(["forecast", "--input"])
        .arg(&input)
        .args(["--horizon", "15m", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    // 5-minute data, 15 minutes ahead: three horizon steps, each scored.
    assert_eq!(summary["step_seconds"], 300);
    assert_eq!(summary["horizon_steps"], 3);
    let horizons = summary["horizons"].as_array().unwrap();
    assert_eq!(horizons.len(), 3);

    let rows = std::fs::read_to_string(out.path().join("forecasts.csv")).unwrap();
    let mut lines = rows.lines();
    assert_eq!(
        lines.next(),
        Some("origin,target,horizon_steps,actual,point,lower,upper,model")
    );
    let body: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // The summary's forecast counts are the rows of the CSV, per horizon.
    for h in horizons {
        let step = h["horizon_steps"].as_u64().unwrap().to_string();
        let n = body.iter().filter(|r| r[2] == step).count() as u64;
        assert_eq!(h["forecasts"].as_u64().unwrap(), n);
    }
    // Every row is ordered lower <= point <= upper, and coverage matches the rows.
    let at15: Vec<_> = body.iter().filter(|r| r[2] == "3").collect();
    let inside = at15
        .iter()
        .filter(|r| {
            let v: Vec<f64> = r[3..7].iter().map(|x| x.parse().unwrap()).collect();
            assert!(v[2] <= v[1] && v[1] <= v[3], "{r:?}");
            (v[2]..=v[3]).contains(&v[0])
        })
        .count();
    let coverage = horizons[2]["coverage"].as_f64().unwrap();
    assert!((coverage - inside as f64 / at15.len() as f64).abs() < 1e-9);
    assert!((0.85..=0.95).contains(&coverage), "coverage {coverage}");
    assert!(horizons[2]["relative_to_seasonal_naive"].as_f64().unwrap() < 1.0);
}

/// Whether a data file is there: under CI its absence fails the test.
fn present(path: &str) -> bool {
    std::path::Path::new(path).exists()
        || require::unmet("forecast_cli", &format!("{path} is absent"))
}

#[test]
fn origins_are_answered_exactly_and_in_the_series_own_clock() {
    // A series at :x2:53 with naive times, and the peers' harness's origins for it.
    let root = env!("CARGO_MANIFEST_DIR");
    let input = format!("{root}/testdata/traces/nab_Twitter_volume_GOOG.csv");
    let origins = format!("{root}/testdata/eval/peers/dev_twitter_GOOG/origins.csv");
    if !present(&input) || !present(&origins) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = prescale()
        .args([
            "forecast",
            "--input",
            &input,
            "--step",
            "5m",
            "--horizon",
            "15m",
        ])
        .args(["--origins", &origins, "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let wanted: std::collections::BTreeSet<String> = std::fs::read_to_string(&origins)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    assert!(wanted.len() >= 100 && wanted.iter().all(|o| o.ends_with(":53")));
    let rows = std::fs::read_to_string(out.path().join("forecasts.csv")).unwrap();
    let mut got = std::collections::BTreeSet::new();
    for line in rows.lines().skip(1) {
        let r: Vec<&str> = line.split(',').collect();
        got.insert(r[0].to_string());
        // Same clock as the input: a naive time, not snapped to a 5-minute grid.
        assert!(!r[0].ends_with('Z') && r[0].contains(' '), "{line}");
        assert!(r[1].ends_with(":53") && !r[1].ends_with('Z'), "{line}");
    }
    // Exactly the origins asked for, each answered at horizons 1..=3.
    assert_eq!(got, wanted);
    assert_eq!(rows.lines().count() - 1, 3 * wanted.len());

    // One MASE: summary.json's MASE per horizon is the harness's, i.e. the mean of
    // |actual - point| over the per-origin scale in the harness's origins.csv.
    let scale: std::collections::BTreeMap<String, f64> = std::fs::read_to_string(&origins)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[0].to_string(), c[3].parse().unwrap())
        })
        .collect();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    for h in summary["horizons"].as_array().unwrap() {
        let step = h["horizon_steps"].as_u64().unwrap().to_string();
        let scaled: Vec<f64> = rows
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|r| r[2] == step)
            .map(|r| {
                let (actual, point): (f64, f64) = (r[3].parse().unwrap(), r[4].parse().unwrap());
                (actual - point.max(0.0)).abs() / scale[r[0]]
            })
            .collect();
        let mase = scaled.iter().sum::<f64>() / scaled.len() as f64;
        let reported = h["mase"].as_f64().unwrap();
        // forecasts.csv rounds points to 4 decimals.
        assert!(
            (mase - reported).abs() < 1e-4 * mase,
            "h={step}: summary MASE {reported} vs the harness's definition {mase}"
        );
    }
}

#[test]
fn malformed_csv_is_refused_with_its_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.csv");
    std::fs::write(
        &input,
        "timestamp,value\n2014-04-10 00:00:00,1\n2014-04-10 00:05:00,abc\n",
    )
    .unwrap();
    let out = prescale()
        .args(["forecast", "--input"])
        .arg(&input)
        .args(["--out"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv:3: unreadable value"), "{err}");
    assert!(
        !dir.path().join("out").exists(),
        "nothing written for bad input"
    );
}
