//! The `policies.admission` config section: the adaptive limit, shedding and pre-shedding.

use crate::PoliciesConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How requests are admitted against each upstream cluster's adaptive limit.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Enforce the concurrency limit. Off: every request is admitted (per-source rate
    /// limits still apply) and the limit is still learned and reported.
    pub enabled: bool,
    /// The adaptive concurrency limit, one per upstream cluster.
    pub limit: LimitConfig,
    /// Per cluster (by name): the settings of its limit that differ from `limit`, e.g.
    /// a smaller `ceiling` for a tier's reserved replicas. Names the inbound route's
    /// cluster, a tier's cluster or an overflow cluster; the proxy checks the name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_limits: BTreeMap<String, LimitOverride>,
    /// Fraction of the limit (at least one slot) a sheddable tier leaves free for each
    /// priority level above it, so at the limit lower tiers are refused first (e.g.
    /// 0.1 with a limit of 100: the third level may fill only 80 slots). Larger is
    /// stricter priority; the adaptive limit grows to make up for the room a lone low
    /// tier leaves. 0: no priority order beyond the shares.
    pub priority_headroom: f64,
    /// Most slots one request may count for when its cost is above the median (cost
    /// weighting applies to sheddable tiers when they borrow).
    pub max_cost_weight: f64,
    /// `Retry-After` for overload and pre-shed rejections (rate limits compute theirs).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Shedding ahead of forecast overload.
    pub preshed: PreShedConfig,
    /// The latency the service must keep (e.g. its p99 objective). Set: at the
    /// adaptive limit a request is refused at once (tiers with `queue: true` wait with
    /// CoDel deadlines), so latency stays near its unloaded level. Unset (the default):
    /// a request over the limit waits for a slot, up to `queue.max_wait`, in the
    /// order of its tier's priority, and is refused only when that wait would be
    /// exceeded or `queue.max_waiting` are already waiting: a burst the service keeps
    /// completing is delayed, not refused.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub latency_objective: Option<Duration>,
    /// The wait for a slot at the limit (see `latency_objective`).
    pub queue: QueueConfig,
}

/// The admission queue: CoDel-style deadlines (Facebook's "adaptive LIFO + CoDel").
/// A request that finds its cluster full waits at most `interval`; once the queue has
/// not been empty for a whole `interval` (a standing queue, i.e. sustained overload)
/// new waiters get only `target` and are served newest-first, so the queue drains
/// instead of making everybody late.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Most requests waiting per cluster; past it a request is refused at once.
    pub max_waiting: u32,
    /// Longest wait while the queue is standing.
    #[serde(with = "humantime_serde")]
    pub target: Duration,
    /// Longest wait otherwise, and how long the queue must stay non-empty to count as
    /// standing.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Without a `latency_objective`: the longest any request waits for a slot
    /// (oldest first within a tier; `target` and `interval` then do not apply).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

/// Gradient2 (Netflix concurrency-limits) settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitConfig {
    /// Limit before anything is learned.
    pub initial: u32,
    /// The limit never goes below this.
    pub floor: u32,
    /// ... nor above this.
    pub ceiling: u32,
    /// Weight of each new estimate, in (0, 1].
    pub smoothing: f64,
    /// How much slower than the long-term RTT a window may be before the limit shrinks
    /// (≥ 1). Netflix's Gradient2 uses 1.5; the default here is 1.1, which keeps the
    /// standing queue at the upstream short (see `limit.rs`).
    pub tolerance: f64,
    /// The long-term RTT is pulled down once above this many times the live minimum
    /// RTT (≥ 1; at least `tolerance` is used). 1.5 suits services whose latency is
    /// noisy; closer to 1 keeps the upstream's own queue shorter when it is steady.
    pub drift_guard: f64,
    /// Queue allowance added by an update whose window was within tolerance (how fast
    /// the limit probes upward); absent: √limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<f64>,
    /// Samples are averaged over windows at least this long ...
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// ... holding at least this many samples.
    pub min_samples: u32,
    /// Windows in the long-term RTT's exponential average.
    pub long_window: u32,
    /// The live minimum RTT is the lowest window average within this period; it keeps
    /// the long-term RTT from drifting up under a standing queue.
    #[serde(with = "humantime_serde")]
    pub min_rtt_window: Duration,
    /// Multiplier applied to the limit after a window in which the upstream signalled
    /// overload (timeouts, refused connections, 503), in (0, 1].
    pub backoff: f64,
}

/// [`LimitConfig`] fields that differ for one cluster; the rest come from
/// `admission.limit`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_guard: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<f64>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_window: Option<u32>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub min_rtt_window: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<f64>,
}

/// Pre-shedding: refuse the sheddable tiers' share of a forecast shortfall before it
/// lands, least important tier first.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PreShedConfig {
    /// Apply the level at all (off by default).
    pub enabled: bool,
    /// How fast the level falls once capacity arrives, per second (1.0: at once within a
    /// second; 0.1: over ten seconds), so new replicas are not stampeded.
    pub release_rate: f64,
    /// A standing level in [0, 1] (a brownout): at least this share of sheddable
    /// demand is refused whatever the forecast says. 0: the forecast alone decides.
    pub min_level: f64,
}

// === impl AdmissionConfig ===

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            limit: LimitConfig::default(),
            priority_headroom: 0.1,
            max_cost_weight: 8.0,
            retry_after: Duration::from_secs(1),
            cluster_limits: BTreeMap::new(),
            preshed: PreShedConfig::default(),
            latency_objective: None,
            queue: QueueConfig::default(),
        }
    }
}

impl AdmissionConfig {
    /// Checks bounds serde cannot express.
    pub fn validate(&self) -> Result<(), PoliciesConfigError> {
        let err = |f: &str, r: &str| Err(PoliciesConfigError::new(format!("admission.{f}"), r));
        self.limit.validate("admission.limit")?;
        for (name, o) in &self.cluster_limits {
            self.limit_for(Some(name))
                .validate(&format!("admission.cluster_limits.{name}"))
                .map_err(|e| PoliciesConfigError {
                    // Name the field as written, or the cluster when it only inherits.
                    field: if o.sets(e.field.rsplit('.').next().unwrap_or_default()) {
                        e.field
                    } else {
                        format!("admission.cluster_limits.{name}")
                    },
                    ..e
                })?;
        }
        if !(0.0..0.5).contains(&self.priority_headroom) {
            return err("priority_headroom", "must be in [0, 0.5)");
        }
        if !(self.max_cost_weight.is_finite() && self.max_cost_weight >= 1.0) {
            return err("max_cost_weight", "must be at least 1");
        }
        if self.retry_after < Duration::from_secs(1) || self.retry_after > Duration::from_secs(3600)
        {
            return err(
                "retry_after",
                "must be in [1s, 1h] (Retry-After is whole seconds)",
            );
        }
        if !(self.preshed.release_rate.is_finite() && self.preshed.release_rate > 0.0) {
            return err("preshed.release_rate", "must be a positive number");
        }
        if !(0.0..=1.0).contains(&self.preshed.min_level) {
            return err("preshed.min_level", "must be in [0, 1]");
        }
        let q = &self.queue;
        if q.max_waiting > 10_000 {
            return err("queue.max_waiting", "must be at most 10000");
        }
        if q.target > q.interval || q.interval > Duration::from_secs(10) {
            return err("queue.target", "need target <= interval <= 10s");
        }
        if q.max_wait.is_zero() || q.max_wait > Duration::from_secs(60) {
            return err("queue.max_wait", "must be in (0, 60s]");
        }
        if self
            .latency_objective
            .is_some_and(|o| o.is_zero() || o > Duration::from_secs(3600))
        {
            return err("latency_objective", "must be in (0, 1h]");
        }
        Ok(())
    }

    /// The limit settings of cluster `name` (`None`: one without a name of its own).
    pub fn limit_for(&self, name: Option<&str>) -> LimitConfig {
        match name.and_then(|n| self.cluster_limits.get(n)) {
            Some(o) => o.apply(&self.limit),
            None => self.limit.clone(),
        }
    }
}

// === impl LimitOverride ===

impl LimitOverride {
    /// `base` with this override's fields set.
    pub fn apply(&self, base: &LimitConfig) -> LimitConfig {
        let b = base.clone();
        // Bounds not given are fitted to those given, so `ceiling: 8` alone works
        // under a base `initial: 20`.
        let ceiling = self.ceiling.unwrap_or(b.ceiling);
        let floor = self.floor.unwrap_or(b.floor.min(ceiling));
        let initial = self
            .initial
            .unwrap_or_else(|| b.initial.min(ceiling).max(floor));
        LimitConfig {
            initial,
            floor,
            ceiling,
            smoothing: self.smoothing.unwrap_or(b.smoothing),
            tolerance: self.tolerance.unwrap_or(b.tolerance),
            drift_guard: self.drift_guard.unwrap_or(b.drift_guard),
            queue_size: self.queue_size.or(b.queue_size),
            window: self.window.unwrap_or(b.window),
            min_samples: self.min_samples.unwrap_or(b.min_samples),
            long_window: self.long_window.unwrap_or(b.long_window),
            min_rtt_window: self.min_rtt_window.unwrap_or(b.min_rtt_window),
            backoff: self.backoff.unwrap_or(b.backoff),
        }
    }

    /// Whether this override sets `field`.
    fn sets(&self, field: &str) -> bool {
        match field {
            "initial" => self.initial.is_some(),
            "floor" => self.floor.is_some(),
            "ceiling" => self.ceiling.is_some(),
            "smoothing" => self.smoothing.is_some(),
            "tolerance" => self.tolerance.is_some(),
            "drift_guard" => self.drift_guard.is_some(),
            "queue_size" => self.queue_size.is_some(),
            "window" => self.window.is_some(),
            "min_samples" => self.min_samples.is_some(),
            "long_window" => self.long_window.is_some(),
            "min_rtt_window" => self.min_rtt_window.is_some(),
            "backoff" => self.backoff.is_some(),
            _ => false,
        }
    }
}

// === impl LimitConfig ===

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            initial: 20,
            floor: 4,
            ceiling: 1000,
            smoothing: 0.2,
            tolerance: 1.1,
            drift_guard: 1.5,
            queue_size: None,
            window: Duration::from_millis(100),
            min_samples: 10,
            long_window: 600,
            min_rtt_window: Duration::from_secs(30),
            backoff: 0.9,
        }
    }
}

impl LimitConfig {
    /// A limit that never moves: floor = ceiling = initial = `n` (tests, or a hand-set
    /// limit).
    pub fn fixed(n: u32) -> Self {
        Self {
            initial: n,
            floor: n,
            ceiling: n,
            ..Self::default()
        }
    }

    /// Checks bounds; errors name fields below `at` (e.g. `admission.limit`).
    fn validate(&self, at: &str) -> Result<(), PoliciesConfigError> {
        let err = |f: &str, r: &str| Err(PoliciesConfigError::new(format!("{at}.{f}"), r));
        if self.floor < 1 || self.floor > self.initial || self.initial > self.ceiling {
            return err("initial", "need 1 <= floor <= initial <= ceiling");
        }
        if self.ceiling > 1_000_000 {
            return err("ceiling", "must be at most 1000000");
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return err("smoothing", "must be in (0, 1]");
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 1.0) {
            return err("tolerance", "must be at least 1");
        }
        if !(self.drift_guard.is_finite() && self.drift_guard >= 1.0) {
            return err("drift_guard", "must be at least 1");
        }
        if self
            .queue_size
            .is_some_and(|q| !(q.is_finite() && q >= 0.0))
        {
            return err("queue_size", "must be a non-negative number");
        }
        if self.window < Duration::from_millis(1) || self.window > Duration::from_secs(60) {
            return err("window", "must be in [1ms, 60s]");
        }
        if self.min_samples < 1 || self.long_window < 1 {
            return err(
                "min_samples",
                "min_samples and long_window must be at least 1",
            );
        }
        if self.min_rtt_window < self.window {
            return err("min_rtt_window", "must be at least one window");
        }
        if !(self.backoff > 0.0 && self.backoff <= 1.0) {
            return err("backoff", "must be in (0, 1]");
        }
        Ok(())
    }
}

// === impl PreShedConfig ===

impl Default for PreShedConfig {
    /// Off: it acts on forecasts, so operators opt in (ideally after a shadow trial).
    fn default() -> Self {
        Self {
            enabled: false,
            release_rate: 0.1,
            min_level: 0.0,
        }
    }
}

// === impl QueueConfig ===

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            // A burst of a few hundred concurrent requests waits rather than fails.
            max_waiting: 1024,
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
            // Long enough that a closed-loop burst on a slow host (500 in flight at
            // 150 req/s waits ~3 s on average, the tail several times that) is served,
            // short of the 60 s ingress and client timeouts so the caller gets a clear
            // 503 + Retry-After instead of its own timeout.
            max_wait: Duration::from_secs(30),
        }
    }
}
