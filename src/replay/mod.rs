//! `prescale replay`: what-if runs of the shipped profiler, forecaster and scaling
//! policies on an access log or a request-count series, in trace time.
//!
//! One pass reads the input into arrivals per second (feeding request logs through the
//! profiler on the way); the forecaster then runs once over the step series; finally
//! each policy steps a replica pool through the trace second by second on identical
//! demand. See docs/replay.md for the definitions.

pub mod input;

mod bridge;
mod costs;
pub(crate) mod engine;
mod forecasts;
mod output;
pub(crate) mod pool;
mod reconciled;
mod report;
pub(crate) mod shed;
pub(crate) mod sim;
mod trace;

use self::engine::EngineSetup;
use self::forecasts::Forecasts;
use self::sim::{Policy, World};
use self::trace::{Builder, ServiceModel};
use prescale_profiler::forecast::ForecastParams;
use std::path::PathBuf;
use std::time::Duration;

/// Replay an access log or request-count series against scaling policies.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Access log (Common/Combined, JSON lines) or `timestamp,value` CSV; gzip is fine.
    #[arg(short, long)]
    pub input: PathBuf,
    /// The input's format.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: input::Format,
    /// Interval of a rate CSV's rows (inferred when omitted).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Columns of a per-request CSV or TSV: `ROLE=NAME` pairs (roles time, method,
    /// path, status, request_size, response_size, duration, source) or bare names
    /// taken as time, request size, response size, e.g. `TIMESTAMP,ContextTokens,GeneratedTokens`.
    /// A `duration` column is also the CPU the cost model fits per signature, and
    /// the sizes its network (see docs/replay.md, resource costs).
    #[arg(long)]
    pub columns: Option<String>,
    /// Output directory for summary.json, timeline.csv, decisions.csv,
    /// signatures.json, report.html.
    #[arg(short, long)]
    pub out: PathBuf,
    /// The sidecar's config file: the predictive policy runs with its `profiler.forecast`,
    /// `policies.scaling` and `policies.admission.preshed` sections (replacing
    /// --target-utilization, --sync-period, --scale-down-stabilization, --level,
    /// --min/--max-replicas and, unless given, --replica-capacity).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Requests per second one replica serves at 100 % (default: the trace's peak
    /// needs 20 replicas at the target utilisation).
    #[arg(long)]
    pub replica_capacity: Option<f64>,
    /// Share of a replica's capacity the policies aim to use (the HPA's target).
    #[arg(long, default_value_t = 0.7)]
    pub target_utilization: f64,
    /// Time from requesting a replica to it serving.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub start_delay: Duration,
    /// Extra start-up delay spread uniformly over [0, jitter] per replica.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub start_jitter: Duration,
    /// Age of the newest metric a scaling decision sees (scrape + pipeline).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub metric_lag: Duration,
    /// How often the policies decide (the HPA's sync period).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub sync_period: Duration,
    /// Scale down only to the highest recommendation of this window (the HPA's
    /// stabilization window).
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub scale_down_stabilization: Duration,
    /// Forecast step (the input's interval or the resolution if coarser).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Demand is the mean arrival rate over windows this long (default: a count
    /// series' own interval; for a request log the shortest of 10s, 1m, 5m, 15m, 1h
    /// whose windows hold 30 requests on average, so sparse logs are not judged on
    /// Poisson noise).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub resolution: Option<Duration>,
    /// Forecast interval level.
    #[arg(long, default_value_t = 0.9)]
    pub level: f64,
    /// Fewest replicas a scaling policy may run.
    #[arg(long, default_value_t = 1)]
    pub min_replicas: u32,
    /// Most replicas a scaling policy may run.
    #[arg(long, default_value_t = 200)]
    pub max_replicas: u32,
    /// Also sweep forecast headroom (predictive) and target utilisation (HPA) for a
    /// cost-vs-SLO curve.
    #[arg(long)]
    pub sweep: bool,
    /// Service time when the log has none: base + response bytes / bandwidth.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub service_base: Duration,
    /// Bytes per second of the service-time model (see --service-base).
    #[arg(long, default_value_t = 50e6)]
    pub service_bandwidth: f64,
    /// Fail when more than this share of lines is malformed.
    #[arg(long, default_value_t = 0.1)]
    pub max_malformed: f64,
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Input(#[from] input::InputError),
    #[error("{0}")]
    Args(String),
    #[error("{}: no requests in the input", .0.display())]
    Empty(PathBuf),
    #[error("{0}: {1}")]
    Write(String, std::io::Error),
    #[error(transparent)]
    Config(#[from] prescale_proxy::ConfigError),
}

/// Everything the outputs are written from.
pub struct Replay {
    pub input_name: String,
    pub args_echo: serde_json::Value,
    pub stats: input::InputStats,
    pub trace: trace::Trace,
    pub demand: Vec<f64>,
    pub forecasts: Forecasts,
    pub capacity: f64,
    pub capacity_defaulted: bool,
    pub row_every: u64,
    pub policies: Vec<(&'static str, sim::Run)>,
    pub sweep: Vec<output::SweepPoint>,
    pub read_seconds: f64,
    pub sim_seconds: f64,
    /// Per-signature resource costs and the resource forecast's score (request logs).
    pub costs: Option<costs::CostReport>,
}

pub const POLICIES: [&str; 4] = ["predictive", "hpa", "oracle", "static-peak"];

pub fn run(args: &ReplayArgs) -> Result<(), ReplayError> {
    validate(args)?;
    let replay = simulate(args)?;
    output::write_all(&args.out, &replay)?;
    output::print_summary(&args.out, &replay);
    Ok(())
}

fn validate(args: &ReplayArgs) -> Result<(), ReplayError> {
    let bad = |m: &str| Err(ReplayError::Args(m.into()));
    if !(args.target_utilization > 0.0 && args.target_utilization <= 1.0) {
        return bad("--target-utilization must be in (0, 1]");
    }
    if !(0.5..1.0).contains(&args.level) {
        return bad("--level must be in [0.5, 1)");
    }
    if args
        .replica_capacity
        .is_some_and(|c| !(c.is_finite() && c > 0.0))
    {
        return bad("--replica-capacity must be a positive number");
    }
    if args.min_replicas < 1 || args.min_replicas > args.max_replicas {
        return bad("need 1 <= --min-replicas <= --max-replicas");
    }
    if args.sync_period < Duration::from_secs(1)
        || args.resolution.is_some_and(|r| r < Duration::from_secs(1))
    {
        return bad("--sync-period and --resolution must be at least 1s");
    }
    if args.step < Duration::from_secs(10) {
        return bad("--step must be at least 10s");
    }
    if !(0.0..=1.0).contains(&args.max_malformed) {
        return bad("--max-malformed must be in [0, 1]");
    }
    Ok(())
}

pub fn simulate(args: &ReplayArgs) -> Result<Replay, ReplayError> {
    let config = match &args.config {
        Some(path) => Some(prescale_proxy::MeshConfig::load(path)?),
        None => None,
    };
    let started = prescale_proxy::clock::Stopwatch::start();
    let opts = input::InputOptions {
        format: args.format,
        interval: args.interval,
        columns: args.columns.clone(),
        max_malformed_fraction: args.max_malformed,
        ..input::InputOptions::default()
    };
    let mut reader = input::open(&args.input, &opts)?;
    let progress = output::Progress::new(&args.input, args.quiet);
    let mut builder = Builder::new(
        ServiceModel {
            base: args.service_base,
            bytes_per_second: args.service_bandwidth,
        },
        60,
        None,
    );
    let policies_cfg = config
        .as_ref()
        .map(|c| c.policies.clone())
        .unwrap_or_default();
    let mut tiers =
        shed::Tiers::new(&policies_cfg).map_err(|e| ReplayError::Args(e.to_string()))?;
    let mut i: u64 = 0;
    while let Some(record) = reader.next() {
        let record = record?;
        if let input::Record::Request(r) = &record {
            tiers.classify(r.ts, &r.method, &r.path, r.source.as_deref());
        }
        builder.add(&record);
        i += 1;
        if i.is_multiple_of(65_536) {
            progress.update(reader.stats().lines);
        }
    }
    let stats = reader.finish()?;
    progress.finish(stats.lines);
    let trace = builder.finish();
    if trace.requests == 0 || trace.arrivals.is_empty() {
        return Err(ReplayError::Empty(args.input.clone()));
    }
    let read_seconds = started.elapsed().as_secs_f64();

    let sim_started = prescale_proxy::clock::Stopwatch::start();
    let resolution = match args.resolution {
        Some(r) => r.as_secs().max(1),
        None => auto_resolution(trace.interval, trace.requests, trace.arrivals.len() as u64),
    };
    let demand = trace.demand(resolution);
    tiers.finish(trace.start_unix, demand.len() as u64, resolution);
    let input_interval = trace.interval;
    // Forecasting finer than demand is measured would forecast noise.
    let step = args
        .step
        .as_secs()
        .max(input_interval)
        .max(resolution)
        .max(10);
    let lag = args.metric_lag.as_secs();
    let lead =
        args.start_delay.as_secs() + args.start_jitter.as_secs() + args.sync_period.as_secs();
    let horizon = ((lead + lag).div_ceil(step) + 2) as usize;
    let series = trace.step_series(step);
    let mut params = ForecastParams::for_step(step, horizon);
    params.level = args.level;
    // Score after four days of history, or a fifth of a short trace.
    let warmup = ((4 * 86_400 / step) as usize).min(series.len() / 5).max(1);
    let forecasts = Forecasts::run(&series, params, step, lag, warmup);

    let peak = demand.iter().copied().fold(0.0, f64::max);
    let scaling_file = config.as_ref().map(|c| &c.policies.scaling);
    let target_utilization = scaling_file.map_or(args.target_utilization, |s| s.target_utilization);
    let (capacity, capacity_defaulted) = match (args.replica_capacity, scaling_file) {
        (Some(c), _) => (c, false),
        (None, Some(s)) => (s.capacity_per_replica, false),
        (None, None) => ((peak / (20.0 * target_utilization)).max(1e-9), true),
    };
    let sync_period = scaling_file
        .map_or(args.sync_period, |s| s.sync_period)
        .as_secs()
        .max(1);
    let world = World {
        demand: &demand,
        capacity,
        target_utilization,
        start_delay: args.start_delay.as_secs(),
        start_jitter: args.start_jitter.as_secs(),
        metric_lag: lag,
        sync_period,
        min_replicas: scaling_file.map_or(args.min_replicas, |s| s.min_replicas),
        max_replicas: scaling_file.map_or(args.max_replicas, |s| s.max_replicas),
        scale_down_stabilization: scaling_file
            .map_or(args.scale_down_stabilization, |s| {
                s.scale_down_stabilization
            })
            .as_secs(),
        // One timeline row per decision.
        row_every: sync_period,
    };
    let setup = EngineSetup {
        forecast: config.as_ref().map_or_else(
            || prescale_profiler::ForecastConfig {
                step: Duration::from_secs(step),
                level: args.level,
                ..prescale_profiler::ForecastConfig::default()
            },
            |c| c.profiler.forecast.clone(),
        ),
        scaling: match scaling_file {
            Some(s) => prescale_policies::scale::ScalingConfig {
                capacity_per_replica: capacity,
                ..s.clone()
            },
            None => world.scaling(),
        },
        preshed: config
            .as_ref()
            .map(|c| c.policies.admission.preshed.clone())
            .unwrap_or_default(),
        periods: None,
        start_unix: engine::engine_start_unix(&trace),
        arrivals: &trace.arrivals,
        demand: &demand,
        resolution,
        gaps: trace.gaps.iter().map(|g| (g.start, g.seconds)).collect(),
        signatures: &trace.minutes,
        tiers: Some(&tiers),
    };
    let policies: Vec<(&'static str, sim::Run)> = POLICIES
        .iter()
        .map(|name| {
            (
                *name,
                world.run_with(&policy(name, &setup, 1.0, target_utilization), Some(&tiers)),
            )
        })
        .collect();
    let mut costs = costs::evaluate(&setup, &trace);
    if let (Some(c), Some((_, run))) = (
        costs.as_mut(),
        policies.iter().find(|(name, _)| *name == "predictive"),
    ) {
        let step = c.step_seconds.max(1);
        c.bridge = c.cpu_seconds_per_request.and_then(|per_request| {
            bridge::simulate(&bridge::BridgeInputs {
                rows: &run.rows,
                row_every: sync_period,
                demand: &demand,
                capacity,
                cpu_seconds_per_request: per_request,
                issued: &c.issued,
                lead_steps: (setup.scaling.lead_time().as_secs().div_ceil(step) as usize).max(1),
                start_ms: trace.start_unix * 1000,
            })
        });
    }
    let sweep = if args.sweep {
        output::sweep(&world, &setup)
    } else {
        Vec::new()
    };
    Ok(Replay {
        input_name: args.input.display().to_string(),
        args_echo: serde_json::json!({
            "config": args.config.as_ref().map(|p| p.display().to_string()),
            "replica_capacity": capacity,
            "target_utilization": target_utilization,
            "start_delay_seconds": args.start_delay.as_secs(),
            "start_jitter_seconds": args.start_jitter.as_secs(),
            "metric_lag_seconds": lag,
            "sync_period_seconds": sync_period,
            "scale_down_stabilization_seconds": world.scale_down_stabilization,
            "resolution_seconds": resolution,
            "forecast_step_seconds": step,
            "lead_time_seconds": lead,
            "level": setup.forecast.level,
            "engine_step_seconds": setup.forecast.step.as_secs().max(60),
            "engine_startup_seconds": setup.scaling.startup_time.as_secs(),
            "min_replicas": world.min_replicas,
            "max_replicas": world.max_replicas,
            "service_time_base_seconds": args.service_base.as_secs_f64(),
            "service_bandwidth_bytes_per_second": args.service_bandwidth,
        }),
        stats,
        trace,
        demand,
        capacity,
        capacity_defaulted,
        row_every: sync_period,
        policies,
        sweep,
        read_seconds,
        sim_seconds: sim_started.elapsed().as_secs_f64(),
        forecasts,
        costs,
    })
}

/// A count series' own interval (0 for a request log); for a request log, the
/// shortest window that holds ~30 requests on average.
fn auto_resolution(interval: u64, requests: u64, seconds: u64) -> u64 {
    // A count series is already measured at its own interval: averaging it over
    // coarser windows would plan and score a smoothed demand the service never saw
    // (on a sparse 5-minute series, 15-minute means hid every short rise).
    if interval > 0 {
        return interval;
    }
    let rate = requests as f64 / seconds.max(1) as f64;
    [10, 60, 300, 900]
        .into_iter()
        .find(|w| rate * *w as f64 >= 30.0)
        .unwrap_or(3600)
}

fn policy<'a>(
    name: &str,
    engine: &'a EngineSetup<'a>,
    headroom: f64,
    target_utilization: f64,
) -> Policy<'a> {
    match name {
        "predictive" => Policy::Predictive { engine, headroom },
        "hpa" => Policy::Hpa { target_utilization },
        "oracle" => Policy::Oracle,
        _ => Policy::StaticPeak,
    }
}

#[cfg(test)]
mod resolution_tests {
    use super::auto_resolution;

    #[test]
    fn a_count_series_keeps_its_own_interval_and_a_log_gets_30_requests_a_window() {
        // A sparse 5-minute series (0.04 req/s) is not re-averaged over 15 minutes.
        assert_eq!(auto_resolution(300, 2_000, 50_000), 300);
        // A request log at the same rate is: 30 requests need 15 minutes.
        assert_eq!(auto_resolution(0, 2_000, 50_000), 900);
        assert_eq!(auto_resolution(0, 100_000, 10_000), 10);
    }
}
