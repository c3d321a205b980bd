//! Builds the drift detector's [`DriftSnapshot`]s from finished requests: each
//! signature's share, mean service time and mean response size over one interval, and
//! how far a signature created by a re-fit lies from every signature before it.
//!
//! The profile's own view averages over up to two re-fit intervals; a cost rise would
//! show there late and diluted, so the builder keeps its own per-interval sums.

use super::drift::{DriftSnapshot, SignatureSnapshot, MAX_SIGNATURES};
use crate::sample::Sample;
use crate::series::UNCLASSIFIED;
use crate::signature::fit::distance2;
use crate::signature::{Model, SignatureId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Sums of one interval, and the model the last snapshot was taken under.
#[derive(Default)]
pub struct SnapshotBuilder {
    /// At most [`MAX_SIGNATURES`] entries; requests of further ids are not counted.
    cells: BTreeMap<SignatureId, Cell>,
    /// The model of the previous snapshot: new signatures are measured against it.
    seen: Option<Arc<Model>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    requests: u64,
    service_us: u64,
    response_bytes: u64,
}

// === impl SnapshotBuilder ===

impl SnapshotBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one finished request that the profile assigned to `signature`.
    /// Unclassified requests (before the first fit) are left out.
    pub fn record(&mut self, signature: SignatureId, s: &Sample) {
        if signature == UNCLASSIFIED
            || (!self.cells.contains_key(&signature) && self.cells.len() >= MAX_SIGNATURES)
        {
            return;
        }
        let c = self.cells.entry(signature).or_default();
        c.requests += 1;
        c.service_us = c.service_us.saturating_add(s.completion.service_time_us);
        c.response_bytes = c.response_bytes.saturating_add(s.completion.response_bytes);
    }

    /// The snapshot of the interval since the last one, under `model` (signatures it no
    /// longer has are left out), and starts the next interval. When `model` is newer
    /// than the last snapshot's, each of its signatures that the older model did not
    /// have carries `new_distance`: the distance from its centroid to the nearest older
    /// one, both in `model`'s standardised space.
    pub fn take(&mut self, model: &Arc<Model>) -> DriftSnapshot {
        let cells = std::mem::take(&mut self.cells);
        let total: u64 = model
            .signatures
            .iter()
            .filter_map(|(id, _)| cells.get(id))
            .map(|c| c.requests)
            .sum();
        let previous = self
            .seen
            .as_ref()
            .filter(|m| m.version != model.version && !m.is_empty());
        let signatures = model
            .signatures
            .iter()
            .map(|(id, centroid)| {
                let c = cells.get(id).copied().unwrap_or_default();
                let mean = |sum: u64| {
                    if c.requests == 0 {
                        0.0
                    } else {
                        sum as f64 / c.requests as f64
                    }
                };
                SignatureSnapshot {
                    id: *id,
                    share: if total == 0 {
                        0.0
                    } else {
                        c.requests as f64 / total as f64
                    },
                    requests: c.requests,
                    mean_service_seconds: mean(c.service_us) / 1e6,
                    mean_response_bytes: mean(c.response_bytes),
                    new_distance: previous.and_then(|old| new_distance(model, old, *id, centroid)),
                }
            })
            .collect();
        self.seen = Some(model.clone());
        DriftSnapshot {
            model_version: model.version,
            signatures,
        }
    }
}

/// For a signature of `model` that `old` did not have: the distance to the nearest of
/// `old`'s centroids, mapped into `model`'s standardised space. `None` for a signature
/// `old` already had (ids are kept across re-fits while centroids stay close).
fn new_distance(
    model: &Model,
    old: &Model,
    id: SignatureId,
    centroid: &crate::signature::features::Vector,
) -> Option<f64> {
    if old.signatures.iter().any(|(o, _)| *o == id) {
        return None;
    }
    old.signatures
        .iter()
        .filter_map(|(o, _)| old.centroid(*o))
        .map(|raw| distance2(centroid, &model.scaler.apply(&raw)).sqrt())
        .min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::features::{self, Scaler};
    use crate::testing::population;

    fn model(version: u64, ids: &[(SignatureId, f64)]) -> Arc<Model> {
        Arc::new(Model {
            version,
            scaler: Scaler::identity(),
            signatures: ids
                .iter()
                .map(|(id, x)| (*id, [*x; features::DIMS]))
                .collect(),
            by_route: Default::default(),
            settled: Default::default(),
        })
    }

    #[test]
    fn an_interval_becomes_shares_and_mean_costs_and_new_signatures_are_measured() {
        let (samples, _) = population(1, 6);
        let mut b = SnapshotBuilder::new();
        let m1 = model(1, &[(1, 0.0), (2, 10.0)]);
        // Three requests of signature 1 at 10 ms, one of 2 at 30 ms; unclassified and
        // retired ids are not counted.
        for (i, sig) in [1, 1, 1, 2, 0, 9].into_iter().enumerate() {
            let mut s = samples[i];
            s.completion.service_time_us = if sig == 2 { 30_000 } else { 10_000 };
            s.completion.response_bytes = 100 * u64::from(sig);
            b.record(sig, &s);
        }
        let snap = b.take(&m1);
        assert_eq!(snap.model_version, 1);
        let one = &snap.signatures[0];
        assert_eq!((one.id, one.requests, one.share), (1, 3, 0.75));
        assert!((one.mean_service_seconds - 0.010).abs() < 1e-12);
        assert_eq!(one.mean_response_bytes, 100.0);
        assert_eq!(snap.signatures[1].share, 0.25);
        // The first model has nothing before it: nothing is new.
        assert!(snap.signatures.iter().all(|s| s.new_distance.is_none()));

        // An empty interval: zero shares, no division by zero.
        let snap = b.take(&m1);
        assert!(snap.signatures.iter().all(|s| s.share == 0.0));

        // A re-fit keeps 1 and adds 3, far from both old centroids (at 0 and 10 in every
        // dimension; 3 sits at 30): its distance is measured once, against the nearest.
        let m2 = model(2, &[(1, 0.0), (3, 30.0)]);
        let snap = b.take(&m2);
        assert_eq!(snap.signatures[0].new_distance, None);
        let d = snap.signatures[1].new_distance.unwrap();
        assert!(
            (d - 20.0 * (features::DIMS as f64).sqrt()).abs() < 1e-9,
            "{d}"
        );
        assert_eq!(b.take(&m2).signatures[1].new_distance, None);
    }
}
