//! What each signature costs: service-time distribution (hdrhistogram), fanout, sizes
//! and its top routes, over a window of the last one or two re-fit intervals.

use crate::sample::Sample;
use crate::signature::SignatureId;
use crate::topk::TopK;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Routes remembered per signature.
const ROUTES_PER_SIGNATURE: usize = 8;

/// Running totals for one signature.
pub struct SignatureStats {
    pub requests: u64,
    /// Service time in microseconds, 1 µs to 1 h, 2 significant digits.
    service_us: Option<Histogram<u64>>,
    pub fanout_sum: u64,
    pub request_bytes_sum: u64,
    pub response_bytes_sum: u64,
    pub errors: u64,
    pub routes: TopK<u64>,
}

/// Stats for the current window and the one before; a re-fit rotates them, so views
/// cover between one and two re-fit intervals of traffic.
#[derive(Default)]
pub struct Window {
    current: BTreeMap<SignatureId, SignatureStats>,
    previous: BTreeMap<SignatureId, SignatureStats>,
}

/// Service-time summary in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CostSummary {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

// === impl SignatureStats ===

impl SignatureStats {
    fn new() -> Self {
        Self {
            requests: 0,
            service_us: Histogram::new_with_bounds(1, 3_600_000_000, 2).ok(),
            fanout_sum: 0,
            request_bytes_sum: 0,
            response_bytes_sum: 0,
            errors: 0,
            routes: TopK::new(ROUTES_PER_SIGNATURE),
        }
    }

    fn record(&mut self, s: &Sample) {
        let c = &s.completion;
        self.requests += 1;
        if let Some(h) = &mut self.service_us {
            h.saturating_record(c.service_time_us.max(1));
        }
        self.fanout_sum += u64::from(c.fanout);
        self.request_bytes_sum = self
            .request_bytes_sum
            .saturating_add(s.arrival.request_bytes.max(c.request_bytes));
        self.response_bytes_sum = self.response_bytes_sum.saturating_add(c.response_bytes);
        if c.status >= 500 {
            self.errors += 1;
        }
        self.routes.add(s.arrival.shape.template_hash, 1);
    }

    fn merge(&mut self, other: &SignatureStats) {
        self.requests += other.requests;
        if let (Some(a), Some(b)) = (&mut self.service_us, &other.service_us) {
            let _ = a.add(b);
        }
        self.fanout_sum += other.fanout_sum;
        self.request_bytes_sum = self
            .request_bytes_sum
            .saturating_add(other.request_bytes_sum);
        self.response_bytes_sum = self
            .response_bytes_sum
            .saturating_add(other.response_bytes_sum);
        self.errors += other.errors;
        for (route, n) in other.routes.top(ROUTES_PER_SIGNATURE) {
            self.routes.add(route, n);
        }
    }

    pub fn cost(&self) -> CostSummary {
        let Some(h) = &self.service_us else {
            return CostSummary::default();
        };
        if h.is_empty() {
            return CostSummary::default();
        }
        let s = |us: u64| us as f64 / 1e6;
        CostSummary {
            mean: h.mean() / 1e6,
            p50: s(h.value_at_quantile(0.5)),
            p90: s(h.value_at_quantile(0.9)),
            p99: s(h.value_at_quantile(0.99)),
            max: s(h.max()),
        }
    }

    pub fn mean(&self, sum: u64) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            sum as f64 / self.requests as f64
        }
    }
}

// === impl Window ===

impl Window {
    pub fn record(&mut self, sig: SignatureId, s: &Sample) {
        self.current
            .entry(sig)
            .or_insert_with(SignatureStats::new)
            .record(s);
    }

    /// Starts a new window after a re-fit; signatures no longer in the model (`keep`
    /// is false) are dropped so the set stays bounded by the model.
    pub fn rotate(&mut self, keep: impl Fn(SignatureId) -> bool) {
        self.previous = std::mem::take(&mut self.current);
        self.previous.retain(|id, _| keep(*id));
    }

    /// Both windows merged, per signature.
    pub fn merged(&self) -> BTreeMap<SignatureId, SignatureStats> {
        let mut out: BTreeMap<SignatureId, SignatureStats> = BTreeMap::new();
        for (id, st) in self.previous.iter().chain(&self.current) {
            out.entry(*id).or_insert_with(SignatureStats::new).merge(st);
        }
        out
    }
}
