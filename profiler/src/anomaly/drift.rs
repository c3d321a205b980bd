//! Signature drift: from successive snapshots of the signatures (share, mean service
//! time, mean response size), a new signature far from every known one, a share that
//! moves sharply, and a cost that rises while the mix holds still — the pattern of a
//! leak or a bad deploy, where the same work gets dearer.
//!
//! The caller fills a [`DriftSnapshot`] (e.g. with [`SnapshotBuilder`]) at a steady
//! cadence, `interval` (every minute by default); all counts below are in snapshots.
//!
//! [`SnapshotBuilder`]: super::snapshot::SnapshotBuilder Baselines are
//! EWMAs, frozen while a departure is pending or active so it cannot teach them that
//! it is normal; a departure that lasts `accept_after` snapshots becomes the new normal.

use super::departure::{Departure, Verdict};
use super::{signature_subject, AnomalyEvent, AnomalyKind, Direction, Evidence};
use crate::sample::Millis;
use crate::signature::SignatureId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Signatures tracked at once (ids stay within 1..=16, so this is never reached by a
/// valid model); snapshot entries beyond it are ignored.
pub const MAX_SIGNATURES: usize = 64;

/// Snapshots a signature may be absent before its state is forgotten.
const FORGET_AFTER: usize = 10;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DriftParams {
    /// How often the caller takes a snapshot (the live sidecar's cadence; the detector
    /// itself counts snapshots, not time).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A newly created signature whose centroid lies farther than this from every
    /// previous centroid (Euclidean, in the model's standardised feature space) is a
    /// `NewSignature`. Re-fits keep a signature's id within 1.5, so the default 3.0 is
    /// twice as far as "the same work, moved a little".
    pub new_signature_distance: f64,
    /// Snapshots a baseline needs before it is trusted; also the start-up grace
    /// before anything can be new.
    pub warmup: usize,
    /// Consecutive snapshots a departure must last to be raised.
    pub sustain: usize,
    /// Snapshots after which an active drift is accepted: baseline reset, cleared.
    pub accept_after: usize,
    /// Weight of the newest snapshot in the baselines.
    pub alpha: f64,
    /// Change of a signature's share (absolute, 0.15 = 15 points) that is a shift.
    pub share_shift: f64,
    /// Rise of mean service time or mean response size over baseline that is cost
    /// drift (0.5 = +50 %).
    pub cost_rise: f64,
    /// The mix counts as constant while the total variation distance between the
    /// current shares and their baselines stays at or below this.
    pub mix_tolerance: f64,
    /// Requests a signature needs in a snapshot for its cost to be judged.
    pub min_requests: u64,
}

/// One signature in a snapshot, over the snapshot's interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SignatureSnapshot {
    pub id: SignatureId,
    /// Share of the requests (0..=1).
    pub share: f64,
    pub requests: u64,
    pub mean_service_seconds: f64,
    pub mean_response_bytes: f64,
    /// Set only in the first snapshot after the re-fit that created this signature
    /// (its centroid matched no previous one): the distance from its centroid to the
    /// nearest previous centroid, in the model's standardised space. `None` otherwise.
    pub new_distance: Option<f64>,
}

/// All signatures at one time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DriftSnapshot {
    /// The signature model's version; `new_distance` is read once per version.
    pub model_version: u64,
    pub signatures: Vec<SignatureSnapshot>,
}

/// Judges successive snapshots.
#[derive(Clone, Debug)]
pub struct DriftDetector {
    p: DriftParams,
    snapshots: usize,
    model_version: Option<u64>,
    signatures: BTreeMap<SignatureId, SignatureState>,
}

#[derive(Clone, Debug, Default)]
struct SignatureState {
    share: Ewma,
    service: Ewma,
    bytes: Ewma,
    absent: usize,
    new: Departure,
    share_shift: Departure,
    cost: Departure,
}

/// An exponentially weighted mean that starts as a plain mean (so its first values
/// are not dominated by the very first one).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ewma {
    pub value: f64,
    pub n: usize,
}

// === impl DriftParams ===

impl Default for DriftParams {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            new_signature_distance: 3.0,
            warmup: 5,
            sustain: 3,
            accept_after: 60,
            alpha: 0.1,
            share_shift: 0.15,
            cost_rise: 0.5,
            mix_tolerance: 0.1,
            min_requests: 30,
        }
    }
}

// === impl Ewma ===

impl Ewma {
    pub fn add(&mut self, x: f64, alpha: f64) {
        if !x.is_finite() {
            return;
        }
        self.n = self.n.saturating_add(1);
        let a = alpha.max(1.0 / self.n as f64);
        self.value += a * (x - self.value);
    }

    /// Moves towards `x` by `alpha` exactly, however young the mean is.
    pub fn nudge(&mut self, x: f64, alpha: f64) {
        if !x.is_finite() {
            return;
        }
        self.n = self.n.saturating_add(1);
        self.value += alpha.clamp(0.0, 1.0) * (x - self.value);
    }

    pub fn reset_to(&mut self, x: f64) {
        if x.is_finite() {
            self.value = x;
            self.n = self.n.max(1);
        }
    }

    pub fn warm(&self, warmup: usize) -> bool {
        self.n >= warmup.max(1)
    }
}

// === impl DriftDetector ===

impl DriftDetector {
    pub fn new(p: DriftParams) -> Self {
        Self {
            p,
            snapshots: 0,
            model_version: None,
            signatures: BTreeMap::new(),
        }
    }

    /// Signatures with state.
    pub fn tracked(&self) -> usize {
        self.signatures.len()
    }

    /// Judges one snapshot.
    ///
    /// Severities: `NewSignature`, distance / threshold; `ShareShift`, |Δshare| /
    /// `share_shift`; `CostDrift`, the rise over baseline / `cost_rise` (so 1 is just
    /// at the threshold and 2 is twice it).
    pub fn observe(&mut self, now: Millis, snap: &DriftSnapshot) -> Vec<AnomalyEvent> {
        let mut events = Vec::new();
        let p = self.p.clone();
        let new_model = self.model_version != Some(snap.model_version);
        self.model_version = Some(snap.model_version);
        let grace_over = self.snapshots >= p.warmup;
        self.snapshots = self.snapshots.saturating_add(1);

        // The mix: total variation distance between current shares and baselines.
        let tvd = self.mix_distance(snap);

        let present: Vec<SignatureId> = snap.signatures.iter().map(|s| s.id).collect();
        for s in &snap.signatures {
            if !self.signatures.contains_key(&s.id) && self.signatures.len() >= MAX_SIGNATURES {
                continue;
            }
            let subject = signature_subject(s.id);
            let st = self.signatures.entry(s.id).or_default();
            st.absent = 0;
            if let (true, Some(d)) = (new_model, s.new_distance.filter(|d| d.is_finite())) {
                // A new kind of work (possibly under a retired id): old baselines and
                // anomalies about this id no longer describe it.
                events.extend(st.clear_all(now));
                *st = SignatureState::default();
                if grace_over && d > p.new_signature_distance {
                    let verdict = Verdict::Out {
                        severity: d / p.new_signature_distance.max(1e-9),
                        direction: None,
                        evidence: Evidence::from([("distance", d), ("share", s.share)]),
                    };
                    let step = st.new.judge(
                        AnomalyKind::NewSignature,
                        &subject,
                        now,
                        verdict,
                        1,
                        Some(p.accept_after),
                    );
                    events.extend(step.event);
                }
            } else if st.new.active().is_some() {
                // A new signature stays reported for `accept_after` snapshots.
                let step = st.new.judge(
                    AnomalyKind::NewSignature,
                    &subject,
                    now,
                    Verdict::Hold,
                    1,
                    Some(p.accept_after),
                );
                events.extend(step.event);
            }

            let share = share_verdict(&p, st, s);
            let step = st.share_shift.judge(
                AnomalyKind::ShareShift,
                &subject,
                now,
                share,
                p.sustain,
                Some(p.accept_after),
            );
            events.extend(step.event);
            if step.accepted {
                st.share.reset_to(s.share);
            } else if !st.share_shift.frozen() {
                st.share.add(s.share, p.alpha);
            }

            let judgeable = s.requests >= p.min_requests;
            let cost = if judgeable && tvd <= p.mix_tolerance {
                cost_verdict(&p, st, s, tvd)
            } else {
                Verdict::Hold
            };
            let step = st.cost.judge(
                AnomalyKind::CostDrift,
                &subject,
                now,
                cost,
                p.sustain,
                Some(p.accept_after),
            );
            events.extend(step.event);
            if step.accepted {
                st.service.reset_to(s.mean_service_seconds);
                st.bytes.reset_to(s.mean_response_bytes);
            } else if judgeable && !st.cost.frozen() {
                st.service.add(s.mean_service_seconds, p.alpha);
                st.bytes.add(s.mean_response_bytes, p.alpha);
            }
        }

        // Signatures gone from the snapshot: forgotten after a while.
        let mut gone = Vec::new();
        for (id, st) in &mut self.signatures {
            if present.contains(id) {
                continue;
            }
            st.absent += 1;
            if st.absent >= FORGET_AFTER {
                events.extend(st.clear_all(now));
                gone.push(*id);
            }
        }
        for id in gone {
            self.signatures.remove(&id);
        }
        events
    }

    /// ½ Σ |share − baseline| over signatures with a warm share baseline; 0 before any.
    fn mix_distance(&self, snap: &DriftSnapshot) -> f64 {
        let mut sum = 0.0;
        for (id, st) in &self.signatures {
            if !st.share.warm(self.p.warmup) {
                continue;
            }
            let now = snap
                .signatures
                .iter()
                .find(|s| s.id == *id)
                .map_or(0.0, |s| s.share);
            sum += (now - st.share.value).abs();
        }
        // Signatures without a baseline yet count in full: their whole share is new.
        for s in &snap.signatures {
            if self
                .signatures
                .get(&s.id)
                .is_none_or(|st| !st.share.warm(self.p.warmup))
            {
                sum += s.share.abs();
            }
        }
        sum / 2.0
    }
}

// === impl SignatureState ===

impl SignatureState {
    fn clear_all(&mut self, now: Millis) -> Vec<AnomalyEvent> {
        [
            self.new.clear(now),
            self.share_shift.clear(now),
            self.cost.clear(now),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn share_verdict(p: &DriftParams, st: &SignatureState, s: &SignatureSnapshot) -> Verdict {
    if !st.share.warm(p.warmup) || !s.share.is_finite() {
        return Verdict::Hold;
    }
    let delta = s.share - st.share.value;
    let threshold = p.share_shift.max(1e-9);
    if delta.abs() > threshold {
        Verdict::Out {
            severity: delta.abs() / threshold,
            direction: Some(if delta > 0.0 {
                Direction::Above
            } else {
                Direction::Below
            }),
            evidence: Evidence::from([("share", s.share), ("baseline", st.share.value)]),
        }
    } else if delta.abs() < threshold / 2.0 {
        Verdict::Back
    } else {
        Verdict::Between
    }
}

fn cost_verdict(p: &DriftParams, st: &SignatureState, s: &SignatureSnapshot, tvd: f64) -> Verdict {
    if !st.service.warm(p.warmup) || !st.bytes.warm(p.warmup) {
        return Verdict::Hold;
    }
    let ratio = |now: f64, base: f64| {
        if base > 0.0 && now.is_finite() {
            now / base
        } else {
            1.0
        }
    };
    let service = ratio(s.mean_service_seconds, st.service.value);
    let bytes = ratio(s.mean_response_bytes, st.bytes.value);
    let rise = service.max(bytes) - 1.0;
    let threshold = p.cost_rise.max(1e-9);
    if rise > threshold {
        Verdict::Out {
            severity: rise / threshold,
            direction: Some(Direction::Above),
            evidence: Evidence::from([
                ("service_seconds", s.mean_service_seconds),
                ("baseline_service_seconds", st.service.value),
                ("response_bytes", s.mean_response_bytes),
                ("baseline_response_bytes", st.bytes.value),
                ("mix_distance", tvd),
            ]),
        }
    } else if rise < threshold / 2.0 {
        Verdict::Back
    } else {
        Verdict::Between
    }
}

#[cfg(test)]
mod tests;
