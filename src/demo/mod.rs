//! `prescale demo`: the whole product on one machine in about a minute.
//!
//! It starts an embedded sample service (endpoints that differ in cost, size and
//! fanout) and the real sidecar in front of it (this binary, `run`, with the example
//! config re-pointed at loopback, and `--time-scale N`: one wall second counts as N
//! series seconds), drives a day of traffic through it (night, a morning ramp, a lunch
//! spike) and shows what the sidecar learns (signatures, demand vs forecast, desired
//! replicas by rule, pre-shedding, anomalies) live. At the end it prints a summary
//! with the predictive rule's lead over demand and what the project's HPA would have
//! done on the same demand, writes an HTML report with inline SVG charts, and shuts
//! the sidecar down. Everything binds to loopback; every other file lives in a
//! temporary directory removed at the end.
//!
//! Unless `--no-history` is given, the sidecar's store is first seeded with earlier
//! days of the same shape (see `history`), so the forecast knows the ramp before it
//! comes; the view and the summary say so.

pub mod app;
mod chart;
mod costs;
mod history;
mod load;
mod record;
mod report;
mod shape;
mod sidecar;
mod upstream;
mod view;

use record::{Analysis, Model, Timeline};
use sidecar::{Ports, Sidecar, Stopped, Timing};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::{ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use view::{AdminClient, Header, Observed};

/// More failed requests than this share makes the demo exit non-zero.
const MAX_FAILURE_RATIO: f64 = 0.05;
/// How long the sidecar gets to come up, and to exit after `POST /shutdown`.
const READY_LIMIT: Duration = Duration::from_secs(30);
const EXIT_LIMIT: Duration = Duration::from_secs(10);
/// Start attempts when another process takes a port between choosing and binding it.
const START_ATTEMPTS: usize = 3;
/// sysexits' EX_USAGE, as for the other subcommands.
const EXIT_USAGE: u8 = 64;
/// The shell's convention for a run ended by SIGINT.
const EXIT_INTERRUPTED: u8 = 130;
/// Series time of day the run starts at: the quiet night before the morning ramp,
/// with time for the forecaster to take in the history.
const DAY_START_HOURS: f64 = 3.0;
/// The morning ramp's leads are measured up to here (before the lunch spike).
const RAMP_END_HOURS: f64 = 11.5;
/// A replica's start-up time in the demo (series time): the lead the predictive rule
/// plans for.
const STARTUP: Duration = Duration::from_secs(20 * 60);
/// Busy workers per replica: the day's swing becomes 1 to ~12 replicas at the default
/// rate.
const CAPACITY_PER_REPLICA: f64 = 0.1;
/// High, so a spike above the forecast outgrows the ready headroom and pre-sheds.
const TARGET_UTILIZATION: f64 = 0.9;
/// How often the view reads the admin API (wall time).
const REFRESH: Duration = Duration::from_millis(200);

/// Arguments of `prescale demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How long the demo runs (wall time, e.g. 60s, 2m); it covers duration × time
    /// scale of the day from 03:00 (60 s at 600: 03:00 to 13:00).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Series seconds per wall second: the sidecar runs with `--time-scale N`, so
    /// series, forecasts, scaling, the start-up time and timers all run N times faster.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub time_scale: u64,
    /// Offered load at the day's peak, in requests per second (wall time).
    #[arg(long, default_value_t = 120)]
    pub rate: u32,
    /// Where to write the HTML report (inline SVG, no external assets); default
    /// `prescale-demo-report.html` in the system's temporary directory.
    #[arg(long, value_name = "PATH")]
    pub report: Option<std::path::PathBuf>,
    /// Admin API address of the demo's sidecar (loopback; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
    /// Start the sidecar with an empty store instead of earlier days of the same shape
    /// (the forecast then has no day to learn the ramp from).
    #[arg(long)]
    pub no_history: bool,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the example config deploy/examples/sidecar.yaml: {0}")]
    Example(String),
    #[error("demo config: {0}")]
    Config(#[from] prescale_proxy::ConfigError),
    #[error("the sidecar exited during start-up ({status}); its log ends with:\n{log}")]
    SidecarExited { status: ExitStatus, log: String },
    #[error("the sidecar was not ready within {limit:?}; its log ends with:\n{log}")]
    SidecarNotReady { limit: Duration, log: String },
    #[error("interrupted")]
    Interrupted,
}

impl DemoError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// How the run went, for the exit code.
struct Outcome {
    failure_ratio: f64,
    ok: u64,
    interrupted: bool,
    sidecar_ok: bool,
}

/// Runs the demo; the exit code is 0 on success.
pub fn run(args: &DemoArgs) -> ExitCode {
    if let Err(e) = check(args) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("demo")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the demo runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(demo(args));
    // Connection tasks of the embedded services may still be parked; do not wait on them.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(o) if o.interrupted => ExitCode::from(EXIT_INTERRUPTED),
        Ok(o) if o.sidecar_ok && o.ok > 0 && o.failure_ratio <= MAX_FAILURE_RATIO => {
            ExitCode::SUCCESS
        }
        Ok(o) => {
            if o.failure_ratio > MAX_FAILURE_RATIO {
                eprintln!(
                    "error: {:.1} % of requests failed (more than {:.0} %)",
                    o.failure_ratio * 100.0,
                    MAX_FAILURE_RATIO * 100.0
                );
            } else if o.ok == 0 {
                eprintln!("error: no request succeeded");
            }
            ExitCode::FAILURE
        }
        Err(DemoError::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &DemoArgs) -> Result<(), DemoError> {
    if !(Duration::from_secs(5)..=Duration::from_secs(3600)).contains(&args.duration) {
        return Err(DemoError::Usage(
            "--duration must be between 5s and 1h".into(),
        ));
    }
    if !(1..=5000).contains(&args.rate) {
        return Err(DemoError::Usage("--rate must be between 1 and 5000".into()));
    }
    if !args.admin.ip().is_loopback() {
        return Err(DemoError::Usage(format!(
            "--admin must be a loopback address (the demo stays on this machine), got {}",
            args.admin
        )));
    }
    Ok(())
}

async fn demo(args: &DemoArgs) -> Result<Outcome, DemoError> {
    // Signals first: from here on a Ctrl-C must reach us, never leave the child behind.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let interrupt = Arc::new(AtomicBool::new(false));
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| DemoError::io("installing the Ctrl-C handler", e))?;
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| DemoError::io("installing the SIGTERM handler", e))?;
    {
        let stop_tx = stop_tx.clone();
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            interrupt.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        });
    }
    let stopped = {
        let interrupt = interrupt.clone();
        move || interrupt.load(Ordering::SeqCst)
    };

    let dir = tempfile::Builder::new()
        .prefix("prescale-demo-")
        .tempdir()
        .map_err(|e| DemoError::io("creating a temporary directory", e))?;
    let tty = std::io::stdout().is_terminal();
    println!("prescale demo: starting the sample service and the sidecar ...");
    let timing = timing(args);
    let seeded = if args.no_history {
        None
    } else {
        seed_history(dir.path(), f64::from(args.rate), &timing)
    };

    let (mut child, ports, (shop, _payments), admin, spawned) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ports = Ports {
                inbound: sidecar::free_addr()?,
                outbound: sidecar::free_addr()?,
                admin: if args.admin.port() == 0 {
                    sidecar::free_addr()?
                } else {
                    args.admin
                },
            };
            // The shop in a process of its own (its CPU is what the sidecar reads);
            // payments in this one.
            let shop = app::AppProcess::spawn(dir.path(), ports.outbound).await?;
            let payments = upstream::Service::payments().await?;
            let config = sidecar::write_config(
                dir.path(),
                &ports,
                (shop.addr, &shop.pid_file),
                payments.addr,
                &timing,
            )?;
            let spawned = Instant::now();
            let mut child = Sidecar::spawn(&config, &dir.path().join("sidecar.log"), &timing)?;
            let admin = AdminClient::new(ports.admin, timing.time_scale as f64);
            match child.wait_ready(&admin, READY_LIMIT, &stopped).await {
                Ok(()) => break (child, ports, (shop, payments), admin, spawned),
                Err(DemoError::SidecarExited { .. })
                    if attempt < START_ATTEMPTS && child.lost_a_port() =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    };

    let header = Header {
        inbound: ports.inbound,
        admin: ports.admin,
        duration: args.duration,
        peak_rate: f64::from(args.rate),
        sidecar_pid: child.pid(),
        seeded: seeded.clone(),
        time_scale: args.time_scale,
        startup: STARTUP,
    };
    println!(
        "prescale demo: sidecar pid {} ready (the shop: pid {}); inbound http://{}  outbound http://{}  admin http://{}",
        child.pid(),
        shop.pid(),
        ports.inbound,
        ports.outbound,
        ports.admin
    );
    // The sidecar's series clock started when it did; the load follows it.
    let plan = load::Plan {
        target: ports.inbound,
        peak_rate: f64::from(args.rate),
        duration: args.duration,
        time_scale: args.time_scale as f64,
        day_start: (timing.start_ms % DAY_MS) as f64 / DAY_MS as f64
            + timing.series(spawned.elapsed()).as_secs_f64() / 86_400.0,
    };
    println!(
        "prescale demo: time scale {}: {} of wall time is {} of the day from {}, peak {} req/s; replica start-up {} min; meanwhile try: curl http://{}/metrics",
        args.time_scale,
        humantime::format_duration(args.duration),
        humantime::format_duration(timing.series(args.duration)),
        shape::clock(plan.day_start),
        args.rate,
        STARTUP.as_secs() / 60,
        ports.admin
    );

    let stats = Arc::new(load::Stats::new());
    let mut generator = tokio::spawn(load::run(plan.clone(), stats.clone(), stop_rx.clone()));
    let started = Instant::now();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Observed::default();
    let mut timeline = Timeline::default();
    let mut cpu = costs::CpuTrack::default();
    let mut crashed = None;
    let mut generator_done = false;
    let mut last_print = None::<Instant>;
    // In a terminal: the live chart over the run's hours (plus the lead, where the
    // forecast is drawn), else the text screen if the terminal cannot take it.
    let x0 = plan.day_start * 24.0;
    let span = timing.series(args.duration) + STARTUP;
    let mut live = if tty {
        chart::Live::start((x0, x0 + span.as_secs_f64() / 3600.0)).ok()
    } else {
        None
    };
    loop {
        tokio::select! {
            _ = &mut generator => {
                generator_done = true;
                break;
            }
            _ = tick.tick() => {}
        }
        if let Some(status) = child.exited() {
            crashed = Some(status);
            break;
        }
        last = admin.observe().await;
        cpu.push(
            timing.start_ms + timing.series(spawned.elapsed()).as_millis() as u64,
            shop.cpu_seconds(),
            last.resources.as_ref().and_then(|r| r.forecast),
        );
        let snap = stats.snapshot();
        timeline.push(
            &last,
            snap.offered_rate * history::MEAN_SERVICE_SECONDS,
            snap.shed,
        );
        if let Some(l) = live.as_mut() {
            let day = shape::clock(plan.day_at(started.elapsed()));
            if l.draw(&header, &day, &snap, &last, &timeline.samples)
                .is_err()
            {
                live = None;
            }
            continue;
        }
        // A frame a second: the timeline keeps every refresh.
        if last_print.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            continue;
        }
        last_print = Some(Instant::now());
        let day = plan.day_at(started.elapsed());
        let frame = if tty {
            view::screen(&header, started.elapsed(), day, &snap, &last, &timeline)
        } else {
            view::line(&header, started.elapsed(), day, &snap, &last)
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{frame}");
        let _ = out.flush();
    }
    // Back to the normal screen before the summary.
    drop(live);
    let interrupted = stopped();
    if !generator_done {
        // Stop the generator (it waits for requests in flight, bounded by their timeout).
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut generator).await;
    }
    if crashed.is_none() {
        // One last look, after the generator is idle; a view that did not answer this
        // time keeps what the last frame showed.
        let mut fresh = admin.observe().await;
        if fresh.reachable {
            fresh.forecast = fresh.forecast.or(last.forecast.take());
            fresh.scale = fresh.scale.or(last.scale.take());
            fresh.sheds = fresh.sheds.or(last.sheds.take());
            fresh.resources = fresh.resources.or(last.resources.take());
            last = fresh;
        }
    }
    let snap = stats.snapshot();
    let stop = match crashed {
        Some(status) => Stopped::Early(status),
        None => child.shutdown(&admin, EXIT_LIMIT).await,
    };
    let sidecar_ok = matches!(&stop, Stopped::Clean(s) if s.success());
    let model = Model {
        capacity_per_replica: CAPACITY_PER_REPLICA,
        target_utilization: TARGET_UTILIZATION,
        startup_s: STARTUP.as_secs(),
        max_replicas: MAX_REPLICAS,
    };
    let day0 = timing.start_ms - timing.start_ms % DAY_MS;
    let ramp_end = day0 + (RAMP_END_HOURS * 3_600_000.0) as u64;
    let spike = (
        day0 + ((shape::SPIKE_CENTER - shape::SPIKE_HALF_WIDTH) * DAY_MS as f64) as u64,
        // The anomaly is judged when the step closes, and the view reads it after.
        day0 + ((shape::SPIKE_CENTER + 2.0 * shape::SPIKE_HALF_WIDTH) * DAY_MS as f64) as u64,
    );
    let analysis = record::analyse(
        &timeline.samples,
        &timeline.anomalies,
        &model,
        ramp_end,
        spike,
    );
    let cpu = cpu.compare(args.time_scale as f64);
    let report_path = args
        .report
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("prescale-demo-report.html"));
    let report = report::write(
        &report_path,
        &timeline.samples,
        &analysis,
        &report::Context {
            time_scale: args.time_scale,
            startup: STARTUP,
            capacity_per_replica: CAPACITY_PER_REPLICA,
            target_utilization: TARGET_UTILIZATION,
            peak_rate: args.rate,
            seeded: seeded.clone(),
        },
        (last.resources.as_ref(), &cpu),
    );
    print_summary(
        &snap,
        &last,
        &stop,
        interrupted,
        &child,
        seeded.as_deref(),
        (
            &analysis,
            &cpu,
            report
                .as_ref()
                .map(|()| report_path.as_path())
                .map_err(|e| e.to_string()),
        ),
    );
    drop(child);
    drop(shop);
    drop(dir);
    Ok(Outcome {
        failure_ratio: snap.failure_ratio(),
        ok: snap.ok,
        interrupted,
        sidecar_ok,
    })
}

const DAY_MS: u64 = 86_400_000;
const MAX_REPLICAS: u32 = 40;

/// The sidecar's time scale and replica model: its series clock starts at
/// [`DAY_START_HOURS`] of the current UTC day.
fn timing(args: &DemoArgs) -> Timing {
    let now = prescale_proxy::clock::system_ms();
    Timing {
        time_scale: args.time_scale,
        start_ms: now - now % DAY_MS + (DAY_START_HOURS * 3_600_000.0) as u64,
        startup: STARTUP,
        capacity_per_replica: CAPACITY_PER_REPLICA,
        target_utilization: TARGET_UTILIZATION,
        sync_period: Duration::from_secs(30),
    }
}

/// Seeds the sidecar's store (`<dir>/store.redb`, as the config says) with earlier
/// days of the same shape; returns the note to show, or None (with a warning) when it
/// failed: the demo then runs as with `--no-history`.
fn seed_history(dir: &std::path::Path, peak_rate: f64, timing: &Timing) -> Option<String> {
    match history::seed(
        &dir.join(sidecar::STORE_FILE),
        timing.start_ms,
        peak_rate,
        timing.time_scale as f64,
    ) {
        Ok(minutes) => {
            let note = history::note();
            println!("prescale demo: {note}: {minutes} minutes (--no-history turns it off)");
            Some(note)
        }
        Err(e) => {
            eprintln!(
                "warning: cannot seed the demo's history ({e}); the forecast has no earlier day"
            );
            None
        }
    }
}

fn print_summary(
    snap: &load::Snapshot,
    obs: &Observed,
    stop: &Stopped,
    interrupted: bool,
    child: &Sidecar,
    seeded: Option<&str>,
    (a, cpu, report): (
        &Analysis,
        &costs::CpuComparison,
        Result<&std::path::Path, String>,
    ),
) {
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "summary{}",
        if interrupted {
            " (interrupted by Ctrl-C)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "  requests    sent {}  ok {}  failed {}  ({:.2} %: {} http errors, {} transport errors, {} dropped)  shed {} ({})",
        snap.sent,
        snap.ok,
        snap.failed,
        snap.failure_ratio() * 100.0,
        snap.http_errors,
        snap.transport_errors,
        snap.dropped,
        snap.shed,
        per_tier(&snap.shed_by_tier)
    );
    let fmt_ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    let _ = writeln!(
        s,
        "  latency     p50 {}  p99 {}  (measured by the load generator, through the sidecar)",
        fmt_ms(snap.p50_ms),
        fmt_ms(snap.p99_ms)
    );
    match &obs.signatures {
        Some(sigs) => {
            let _ = writeln!(
                s,
                "  signatures  {} found (model v{}, {} samples profiled)",
                sigs.list.len(),
                sigs.model_version,
                sigs.samples
            );
            for g in &sigs.list {
                let _ = writeln!(
                    s,
                    "    #{:<2} {:>5.1}%  mean {:>6.1} ms  fanout {:.2}  {}",
                    g.id,
                    g.share * 100.0,
                    g.mean_ms,
                    g.fanout,
                    g.top_route
                );
            }
        }
        None => {
            let _ = writeln!(s, "  signatures  unknown (admin API not answering)");
        }
    }
    match &obs.forecast {
        Some(fc) => {
            let _ = writeln!(
                s,
                "  forecast    next {} s: point {:.2}  upper {:.2} busy workers ({})",
                fc.step_seconds * fc.horizon_steps.max(1),
                fc.point,
                fc.upper,
                fc.model
            );
        }
        None => {
            let _ = writeln!(
                s,
                "  forecast    none yet (the forecaster works on whole minutes of history)"
            );
        }
    }
    if let Some(note) = seeded {
        let _ = writeln!(s, "  history     {note}");
    }
    match &obs.scale {
        Some(sc) => {
            let _ = writeln!(
                s,
                "  replicas    last desired {}  (predictive {}, reactive {}; reason {})",
                sc.desired, sc.predictive, sc.reactive, sc.reason
            );
        }
        None => {
            let _ = writeln!(s, "  replicas    no decision yet");
        }
    }
    let stopped = match stop {
        Stopped::Clean(status) => format!("stopped after POST /shutdown ({status})"),
        Stopped::Early(status) => format!("exited on its own during the demo ({status})"),
        Stopped::Killed => format!(
            "did not exit within {} s of POST /shutdown; killed",
            EXIT_LIMIT.as_secs()
        ),
    };
    analysis_lines(&mut s, a);
    costs::summary(&mut s, obs.resources.as_ref(), cpu);
    match report {
        Ok(path) => {
            let _ = writeln!(s, "  report      {}", path.display());
        }
        Err(e) => {
            let _ = writeln!(s, "  report      not written: {e}");
        }
    }
    let _ = writeln!(s, "  sidecar     pid {} {stopped}", child.pid());
    if !matches!(stop, Stopped::Clean(st) if st.success()) {
        let _ = writeln!(s, "  sidecar log (last lines):\n{}", child.log_tail(15));
    }
    // A closed pipe (`prescale demo | head`) is not worth a panic.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// The summary's account of the run: forecast, leads, the HPA, the spike.
fn analysis_lines(s: &mut String, a: &Analysis) {
    use std::fmt::Write as _;
    let clock = |t: Option<u64>| {
        t.map_or("never".to_string(), |t| {
            shape::clock((t % DAY_MS) as f64 / DAY_MS as f64)
        })
    };
    let minutes = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:+.1} min", v / 60.0));
    let _ = writeln!(
        s,
        "  forecast    changed {} times during the run ({} refreshes recorded)",
        a.forecast_changes, a.samples
    );
    let _ = writeln!(
        s,
        "  lead        the predictive rule asked for each replica of the morning ramp a median {} before the offered demand needed it ({} levels; start-up time {} min)",
        minutes(a.predictive_lead_s),
        a.levels.len(),
        STARTUP.as_secs() / 60
    );
    let _ = writeln!(
        s,
        "  hpa         the project's HPA (prescale_policies::Hpa, as in `prescale replay`) on the same demand: median {} (negative: after demand), peak {} replicas",
        minutes(a.hpa_lead_s),
        a.hpa_peak_replicas
    );
    let _ = writeln!(
        s,
        "  ramp level  {} replicas first asked for (and kept 10 min): predictive {}  reactive {}  hpa {}",
        a.levels.get(a.levels.len() / 2).map_or(0, |l| l.replicas),
        clock(a.predictive_first_raise),
        clock(a.reactive_first_raise),
        clock(a.hpa_first_raise)
    );
    let _ = writeln!(
        s,
        "  shortfall   minutes with demand above ready capacity (replicas ready {} min after asked for): prescale {:.0}, HPA {:.0}",
        STARTUP.as_secs() / 60,
        a.prescale_short_minutes,
        a.hpa_short_minutes
    );
    let _ = writeln!(
        s,
        "  spike       pre-shed level peaked at {:.2} during the lunch spike ({:.2} over the run); pre-shed in the spike: {}; over the run: {}",
        a.spike_preshed,
        a.peak_preshed,
        per_tier(&a.spike_preshed_by_tier),
        per_tier(&a.preshed_by_tier),
    );
    let named = match &a.spike_anomaly {
        Some(x) => format!(
            "`{}` on {} ({}{}) raised at {} in the spike",
            x.kind,
            x.subject,
            x.direction,
            match (x.actual, x.upper) {
                (Some(d), Some(u)) =>
                    format!(": demand {d:.2} against the forecast's upper bound {u:.2}"),
                _ => String::new(),
            },
            clock(Some(x.since)),
        ),
        None => "none began in the spike".to_string(),
    };
    let _ = writeln!(
        s,
        "  anomaly     {named}; anomalies raised: {} during the spike, {} over the run",
        a.spike_anomalies, a.anomalies,
    );
}

/// `tier=n` for each tier, by name.
fn per_tier(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".to_string();
    }
    m.iter()
        .map(|(t, n)| format!("{t}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}
