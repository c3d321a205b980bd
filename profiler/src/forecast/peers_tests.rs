//! The forecaster against the peers users already have (statsforecast AutoETS and
//! MSTL, Prophet, seasonal-naive, the last value), on the repository's real dev series,
//! scored exactly as the peers' harness scores them.
//!
//! The peers' numbers are data, not code: `testdata/eval/peers/<name>/` holds the
//! `summary.json` and `origins.csv` written by the harness's `run_peers.sh`
//! (`RESULTS=testdata/eval/peers TRACES=testdata/traces bash testdata/eval/harness/run_peers.sh`).
//! Here the forecaster is fed each series one step at a time, as live; its forecasts at
//! the peers' origins are scored with the harness's per-origin MASE scale (the
//! `scale` column of `origins.csv`) and compared with the best peer's MASE at each
//! horizon (`summary.json`, `metrics`).

use super::eval::{evaluate_at, origin_scale};
use super::ForecastParams;
use std::collections::{BTreeMap, BTreeSet};

fn root() -> String {
    format!("{}/..", env!("CARGO_MANIFEST_DIR"))
}

fn need(path: &str) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{path}: {e}; this test needs the repository's testdata/")
        }
        Err(e) => {
            eprintln!("SKIP: {path}: {e}");
            None
        }
    }
}

/// Seconds since the epoch of `YYYY-MM-DD HH:MM:SS` (naive; only differences matter).
fn seconds(ts: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The series on its grid (anchored at the first row), gaps of ≤ 5 steps interpolated
/// as the harness does; and the grid's start.
fn grid(text: &str, step: i64) -> (Vec<f64>, i64) {
    let rows: Vec<(i64, f64)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (t, v) = l.split_once(',')?;
            Some((seconds(t.trim())?, v.trim().parse().ok()?))
        })
        .collect();
    let t0 = rows.first().map_or(0, |r| r.0);
    let idx = |t: i64| ((t - t0) as f64 / step as f64).round() as usize;
    let n = rows.last().map_or(0, |r| idx(r.0) + 1);
    let mut y = vec![f64::NAN; n];
    for (t, v) in rows.iter().rev() {
        y[idx(*t)] = *v;
    }
    let mut i = 1;
    while i < n {
        if y[i].is_nan() {
            let end = (i..n).find(|j| !y[*j].is_nan()).unwrap_or(n);
            if end < n && end - i <= 5 {
                let (a, b) = (y[i - 1], y[end]);
                let span = (end - i + 1) as f64;
                for (k, v) in y.iter_mut().take(end).skip(i).enumerate() {
                    *v = a + (b - a) * (k + 1) as f64 / span;
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    (y, t0)
}

struct Scored {
    mase: f64,
    coverage: f64,
    /// Coverage of every forecast from the first peer origin on (thousands, not
    /// ~150: the calibration measured without the sampling noise of 150 origins).
    coverage_all: f64,
    /// MASE of every forecast from the first peer origin on (each over its own
    /// origin's scale): the accuracy measured without the noise of ~150 origins.
    mase_all: f64,
    best_peer: String,
    best_peer_mase: f64,
    forecasts: usize,
}

/// Prescale's MASE and coverage at the peers' origins, per horizon step, and the best
/// peer's MASE there.
fn score_against_peers(peer: &str, trace: &str) -> Option<BTreeMap<usize, Scored>> {
    let dir = format!("{}/testdata/eval/peers/{peer}", root());
    let summary: serde_json::Value =
        serde_json::from_str(&need(&format!("{dir}/summary.json"))?).expect("summary.json");
    let origins = need(&format!("{dir}/origins.csv"))?;
    let series = need(&format!("{}/testdata/traces/{trace}", root()))?;
    let step = summary["step_s"].as_i64().expect("step_s");
    let day = summary["season_day_steps"]
        .as_u64()
        .expect("season_day_steps") as usize;
    let horizons: Vec<usize> = summary["horizons_steps"]
        .as_array()
        .expect("horizons_steps")
        .iter()
        .filter_map(|h| h.as_u64().map(|h| h as usize))
        .collect();
    let (y, t0) = grid(&series, step);
    // origin,train_start,n_train,scale; origin = time of the last observation used.
    let mut scale_at: BTreeMap<usize, f64> = BTreeMap::new();
    for line in origins.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let (Some(t), Some(scale)) = (
            cols.first().and_then(|t| seconds(t)),
            cols.get(3).and_then(|s| s.parse::<f64>().ok()),
        ) else {
            panic!("{dir}/origins.csv: bad line {line:?}");
        };
        let count = ((t - t0) / step) as usize + 1;
        // The harness's scale and ours agree (one MASE).
        let ours = origin_scale(&y, count, day).expect("a scale");
        assert!(
            (ours - scale).abs() <= 1e-6 * scale,
            "{peer}: origin scale {ours} vs the harness's {scale}"
        );
        scale_at.insert(count, scale);
    }
    let only: BTreeSet<usize> = scale_at.keys().copied().collect();
    let h = horizons.iter().copied().max().unwrap_or(1);
    let params = ForecastParams::for_step(step as u64, h);
    let started = std::time::Instant::now();
    // Every origin is kept: the peers' origins for MASE, all of them for coverage.
    let ev = evaluate_at(&y, params, 1, None);
    let first = only.first().copied().unwrap_or(1);
    eprintln!(
        "{peer}: {} steps, {:.1} us per observe + forecast",
        y.len(),
        started.elapsed().as_secs_f64() * 1e6 / y.len() as f64
    );
    let mut out = BTreeMap::new();
    for &hs in &horizons {
        let all: Vec<_> = ev
            .rows
            .iter()
            .filter(|r| r.horizon_steps == hs && r.origin >= first)
            .collect();
        let coverage_all = all
            .iter()
            .filter(|r| (r.lower..=r.upper).contains(&r.actual))
            .count() as f64
            / all.len().max(1) as f64;
        let mut scales: BTreeMap<usize, Option<f64>> = BTreeMap::new();
        let scaled: Vec<f64> = all
            .iter()
            .filter_map(|r| {
                let s = *scales
                    .entry(r.origin)
                    .or_insert_with(|| origin_scale(&y, r.origin, day));
                Some((r.actual - r.point.max(0.0)).abs() / s?)
            })
            .collect();
        let mase_all = scaled.iter().sum::<f64>() / scaled.len().max(1) as f64;
        let rows: Vec<_> = all
            .iter()
            .copied()
            .filter(|r| only.contains(&r.origin))
            .collect();
        let k = rows.len() as f64;
        let mase = rows
            .iter()
            .map(|r| (r.actual - r.point.max(0.0)).abs() / scale_at[&r.origin])
            .sum::<f64>()
            / k;
        let coverage = rows
            .iter()
            .filter(|r| (r.lower..=r.upper).contains(&r.actual))
            .count() as f64
            / k;
        let (best_peer, best_peer_mase) = summary["metrics"]
            .as_object()
            .expect("metrics")
            .iter()
            .filter_map(|(m, v)| Some((m.clone(), v[hs.to_string()]["mase"].as_f64()?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("peer metrics");
        out.insert(
            hs,
            Scored {
                mase,
                coverage,
                coverage_all,
                mase_all,
                best_peer,
                best_peer_mase,
                forecasts: rows.len(),
            },
        );
    }
    Some(out)
}

/// Ratio of prescale's MASE to the best peer's that every dev series and horizon
/// meets (the goal is 0.85; on the 5-minute series even a two-sided smoother
/// that sees the target's neighbours does not reach it: see docs/forecasting.md).
const MAX_RATIO: f64 = 1.05;
/// 90 % interval coverage at the peers' ~150 origins per series and horizon (one
/// origin is 0.7 % of the share; the binomial standard error is 0.025).
const COVERAGE: std::ops::RangeInclusive<f64> = 0.85..=0.95;
/// 90 % interval coverage over every forecast from the first peer origin on, per
/// series and horizon: the calibration goal.
const COVERAGE_ALL: std::ops::RangeInclusive<f64> = 0.88..=0.92;

fn assert_beats_the_best_peer(peer: &str, trace: &str) {
    let Some(scored) = score_against_peers(peer, trace) else {
        return;
    };
    let mut failures = Vec::new();
    for (h, s) in &scored {
        let ratio = s.mase / s.best_peer_mase;
        eprintln!(
            "{peer} h={h}: prescale MASE {:.3} coverage {:.3} ({} forecasts), {:.3} at every origin (MASE {:.4}); best peer {} {:.3}; ratio {ratio:.3}",
            s.mase, s.coverage, s.forecasts, s.coverage_all, s.mase_all, s.best_peer, s.best_peer_mase
        );
        assert!(
            s.forecasts >= 100,
            "{peer} h={h}: {} forecasts",
            s.forecasts
        );
        if ratio > MAX_RATIO
            || !COVERAGE.contains(&s.coverage)
            || !COVERAGE_ALL.contains(&s.coverage_all)
        {
            failures.push(format!(
                "h={h}: ratio {ratio:.3} (max {MAX_RATIO}), coverage {:.3}, {:.3} at every origin",
                s.coverage, s.coverage_all
            ));
        }
    }
    assert!(failures.is_empty(), "{peer}: {failures:?}");
}

#[test]
fn beats_the_best_peer_on_elb_requests() {
    assert_beats_the_best_peer("dev_elb_8c0756", "nab_elb_request_count_8c0756.csv");
}

#[test]
fn beats_the_best_peer_on_twitter_amzn() {
    assert_beats_the_best_peer("dev_twitter_AMZN", "nab_Twitter_volume_AMZN.csv");
}

#[test]
fn beats_the_best_peer_on_twitter_goog() {
    assert_beats_the_best_peer("dev_twitter_GOOG", "nab_Twitter_volume_GOOG.csv");
}

#[test]
fn beats_the_best_peer_on_nyc_taxi() {
    assert_beats_the_best_peer("dev_nyc_taxi", "nab_nyc_taxi.csv");
}
