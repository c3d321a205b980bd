//! The real sidecar as a child process: its config (derived from the shipped example),
//! start-up, readiness, and a clean shutdown through the admin API.
//!
//! The sidecar runs as `prescale run --config <temp>/sidecar.yaml` in its own process
//! group: pingora owns its process (signals, worker threads, exit), and a Ctrl-C in
//! the terminal reaches only the demo, which then shuts the child down itself.

use super::view::AdminClient;
use super::DemoError;
use http::Method;
use prescale_proxy::MeshConfig;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The shipped example config: the demo runs exactly this, re-pointed at loopback.
const EXAMPLE: &str = include_str!("../../deploy/examples/sidecar.yaml");
const EXAMPLE_NAME: &str = "deploy/examples/sidecar.yaml";
/// The sidecar's embedded store, inside the demo's temporary directory.
pub const STORE_FILE: &str = "store.redb";

/// The demo's time scale and the replica model it scales with (series time).
#[derive(Copy, Clone, Debug)]
pub struct Timing {
    /// Series seconds per wall second (`run --time-scale`).
    pub time_scale: u64,
    /// Series time (Unix ms) the sidecar starts at (`run --time-start`).
    pub start_ms: u64,
    /// A replica's start-up time: the lead the predictive rule plans for.
    pub startup: Duration,
    pub capacity_per_replica: f64,
    pub target_utilization: f64,
    pub sync_period: Duration,
}

impl Timing {
    /// Wall `d` as series time at this scale.
    pub fn series(&self, d: Duration) -> Duration {
        d.saturating_mul(u32::try_from(self.time_scale).unwrap_or(u32::MAX))
    }
}

/// Where the sidecar listens (all loopback).
#[derive(Copy, Clone, Debug)]
pub struct Ports {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

/// A running sidecar process, killed on drop if it is still running.
pub struct Sidecar {
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

/// How the sidecar ended.
#[derive(Debug)]
pub enum Stopped {
    /// It exited by itself after `POST /shutdown`.
    Clean(ExitStatus),
    /// It had already exited (crashed or was stopped from outside).
    Early(ExitStatus),
    /// It did not exit in time and was killed.
    Killed,
}

/// A free loopback address (bound, then released: fine for a demo on one machine).
pub fn free_addr() -> Result<SocketAddr, DemoError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| DemoError::io("finding a free loopback port", e))
}

/// Writes the demo's sidecar config into `dir` and checks it with the same loader
/// `prescale run` uses. Returns its path.
///
/// From the example: the `inbound` and `outbound` listeners and the `local` and
/// `payments` clusters, re-pointed at the embedded services; the profiler with its
/// embedded store in `dir`, re-fitting signatures every 10 wall seconds; scaling with
/// the replica model of `timing` (every duration in series time: the sidecar runs with
/// `--time-scale`), pre-shedding on, and a short drain.
pub fn write_config(
    dir: &Path,
    ports: &Ports,
    (app, app_pid_file): (SocketAddr, &Path),
    payments: SocketAddr,
    timing: &Timing,
) -> Result<PathBuf, DemoError> {
    let mut cfg = MeshConfig::parse(EXAMPLE, Path::new(EXAMPLE_NAME))?;
    cfg.admin.address = ports.admin;
    cfg.admin.token = None;
    cfg.drain.grace_period = Duration::from_secs(5);
    // Two cores are plenty for a demo's load; leave room for the generator.
    cfg.runtime.worker_threads = 1;
    cfg.listeners
        .retain(|l| l.name == "inbound" || l.name == "outbound");
    for l in &mut cfg.listeners {
        l.tls = None;
        l.original_dst = false;
        if l.name == "inbound" {
            l.address = ports.inbound;
        } else {
            l.address = ports.outbound;
        }
    }
    for name in ["inbound", "outbound"] {
        if !cfg.listeners.iter().any(|l| l.name == name) {
            return Err(DemoError::Example(format!("it has no `{name}` listener")));
        }
    }
    cfg.clusters
        .retain(|c| c.name == "local" || c.name == "payments");
    for c in &mut cfg.clusters {
        c.tls = None;
        let at = if c.name == "local" { app } else { payments };
        c.endpoints = vec![at.to_string()];
    }
    for name in ["local", "payments"] {
        if cfg.cluster(name).is_none() {
            return Err(DemoError::Example(format!("it has no `{name}` cluster")));
        }
    }
    let p = &mut cfg.profiler;
    p.enabled = true;
    // Profiler timers count series time; these are their wall periods times the scale.
    p.refit_interval = timing
        .series(Duration::from_secs(10))
        .min(Duration::from_secs(86_400));
    p.min_samples = p.min_samples.min(150);
    p.tick = Duration::from_millis(100);
    p.store.path = Some(dir.join(STORE_FILE));
    p.store.flush_interval = timing.series(Duration::from_secs(5));
    // Five-minute forecast steps: at a high time scale a minute holds a handful of
    // requests, too few for a steady demand reading.
    p.forecast.step = Duration::from_secs(300);
    // Signature snapshots for drift every 2 wall seconds (series time: the default
    // minute would hold a handful of requests at this scale, and shares of a handful
    // shift by chance).
    p.anomalies.drift.interval = timing
        .series(Duration::from_secs(2))
        .clamp(Duration::from_secs(60), Duration::from_secs(3600));
    // Rate anomalies: a step counts as outside half an interval width beyond it (not
    // 0.75): the band is wide at this scale (few requests per step), and the lunch
    // spike (3x at its peak, 40 minutes; 3 of 5 steps needed) must stand out of it.
    p.anomalies.rate.margin = 0.5;
    let s = &mut cfg.policies.scaling;
    s.capacity_per_replica = timing.capacity_per_replica;
    s.target_utilization = timing.target_utilization;
    s.startup_time = timing.startup;
    // No cluster to learn a start-up time from: plan with the configured one.
    s.learn_startup_time = false;
    s.max_startup_time = None;
    s.sync_period = timing.sync_period;
    s.min_replicas = 1;
    s.max_replicas = 40;
    s.scale_down_stabilization = Duration::from_secs(600);
    // Shed the batch tier ahead of a shortfall the forecast sees (the point of tiers).
    cfg.policies.admission.preshed.enabled = true;
    // The shop's CPU and memory, read from /proc: it runs in a process of its own.
    let resources = format!(
        "source: process\npid_file: {}\n",
        serde_json::to_string(&app_pid_file.display().to_string())
            .map_err(|e| DemoError::Example(format!("pid file path: {e}")))?
    );
    cfg.resources = Some(
        serde_yaml_ng::from_str(&resources)
            .map_err(|e| DemoError::Example(format!("resources section: {e}")))?,
    );

    let yaml = serde_yaml_ng::to_string(&cfg)
        .map_err(|e| DemoError::Example(format!("cannot write it back: {e}")))?;
    let path = dir.join("sidecar.yaml");
    let text = format!("# prescale demo: {EXAMPLE_NAME} re-pointed at loopback services.\n{yaml}");
    std::fs::write(&path, text)
        .map_err(|e| DemoError::io(format!("writing {}", path.display()), e))?;
    MeshConfig::load(&path)?;
    Ok(path)
}

// === impl Sidecar ===

impl Sidecar {
    /// Starts `<this binary> run --config <config> --time-scale N --time-start T`,
    /// logging to `log`.
    pub fn spawn(config: &Path, log: &Path, timing: &Timing) -> Result<Self, DemoError> {
        let start = std::time::UNIX_EPOCH + Duration::from_millis(timing.start_ms);
        let exe =
            std::env::current_exe().map_err(|e| DemoError::io("finding the prescale binary", e))?;
        let log_file = std::fs::File::create(log)
            .map_err(|e| DemoError::io(format!("creating {}", log.display()), e))?;
        let child = Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--time-scale")
            .arg(timing.time_scale.to_string())
            .arg("--time-start")
            .arg(humantime::format_rfc3339_millis(start).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            // Its own process group: the terminal's Ctrl-C is ours to handle.
            .process_group(0)
            .spawn()
            .map_err(|e| DemoError::io("starting the sidecar", e))?;
        Ok(Self {
            child,
            log: log.to_path_buf(),
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has ended (reaping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits until `/ready` answers 200. Fails if the process exits first, `limit`
    /// passes, or `cancelled` turns true.
    pub async fn wait_ready(
        &mut self,
        admin: &AdminClient,
        limit: Duration,
        cancelled: impl Fn() -> bool,
    ) -> Result<(), DemoError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Err(DemoError::SidecarExited {
                    status,
                    log: self.log_tail(15),
                });
            }
            if let Ok((200, _)) = admin.request(Method::GET, "/ready").await {
                return Ok(());
            }
            if cancelled() {
                return Err(DemoError::Interrupted);
            }
            if Instant::now() >= deadline {
                return Err(DemoError::SidecarNotReady {
                    limit,
                    log: self.log_tail(15),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the sidecar to drain and exit (`POST /shutdown`), waits up to `limit`, and
    /// kills it when it does not go.
    pub async fn shutdown(&mut self, admin: &AdminClient, limit: Duration) -> Stopped {
        if let Some(status) = self.exited() {
            return Stopped::Early(status);
        }
        // A refused or failed request still leaves the wait-then-kill below.
        let _ = admin.request(Method::POST, "/shutdown").await;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Stopped::Clean(status);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.kill();
        Stopped::Killed
    }

    fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// The last `n` lines of the sidecar's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the log says a port was taken (another process won the race for it).
    pub fn lost_a_port(&self) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains("cannot bind"))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
    }
}
