//! The raise / hold / clear life cycle shared by the baseline detectors (drift and
//! source): a departure must last `sustain` judgements to be raised, ends when the
//! measure is back well inside, and may be accepted as the new normal after a while.

use super::{Anomaly, AnomalyEvent, AnomalyKind, Direction, Evidence};
use crate::sample::Millis;

/// One judgement of a measure against its baseline.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Beyond the threshold.
    Out {
        severity: f64,
        direction: Option<Direction>,
        evidence: Evidence,
    },
    /// Between the clear level and the threshold: no new evidence either way.
    Between,
    /// Well inside (below half the threshold): an active anomaly ends.
    Back,
    /// Not judgeable now (too few requests, mix changing): nothing changes.
    Hold,
}

/// The state of one measure of one subject.
#[derive(Clone, Debug, Default)]
pub(crate) struct Departure {
    /// Consecutive `Out` judgements while inactive, and when the first of them was.
    pending: usize,
    pending_since: Option<Millis>,
    active: Option<Anomaly>,
    /// Judgements since the anomaly was raised.
    age: usize,
}

/// What a judgement changed.
#[derive(Debug, Default)]
pub(crate) struct Step {
    pub event: Option<AnomalyEvent>,
    /// The departure lasted `accept_after` judgements: the caller resets its baseline
    /// to the current value (the event then holds the `Cleared`).
    pub accepted: bool,
}

// === impl Departure ===

impl Departure {
    /// Whether the baseline must stay frozen: a departure in progress must not teach
    /// the baseline that it is normal.
    pub fn frozen(&self) -> bool {
        self.pending > 0 || self.active.is_some()
    }

    pub fn active(&self) -> Option<&Anomaly> {
        self.active.as_ref()
    }

    /// Ends an active anomaly (its subject is going away).
    pub fn clear(&mut self, now: Millis) -> Option<AnomalyEvent> {
        self.pending = 0;
        self.pending_since = None;
        self.age = 0;
        self.active.take().map(|a| AnomalyEvent::cleared(&a, now))
    }

    pub fn judge(
        &mut self,
        kind: AnomalyKind,
        subject: &str,
        now: Millis,
        verdict: Verdict,
        sustain: usize,
        accept_after: Option<usize>,
    ) -> Step {
        let mut step = Step::default();
        match (&mut self.active, verdict) {
            (
                None,
                Verdict::Out {
                    severity,
                    direction,
                    evidence,
                },
            ) => {
                self.pending += 1;
                let since = *self.pending_since.get_or_insert(now);
                if self.pending >= sustain.max(1) {
                    let a = Anomaly {
                        kind,
                        subject: subject.to_owned(),
                        since,
                        updated: now,
                        severity,
                        direction,
                        evidence,
                    };
                    self.pending = 0;
                    self.pending_since = None;
                    self.age = 0;
                    self.active = Some(a.clone());
                    step.event = Some(AnomalyEvent::Raised(a));
                }
            }
            (None, Verdict::Between | Verdict::Back) => {
                self.pending = 0;
                self.pending_since = None;
            }
            (None, Verdict::Hold) => {}
            (
                Some(a),
                Verdict::Out {
                    severity,
                    direction,
                    evidence,
                },
            ) => {
                a.updated = now;
                a.severity = a.severity.max(severity);
                a.direction = direction.or(a.direction);
                a.evidence = evidence;
                step.event = Some(AnomalyEvent::Updated(a.clone()));
            }
            (Some(_), Verdict::Back) => {
                step.event = self.clear(now);
                return step;
            }
            (Some(_), Verdict::Between | Verdict::Hold) => {}
        }
        if self.active.is_some() {
            self.age += 1;
            if accept_after.is_some_and(|n| self.age >= n.max(1)) {
                step.event = self.clear(now);
                step.accepted = true;
            }
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(severity: f64) -> Verdict {
        Verdict::Out {
            severity,
            direction: Some(Direction::Above),
            evidence: Evidence::new(),
        }
    }

    #[test]
    fn raises_after_sustain_clears_when_back_and_accepts_after_a_while() {
        let mut d = Departure::default();
        let k = AnomalyKind::CostDrift;
        // Two departures, then a judgement in between: not yet, and the count restarts.
        assert!(d.judge(k, "s", 1, out(2.0), 3, None).event.is_none());
        assert!(d.judge(k, "s", 2, out(2.0), 3, None).event.is_none());
        assert!(d.frozen());
        assert!(d
            .judge(k, "s", 3, Verdict::Between, 3, None)
            .event
            .is_none());
        assert!(!d.frozen());
        // Three in a row: raised, dated from the first of them.
        d.judge(k, "s", 4, out(2.0), 3, None);
        d.judge(k, "s", 5, out(3.0), 3, None);
        let Some(AnomalyEvent::Raised(a)) = d.judge(k, "s", 6, out(2.5), 3, None).event else {
            panic!("not raised");
        };
        assert_eq!((a.since, a.severity), (4, 2.5));
        // Severity keeps its peak; holding changes nothing; back inside clears.
        let Some(AnomalyEvent::Updated(a)) = d.judge(k, "s", 7, out(4.0), 3, None).event else {
            panic!("not updated");
        };
        assert_eq!(a.severity, 4.0);
        assert!(d.judge(k, "s", 8, Verdict::Hold, 3, None).event.is_none());
        assert!(matches!(
            d.judge(k, "s", 9, Verdict::Back, 3, None).event,
            Some(AnomalyEvent::Cleared {
                since: 4,
                at: 9,
                ..
            })
        ));
        // A permanent departure is accepted after `accept_after` judgements.
        for t in 10..13 {
            d.judge(k, "s", t, out(2.0), 3, Some(2));
        }
        let s = d.judge(k, "s", 13, out(2.0), 3, Some(2));
        assert!(s.accepted);
        assert!(matches!(s.event, Some(AnomalyEvent::Cleared { .. })));
        assert!(d.active().is_none());
    }
}
