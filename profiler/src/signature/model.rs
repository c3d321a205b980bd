//! The fitted signature model: what the data path reads (through an `ArcSwap`) to
//! guess a request's signature before forwarding it.

use super::features::{self, Scaler, Vector, ARRIVAL};
use super::fit::distance2;
use crate::sample::{Arrival, Sample};
use std::collections::HashMap;

/// A signature's id: stable across re-fits while its centroid stays put.
pub type SignatureId = u32;

/// An immutable model; a re-fit builds a new one.
#[derive(Clone, Debug)]
pub struct Model {
    /// Bumped by every re-fit.
    pub version: u64,
    pub scaler: Scaler,
    /// Signature ids and their centroids in standardised space.
    pub signatures: Vec<(SignatureId, Vector)>,
    /// Route template hash → signature, for routes whose requests mostly fall in one
    /// signature. Bounded by the route table's cap.
    pub by_route: HashMap<u64, SignatureId>,
    /// The routes of `by_route` whose requests all but rarely fell in that signature
    /// (see `SETTLED`): a finished request of one is assigned by its route.
    pub settled: HashMap<u64, SignatureId>,
}

// === impl Model ===

impl Model {
    /// Before the first fit: no signatures, every request unclassified.
    pub fn empty() -> Self {
        Self {
            version: 0,
            scaler: Scaler::identity(),
            signatures: Vec::new(),
            by_route: HashMap::new(),
            settled: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }

    /// The signature of a finished request: its route's when the route is settled,
    /// else the nearest centroid on the full vector.
    ///
    /// Service time moves with load (a queue, a pause, a delayed ACK) and a kind whose
    /// times were tight in the fitted sample is then many deviations from its centroid
    /// on that one dimension: measured, light requests made up ~45 % of a heavy
    /// kind's signature whose route, size and answer all differed, and carried their
    /// costs there. A route that was one kind when fitted stays that kind.
    pub fn assign(&self, s: &Sample) -> Option<SignatureId> {
        if let Some(id) = self.settled.get(&s.arrival.shape.template_hash) {
            return Some(*id);
        }
        let v = self.scaler.apply(&features::of_sample(s));
        self.nearest(&v, distance2)
    }

    /// The expected signature of an arriving request: its route's signature when the
    /// route is known, else the nearest centroid on arrival dimensions only.
    /// O(signatures), no allocation.
    pub fn classify(&self, a: &Arrival) -> Option<SignatureId> {
        if let Some(id) = self.by_route.get(&a.shape.template_hash) {
            return Some(*id);
        }
        let v = self.scaler.apply(&features::of_arrival(a));
        self.nearest(&v, |x, c| {
            ARRIVAL
                .iter()
                .map(|&d| {
                    let (p, q) = (
                        x.get(d).copied().unwrap_or(0.0),
                        c.get(d).copied().unwrap_or(0.0),
                    );
                    (p - q).powi(2)
                })
                .sum()
        })
    }

    pub fn centroid(&self, id: SignatureId) -> Option<Vector> {
        self.signatures
            .iter()
            .find(|(s, _)| *s == id)
            .map(|(_, c)| self.scaler.invert(c))
    }

    fn nearest(&self, v: &Vector, dist: impl Fn(&Vector, &Vector) -> f64) -> Option<SignatureId> {
        self.signatures
            .iter()
            .map(|(id, c)| (dist(v, c), *id))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, id)| id)
    }
}
