//! `prescale forecast`: rolling-origin evaluation of the sidecar's forecaster on a
//! `timestamp,value` CSV, with the forecasts and an accuracy summary written to a dir.

use crate::series_csv::{self, format_time};
use prescale_profiler::forecast::eval::{evaluate, Evaluation};
use prescale_profiler::forecast::ForecastParams;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    #[error("{0}")]
    Args(String),
}

pub fn run(args: &ForecastArgs) -> Result<(), ForecastError> {
    if !(0.5..1.0).contains(&args.level) {
        return Err(ForecastError::Args("--level must be in [0.5, 1)".into()));
    }
    let series = series_csv::read(&args.input, args.step)?;
    let step_s = series.step.as_secs().max(1);
    let horizon = (args.horizon.as_secs().div_ceil(step_s) as usize).max(1);
    let mut params = ForecastParams::for_step(step_s, horizon);
    params.level = args.level;
    let per_day = (86_400 / step_s).max(1) as usize;
    let warmup = match args.warmup {
        Some(w) => (w.as_secs() / step_s) as usize,
        // Four days, or a fifth of a short series.
        None => (per_day * 4).min(series.values.len() / 5),
    };
    let started = Instant::now();
    let ev = evaluate(&series.values, params.clone(), warmup.max(1));
    let took = started.elapsed();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| ForecastError::Write(args.out.display().to_string(), e))?;
    write_rows(
        &args.out.join("forecasts.csv"),
        &ev,
        series.start_unix,
        step_s,
    )?;
    let summary = serde_json::json!({
        "input": args.input.display().to_string(),
        "step_seconds": step_s,
        "horizon_steps": horizon,
        "level": args.level,
        "warmup_steps": warmup,
        "observations": series.values.len(),
        "gaps": series.gaps,
        "merged_rows": series.merged_rows,
        "periods_steps": params.periods,
        "refit_every_steps": params.refit_every,
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

fn write_rows(path: &Path, ev: &Evaluation, start: u64, step_s: u64) -> Result<(), ForecastError> {
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
            format_time(origin),
            format_time(target),
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
