//! Platform signals, as the sidecar sees them: the decision handed over, how its
//! delivery ended, and the [`DecisionSink`] the senders (in `prescale-control`, off the
//! data path, never queueing more than the latest decision) are reached through.
//! (The Prometheus gauges are exported by `forecasting`.)

pub mod startup;

use prescale_policies::scale::{ResourceNeed, ScaleReason};
use prescale_profiler::sample::Millis;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

/// Deliveries kept for `GET /v1/scale`, newest first; older ones are forgotten.
pub const RECENT: usize = 8;

/// One scaling decision, as the forecaster hands it over.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub desired: u32,
    /// The previous decision's desired replicas; None for the first one.
    pub previous: Option<u32>,
    pub reason: ScaleReason,
    pub lead_time_seconds: f64,
    pub forecast: Option<ForecastSummary>,
    /// Busy concurrency over the last complete 10 s.
    pub current_demand: f64,
    /// Unix milliseconds of the decision.
    pub at: Millis,
    /// Forecast CPU and memory over the lead window (the `resources:` cost model's
    /// upper bounds), for in-place resizing; empty without a resource forecast.
    pub resources: ResourceNeed,
}

/// The total-demand forecast behind a decision (the engine's summary of it).
pub use prescale_engine::ForecastSummary;

/// How one decision's delivery ended (a fixed set: a metric label).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The receiver answered 2xx.
    Ok,
    /// Retries ran out, or the receiver refused it (4xx other than 429).
    Failed,
    /// A newer, different decision replaced it before it was delivered.
    Dropped,
    /// Kubernetes: the Deployment already had the desired replicas; nothing written.
    Unchanged,
    /// Kubernetes: a HorizontalPodAutoscaler targets the Deployment; nothing written.
    RefusedHpaOwned,
    /// Resize: a VerticalPodAutoscaler targets the workload; nothing written.
    RefusedVpaOwned,
    /// Resize: the kubelet called this size `Infeasible` (the node cannot give it);
    /// not asked for again until `infeasible_retry` passed.
    Infeasible,
    /// Resize: the pod already asks for this size and the kubelet `Deferred` it (it
    /// retries by itself); nothing written.
    Deferred,
}

/// One delivery, for `GET /v1/scale`.
#[derive(Clone, Debug, Serialize)]
pub struct SentSignal {
    pub signal: &'static str,
    /// When the delivery ended (RFC 3339).
    pub at: String,
    /// The decision's time (RFC 3339).
    pub decided_at: String,
    pub desired_replicas: u32,
    pub outcome: Outcome,
    pub attempts: u32,
    /// The last HTTP status received, if any.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub idempotency_key: String,
}

/// Where scaling decisions go besides the metrics: the platform senders. Shared by
/// the forecaster (which publishes) and the admin API (which shows the deliveries).
pub trait DecisionSink: Send + Sync {
    /// Hands a decision over. Never blocks: each sender keeps only the latest.
    fn publish(&self, d: &Decision);
    /// The last deliveries, newest first.
    fn recent(&self) -> Vec<SentSignal>;
    /// The replica start-up time learned from readiness, once observed.
    fn learned_startup(&self) -> Option<startup::LearnedStartup>;
    /// The in-place resize's last plan and what bounded it (`signals.resize`).
    fn resize_status(&self) -> Option<ResizeStatus> {
        None
    }
}

/// `signals.resize` as `GET /v1/scale` shows it: the last plan, the node's room, and
/// why the plan is what it is.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ResizeStatus {
    pub planned_cpu_cores: Option<f64>,
    pub planned_memory_bytes: Option<f64>,
    /// The planner's reason (`forecast`, `bridge`, `at_limit`, ...).
    pub reason: Option<String>,
    /// Set when the node's free capacity, not the forecast or `max_cpu`, set the
    /// size: what was wanted and what the node had room for.
    pub capped_by_node: Option<String>,
    /// The node's room, as last read (None with `node_capacity: false`, or before the
    /// first read).
    pub node: Option<NodeStatus>,
    /// Why the node could not be read, while it cannot.
    pub node_error: Option<String>,
    /// The kubelet's verdict on the current ask (`Deferred: ...`, `Infeasible: ...`).
    pub pending: Option<String>,
}

/// One read of the node for `signals.resize`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct NodeStatus {
    pub name: String,
    pub allocatable_cpu_cores: f64,
    pub allocatable_memory_bytes: f64,
    /// Requested by the node's other pods and this pod's other containers.
    pub others_cpu_cores: f64,
    pub others_memory_bytes: f64,
    /// The most the app container may request.
    pub room_cpu_cores: f64,
    pub room_memory_bytes: f64,
    pub pods: usize,
    /// When it was read (RFC 3339).
    pub read_at: String,
}

/// No signals besides the metrics.
pub struct NoSignals;

impl DecisionSink for NoSignals {
    fn publish(&self, _: &Decision) {}
    fn recent(&self) -> Vec<SentSignal> {
        Vec::new()
    }
    fn learned_startup(&self) -> Option<startup::LearnedStartup> {
        None
    }
}

/// The last [`RECENT`] deliveries, newest last.
#[derive(Default)]
pub struct Recent(Mutex<VecDeque<SentSignal>>);

// === impl Recent ===

impl Recent {
    pub fn push(&self, s: SentSignal) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() == RECENT {
            g.pop_front();
        }
        g.push_back(s);
    }

    pub fn list(&self) -> Vec<SentSignal> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.iter().rev().cloned().collect()
    }
}

// === impl Outcome ===

impl Outcome {
    /// Every outcome, in declaration order (`outcome as usize` indexes it).
    pub const ALL: [Outcome; 8] = [
        Self::Ok,
        Self::Failed,
        Self::Dropped,
        Self::Unchanged,
        Self::RefusedHpaOwned,
        Self::RefusedVpaOwned,
        Self::Infeasible,
        Self::Deferred,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
            Self::Unchanged => "unchanged",
            Self::RefusedHpaOwned => "refused_hpa_owned",
            Self::RefusedVpaOwned => "refused_vpa_owned",
            Self::Infeasible => "infeasible",
            Self::Deferred => "deferred",
        }
    }
}

/// Unix milliseconds as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(at: Millis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at)).to_string()
}

/// The system clock (signals carry timestamps other systems compare with theirs).
pub fn now_ms() -> Millis {
    crate::clock::system_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_deliveries_are_bounded_and_newest_first() {
        let r = Recent::default();
        for i in 0..(RECENT as u32 + 3) {
            r.push(SentSignal {
                signal: "webhook",
                at: rfc3339(0),
                decided_at: rfc3339(0),
                desired_replicas: i,
                outcome: Outcome::Ok,
                attempts: 1,
                status: Some(200),
                error: None,
                idempotency_key: String::new(),
            });
        }
        let list = r.list();
        assert_eq!(list.len(), RECENT);
        assert_eq!(list[0].desired_replicas, RECENT as u32 + 2);
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
