//! Window-level evaluation of the rate detector on labelled series (the NAB format):
//! the series is fed through the shipped [`Forecaster`] one step at a time and each
//! actual is judged against the one-step forecast made before it, exactly as the
//! sidecar does; a rolling z-score baseline goes through the same detector logic.
//!
//! Scoring: consecutive alerting steps merge into one event, dated by its first step.
//! A labelled window is detected (TP) when an event starts inside it (give or take
//! `tolerance_steps`); an event starting outside every window is a false positive;
//! a window without one is a miss. Like NAB, the first `probation` share of a series
//! is warm-up: events starting there and windows starting there are not scored.
//!
//! Pure: the caller reads the files and passes their text.

use super::changepoint::ChangePointParams;
use super::rate::{RateDetector, RateParams};
use crate::forecast::{ForecastParams, ForecastPoint, Forecaster};
use crate::sample::Millis;
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

/// A series on a regular grid (gaps are NaN) with its labelled anomaly windows.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledSeries {
    pub name: String,
    pub step: Millis,
    pub times: Vec<Millis>,
    pub values: Vec<f64>,
    /// Inclusive `[start, end]` windows.
    pub windows: Vec<(Millis, Millis)>,
}

/// How both detectors run; the same for every series (durations are converted to
/// each series' steps).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalParams {
    /// The rate detector's sustain, spike and clear rules, shared by the baseline.
    pub rate: RateParams,
    pub change_point: ChangePointParams,
    /// Forecaster refit cadence. The sidecar refits hourly; between fits the
    /// forecaster corrects its path by recent residuals, so a slower cadence changes
    /// little (on the NAB series 48 h and 24 h give the same table; 12 h adds false
    /// alarms on nyc_taxi) and keeps the evaluation within a test's time.
    #[serde(with = "humantime_serde")]
    pub refit_every: Duration,
    /// Interval level of the forecaster.
    pub level: f64,
    /// The baseline's rolling window.
    #[serde(with = "humantime_serde")]
    pub zscore_window: Duration,
    /// The baseline flags |z| above this.
    pub zscore_threshold: f64,
    /// Share of the series treated as warm-up (NAB's probationary period is 0.15).
    pub probation: f64,
    /// Steps an event may start before a window's start or after its end and still
    /// count as detecting it.
    pub tolerance_steps: usize,
}

/// Window-level counts and rates of one detector on one series.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Score {
    /// Windows scored (after the warm-up).
    pub windows: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    /// Alert events after the warm-up.
    pub events: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Both detectors on one series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesReport {
    pub name: String,
    pub steps: usize,
    pub ours: Score,
    pub zscore: Score,
}

/// Per-step alert flags of both detectors (for plots and debugging).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Alerts {
    pub ours: Vec<bool>,
    pub zscore: Vec<bool>,
}

// === impl EvalParams ===

impl Default for EvalParams {
    fn default() -> Self {
        Self {
            rate: RateParams::default(),
            change_point: ChangePointParams::default(),
            refit_every: Duration::from_secs(48 * 3600),
            level: 0.9,
            zscore_window: Duration::from_secs(86_400),
            zscore_threshold: 3.0,
            probation: 0.15,
            tolerance_steps: 3,
        }
    }
}

// === impl LabelledSeries ===

impl LabelledSeries {
    /// Builds a series from NAB's `timestamp,value` CSV text and its windows from
    /// NAB's `combined_windows.json` text (keyed by file name). Rows are put on a
    /// regular grid at the most common spacing; missing rows become NaN (gaps).
    pub fn from_nab(name: &str, csv: &str, labels_json: &str) -> Option<Self> {
        let mut rows: Vec<(Millis, f64)> = csv
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (t, v) = l.split_once(',')?;
                Some((parse_timestamp(t)?, v.trim().parse().ok()?))
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        let step = common_step(&rows)?;
        let first = rows.first()?.0;
        let mut times = Vec::with_capacity(rows.len());
        let mut values = Vec::with_capacity(rows.len());
        // A clock jump must not turn into a huge allocation of gaps.
        let max_idx = (rows.len() as u64).saturating_mul(4);
        for (t, v) in &rows {
            // Rows off the grid are snapped to it; a row for a filled slot is dropped.
            let idx = ((t - first) + step / 2) / step;
            if idx > max_idx {
                break;
            }
            while (times.len() as u64) < idx {
                times.push(first + times.len() as u64 * step);
                values.push(f64::NAN);
            }
            if times.len() as u64 == idx {
                times.push(first + idx * step);
                values.push(*v);
            }
        }
        let labels: serde_json::Value = serde_json::from_str(labels_json).ok()?;
        let windows = labels
            .get(name)?
            .as_array()?
            .iter()
            .filter_map(|w| {
                let start = parse_timestamp(w.get(0)?.as_str()?)?;
                let end = parse_timestamp(w.get(1)?.as_str()?)?;
                Some((start, end))
            })
            .collect();
        Some(Self {
            name: name.to_owned(),
            step,
            times,
            values,
            windows,
        })
    }
}

/// Runs both detectors over `s` and scores them.
pub fn evaluate(s: &LabelledSeries, p: &EvalParams) -> (SeriesReport, Alerts) {
    let alerts = Alerts {
        ours: alerts_forecaster(s, p),
        zscore: alerts_zscore(s, p),
    };
    let n = s.times.len();
    let warm = ((n as f64 * p.probation.clamp(0.0, 1.0)) as usize).min(n.saturating_sub(1));
    let scored_from = s.times.get(warm).copied().unwrap_or(0);
    let tolerance = p.tolerance_steps as Millis * s.step;
    let report = SeriesReport {
        name: s.name.clone(),
        steps: n,
        ours: score(&s.times, &alerts.ours, &s.windows, scored_from, tolerance),
        zscore: score(&s.times, &alerts.zscore, &s.windows, scored_from, tolerance),
    };
    (report, alerts)
}

/// The shipped forecaster and rate detector, one step at a time: each actual is judged
/// against the calibrated one-step forecast published before it. A refit requested by
/// the detector is not acted on (the forecaster has no reset yet): its own adaptation
/// absorbs shifts.
fn alerts_forecaster(s: &LabelledSeries, p: &EvalParams) -> Vec<bool> {
    let step_s = (s.step / 1000).max(1);
    let mut fp = ForecastParams::for_step(step_s, 1);
    fp.level = p.level;
    fp.refit_every = ((p.refit_every.as_secs() / step_s) as usize).max(1);
    let mut f = Forecaster::new(fp);
    let mut d = RateDetector::new(s.name.as_str(), p.rate.clone(), p.change_point.clone());
    let mut prev: Option<ForecastPoint> = None;
    let mut out = Vec::with_capacity(s.values.len());
    for (t, y) in s.times.iter().zip(&s.values) {
        if let Some(point) = prev {
            d.observe(*t, *y, &point);
        }
        out.push(d.active().is_some() || d.shift().is_some());
        f.observe(*y);
        prev = f
            .forecast()
            .filter(|fc| fc.calibrated)
            .and_then(|fc| fc.judged);
    }
    out
}

/// The baseline: mean ± `zscore_threshold` standard deviations of the last
/// `zscore_window` of values, through the same sustain, spike and clear rules (no
/// margin, no change points).
fn alerts_zscore(s: &LabelledSeries, p: &EvalParams) -> Vec<bool> {
    let w = ((p.zscore_window.as_millis() as Millis / s.step.max(1)) as usize).max(2);
    let rate = RateParams {
        margin: 0.0,
        ..p.rate.clone()
    };
    let cp = ChangePointParams {
        enabled: false,
        ..p.change_point.clone()
    };
    let mut d = RateDetector::new(s.name.as_str(), rate, cp);
    let mut window: VecDeque<f64> = VecDeque::with_capacity(w);
    let (mut sum, mut sum2) = (0.0, 0.0);
    let mut out = Vec::with_capacity(s.values.len());
    for (t, y) in s.times.iter().zip(&s.values) {
        if window.len() == w {
            let n = w as f64;
            let mean = sum / n;
            let sd = (sum2 / n - mean * mean).max(0.0).sqrt();
            let k = p.zscore_threshold;
            let band = ForecastPoint {
                step: 1,
                point: mean,
                lower: mean - k * sd,
                upper: mean + k * sd,
            };
            d.observe(*t, *y, &band);
        }
        out.push(d.active().is_some());
        if y.is_finite() {
            if window.len() == w {
                if let Some(old) = window.pop_front() {
                    sum -= old;
                    sum2 -= old * old;
                }
            }
            window.push_back(*y);
            sum += y;
            sum2 += y * y;
        }
    }
    out
}

/// Window-level score of per-step alert flags (see the module docs).
pub fn score(
    times: &[Millis],
    alerts: &[bool],
    windows: &[(Millis, Millis)],
    scored_from: Millis,
    tolerance: Millis,
) -> Score {
    let scored: Vec<(Millis, Millis)> = windows
        .iter()
        .copied()
        .filter(|w| w.0 >= scored_from)
        .collect();
    let mut detected = vec![false; scored.len()];
    let (mut events, mut fp) = (0, 0);
    let mut previous = false;
    for (t, a) in times.iter().zip(alerts) {
        let starts = *a && !previous;
        previous = *a;
        if !starts || *t < scored_from {
            continue;
        }
        events += 1;
        let hit = scored
            .iter()
            .position(|w| (w.0.saturating_sub(tolerance)..=w.1 + tolerance).contains(t));
        match hit.and_then(|i| detected.get_mut(i)) {
            Some(d) => *d = true,
            // An event in a warm-up window is neither right nor wrong.
            None if windows
                .iter()
                .any(|w| (w.0.saturating_sub(tolerance)..=w.1 + tolerance).contains(t)) => {}
            None => fp += 1,
        }
    }
    let tp = detected.iter().filter(|d| **d).count();
    let fneg = scored.len() - tp;
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fneg);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Score {
        windows: scored.len(),
        true_positives: tp,
        false_positives: fp,
        false_negatives: fneg,
        events,
        precision,
        recall,
        f1,
    }
}

/// The reports as a Markdown table (for docs/anomalies.md).
pub fn markdown(reports: &[SeriesReport]) -> String {
    let mut out = String::from(
        "| series | steps | windows | forecast interval: P / R / F1 (TP, FP) | rolling z-score: P / R / F1 (TP, FP) |\n\
         | --- | ---: | ---: | --- | --- |\n",
    );
    for r in reports {
        let cell = |s: &Score| {
            format!(
                "{:.2} / {:.2} / **{:.2}** ({}, {})",
                s.precision, s.recall, s.f1, s.true_positives, s.false_positives
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.name,
            r.steps,
            r.ours.windows,
            cell(&r.ours),
            cell(&r.zscore)
        );
    }
    out
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The most common spacing between consecutive rows.
fn common_step(rows: &[(Millis, f64)]) -> Option<Millis> {
    let mut diffs: Vec<Millis> = rows
        .windows(2)
        .filter_map(|w| w.get(1)?.0.checked_sub(w.first()?.0))
        .filter(|d| *d > 0)
        .collect();
    diffs.sort_unstable();
    let mut best: Option<(usize, Millis)> = None;
    let mut i = 0;
    while let Some(d) = diffs.get(i).copied() {
        let run = diffs.get(i..)?.iter().take_while(|x| **x == d).count();
        if best.is_none_or(|b| run > b.0) {
            best = Some((run, d));
        }
        i += run;
    }
    best.map(|b| b.1)
}

/// Parses a naive `YYYY-MM-DD HH:MM:SS[.ffffff]` timestamp as milliseconds since the
/// epoch (the zone does not matter: series and labels share the clock).
pub fn parse_timestamp(s: &str) -> Option<Millis> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms = frac
        .get(..frac.len().min(3))
        .filter(|f| !f.is_empty())
        .and_then(|f| Some(f.parse::<i64>().ok()? * 10i64.pow(3 - f.len() as u32)))
        .unwrap_or(0);
    let days = days_from_civil(y, m, day);
    let total = ((days * 24 + hh) * 60 + mm) * 60 + ss;
    u64::try_from(total * 1000 + ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_as_utc_milliseconds() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        // 2014-04-10 00:04:00 UTC.
        assert_eq!(
            parse_timestamp("2014-04-10 00:04:00"),
            Some(1_397_088_240_000)
        );
        assert_eq!(
            parse_timestamp("2014-04-12 09:04:00.500000"),
            Some(1_397_293_440_500)
        );
        assert_eq!(parse_timestamp("2014-13-10 00:04:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn gaps_become_nan_and_windows_are_read_by_file_name() {
        let csv = "timestamp,value\n\
                   2014-04-10 00:00:00,1\n\
                   2014-04-10 00:05:00,2\n\
                   2014-04-10 00:15:00,4\n\
                   2014-04-10 00:20:00,5\n";
        let labels = r#"{"a.csv": [["2014-04-10 00:05:00.000000", "2014-04-10 00:10:00.000000"]]}"#;
        let s = LabelledSeries::from_nab("a.csv", csv, labels).unwrap();
        assert_eq!(s.step, 300_000);
        assert_eq!(s.values.len(), 5);
        assert!(s.values[2].is_nan());
        assert_eq!(s.values[3], 4.0);
        assert_eq!(s.windows.len(), 1);
        assert!(LabelledSeries::from_nab("b.csv", csv, labels).is_none());
    }

    #[test]
    fn events_merge_and_score_by_window() {
        let times: Vec<Millis> = (0..20).collect();
        // Windows 5..=8 and 14..=16; 0..=1 is warm-up.
        let windows = [(5, 8), (14, 16)];
        let mut alerts = vec![false; 20];
        // One event in the warm-up (ignored), one long event starting inside the
        // first window, one false alarm at 11.
        for i in [0, 6, 7, 8, 9, 10, 11] {
            alerts[i] = true;
        }
        alerts[11] = false;
        alerts[12] = true;
        let s = score(&times, &alerts, &windows, 2, 0);
        assert_eq!(
            (
                s.events,
                s.true_positives,
                s.false_positives,
                s.false_negatives
            ),
            (2, 1, 1, 1)
        );
        assert!((s.precision - 0.5).abs() < 1e-9 && (s.recall - 0.5).abs() < 1e-9);
        assert!((s.f1 - 0.5).abs() < 1e-9);
        // With a tolerance of 2, the event at 12 counts for the window at 14.
        let s = score(&times, &alerts, &windows, 2, 2);
        assert_eq!((s.true_positives, s.false_positives), (2, 0));
        assert_eq!(s.f1, 1.0);
    }
}
