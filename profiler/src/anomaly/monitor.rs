//! Every detector behind one struct: the live wiring feeds it forecasts, signature
//! snapshots and sources, and reads back events (to log, count and act on) and the
//! registry (for `GET /v1/anomalies` and the gauges).

use super::drift::{DriftDetector, DriftSnapshot};
use super::rate::RateDetector;
use super::source::SourceMonitor;
use super::{AnomaliesView, AnomalyConfig, AnomalyEvent, Registry};
use crate::forecast::ForecastPoint;
use crate::sample::Millis;
use crate::signature::SignatureId;
use std::collections::BTreeMap;

/// Rate series tracked: the total and up to 16 signatures, with room to spare. A
/// series beyond it is not judged (and counted in `untracked_series`).
pub const MAX_RATE_SERIES: usize = 64;

pub struct AnomalyMonitor {
    cfg: AnomalyConfig,
    rates: BTreeMap<String, RateDetector>,
    drift: DriftDetector,
    sources: SourceMonitor,
    registry: Registry,
    untracked_series: u64,
}

// === impl AnomalyMonitor ===

impl AnomalyMonitor {
    pub fn new(cfg: AnomalyConfig) -> Self {
        Self {
            rates: BTreeMap::new(),
            drift: DriftDetector::new(cfg.drift.clone()),
            sources: SourceMonitor::new(cfg.source.clone()),
            registry: Registry::new(cfg.max_active),
            untracked_series: 0,
            cfg,
        }
    }

    pub fn config(&self) -> &AnomalyConfig {
        &self.cfg
    }

    /// Judges the actual of one step of series `subject` (`TOTAL` or a
    /// `signature_subject`) against the interval forecast for that step before it was
    /// observed. A `RefitRequested` event asks the caller to refit that series.
    pub fn observe_rate(
        &mut self,
        now: Millis,
        subject: &str,
        actual: f64,
        expected: &ForecastPoint,
    ) -> Vec<AnomalyEvent> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        if !self.rates.contains_key(subject) {
            if self.rates.len() >= MAX_RATE_SERIES {
                self.untracked_series += 1;
                return Vec::new();
            }
            let d = RateDetector::new(
                subject,
                self.cfg.rate.clone(),
                self.cfg.change_point.clone(),
            );
            self.rates.insert(subject.to_owned(), d);
        }
        let events = self
            .rates
            .get_mut(subject)
            .map(|d| d.observe(now, actual, expected))
            .unwrap_or_default();
        self.registry.apply_all(&events);
        events
    }

    /// Stops judging a series (its signature was retired); ends its anomalies.
    pub fn forget_series(&mut self, now: Millis, subject: &str) -> Vec<AnomalyEvent> {
        let Some(d) = self.rates.remove(subject) else {
            return Vec::new();
        };
        let events: Vec<AnomalyEvent> = d
            .active()
            .into_iter()
            .chain(d.shift())
            .map(|a| AnomalyEvent::cleared(a, now))
            .collect();
        self.registry.apply_all(&events);
        events
    }

    /// Judges a snapshot of the signatures (e.g. every minute).
    pub fn observe_signatures(&mut self, now: Millis, snap: &DriftSnapshot) -> Vec<AnomalyEvent> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        let events = self.drift.observe(now, snap);
        self.registry.apply_all(&events);
        events
    }

    /// Counts one finished request of `source` (the sample's source hash).
    pub fn record_source(&mut self, source: u64, signature: SignatureId) {
        if self.cfg.enabled {
            self.sources.record(source, signature);
        }
    }

    /// Judges the sources when their interval has elapsed; call it every tick.
    pub fn tick_sources(&mut self, now: Millis) -> Vec<AnomalyEvent> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        let events = self.sources.tick(now);
        self.registry.apply_all(&events);
        events
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// `GET /v1/anomalies`.
    pub fn view(&self) -> AnomaliesView {
        self.registry.view()
    }

    pub fn untracked_series(&self) -> u64 {
        self.untracked_series
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::{AnomalyKind, TOTAL};

    #[test]
    fn events_from_every_detector_land_in_one_registry() {
        let mut m = AnomalyMonitor::new(AnomalyConfig::default());
        let f = ForecastPoint {
            step: 1,
            point: 100.0,
            lower: 90.0,
            upper: 110.0,
        };
        for t in 0..3 {
            m.observe_rate(t * 60_000, TOTAL, 500.0, &f);
        }
        assert!(m.registry().is_active(AnomalyKind::Rate, TOTAL));
        // A source surging after a minute of calm.
        for s in 0..150u64 {
            let n = if s < 90 { 1 } else { 30 };
            for _ in 0..n {
                m.record_source(9, 1);
            }
            m.tick_sources(s * 1000);
        }
        let v = m.view();
        assert_eq!(v.raised_total["rate"], 1);
        assert_eq!(v.raised_total["source_rate"], 1);
        assert_eq!(v.active.len(), 2);
        // Retiring the series ends its anomaly.
        assert_eq!(m.forget_series(200_000, TOTAL).len(), 1);
        assert!(!m.registry().is_active(AnomalyKind::Rate, TOTAL));

        // Disabled: nothing is judged.
        let mut off = AnomalyMonitor::new(AnomalyConfig {
            enabled: false,
            ..AnomalyConfig::default()
        });
        for t in 0..5 {
            assert!(off.observe_rate(t, TOTAL, 1e9, &f).is_empty());
        }
    }
}
