//! The fitted signature model: what the data path reads (through an `ArcSwap`) to
//! guess a request's signature before forwarding it.

use super::features::{self, Scaler, Vector, ARRIVAL, DIMS};
use crate::sample::{Arrival, Sample};
use std::collections::HashMap;

/// The most one dimension adds to a squared distance, in standard deviations: beyond
/// it a dimension says only "far". Service time moves with load (a queue, a delayed
/// ACK) and a tight kind is then many deviations from its centroid on that dimension
/// alone; uncapped, that one dimension outvotes the route, sizes and fanout that all
/// say the request's kind, and the other kind's requests and costs absorb it.
const FAR: f64 = 3.0;

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
        }
    }

    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }

    /// The signature of a finished request: nearest centroid on the full vector, each
    /// dimension's share capped at [`FAR`].
    pub fn assign(&self, s: &Sample) -> Option<SignatureId> {
        let v = self.scaler.apply(&features::of_sample(s));
        self.nearest(&v, &ALL)
    }

    /// The expected signature of an arriving request: its route's signature when the
    /// route is known, else the nearest centroid on arrival dimensions only.
    /// O(signatures), no allocation.
    pub fn classify(&self, a: &Arrival) -> Option<SignatureId> {
        if let Some(id) = self.by_route.get(&a.shape.template_hash) {
            return Some(*id);
        }
        let v = self.scaler.apply(&features::of_arrival(a));
        self.nearest(&v, &ARRIVAL)
    }

    pub fn centroid(&self, id: SignatureId) -> Option<Vector> {
        self.signatures
            .iter()
            .find(|(s, _)| *s == id)
            .map(|(_, c)| self.scaler.invert(c))
    }

    /// The centroid nearest `v` on `dims`, by the capped distance; ties (every differing
    /// dimension past [`FAR`]) go to the nearer one uncapped.
    fn nearest(&self, v: &Vector, dims: &[usize]) -> Option<SignatureId> {
        self.signatures
            .iter()
            .map(|(id, c)| (distances(v, c, dims), *id))
            .min_by(|(a, _), (b, _)| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)))
            .map(|(_, id)| id)
    }
}

/// Every dimension, for a finished request.
const ALL: [usize; DIMS] = [0, 1, 2, 3, 4, 5, 6, 7];

/// Squared distance on `dims` with each dimension's share capped at `FAR`², and uncapped.
fn distances(x: &Vector, c: &Vector, dims: &[usize]) -> (f64, f64) {
    dims.iter().fold((0.0, 0.0), |(capped, raw), &d| {
        let (p, q) = (
            x.get(d).copied().unwrap_or(0.0),
            c.get(d).copied().unwrap_or(0.0),
        );
        let d2 = (p - q).powi(2);
        (capped + d2.min(FAR * FAR), raw + d2)
    })
}
