//! `prescale forecast`: rolling-origin evaluation of the sidecar's forecaster on a
//! `timestamp,value` CSV, with the forecasts and an accuracy summary written to a dir.

use crate::series_csv::{self, Clock};
use prescale_profiler::forecast::eval::{evaluate_at, Evaluation};
use prescale_profiler::forecast::ForecastParams;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Evaluate the sidecar's forecaster on a `timestamp,value` CSV (rolling origin).
#[derive(clap::Args)]
pub struct ForecastArgs {
    /// The series: a `timestamp,value` CSV, one row per step.
    #[arg(short, long)]
    pub input: PathBuf,
    /// Series step, e.g. 1m or 5m; inferred from the data when omitted.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub step: Option<Duration>,
    /// How far ahead to forecast, e.g. 15m.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub horizon: Duration,
    /// Central prediction-interval level.
    #[arg(long, default_value_t = 0.9)]
    pub level: f64,
    /// History before the first scored forecast (default: 4 days or a fifth).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Forecast only at these origins: a CSV whose first column is the time of the
    /// last observation used (e.g. the peers' harness's origins.csv; a header is
    /// skipped). The forecaster still sees every step; only these rows are written.
    #[arg(long)]
    pub origins: Option<PathBuf>,
    /// Directory for forecasts.csv and summary.json.
    #[arg(short, long)]
    pub out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    #[error(transparent)]
    Csv(#[from] series_csv::CsvError),
    #[error("{0}: {1}")]
    Write(String, std::io::Error),
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}")]
    Args(String),
}

pub fn run(args: &ForecastArgs) -> Result<(), ForecastError> {
    if !(0.5..1.0).contains(&args.level) {
        return Err(ForecastError::Args("--level must be in [0.5, 1)".into()));
    }
    let mut series = series_csv::read(&args.input, args.step)?;
    let step_s = series.step.as_secs().max(1);
    let interpolated = fill_short_gaps(&mut series.values, MAX_FILL_STEPS);
    let horizon = (args.horizon.as_secs().div_ceil(step_s) as usize).max(1);
    let mut params = ForecastParams::for_step(step_s, horizon);
    params.level = args.level;
    let per_day = (86_400 / step_s).max(1) as usize;
    let warmup = match args.warmup {
        Some(w) => (w.as_secs() / step_s) as usize,
        // Four days, or a fifth of a short series.
        None => (per_day * 4).min(series.values.len() / 5),
    };
    let origins = match &args.origins {
        Some(path) => Some(read_origins(
            path,
            series.start_unix,
            step_s,
            series.values.len(),
        )?),
        None => None,
    };
    // With explicit origins, score exactly those.
    let from = origins
        .as_ref()
        .and_then(|o| o.first().copied())
        .unwrap_or(warmup.max(1));
    let started = prescale_proxy::clock::Stopwatch::start();
    let ev = evaluate_at(&series.values, params.clone(), from, origins.as_ref());
    let took = started.elapsed();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| ForecastError::Write(args.out.display().to_string(), e))?;
    write_rows(
        &args.out.join("forecasts.csv"),
        &ev,
        series.start_unix,
        step_s,
        series.clock,
    )?;
    let summary = serde_json::json!({
        "input": args.input.display().to_string(),
        "step_seconds": step_s,
        "horizon_steps": horizon,
        "level": args.level,
        "warmup_steps": warmup,
        "observations": series.values.len(),
        "gaps": series.gaps,
        "short_gap_points_interpolated": interpolated,
        "origins_file": args.origins.as_ref().map(|p| p.display().to_string()),
        "mase_definition": "mean over forecasts of |actual - point| / scale, scale = in-sample MAE of daily seasonal-naive on the origin's last 14 days (cut after a gap), as the peers' harness in testdata/eval/harness",
        "merged_rows": series.merged_rows,
        "periods_steps": params.periods,
        "seasonal_naive_period_steps": ev.seasonal_period,
        "horizons": ev.horizons,
        "models_published": ev.models,
        "seconds": took.as_secs_f64(),
        "seconds_per_forecast": took.as_secs_f64() / ev.rows.len().max(1) as f64 * horizon as f64,
    });
    let path = args.out.join("summary.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    )
    .map_err(|e| ForecastError::Write(path.display().to_string(), e))?;
    print_table(&ev, step_s);
    println!(
        "wrote {} and {}",
        args.out.join("forecasts.csv").display(),
        path.display()
    );
    Ok(())
}

/// Gaps of at most this many steps are interpolated linearly, as the peers' harness
/// does; longer ones stay gaps.
const MAX_FILL_STEPS: usize = 5;

/// Interpolates runs of at most `max` NaN between two observations; returns the points
/// filled.
fn fill_short_gaps(values: &mut [f64], max: usize) -> usize {
    let mut filled = 0;
    let mut i = 0;
    while i < values.len() {
        if values.get(i).is_some_and(|v| v.is_nan()) {
            let end = (i..values.len())
                .find(|j| values.get(*j).is_some_and(|v| !v.is_nan()))
                .unwrap_or(values.len());
            let before = i.checked_sub(1).and_then(|b| values.get(b).copied());
            if let (Some(a), Some(b), true) = (before, values.get(end).copied(), end - i <= max) {
                let span = (end - i + 1) as f64;
                for (k, v) in values.iter_mut().take(end).skip(i).enumerate() {
                    *v = a + (b - a) * (k + 1) as f64 / span;
                }
                filled += end - i;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    filled
}

/// Origins from the first column of `path`, as observation counts (grid index + 1).
fn read_origins(
    path: &Path,
    start: u64,
    step_s: u64,
    len: usize,
) -> Result<std::collections::BTreeSet<usize>, ForecastError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ForecastError::Read(file.clone(), e))?;
    let mut out = std::collections::BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let first = line.split(',').next().unwrap_or("").trim();
        if first.is_empty() || (i == 0 && !first.starts_with(|c: char| c.is_ascii_digit())) {
            continue;
        }
        let bad = |why: &str| ForecastError::Args(format!("{file}:{}: {why}: {first:?}", i + 1));
        let t = series_csv::parse_time(first).ok_or_else(|| bad("unreadable origin time"))?;
        let offset = t
            .checked_sub(start)
            .ok_or_else(|| bad("origin before the series"))?;
        if offset % step_s != 0 {
            return Err(bad("origin not on the series' grid"));
        }
        let idx = (offset / step_s) as usize;
        if idx >= len {
            return Err(bad("origin after the series"));
        }
        out.insert(idx + 1);
    }
    Ok(out)
}

fn write_rows(
    path: &Path,
    ev: &Evaluation,
    start: u64,
    step_s: u64,
    clock: Clock,
) -> Result<(), ForecastError> {
    let err = |e| ForecastError::Write(path.display().to_string(), e);
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    writeln!(
        w,
        "origin,target,horizon_steps,actual,point,lower,upper,model"
    )
    .map_err(err)?;
    for r in &ev.rows {
        // The origin is the time of the last observation the forecast had seen.
        let origin = start + (r.origin as u64).saturating_sub(1) * step_s;
        let target = start + r.target as u64 * step_s;
        writeln!(
            w,
            "{},{},{},{},{:.4},{:.4},{:.4},{:?}",
            clock.format(origin),
            clock.format(target),
            r.horizon_steps,
            r.actual,
            r.point,
            r.lower,
            r.upper,
            r.model
        )
        .map_err(err)?;
    }
    w.flush().map_err(err)
}

fn print_table(ev: &Evaluation, step_s: u64) {
    println!(
        "horizon   forecasts   MASE   vs seasonal-naive   sMAPE   coverage@{:.0}%",
        ev.level * 100.0
    );
    for h in &ev.horizons {
        let rel = h
            .relative_to_seasonal_naive
            .map_or("-".to_string(), |r| format!("{r:.3}"));
        println!(
            "{:>6}s   {:>9}   {:>5.3}   {:>17}   {:>5.1}   {:>8.3}",
            h.horizon_steps as u64 * step_s,
            h.forecasts,
            h.mase,
            rel,
            h.smape,
            h.coverage
        );
    }
    println!("models published: {:?}", ev.models);
}
