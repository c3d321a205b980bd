//! `prescale demo`: the whole product on one machine in about a minute.
//!
//! It starts an embedded sample service (endpoints that differ in cost, size and
//! fanout) and the real sidecar in front of it (this binary, `run`, with the example
//! config re-pointed at loopback), drives a compressed real day of traffic through it,
//! shows what the sidecar learns (signatures, demand vs forecast, desired replicas,
//! sheds) live, prints a summary and shuts the sidecar down. Everything binds to
//! loopback; every file lives in a temporary directory removed at the end.
//!
//! Unless `--no-history` is given, the sidecar's store is first seeded with two days
//! of synthetic per-minute history (see `history`), so a forecast shows within
//! seconds instead of after whole minutes; the view and the summary say so.

mod history;
mod load;
mod shape;
mod sidecar;
mod upstream;
mod view;

use sidecar::{Ports, Sidecar, Stopped};
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

/// Arguments of `prescale demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How long the compressed day lasts (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Offered load at the day's peak, in requests per second.
    #[arg(long, default_value_t = 150)]
    pub rate: u32,
    /// Admin API address of the demo's sidecar (loopback; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
    /// Start the sidecar with an empty store instead of two days of synthetic history
    /// (the forecast then waits for whole minutes of live traffic).
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
    let seeded = if args.no_history {
        None
    } else {
        seed_history(dir.path(), f64::from(args.rate))
    };

    let (mut child, ports, _upstreams, admin) = {
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
            let upstreams = upstream::Upstreams::start(ports.outbound).await?;
            let config =
                sidecar::write_config(dir.path(), &ports, upstreams.app, upstreams.payments)?;
            let mut child = Sidecar::spawn(&config, &dir.path().join("sidecar.log"))?;
            let admin = AdminClient::new(ports.admin);
            match child.wait_ready(&admin, READY_LIMIT, &stopped).await {
                Ok(()) => break (child, ports, upstreams, admin),
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
    };
    println!(
        "prescale demo: sidecar pid {} ready; inbound http://{}  outbound http://{}  admin http://{}",
        child.pid(),
        ports.inbound,
        ports.outbound,
        ports.admin
    );
    println!(
        "prescale demo: {} of a real day's traffic shape, peak {} req/s; meanwhile try: curl http://{}/metrics",
        humantime::format_duration(args.duration),
        args.rate,
        ports.admin
    );

    let stats = Arc::new(load::Stats::new());
    let plan = load::Plan {
        target: ports.inbound,
        peak_rate: f64::from(args.rate),
        duration: args.duration,
    };
    let mut generator = tokio::spawn(load::run(plan, stats.clone(), stop_rx.clone()));
    let started = Instant::now();
    let refresh = Duration::from_secs(1);
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Observed::default();
    let mut crashed = None;
    let mut generator_done = false;
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
        let snap = stats.snapshot();
        let frame = if tty {
            view::screen(&header, started.elapsed(), &snap, &last)
        } else {
            view::line(&header, started.elapsed(), &snap, &last)
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{frame}");
        let _ = out.flush();
    }
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
            last = fresh;
        }
    }
    let snap = stats.snapshot();
    let stop = match crashed {
        Some(status) => Stopped::Early(status),
        None => child.shutdown(&admin, EXIT_LIMIT).await,
    };
    let sidecar_ok = matches!(&stop, Stopped::Clean(s) if s.success());
    print_summary(
        &snap,
        &last,
        &stop,
        child.pid(),
        interrupted,
        &child,
        seeded.as_deref(),
    );
    drop(child);
    drop(dir);
    Ok(Outcome {
        failure_ratio: snap.failure_ratio(),
        ok: snap.ok,
        interrupted,
        sidecar_ok,
    })
}

/// Seeds the sidecar's store (`<dir>/store.redb`, as the config says) with synthetic
/// history; returns the note to show, or None (with a warning) when it failed: the
/// demo then runs as with `--no-history`.
fn seed_history(dir: &std::path::Path, peak_rate: f64) -> Option<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    match history::seed(&dir.join(sidecar::STORE_FILE), now, peak_rate) {
        Ok(minutes) => {
            let note = history::note();
            println!("prescale demo: {note}: {minutes} minutes (--no-history turns it off)");
            Some(note)
        }
        Err(e) => {
            eprintln!("warning: cannot seed the demo's history ({e}); the forecast waits for live minutes");
            None
        }
    }
}

fn print_summary(
    snap: &load::Snapshot,
    obs: &Observed,
    stop: &Stopped,
    pid: u32,
    interrupted: bool,
    child: &Sidecar,
    seeded: Option<&str>,
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
        "  requests    sent {}  ok {}  failed {}  ({:.2} %: {} http errors, {} transport errors, {} dropped)",
        snap.sent,
        snap.ok,
        snap.failed,
        snap.failure_ratio() * 100.0,
        snap.http_errors,
        snap.transport_errors,
        snap.dropped
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
    let _ = writeln!(s, "  sidecar     pid {pid} {stopped}");
    if !matches!(stop, Stopped::Clean(st) if st.success()) {
        let _ = writeln!(s, "  sidecar log (last lines):\n{}", child.log_tail(15));
    }
    // A closed pipe (`prescale demo | head`) is not worth a panic.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}
