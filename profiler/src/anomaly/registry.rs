//! The active anomalies, bounded, and the counts behind
//! `prescale_anomalies_total{kind}`: what `GET /v1/anomalies` shows and what the
//! policies consult (e.g. "is this source anomalous right now?").

use super::{Anomaly, AnomalyEvent, AnomalyKind};
use serde::Serialize;
use std::collections::BTreeMap;

/// Active anomalies by `(kind, subject)`, at most `cap` of them: at the bound, the
/// least severe is dropped (and counted) so the worst stay visible.
#[derive(Clone, Debug)]
pub struct Registry {
    cap: usize,
    active: BTreeMap<(AnomalyKind, String), Anomaly>,
    raised: [u64; AnomalyKind::ALL.len()],
    refits: u64,
    dropped: u64,
}

/// `GET /v1/anomalies`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AnomaliesView {
    /// Most severe first.
    pub active: Vec<Anomaly>,
    /// Anomalies raised since start, per kind (every kind present, zeros included).
    pub raised_total: BTreeMap<&'static str, u64>,
    pub refits_requested: u64,
    /// Active anomalies dropped at the bound.
    pub dropped: u64,
}

// === impl Registry ===

impl Registry {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            active: BTreeMap::new(),
            raised: [0; AnomalyKind::ALL.len()],
            refits: 0,
            dropped: 0,
        }
    }

    pub fn apply_all<'a>(&mut self, events: impl IntoIterator<Item = &'a AnomalyEvent>) {
        for e in events {
            self.apply(e);
        }
    }

    pub fn apply(&mut self, event: &AnomalyEvent) {
        match event {
            AnomalyEvent::Raised(a) => {
                if let Some(n) = self.raised.get_mut(a.kind.index()) {
                    *n += 1;
                }
                self.active.insert((a.kind, a.subject.clone()), a.clone());
                if self.active.len() > self.cap {
                    let weakest = self
                        .active
                        .iter()
                        .min_by(|x, y| x.1.severity.total_cmp(&y.1.severity))
                        .map(|(k, _)| k.clone());
                    if let Some(k) = weakest {
                        self.active.remove(&k);
                        self.dropped += 1;
                    }
                }
            }
            // Only refreshed if still kept: one dropped at the bound stays dropped.
            AnomalyEvent::Updated(a) => {
                if let Some(slot) = self.active.get_mut(&(a.kind, a.subject.clone())) {
                    *slot = a.clone();
                }
            }
            AnomalyEvent::Cleared { kind, subject, .. } => {
                self.active.remove(&(*kind, subject.clone()));
            }
            AnomalyEvent::RefitRequested { .. } => self.refits += 1,
        }
    }

    pub fn get(&self, kind: AnomalyKind, subject: &str) -> Option<&Anomaly> {
        self.active.get(&(kind, subject.to_owned()))
    }

    pub fn is_active(&self, kind: AnomalyKind, subject: &str) -> bool {
        self.get(kind, subject).is_some()
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Active anomalies of one kind (the active-anomalies gauge).
    pub fn active_count(&self, kind: AnomalyKind) -> usize {
        self.active.keys().filter(|(k, _)| *k == kind).count()
    }

    /// Anomalies of `kind` raised since start (`prescale_anomalies_total{kind}`).
    pub fn raised_total(&self, kind: AnomalyKind) -> u64 {
        self.raised.get(kind.index()).copied().unwrap_or(0)
    }

    pub fn view(&self) -> AnomaliesView {
        let mut active: Vec<Anomaly> = self.active.values().cloned().collect();
        active.sort_by(|a, b| {
            b.severity
                .total_cmp(&a.severity)
                .then(a.since.cmp(&b.since))
        });
        AnomaliesView {
            active,
            raised_total: AnomalyKind::ALL
                .iter()
                .map(|k| (k.as_str(), self.raised_total(*k)))
                .collect(),
            refits_requested: self.refits,
            dropped: self.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::{Direction, Evidence};

    fn anomaly(kind: AnomalyKind, subject: &str, severity: f64) -> Anomaly {
        Anomaly {
            kind,
            subject: subject.into(),
            since: 1,
            updated: 1,
            severity,
            direction: Some(Direction::Above),
            evidence: Evidence::from([("rate", 2.0)]),
        }
    }

    #[test]
    fn keeps_the_most_severe_within_its_cap_and_counts_every_raise() {
        let mut r = Registry::new(2);
        r.apply(&AnomalyEvent::Raised(anomaly(
            AnomalyKind::Rate,
            "total",
            3.0,
        )));
        r.apply(&AnomalyEvent::Raised(anomaly(
            AnomalyKind::SourceRate,
            "source:1",
            20.0,
        )));
        // The registry is full: a weaker newcomer is the one dropped.
        r.apply(&AnomalyEvent::Raised(anomaly(
            AnomalyKind::SourceRate,
            "source:2",
            1.0,
        )));
        assert_eq!(r.len(), 2);
        assert!(!r.is_active(AnomalyKind::SourceRate, "source:2"));
        // Its updates do not bring it back.
        r.apply(&AnomalyEvent::Updated(anomaly(
            AnomalyKind::SourceRate,
            "source:2",
            1.5,
        )));
        assert_eq!(r.len(), 2);
        // A stronger one replaces the weakest.
        r.apply(&AnomalyEvent::Raised(anomaly(
            AnomalyKind::CostDrift,
            "signature:2",
            5.0,
        )));
        assert!(!r.is_active(AnomalyKind::Rate, "total"));
        assert_eq!(r.view().dropped, 2);
        r.apply(&AnomalyEvent::Cleared {
            kind: AnomalyKind::SourceRate,
            subject: "source:1".into(),
            since: 1,
            at: 9,
        });
        r.apply(&AnomalyEvent::RefitRequested {
            subject: "total".into(),
            since: 1,
            at: 9,
        });
        let v = r.view();
        assert_eq!(v.active.len(), 1);
        assert_eq!(v.raised_total["source_rate"], 2);
        assert_eq!(v.raised_total["change_point"], 0);
        assert_eq!(v.raised_total.len(), 7);
        assert_eq!(v.refits_requested, 1);
        assert_eq!(r.active_count(AnomalyKind::CostDrift), 1);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["active"][0]["kind"], "cost_drift");
        assert_eq!(json["active"][0]["direction"], "above");
        assert_eq!(json["active"][0]["evidence"]["rate"], 2.0);
    }
}
