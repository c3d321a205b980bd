//! Anomalies at the edge: the profiler's detectors, fed by the profiler and forecaster
//! threads, and what is done about what they find — metrics, a log event per raise and
//! clear, `GET /v1/anomalies`, alerts to an Alertmanager, and remediation of sources.
//!
//! Nothing here runs on the data path. The detectors sit behind one mutex that only
//! those two threads take, briefly (no model fit is ever done under it); the admin API
//! reads an `ArcSwap` snapshot. Events are handled after the lock is released, on the
//! thread that produced them: counting, logging and handing an alert over never block.

pub mod feed;
pub mod remediation;
pub mod sink;

pub use self::feed::ProfilerFeed;
pub use self::sink::AlertSink;

use self::remediation::{ActionView, Remediation};
use self::sink::Delivery;
use crate::config::AnomaliesConfig;
use crate::metrics as m;
use crate::signals::rfc3339;
use crate::tiers::LiveTiers;
use arc_swap::ArcSwap;
use metrics::{Counter, Gauge};
use prescale_profiler::anomaly::drift::DriftSnapshot;
use prescale_profiler::anomaly::{
    AnomaliesView, AnomalyConfig, AnomalyEvent, AnomalyKind, AnomalyMonitor,
};
use prescale_profiler::forecast::ForecastPoint;
use prescale_profiler::sample::Millis;
use prescale_profiler::signature::SignatureId;
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// Shared by the profiler thread, the forecaster thread and the admin API.
pub struct Anomalies {
    detect: AnomalyConfig,
    monitor: Mutex<AnomalyMonitor>,
    view: ArcSwap<AnomaliesView>,
    remediation: Remediation,
    /// Alert senders: an Alertmanager and/or a webhook.
    alerts: Vec<Arc<dyn AlertSink>>,
    critical_at: f64,
    metrics: Metrics,
}

struct Metrics {
    raised: Vec<Counter>,
    active: Vec<Gauge>,
    refits: Counter,
}

/// A level shift the forecaster must absorb (the engine's type).
pub use prescale_engine::Refit;

/// `GET /v1/anomalies`.
#[derive(Clone, Debug, Serialize)]
pub struct AnomaliesResponse {
    pub enabled: bool,
    #[serde(flatten)]
    pub view: AnomaliesView,
    /// Remediation actions in force (in shadow mode: what enforcement would do).
    pub actions: Vec<ActionView>,
    /// The last alert deliveries to Alertmanager, newest first (empty without one).
    pub alert_deliveries: Vec<Delivery>,
}

// === impl Anomalies ===

impl Anomalies {
    /// The detectors of `detect` and the actions of `act`; alerts go to `alerts`
    /// (started by the control plane), remediation acts on `tiers` (the live tier
    /// admission; None without an inbound listener).
    pub fn start(
        detect: &AnomalyConfig,
        act: &AnomaliesConfig,
        alerts: Vec<Arc<dyn AlertSink>>,
        tiers: Option<LiveTiers>,
    ) -> Arc<Self> {
        let critical_at = act
            .alertmanager
            .as_ref()
            .or(act.webhook.as_ref())
            .map_or(2.0, |a| a.critical_at);
        Arc::new(Self::new(detect, act, alerts, critical_at, tiers))
    }

    /// Nothing detected, nothing done (a config without an inbound listener, tests).
    pub fn disabled() -> Arc<Self> {
        let detect = AnomalyConfig {
            enabled: false,
            ..AnomalyConfig::default()
        };
        Arc::new(Self::new(
            &detect,
            &AnomaliesConfig::default(),
            Vec::new(),
            2.0,
            None,
        ))
    }

    fn new(
        detect: &AnomalyConfig,
        act: &AnomaliesConfig,
        alerts: Vec<Arc<dyn AlertSink>>,
        critical_at: f64,
        tiers: Option<LiveTiers>,
    ) -> Self {
        let monitor = AnomalyMonitor::new(detect.clone());
        // Every kind at 0 from the start, so dashboards and alerts see the series.
        let raised = AnomalyKind::ALL
            .iter()
            .map(|k| {
                let c = ::metrics::counter!(m::ANOMALIES, "kind" => k.as_str());
                c.increment(0);
                c
            })
            .collect();
        let active = AnomalyKind::ALL
            .iter()
            .map(|k| {
                let g = ::metrics::gauge!(m::ANOMALIES_ACTIVE, "kind" => k.as_str());
                g.set(0.0);
                g
            })
            .collect();
        let refits = ::metrics::counter!(m::ANOMALY_REFITS);
        refits.increment(0);
        Self {
            view: ArcSwap::from_pointee(monitor.view()),
            monitor: Mutex::new(monitor),
            detect: detect.clone(),
            remediation: Remediation::new(&act.remediation, tiers),
            alerts,
            critical_at,
            metrics: Metrics {
                raised,
                active,
                refits,
            },
        }
    }

    pub fn enabled(&self) -> bool {
        self.detect.enabled
    }

    pub fn config(&self) -> &AnomalyConfig {
        &self.detect
    }

    /// Judges one closed forecast step of `subject` against the one-step forecast made
    /// before it; returns the level shifts its forecaster must absorb.
    pub fn observe_rate(
        &self,
        now: Millis,
        subject: &str,
        actual: f64,
        expected: &ForecastPoint,
    ) -> Vec<Refit> {
        if !self.enabled() {
            return Vec::new();
        }
        let events = self.with_monitor(|m| m.observe_rate(now, subject, actual, expected));
        self.handle(&events)
    }

    /// One profiler tick: the sources of the requests since the last one (finished
    /// and shed), the source judgement, and a signature snapshot when one is due.
    pub fn profiler_tick(
        &self,
        now: Millis,
        sources: &[(u64, SignatureId)],
        snapshot: Option<&DriftSnapshot>,
    ) {
        if !self.enabled() {
            return;
        }
        let events = self.with_monitor(|m| {
            for (source, sig) in sources {
                m.record_source(*source, *sig);
            }
            let mut events = m.tick_sources(now);
            if let Some(s) = snapshot {
                events.extend(m.observe_signatures(now, s));
            }
            events
        });
        self.handle(&events);
    }

    /// `GET /v1/anomalies`.
    pub fn response(&self) -> AnomaliesResponse {
        AnomaliesResponse {
            enabled: self.enabled(),
            view: (**self.view.load()).clone(),
            actions: self.remediation.actions(),
            alert_deliveries: self.alerts.iter().flat_map(|a| a.recent()).collect(),
        }
    }

    /// Runs `f` on the detectors and publishes the view when it reported anything.
    fn with_monitor(
        &self,
        f: impl FnOnce(&mut AnomalyMonitor) -> Vec<AnomalyEvent>,
    ) -> Vec<AnomalyEvent> {
        let mut monitor = self.monitor.lock().unwrap_or_else(|p| p.into_inner());
        let events = f(&mut monitor);
        if !events.is_empty() {
            let view = monitor.view();
            for (kind, gauge) in AnomalyKind::ALL.iter().zip(&self.metrics.active) {
                gauge.set(monitor.registry().active_count(*kind) as f64);
            }
            self.view.store(Arc::new(view));
        }
        events
    }

    /// Counts, logs, alerts and remediates; returns the refits requested.
    fn handle(&self, events: &[AnomalyEvent]) -> Vec<Refit> {
        let mut refits = Vec::new();
        for e in events {
            match e {
                AnomalyEvent::Raised(a) => {
                    if let Some(c) = self.metrics.raised.get(a.kind as usize) {
                        c.increment(1);
                    }
                    let severity = self.bucket(a.kind, a.severity);
                    tracing::warn!(kind = a.kind.as_str(), subject = %a.subject,
                        severity = a.severity, severity_bucket = severity,
                        since = %rfc3339(a.since), direction = ?a.direction,
                        evidence = %serde_json::to_string(&a.evidence).unwrap_or_default(),
                        "anomaly raised");
                    for am in &self.alerts {
                        am.raise(a, severity);
                    }
                    self.remediation.raised(a);
                }
                AnomalyEvent::Updated(a) => {
                    for am in &self.alerts {
                        am.update(a);
                    }
                    self.remediation.confirmed(a);
                }
                AnomalyEvent::Cleared {
                    kind,
                    subject,
                    since,
                    at,
                } => {
                    tracing::info!(kind = kind.as_str(), %subject, since = %rfc3339(*since),
                        at = %rfc3339(*at), lasted_seconds = at.saturating_sub(*since) / 1000,
                        "anomaly cleared");
                    for am in &self.alerts {
                        am.resolve(*kind, subject, *at);
                    }
                    self.remediation.cleared(*kind, subject);
                }
                AnomalyEvent::RefitRequested { subject, since, .. } => {
                    tracing::info!(%subject, since = %rfc3339(*since),
                        "level shift confirmed; the forecaster restarts from it");
                    self.metrics.refits.increment(1);
                    refits.push(Refit {
                        subject: subject.clone(),
                        since: *since,
                    });
                }
            }
        }
        refits
    }

    /// `critical` or `warning`: severity over the kind's raise threshold, against
    /// `critical_at`.
    fn bucket(&self, kind: AnomalyKind, severity: f64) -> &'static str {
        let threshold = match kind {
            // Interval widths beyond the bound; raised past `margin`.
            AnomalyKind::Rate => self.detect.rate.margin.max(0.1),
            // A shift of at least one half-width beyond the interval plus the margin.
            AnomalyKind::ChangePoint => 0.5 + self.detect.rate.margin.max(0.0),
            // A multiple of the source's baseline rate; raised past `rate_factor`.
            AnomalyKind::SourceRate => self.detect.source.rate_factor.max(1.0),
            // Already relative to their threshold (1 = at it).
            AnomalyKind::NewSignature
            | AnomalyKind::ShareShift
            | AnomalyKind::CostDrift
            | AnomalyKind::SourceMix => 1.0,
        };
        if severity / threshold >= self.critical_at {
            "critical"
        } else {
            "warning"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prescale_profiler::anomaly::TOTAL;

    #[test]
    fn events_reach_the_view_and_refits_are_handed_back() {
        let a = Anomalies::start(
            &AnomalyConfig::default(),
            &AnomaliesConfig::default(),
            Vec::new(),
            None,
        );
        let f = ForecastPoint {
            step: 1,
            point: 100.0,
            lower: 90.0,
            upper: 110.0,
        };
        // Three steps far above the interval: a rate anomaly, in the view at once.
        for t in 0..3 {
            assert!(a.observe_rate(t * 60_000, TOTAL, 500.0, &f).is_empty());
        }
        let r = a.response();
        assert!(r.enabled);
        assert_eq!(r.view.active.len(), 1);
        assert_eq!(r.view.raised_total["rate"], 1);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["active"][0]["kind"], "rate");
        assert_eq!(json["active"][0]["subject"], "total");
        assert!(json["actions"].as_array().unwrap().is_empty());

        // Ten more at the new level: a confirmed shift, handed back as a refit.
        let mut refits = Vec::new();
        for t in 3..15 {
            refits.extend(a.observe_rate(t * 60_000, TOTAL, 500.0, &f));
        }
        assert_eq!(refits.len(), 1, "{refits:?}");
        assert_eq!(refits[0].subject, TOTAL);

        // Severity buckets are relative to each kind's own threshold.
        assert_eq!(a.bucket(AnomalyKind::SourceRate, 15.0), "warning");
        assert_eq!(a.bucket(AnomalyKind::SourceRate, 25.0), "critical");
        assert_eq!(a.bucket(AnomalyKind::CostDrift, 1.2), "warning");
        assert_eq!(a.bucket(AnomalyKind::CostDrift, 2.0), "critical");

        // Disabled: nothing judged.
        let off = Anomalies::disabled();
        for t in 0..5 {
            off.observe_rate(t, TOTAL, 1e9, &f);
        }
        assert!(off.response().view.active.is_empty());
    }
}
