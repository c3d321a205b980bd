//! Platform signals: after each scaling decision, tell the platform how many replicas
//! to have — off the data path, on a thread of their own, and never queueing more than
//! the latest decision. (The Prometheus gauges are exported by `forecasting`.)

pub mod backoff;
pub mod client;
pub mod keda;
pub mod kube;
pub mod sender;
pub mod startup;
pub mod webhook;

use crate::config::SignalsConfig;
use prescale_policies::scale::{ScaleReason, ScalingConfig};
use prescale_profiler::sample::Millis;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
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
}

/// The total-demand forecast behind a decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForecastSummary {
    /// Highest upper bound over [now, now + lead time]: what the scaling rule used.
    pub demand_upper: f64,
    /// Point and interval at the end of the horizon.
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
    pub level: f64,
    pub horizon_seconds: u64,
}

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

/// The signal senders configured, shared by the forecaster (which publishes) and the
/// admin API (which shows the recent deliveries).
pub struct Signals {
    webhook: Option<Arc<webhook::Webhook>>,
    keda: Option<Arc<keda::Keda>>,
    kubernetes: Option<Arc<self::kube::KubeScaler>>,
    recent: Arc<Recent>,
}

/// The last [`RECENT`] deliveries, newest last.
#[derive(Default)]
pub struct Recent(Mutex<VecDeque<SentSignal>>);

// === impl Signals ===

impl Signals {
    /// No signals besides the metrics.
    pub fn none() -> Arc<Self> {
        Arc::new(Self {
            webhook: None,
            keda: None,
            kubernetes: None,
            recent: Arc::default(),
        })
    }

    /// Starts a sender thread for each configured signal (and the KEDA scaler's
    /// server). Fails only on a config the sender cannot use (e.g. an unreadable
    /// `ca_file` or kubeconfig, or a KEDA address already in use).
    pub fn start(cfg: &SignalsConfig, scaling: &ScalingConfig) -> std::io::Result<Arc<Self>> {
        let recent = Arc::new(Recent::default());
        let webhook = match &cfg.webhook {
            Some(w) => Some(webhook::spawn(w, scaling.sync_period, recent.clone())?),
            None => None,
        };
        let keda = match &cfg.keda {
            Some(k) => Some(keda::Keda::spawn(k, scaling)?),
            None => None,
        };
        let kubernetes = match &cfg.kubernetes {
            Some(k) => Some(self::kube::spawn(k, recent.clone())?),
            None => None,
        };
        Ok(Arc::new(Self {
            webhook,
            keda,
            kubernetes,
            recent,
        }))
    }

    /// Hands a decision to every sender. Never blocks: each keeps only the latest.
    pub fn publish(&self, d: &Decision) {
        if let Some(w) = &self.webhook {
            w.offer(d.clone());
        }
        if let Some(k) = &self.keda {
            k.offer(d);
        }
        if let Some(k) = &self.kubernetes {
            k.offer(d.clone());
        }
    }

    /// The replica start-up time learned from the Deployment's readiness (the
    /// `kubernetes` signal), once observed.
    pub fn learned_startup(&self) -> Option<startup::LearnedStartup> {
        self.kubernetes.as_ref().and_then(|k| k.signal().learned())
    }

    /// The last deliveries, newest first.
    pub fn recent(&self) -> Vec<SentSignal> {
        self.recent.list()
    }
}

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
    pub const ALL: [Outcome; 5] = [
        Self::Ok,
        Self::Failed,
        Self::Dropped,
        Self::Unchanged,
        Self::RefusedHpaOwned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
            Self::Unchanged => "unchanged",
            Self::RefusedHpaOwned => "refused_hpa_owned",
        }
    }
}

/// Unix milliseconds as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(at: Millis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at)).to_string()
}

/// The system clock (signals carry timestamps other systems compare with theirs).
pub(crate) fn now_ms() -> Millis {
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
