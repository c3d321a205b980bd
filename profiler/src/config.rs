//! The `profiler:` section of the mesh config, owned and validated by this crate.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Settings for the inline profiler. Every set it keeps names its bound here.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilerConfig {
    /// Whether requests are profiled at all. Off means the data path records nothing.
    pub enabled: bool,
    /// How often recorded samples are drained and aggregated, off the data path.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// How often signatures are re-fitted.
    #[serde(with = "humantime_serde")]
    pub refit_interval: Duration,
    /// Samples needed before the first fit (and every later one).
    pub min_samples: usize,
    /// Samples kept for fitting (a reservoir that slowly forgets old traffic).
    pub reservoir: usize,
    /// Bounds on the number of signatures; k is chosen between them.
    pub min_signatures: usize,
    pub max_signatures: usize,
    /// Below this silhouette, clusters are not real structure: one signature.
    pub min_silhouette: f64,
    /// Route templates tracked (top-K heavy hitters; the rest count as `other`).
    pub max_routes: usize,
    /// Samples queued between the data path and the profiler; beyond it they drop.
    pub queue_capacity: usize,
    /// Inbound requests tracked at once for fanout correlation; beyond it untracked.
    pub fanout_capacity: usize,
    /// Headers carrying the trace id, in order of preference.
    pub trace_headers: Vec<String>,
    /// Header naming the caller (e.g. `x-client-id`), honoured only from peers in
    /// `policies.tiers.trusted_sources`; otherwise the mTLS peer name or the client
    /// address identifies the source.
    pub source_header: Option<String>,
    pub store: StoreConfig,
    pub forecast: ForecastConfig,
    /// Anomaly detection (rate vs forecast, signature drift, per-source behaviour).
    pub anomalies: crate::anomaly::AnomalyConfig,
}

/// How demand is forecast (the horizon comes from the scaling lead time).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    /// Step of the forecast series.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// Central prediction-interval level.
    pub level: f64,
    /// Refit the expensive models this often.
    #[serde(with = "humantime_serde")]
    pub refit_interval: Duration,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            step: Duration::from_secs(60),
            level: 0.9,
            refit_interval: Duration::from_secs(3600),
        }
    }
}

/// Where per-signature history is persisted.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The redb file; relative paths are relative to the config file. None: memory only.
    pub path: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

/// A profiler setting that is out of its bounds.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("profiler.{field}: {reason}")]
pub struct ProfilerConfigError {
    pub field: &'static str,
    pub reason: String,
}

// === impl ProfilerConfig ===

impl Default for ProfilerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick: Duration::from_secs(1),
            refit_interval: Duration::from_secs(60),
            min_samples: 200,
            reservoir: 4096,
            min_signatures: 1,
            max_signatures: 8,
            min_silhouette: 0.4,
            max_routes: 256,
            queue_capacity: 65_536,
            fanout_capacity: 4096,
            trace_headers: crate::trace::HEADERS
                .iter()
                .map(|h| h.to_string())
                .collect(),
            source_header: None,
            store: StoreConfig::default(),
            forecast: ForecastConfig::default(),
            anomalies: crate::anomaly::AnomalyConfig::default(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: None,
            flush_interval: Duration::from_secs(10),
            retention: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

impl ProfilerConfig {
    /// Makes the store path relative to the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &mut self.store.path {
            *p = base.join(&*p);
        }
    }

    /// Checks bounds that serde cannot express.
    pub fn validate(&self) -> Result<(), ProfilerConfigError> {
        let err = |field, reason: String| Err(ProfilerConfigError { field, reason });
        // A tick under 100 ms spends the sidecar's CPU on bookkeeping; over a minute
        // makes the 10 s series buckets meaningless.
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&self.tick) {
            return err(
                "tick",
                format!("must be between 100ms and 60s, got {:?}", self.tick),
            );
        }
        if !(Duration::from_secs(5)..=Duration::from_secs(86_400)).contains(&self.refit_interval) {
            return err("refit_interval", "must be between 5s and 24h".into());
        }
        if !(2..=100_000).contains(&self.reservoir) || self.min_samples > self.reservoir {
            return err(
                "reservoir",
                "must be 2..=100000 and at least min_samples".into(),
            );
        }
        // Signature ids are metric label values: their number is the label bound.
        if self.min_signatures < 1
            || self.max_signatures > 16
            || self.min_signatures > self.max_signatures
        {
            return err(
                "max_signatures",
                "need 1 <= min_signatures <= max_signatures <= 16".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.min_silhouette) {
            return err("min_silhouette", "must be between 0 and 1".into());
        }
        if !(1..=10_000).contains(&self.max_routes) {
            return err("max_routes", "must be between 1 and 10000".into());
        }
        if !(1..=10_000_000).contains(&self.queue_capacity) {
            return err("queue_capacity", "must be between 1 and 10000000".into());
        }
        if !(64..=1_048_576).contains(&self.fanout_capacity) {
            return err("fanout_capacity", "must be between 64 and 1048576".into());
        }
        for h in &self.trace_headers {
            if !crate::trace::HEADERS.contains(&h.as_str()) {
                return err(
                    "trace_headers",
                    format!(
                        "unknown trace header {h:?}; known: {:?}",
                        crate::trace::HEADERS
                    ),
                );
            }
        }
        let f = &self.forecast;
        // The series are minute buckets: the forecast step is a whole number of them.
        if f.step.as_secs() < 60
            || !f.step.as_secs().is_multiple_of(60)
            || f.step > Duration::from_secs(3600)
        {
            return err(
                "forecast.step",
                "must be a whole number of minutes, at most 1h".into(),
            );
        }
        if !(0.5..1.0).contains(&f.level) {
            return err("forecast.level", "must be in [0.5, 1)".into());
        }
        if f.refit_interval < f.step {
            return err(
                "forecast.refit_interval",
                "must be at least one step".into(),
            );
        }
        if let Err(e) = self.anomalies.validate() {
            return err("anomalies", e.to_string());
        }
        if self.store.flush_interval < Duration::from_secs(1)
            || self.store.retention < Duration::from_secs(3600)
        {
            return err(
                "store",
                "flush_interval must be >= 1s and retention >= 1h".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_out_of_range_values_are_refused() {
        assert_eq!(ProfilerConfig::default().validate(), Ok(()));
        let bad = [
            ProfilerConfig {
                tick: Duration::from_millis(10),
                ..Default::default()
            },
            ProfilerConfig {
                max_signatures: 40,
                ..Default::default()
            },
            ProfilerConfig {
                trace_headers: vec!["x-trace".into()],
                ..Default::default()
            },
            ProfilerConfig {
                min_samples: 10_000,
                reservoir: 100,
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
    }
}
