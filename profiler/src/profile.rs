//! The profiler's state, off the data path: it ingests drained samples, keeps the
//! fitting reservoir, re-fits signatures on a schedule, and answers what each
//! signature is and costs. Pure: `now` comes from the caller.

use crate::config::ProfilerConfig;
use crate::route;
use crate::sample::{Millis, Sample};
use crate::series::{Bucket, Series, FINE_STEP_MS, UNCLASSIFIED};
use crate::signature::{self, features, FitParams, Model, SignatureId};
use crate::stats::{CostSummary, Window};
use crate::topk::TopK;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256Plus;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Fine buckets kept in memory: one hour.
const FINE_BUCKETS: usize = 360;
/// Minute buckets kept in memory: one day (the store keeps the retention period).
const MINUTE_BUCKETS: usize = 1440;

/// The profiler's whole state.
pub struct Profile {
    params: FitParams,
    refit_interval: Millis,
    min_samples: usize,
    model: Arc<Model>,
    reservoir: Reservoir,
    window: Window,
    routes: TopK<u64>,
    /// Template strings of the routes in `routes` (evicted together).
    templates: HashMap<u64, String>,
    series: Series,
    /// Requests and work per signature since start, for counters. Bounded by the
    /// signature id range (1..=max_signatures, plus UNCLASSIFIED).
    totals: BTreeMap<SignatureId, (u64, u64)>,
    /// Request and response body bytes per signature since start (the network the
    /// sidecar carries for the service, for the resource cost model).
    bytes: BTreeMap<SignatureId, u64>,
    /// Arrival guesses that matched the completion assignment, and all guesses.
    accuracy: (u64, u64),
    refits: u64,
    last_refit: Option<Millis>,
    ingested: u64,
    /// Requests admission refused, counted in the series only (see [`Profile::refused`]).
    refused: u64,
    /// Start of the newest minute already written to the store.
    flushed_from: Millis,
}

/// Uniform sample of recent traffic: Algorithm R, with the seen-count halved at every
/// re-fit so old traffic fades instead of dominating forever.
struct Reservoir {
    cap: usize,
    seen: u64,
    items: Vec<Sample>,
    rng: Xoshiro256Plus,
}

/// `GET /v1/signatures`.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileView {
    pub model_version: u64,
    pub refits: u64,
    pub samples: u64,
    /// Share of arrival guesses the completion-time assignment confirmed (None before
    /// any guess was checked).
    pub classifier_accuracy: Option<f64>,
    pub signatures: Vec<SignatureView>,
}

/// One signature, in natural units.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureView {
    pub id: SignatureId,
    /// Share of the requests in the stats window.
    pub share: f64,
    pub requests: u64,
    /// Centroid of the feature vector, in bytes, seconds and counts.
    pub centroid: BTreeMap<&'static str, f64>,
    pub service_time_seconds: CostSummary,
    pub mean_fanout: f64,
    pub mean_request_bytes: f64,
    pub mean_response_bytes: f64,
    pub error_ratio: f64,
    pub top_routes: Vec<RouteView>,
    /// Over the last complete 10 s bucket.
    pub rate_per_second: f64,
    /// Busy concurrency (Little's law) over the last complete 10 s bucket.
    pub demand: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RouteView {
    pub route: String,
    pub requests: u64,
}

// === impl Profile ===

impl Profile {
    pub fn new(cfg: &ProfilerConfig, seed: u64) -> Self {
        Self {
            params: FitParams {
                min_k: cfg.min_signatures,
                max_k: cfg.max_signatures,
                min_silhouette: cfg.min_silhouette,
                silhouette_sample: 600,
                seed,
            },
            refit_interval: cfg.refit_interval.as_millis() as Millis,
            min_samples: cfg.min_samples.max(2),
            model: Arc::new(Model::empty()),
            reservoir: Reservoir::new(cfg.reservoir, seed),
            window: Window::default(),
            routes: TopK::new(cfg.max_routes),
            templates: HashMap::new(),
            series: Series::new(FINE_BUCKETS, MINUTE_BUCKETS),
            totals: BTreeMap::new(),
            bytes: BTreeMap::new(),
            accuracy: (0, 0),
            refits: 0,
            last_refit: None,
            ingested: 0,
            refused: 0,
            flushed_from: 0,
        }
    }

    pub fn model(&self) -> Arc<Model> {
        self.model.clone()
    }

    pub fn series(&self) -> &Series {
        &self.series
    }

    pub fn series_mut(&mut self) -> &mut Series {
        &mut self.series
    }

    pub fn refits(&self) -> u64 {
        self.refits
    }

    pub fn ingested(&self) -> u64 {
        self.ingested
    }

    /// Requests counted by [`Profile::refused`] since start.
    pub fn refused_count(&self) -> u64 {
        self.refused
    }

    /// A request admission refused (at `at`, expected to be of signature `guess`,
    /// costing `expected_us` of service time when known). Nothing was served, but it is
    /// demand the service was offered: it goes into the series, which the forecasts
    /// read, at its expected cost (else the mean of everything served so far). Left
    /// out, demand under shedding would read as what was served: the forecast would sit
    /// at capacity and never ask for the replicas that would end the shedding, and
    /// pre-shedding would lower the very demand that triggered it. Signature statistics
    /// stay those of served requests.
    pub fn refused(&mut self, at: Millis, guess: Option<SignatureId>, expected_us: Option<u64>) {
        let us = expected_us.or_else(|| self.mean_service_us()).unwrap_or(0);
        self.series.add(at, guess.unwrap_or(UNCLASSIFIED), us);
        self.refused += 1;
    }

    /// Mean service time (µs) of every request served since start.
    fn mean_service_us(&self) -> Option<u64> {
        let (n, us) = self.totals.values().fold((0u64, 0u64), |(n, us), (r, w)| {
            (n + r, us.saturating_add(*w))
        });
        us.checked_div(n)
    }

    /// Requests and work (µs) per signature since start.
    pub fn totals(&self) -> &BTreeMap<SignatureId, (u64, u64)> {
        &self.totals
    }

    /// Request plus response body bytes per signature since start.
    pub fn byte_totals(&self) -> &BTreeMap<SignatureId, u64> {
        &self.bytes
    }

    pub fn classifier_accuracy(&self) -> Option<f64> {
        let (agree, total) = self.accuracy;
        (total > 0).then(|| agree as f64 / total as f64)
    }

    /// Aggregates finished requests.
    pub fn ingest(&mut self, batch: &[Sample]) {
        self.ingest_each(batch, |_, _| {});
    }

    /// Aggregates finished requests, telling `each` which signature every one was
    /// assigned to (what the anomaly detectors count per source and per signature).
    pub fn ingest_each(&mut self, batch: &[Sample], mut each: impl FnMut(&Sample, SignatureId)) {
        for s in batch {
            self.ingested += 1;
            let hash = s.arrival.shape.template_hash;
            if self.routes.get(&hash).is_none() {
                self.templates.insert(hash, template_of(s));
            }
            if let Some(evicted) = self.routes.add(hash, 1) {
                self.templates.remove(&evicted);
            }
            self.reservoir.offer(s);
            let sig = self.model.assign(s).unwrap_or(UNCLASSIFIED);
            if let Some(guess) = s.guess {
                self.accuracy.1 += 1;
                if guess == sig {
                    self.accuracy.0 += 1;
                }
            }
            self.window.record(sig, s);
            let us = s.completion.service_time_us;
            self.series.add(s.at, sig, us);
            let t = self.totals.entry(sig).or_default();
            t.0 += 1;
            t.1 = t.1.saturating_add(us);
            let b = self.bytes.entry(sig).or_default();
            *b = b
                .saturating_add(s.completion.request_bytes)
                .saturating_add(s.completion.response_bytes);
            each(s, sig);
        }
    }

    /// Re-fits when due (enough samples, interval elapsed). Returns whether the model
    /// changed. Runs for tens of milliseconds: call it off the data path.
    pub fn maybe_refit(&mut self, now: Millis) -> bool {
        let due = match self.last_refit {
            None => true,
            Some(t) => now.saturating_sub(t) >= self.refit_interval,
        };
        if !due || self.reservoir.items.len() < self.min_samples {
            return false;
        }
        self.last_refit = Some(now);
        let Some(model) = signature::refit(&self.reservoir.items, &self.model, &self.params) else {
            return false;
        };
        self.model = Arc::new(model);
        self.refits += 1;
        self.reservoir.forget_half();
        let model = self.model.clone();
        self.window
            .rotate(|id| model.signatures.iter().any(|(s, _)| *s == id));
        // Ids outside the model no longer count towards accuracy of this model.
        self.accuracy = (0, 0);
        true
    }

    /// Minute buckets not yet persisted (the newest written minute is rewritten, since
    /// it may have grown). Call [`Profile::mark_flushed`] after writing them.
    pub fn unflushed_minutes(&self) -> Vec<&Bucket> {
        self.series.minutes_since(self.flushed_from).collect()
    }

    pub fn mark_flushed(&mut self) {
        if let Some(b) = self.series.minutes().last() {
            self.flushed_from = b.start;
        }
    }

    /// The view behind `GET /v1/signatures`; `now` picks the last complete bucket.
    pub fn view(&self, now: Millis) -> ProfileView {
        let merged = self.window.merged();
        let total: u64 = merged
            .iter()
            .filter(|(id, _)| **id != UNCLASSIFIED)
            .map(|(_, s)| s.requests)
            .sum();
        let current = now - now % FINE_STEP_MS;
        let last_complete = self.series.fine().rev().find(|b| b.start < current);
        let signatures = self
            .model
            .signatures
            .iter()
            .map(|(id, _)| {
                let stats = merged.get(id);
                let requests = stats.map_or(0, |s| s.requests);
                let centroid = self
                    .model
                    .centroid(*id)
                    .map(|c| features::natural(&c))
                    .map(|c| features::NAMES.iter().copied().zip(c).collect())
                    .unwrap_or_default();
                let cell = last_complete
                    .and_then(|b| b.by_signature.get(id))
                    .copied()
                    .unwrap_or_default();
                SignatureView {
                    id: *id,
                    share: if total == 0 {
                        0.0
                    } else {
                        requests as f64 / total as f64
                    },
                    requests,
                    centroid,
                    service_time_seconds: stats.map(|s| s.cost()).unwrap_or_default(),
                    mean_fanout: stats.map_or(0.0, |s| s.mean(s.fanout_sum)),
                    mean_request_bytes: stats.map_or(0.0, |s| s.mean(s.request_bytes_sum)),
                    mean_response_bytes: stats.map_or(0.0, |s| s.mean(s.response_bytes_sum)),
                    error_ratio: stats.map_or(0.0, |s| s.mean(s.errors)),
                    top_routes: stats
                        .map(|s| {
                            s.routes
                                .top(5)
                                .into_iter()
                                .map(|(h, n)| RouteView {
                                    route: self
                                        .templates
                                        .get(&h)
                                        .cloned()
                                        .unwrap_or_else(|| "other".into()),
                                    requests: n,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    rate_per_second: cell.rate(FINE_STEP_MS),
                    demand: cell.demand(FINE_STEP_MS),
                }
            })
            .collect();
        ProfileView {
            model_version: self.model.version,
            refits: self.refits,
            samples: self.ingested,
            classifier_accuracy: self.classifier_accuracy(),
            signatures,
        }
    }
}

fn template_of(s: &Sample) -> String {
    let mut t = route::template(s.path.as_str());
    if s.path.is_truncated() {
        t.push('…');
    }
    t
}

// === impl Reservoir ===

impl Reservoir {
    fn new(cap: usize, seed: u64) -> Self {
        Self {
            cap: cap.max(1),
            seen: 0,
            items: Vec::new(),
            rng: Xoshiro256Plus::seed_from_u64(seed),
        }
    }

    fn offer(&mut self, s: &Sample) {
        self.seen += 1;
        if self.items.len() < self.cap {
            self.items.push(*s);
            return;
        }
        let j = self.rng.next_u64() % self.seen;
        if let Some(slot) = self.items.get_mut(j as usize) {
            *slot = *s;
        }
    }

    /// New samples now replace old ones twice as often.
    fn forget_half(&mut self) {
        self.seen = (self.seen / 2).max(self.items.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::population;

    #[test]
    fn view_reports_three_signatures_with_their_costs_and_routes() {
        let cfg = ProfilerConfig::default();
        let mut p = Profile::new(&cfg, 1);
        let (mut samples, _) = population(1, 3_000);
        // Spread over one minute of arrivals, starting at t = 600 s.
        for (i, s) in samples.iter_mut().enumerate() {
            s.at = 600_000 + (i as u64 * 20);
        }
        p.ingest(&samples);
        // Before the first fit everything is unclassified and the model is empty.
        assert!(p.model().is_empty());
        assert!(p.maybe_refit(700_000));
        assert_eq!(p.refits(), 1);
        // Not due again until the refit interval has passed.
        assert!(!p.maybe_refit(710_000));

        let (fresh, _) = population(2, 3_000);
        p.ingest(&fresh);
        let view = p.view(700_000);
        assert_eq!(view.signatures.len(), 3);
        let by_fanout = |f: f64| {
            view.signatures
                .iter()
                .find(|s| (s.mean_fanout - f).abs() < 0.05)
                .unwrap_or_else(|| panic!("no signature with fanout {f}: {view:#?}"))
        };
        // Reads: no fanout, ~2 ms; searches: 3 calls, ~20 ms; uploads: 1 call, ~200 ms.
        let (read, search, upload) = (by_fanout(0.0), by_fanout(3.0), by_fanout(1.0));
        assert!(read.service_time_seconds.p50 < 0.004, "{read:?}");
        assert!((0.01..0.04).contains(&search.service_time_seconds.p50));
        assert!(upload.service_time_seconds.p50 > 0.1);
        assert_eq!(read.top_routes[0].route, "/api/items/{id}");
        assert_eq!(upload.top_routes[0].route, "/api/upload");
        for s in &view.signatures {
            assert!((s.share - 1.0 / 3.0).abs() < 0.05, "{s:?}");
        }
        assert_eq!(view.samples, 6_000);
    }

    #[test]
    fn refused_requests_count_as_demand_at_their_expected_cost_but_not_as_served() {
        let cfg = ProfilerConfig::default();
        let mut p = Profile::new(&cfg, 1);
        let (mut served, _) = population(4, 600);
        for (i, s) in served.iter_mut().enumerate() {
            s.at = 600_000 + i as u64 * 50;
        }
        p.ingest(&served);
        let minute = |p: &Profile| {
            p.series()
                .minutes()
                .find(|b| b.start == 600_000)
                .map(|b| b.total)
                .unwrap_or_default()
        };
        let before = minute(&p);
        let totals_before = p.totals().clone();
        let mean_us = before.work_us / before.requests;
        // 300 refused with a known cost of 40 ms, then 100 whose cost is unknown.
        for i in 0..300 {
            p.refused(600_000 + i * 100, Some(2), Some(40_000));
        }
        for i in 0..100 {
            p.refused(600_000 + i * 100, None, None);
        }
        let after = minute(&p);
        assert_eq!(after.requests, before.requests + 400);
        assert_eq!(
            after.work_us,
            before.work_us + 300 * 40_000 + 100 * mean_us,
            "unknown costs are the mean served cost ({mean_us} µs)"
        );
        let sig2 = p.series().minutes().find(|b| b.start == 600_000).unwrap();
        assert!(sig2.by_signature[&2].requests >= 300);
        // Served statistics are untouched.
        assert_eq!(p.totals(), &totals_before);
        assert_eq!(p.ingested(), 600);
        assert_eq!(p.refused_count(), 400);
    }

    #[test]
    fn route_set_stays_bounded_under_distinct_paths() {
        let cfg = ProfilerConfig {
            max_routes: 16,
            ..Default::default()
        };
        let mut p = Profile::new(&cfg, 1);
        let (mut samples, _) = population(3, 200);
        for i in 0..20_000u64 {
            let mut s = samples[(i % 200) as usize];
            let path = format!("/unique/path-{i}-word/x");
            s.arrival.shape = crate::route::PathShape::of(&path);
            s.path = crate::sample::InlinePath::new(&path);
            samples.push(s);
        }
        p.ingest(&samples);
        assert!(p.routes.len() <= 16);
        assert!(p.templates.len() <= 16);
    }
}
