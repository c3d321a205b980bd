//! Config reload: re-read the file, swap clusters and routes atomically, keep the old
//! config on any error, and report what only a restart can change.

use crate::config::{ConfigError, ConfigSource, ListenerConfig, MeshConfig};
use crate::metrics;
use crate::routes::{BuildError, Snapshot};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Owns where the config comes from and the live snapshot.
pub struct Reloader {
    source: ConfigSource,
    /// The config the process started with: the baseline for restart-only settings.
    started: MeshConfig,
    /// The last config loaded successfully.
    current: ArcSwap<MeshConfig>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    generation: AtomicU64,
    restart_required: ArcSwap<Vec<String>>,
    /// Serializes reloads from SIGHUP and `POST /reload`.
    lock: Mutex<()>,
}

/// What a successful reload did.
#[derive(Debug, serde::Serialize)]
pub struct ReloadOutcome {
    pub generation: u64,
    /// Settings that changed in the file but apply only after a restart.
    pub restart_required: Vec<String>,
}

/// Why a reload was refused. The running config is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Build(#[from] BuildError),
}

// === impl Reloader ===

impl Reloader {
    pub fn new(source: ConfigSource, cfg: MeshConfig, snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        ::metrics::gauge!(metrics::CONFIG_LAST_RELOAD_SUCCESS).set(unix_now());
        ::metrics::gauge!(metrics::CONFIG_RESTART_REQUIRED).set(0.0);
        Self {
            source,
            current: ArcSwap::from_pointee(cfg.clone()),
            started: cfg,
            snapshot,
            generation: AtomicU64::new(1),
            restart_required: ArcSwap::from_pointee(Vec::new()),
            lock: Mutex::new(()),
        }
    }

    pub fn current(&self) -> Arc<MeshConfig> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn restart_required(&self) -> Arc<Vec<String>> {
        self.restart_required.load_full()
    }

    /// The routing snapshot in force (tiers and admission included).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Re-reads the file and applies it; on error nothing changes.
    pub fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.try_reload();
        let label = if result.is_ok() { "success" } else { "failure" };
        ::metrics::counter!(metrics::CONFIG_RELOADS, "result" => label).increment(1);
        match &result {
            Ok(o) => {
                tracing::info!(generation = o.generation, restart_required = ?o.restart_required, "config reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload refused; keeping the running config")
            }
        }
        result
    }

    fn try_reload(&self) -> Result<ReloadOutcome, ReloadError> {
        let cfg = self.source.load()?;
        let generation = self.generation() + 1;
        // Tier admission keeps what it learned (limits, counters) across the swap.
        let snapshot = Snapshot::build_after(&cfg, generation, Some(&self.snapshot.load()))?;
        let restart_required = restart_only_changes(&self.started, &cfg);
        self.snapshot.store(Arc::new(snapshot));
        // The token is read per request, so a reload can add or drop it.
        crate::admin::report_exposure(&cfg.admin);
        self.current.store(Arc::new(cfg));
        self.generation.store(generation, Ordering::Release);
        ::metrics::gauge!(metrics::CONFIG_LAST_RELOAD_SUCCESS).set(unix_now());
        ::metrics::gauge!(metrics::CONFIG_RESTART_REQUIRED).set(if restart_required.is_empty() {
            0.0
        } else {
            1.0
        });
        self.restart_required
            .store(Arc::new(restart_required.clone()));
        Ok(ReloadOutcome {
            generation,
            restart_required,
        })
    }
}

/// Settings bound into sockets, threads or the shutdown sequence at startup.
fn restart_only_changes(old: &MeshConfig, new: &MeshConfig) -> Vec<String> {
    let mut out = Vec::new();
    let key = |l: &ListenerConfig| (l.direction, l.address, l.tls.clone(), l.h2c);
    for l in &new.listeners {
        match old.listeners.iter().find(|o| o.name == l.name) {
            None => out.push(format!("listeners.{}: added", l.name)),
            Some(o) if key(o) != key(l) => out.push(format!(
                "listeners.{}: address, direction, tls or h2c changed",
                l.name
            )),
            Some(_) => {}
        }
    }
    for o in &old.listeners {
        if !new.listeners.iter().any(|l| l.name == o.name) {
            out.push(format!("listeners.{}: removed", o.name));
        }
    }
    if old.admin.address != new.admin.address {
        out.push("admin.address".into());
    }
    if old.runtime != new.runtime {
        out.push("runtime".into());
    }
    if old.drain != new.drain {
        out.push("drain".into());
    }
    // The profiler thread, its queue and its store are built once at startup.
    if old.profiler != new.profiler {
        out.push("profiler".into());
    }
    // Signal senders and warm start are set up once, with the forecaster.
    if old.signals != new.signals {
        out.push("signals".into());
    }
    if old.warm_start != new.warm_start {
        out.push("warm_start".into());
    }
    // The alert sender and the remediation settings are set up once, like signals.
    if old.anomalies != new.anomalies {
        out.push("anomalies".into());
    }
    // The resource sampler reads the source it was started with.
    if old.resources != new.resources {
        out.push("resources".into());
    }
    out
}

pub fn unix_now() -> f64 {
    crate::clock::system_ms() as f64 / 1000.0
}
