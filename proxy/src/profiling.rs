//! The profiler at the edge: cheap hooks on the data path, and one thread off it that
//! drains samples, re-fits signatures, persists series and exports metrics.
//!
//! The data path only reads the model through an `ArcSwap`, bumps lock-free counters
//! and pushes `Copy` samples into a bounded queue; everything slow happens on the
//! profiler thread, which never holds anything the data path waits for.

use crate::anomalies::{Anomalies, ProfilerFeed};
use crate::clock::Clock;
use crate::forecasting::{Forecasting, Update};
use crate::metrics as m;
use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use http::request::Parts;
use prescale_profiler::fanout::{FanoutTable, Slot};
use prescale_profiler::recorder::Recorder;
use prescale_profiler::route::PathShape;
use prescale_profiler::sample::{Arrival, Completion, InlinePath, Method, Millis, Sample};
use prescale_profiler::series::{Bucket, FINE_STEP_MS, MINUTE_MS};
use prescale_profiler::signature::Model;
use prescale_profiler::store::Store;
use prescale_profiler::trace::TraceId;
use prescale_profiler::{Profile, ProfileView, ProfilerConfig};
use std::collections::BTreeSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Refused requests held between two profiler ticks; beyond it they are dropped and
/// counted.
const SHED_QUEUE: usize = 32_768;

/// A request admission refused, on its way to the profiler thread: demand for the
/// series, and a request of its source for the per-source detector.
#[derive(Copy, Clone, Debug)]
struct Refused {
    at: Millis,
    source: u64,
    guess: Option<u32>,
    expected_us: Option<u64>,
    /// Refused for want of capacity (not a rate limit or a remediation).
    demand: bool,
}

/// Shared between the data path, the admin API and the profiler thread.
pub struct Profiling {
    /// Series time, which requests are stamped with.
    clock: Clock,
    enabled: bool,
    pub recorder: Recorder,
    /// Requests admission refused: not samples (nothing was served), but part of the
    /// demand and of what their source sends.
    shed: ArrayQueue<Refused>,
    pub model: ArcSwap<Model>,
    pub fanout: Arc<FanoutTable>,
    /// The trace-id headers, looked up by parsed name (no per-request name parsing).
    trace_headers: Vec<(http::HeaderName, String)>,
    pub view: ArcSwap<ProfileView>,
    /// The last hour of minute buckets, for `GET /v1/series`.
    pub minutes: ArcSwap<Vec<Bucket>>,
    /// Asks the profiler thread for a final flush; it answers on the enclosed sender.
    flush: Mutex<Option<Sender<SyncSender<()>>>>,
    /// Where each tick's per-signature totals go for the resource cost model.
    resources: std::sync::OnceLock<SyncSender<crate::resources::Tick>>,
}

/// What the data path keeps about a request between `request_filter` and `logging`.
pub struct RequestProfile {
    at: Millis,
    arrival: Arrival,
    guess: Option<u32>,
    path: InlinePath,
    fanout: FanoutGuard,
}

/// A claimed fanout slot, released when the request ends however it ends.
struct FanoutGuard {
    table: Arc<FanoutTable>,
    slot: Option<Slot>,
}

// === impl Profiling ===

impl Profiling {
    /// Series seconds per wall second (`run --time-scale`, 1 outside the demo): service
    /// times are recorded stretched by it.
    pub fn time_scale(&self) -> f64 {
        self.clock.scale()
    }

    pub fn new(cfg: &ProfilerConfig, clock: Clock) -> Arc<Self> {
        Arc::new(Self {
            clock,
            enabled: cfg.enabled,
            recorder: Recorder::new(cfg.queue_capacity),
            shed: ArrayQueue::new(SHED_QUEUE),
            model: ArcSwap::from_pointee(Model::empty()),
            fanout: Arc::new(FanoutTable::new(cfg.fanout_capacity)),
            trace_headers: cfg
                .trace_headers
                .iter()
                .filter_map(|h| Some((http::HeaderName::try_from(h.as_str()).ok()?, h.clone())))
                .collect(),
            view: ArcSwap::from_pointee(Profile::new(cfg, 0).view(0)),
            minutes: ArcSwap::from_pointee(Vec::new()),
            flush: Mutex::new(None),
            resources: std::sync::OnceLock::new(),
        })
    }

    /// Sends every tick's per-signature totals to the resource sampler (`try_send`:
    /// a sampler that falls behind misses ticks, the profiler never waits).
    pub fn feed_resources(&self, tx: SyncSender<crate::resources::Tick>) {
        let _ = self.resources.set(tx);
    }

    /// Arrival hook for inbound requests: features, the expected signature, and a
    /// fanout slot for the request's trace id. O(path length + signatures). The source
    /// is set by admission ([`RequestProfile::set_source`]), which alone knows which
    /// identity claims to trust.
    pub fn arrive(&self, req: &Parts) -> Option<RequestProfile> {
        if !self.enabled {
            return None;
        }
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let arrival = Arrival {
            method: Method::parse(req.method.as_str()),
            shape: PathShape::of(target),
            request_bytes: header(req, &http::header::CONTENT_LENGTH)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            source: 0,
            tier: 0,
        };
        let guess = self.model.load().classify(&arrival);
        let slot = self.trace_id(req).and_then(|id| self.fanout.begin(id));
        Some(RequestProfile {
            at: self.clock.now_ms(),
            arrival,
            guess,
            path: InlinePath::new(target),
            fanout: FanoutGuard {
                table: self.fanout.clone(),
                slot,
            },
        })
    }

    /// Mean service time in seconds of signature `id` in the last published view: the
    /// cost hint admission weighs a request by. O(signatures), no lock.
    pub fn expected_service_time(&self, id: u32) -> Option<f64> {
        self.view
            .load()
            .signatures
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.service_time_seconds.mean)
            .filter(|t| t.is_finite() && *t > 0.0)
    }

    /// Outbound hook: counts a call towards the inbound request with the same trace id.
    pub fn outbound_call(&self, req: &Parts) {
        if self.enabled {
            if let Some(id) = self.trace_id(req) {
                self.fanout.record_call(id);
            }
        }
    }

    /// Completion hook: hands the finished request to the profiler thread.
    pub fn complete(&self, mut p: RequestProfile, completion: Completion) {
        let fanout = p.fanout.finish();
        self.recorder.record(Sample {
            at: p.at,
            arrival: p.arrival,
            completion: Completion {
                fanout,
                ..completion
            },
            path: p.path,
            guess: p.guess,
        });
    }

    /// Shed hook: a refused request is no sample, but it counts towards its source's
    /// rate (for the per-source anomaly detector) and, when refused for want of
    /// capacity (`demand`), as demand at its expected signature's cost (see
    /// `Profile::refused`). Requests refused by a rate limit or a remediation are not
    /// demand to scale for. O(signatures), lock-free; a full queue drops and counts.
    pub fn shed(&self, p: RequestProfile, demand: bool) {
        let expected_us = p
            .guess
            .and_then(|g| self.expected_service_time(g))
            .map(|secs| (secs * 1e6) as u64);
        let refused = Refused {
            at: p.at,
            source: p.arrival.source,
            guess: p.guess,
            expected_us,
            demand,
        };
        if self.shed.push(refused).is_err() {
            ::metrics::counter!(m::REFUSED_DROPPED).increment(1);
        }
    }

    fn trace_id(&self, req: &Parts) -> Option<TraceId> {
        self.trace_headers
            .iter()
            .find_map(|(name, h)| TraceId::parse(h, header(req, name)?))
    }

    /// Flushes the store before the process exits; waits at most `limit`.
    pub fn flush_before_exit(&self, limit: Duration) {
        let Some(tx) = self.flush.lock().ok().and_then(|g| g.clone()) else {
            return;
        };
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(1);
        if tx.send(ack_tx).is_ok() {
            let _ = ack_rx.recv_timeout(limit);
        }
    }

    /// Starts the profiler thread; completed minutes and current demand go to
    /// `forecasting`, requests and signature snapshots to `anomalies`.
    pub fn spawn(
        self: &Arc<Self>,
        cfg: ProfilerConfig,
        forecasting: Arc<Forecasting>,
        anomalies: Arc<Anomalies>,
    ) -> std::io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Ok(mut g) = self.flush.lock() {
            *g = Some(tx);
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("profiler".into())
            .spawn(move || me.run(cfg, rx, forecasting, anomalies))
            .map(|_| ())
    }

    fn run(
        &self,
        cfg: ProfilerConfig,
        flush_rx: Receiver<SyncSender<()>>,
        forecasting: Arc<Forecasting>,
        anomalies: Arc<Anomalies>,
    ) {
        let now = self.clock.now_ms();
        let mut feed = ProfilerFeed::new(anomalies);
        let mut profile = Profile::new(&cfg, now);
        let (mut store, history) = open_store(&cfg, &mut profile, now);
        // Set when a flush failed and the store was closed to be reopened, or when it
        // could not be opened at start (a volume mounted late, read-only for a while):
        // retried at every flush interval, so profiling recovers without a restart.
        let mut reopen: Option<std::path::PathBuf> = match &store {
            None => cfg.store.path.clone(),
            Some(_) => None,
        };
        let retention = cfg.store.retention.as_millis() as Millis;
        let mut last_flush = self.clock.instant();
        let mut exported = BTreeSet::new();
        let mut batch = Vec::with_capacity(4096);
        // The forecaster gets the whole restored history at once; live minutes follow.
        let mut sent_through: Option<Millis> = history.last().map(|b| b.start);
        if !history.is_empty() {
            forecasting.send(Update::History(history));
        }
        loop {
            let exit = match flush_rx.recv_timeout(cfg.tick) {
                Ok(ack) => Some(ack),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            self.clock.resync();
            let now = self.clock.now_ms();
            self.recorder.drain_into(&mut batch);
            profile.ingest_each(&batch, |s, sig| feed.finished(s, sig));
            batch.clear();
            while let Some(r) = self.shed.pop() {
                if r.demand {
                    profile.refused(r.at, r.guess, r.expected_us);
                }
                if r.source != 0 {
                    feed.shed(r.source, r.guess.unwrap_or(0));
                }
            }
            let started = self.clock.instant();
            if profile.maybe_refit(now) {
                let model = profile.model();
                tracing::info!(
                    version = model.version,
                    signatures = model.signatures.len(),
                    took = ?started.elapsed(),
                    "signatures re-fitted"
                );
                self.model.store(model);
            }
            feed.tick(now, &profile.model());
            if exit.is_some() || last_flush.elapsed() >= self.clock.wall(cfg.store.flush_interval) {
                if let Some(opened) = &store {
                    if !flush(opened, &mut profile, now.saturating_sub(retention)) {
                        // redb refuses every write after an I/O error (disk full, a
                        // read-only remount) until reopened: close it, reopen next time.
                        store = None;
                        reopen = cfg.store.path.clone();
                    }
                } else if let Some(path) = &reopen {
                    store = reopen_store(path, now);
                    if store.is_some() {
                        reopen = None;
                    }
                }
                last_flush = self.clock.instant();
            }
            export(&profile, &self.recorder, &self.fanout, &mut exported, now);
            feed_forecasts(
                &profile,
                &forecasting,
                &mut sent_through,
                now,
                self.clock.scale(),
            );
            if let Some(tx) = self.resources.get() {
                let totals = profile.totals().clone();
                let bytes = profile.byte_totals().clone();
                let _ = tx.try_send(crate::resources::Tick {
                    at: now,
                    wall: crate::clock::system_ms(),
                    totals,
                    bytes,
                });
            }
            self.view.store(Arc::new(profile.view(now)));
            let hour: Vec<Bucket> = profile
                .series()
                .minutes_since(now.saturating_sub(3_600_000))
                .cloned()
                .collect();
            self.minutes.store(Arc::new(hour));
            if let Some(ack) = exit {
                // Close the store before the process exits, so the next start finds a
                // cleanly closed file (no repair, no safety copy).
                drop(store.take());
                let _ = ack.send(());
            }
        }
    }
}

/// Sends minutes that are complete (with a little grace for late samples) and the
/// demand of the last complete 10 s bucket. In that order, on one channel: when the
/// forecaster reads `Now { at }`, every minute complete at `at` is ahead of it, so it
/// may close the steps before `at` on the clock (a minute with no bucket is idle).
fn feed_forecasts(
    profile: &Profile,
    forecasting: &Forecasting,
    sent_through: &mut Option<Millis>,
    now: Millis,
    time_scale: f64,
) {
    let after = *sent_through;
    for b in profile
        .series()
        .complete_minutes(now, prescale_engine::MINUTE_GRACE_MS, after)
    {
        forecasting.send(Update::Minute(b.clone()));
        *sent_through = Some(b.start);
    }
    let current = now - now % FINE_STEP_MS;
    let last = current.saturating_sub(FINE_STEP_MS);
    let (measured, demand) = if time_scale > 1.0 {
        // `--time-scale`: a 10 s bucket lasts a few wall milliseconds and holds a
        // handful of requests; the last five complete minutes are a steadier reading.
        const MINUTES: u64 = 5;
        let end = now - now % MINUTE_MS;
        let from = end.saturating_sub(MINUTES * MINUTE_MS);
        let work: u64 = profile
            .series()
            .minutes()
            .rev()
            .take_while(|b| b.start >= from)
            .filter(|b| b.start < end)
            .map(|b| b.total.work_us)
            .sum();
        (from..end, work as f64 / (MINUTES * MINUTE_MS * 1000) as f64)
    } else {
        let demand = profile
            .series()
            .fine()
            .rev()
            .find(|b| b.start == last)
            .map_or(0.0, |b| b.total.demand(FINE_STEP_MS));
        (last..current, demand)
    };
    forecasting.send(Update::Now {
        at: now,
        measured,
        demand,
    });
}

/// Opens the store and restores its history: the last day into the profile's series,
/// everything within retention returned for the forecaster (daily seasonality needs
/// two days, weekly two weeks).
fn open_store(
    cfg: &ProfilerConfig,
    profile: &mut Profile,
    now: Millis,
) -> (Option<Store>, Vec<Bucket>) {
    let Some(path) = cfg.store.path.as_ref() else {
        return (None, Vec::new());
    };
    match Store::open(path, now) {
        Ok(opened) => {
            if let Some((aside, reason)) = &opened.set_aside {
                tracing::warn!(path = %path.display(), aside = %aside.display(), %reason,
                    "store could not be read; kept it aside and started a fresh one");
                ::metrics::counter!(m::STORE_SET_ASIDE).increment(1);
            }
            let retention = cfg.store.retention.as_millis() as Millis;
            let history = match opened.store.load(now.saturating_sub(retention)) {
                Ok(rows) => {
                    tracing::info!(minutes = rows.len(), path = %path.display(), "store opened");
                    let day = now.saturating_sub(86_400_000);
                    profile
                        .series_mut()
                        .restore_minutes(rows.iter().filter(|b| b.start >= day).cloned());
                    rows
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store history unreadable");
                    Vec::new()
                }
            };
            (Some(opened.store), history)
        }
        Err(e) => {
            // Profiling degrades; proxying is unaffected.
            tracing::error!(error = %e,
                "store unavailable; series stay in memory only (retried at each flush)");
            ::metrics::counter!(m::STORE_WRITES, "result" => "failure").increment(1);
            (None, Vec::new())
        }
    }
}

/// Writes the unflushed minutes; false when the write failed (they stay unflushed).
fn flush(store: &Store, profile: &mut Profile, keep_from: Millis) -> bool {
    let result = store.write(&profile.unflushed_minutes(), keep_from);
    let label = if result.is_ok() { "success" } else { "failure" };
    ::metrics::counter!(m::STORE_WRITES, "result" => label).increment(1);
    match result {
        Ok(()) => {
            profile.mark_flushed();
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "store flush failed; will reopen the store and retry");
            false
        }
    }
}

/// Reopens the store after a failed flush (its history is already in memory). A store
/// that cannot be opened yet (still no space) is counted as a failed write and retried
/// at the next flush.
fn reopen_store(path: &std::path::Path, now: Millis) -> Option<Store> {
    match Store::open(path, now) {
        Ok(opened) => {
            if let Some((aside, reason)) = &opened.set_aside {
                tracing::warn!(path = %path.display(), aside = %aside.display(), %reason,
                    "store could not be reopened; kept it aside and started a fresh one");
                ::metrics::counter!(m::STORE_SET_ASIDE).increment(1);
            }
            tracing::info!(path = %path.display(), "store reopened");
            Some(opened.store)
        }
        Err(e) => {
            tracing::warn!(error = %e, "store still unavailable; will retry");
            ::metrics::counter!(m::STORE_WRITES, "result" => "failure").increment(1);
            None
        }
    }
}

/// Publishes profiler metrics. Signature ids are bounded (0..=16), and a signature
/// that leaves the model has its gauges zeroed rather than left stale.
fn export(
    profile: &Profile,
    recorder: &Recorder,
    fanout: &FanoutTable,
    exported: &mut BTreeSet<u32>,
    now: Millis,
) {
    ::metrics::counter!(m::PROFILER_SAMPLES).absolute(recorder.recorded());
    ::metrics::counter!(m::PROFILER_DROPPED).absolute(recorder.dropped());
    ::metrics::counter!(m::FANOUT_UNTRACKED).absolute(fanout.untracked());
    ::metrics::counter!(m::SIGNATURE_REFITS).absolute(profile.refits());
    ::metrics::counter!(m::PROFILER_REFUSED).absolute(profile.refused_count());
    if let Some(a) = profile.classifier_accuracy() {
        ::metrics::gauge!(m::CLASSIFIER_ACCURACY).set(a);
    }
    for (sig, (requests, work_us)) in profile.totals() {
        let id = sig.to_string();
        ::metrics::counter!(m::SIGNATURE_REQUESTS, "signature" => id.clone()).absolute(*requests);
        ::metrics::counter!(m::SIGNATURE_WORK, "signature" => id).absolute(work_us / 1_000_000);
    }
    let view = profile.view(now);
    ::metrics::gauge!(m::SIGNATURES).set(view.signatures.len() as f64);
    let current: BTreeSet<u32> = view.signatures.iter().map(|s| s.id).collect();
    for gone in exported.difference(&current) {
        let id = gone.to_string();
        ::metrics::gauge!(m::SIGNATURE_DEMAND, "signature" => id.clone()).set(0.0);
        ::metrics::gauge!(m::SIGNATURE_SHARE, "signature" => id.clone()).set(0.0);
        ::metrics::gauge!(m::SIGNATURE_FANOUT, "signature" => id.clone()).set(0.0);
        for q in ["0.5", "0.9", "0.99"] {
            ::metrics::gauge!(m::SIGNATURE_SERVICE_TIME, "signature" => id.clone(), "q" => q)
                .set(0.0);
        }
    }
    for s in &view.signatures {
        let id = s.id.to_string();
        ::metrics::gauge!(m::SIGNATURE_DEMAND, "signature" => id.clone()).set(s.demand);
        ::metrics::gauge!(m::SIGNATURE_SHARE, "signature" => id.clone()).set(s.share);
        ::metrics::gauge!(m::SIGNATURE_FANOUT, "signature" => id.clone()).set(s.mean_fanout);
        let cost = &s.service_time_seconds;
        // `quantile` is reserved for summaries: a gauge carrying it fails
        // `promtool check metrics`, so the level is the `q` label.
        for (q, v) in [("0.5", cost.p50), ("0.9", cost.p90), ("0.99", cost.p99)] {
            ::metrics::gauge!(m::SIGNATURE_SERVICE_TIME, "signature" => id.clone(), "q" => q)
                .set(v);
        }
    }
    *exported = current;
}

// === impl RequestProfile ===

impl RequestProfile {
    /// Where the request started, for service time.
    pub fn arrived_at(&self) -> Millis {
        self.at
    }

    /// The signature the arrival classifier expects, if the model has one.
    pub fn guess(&self) -> Option<u32> {
        self.guess
    }

    /// Records the tier admission put the request in (an arrival feature).
    pub fn set_tier(&mut self, tier: u8) {
        self.arrival.tier = tier;
    }

    /// Records the source as admission identified it: the hash its overrides are keyed
    /// by ([`prescale_policies::Admission::identity_hash`]), so a `source:<hash>`
    /// anomaly names exactly the requests a remediation applies to.
    pub fn set_source(&mut self, source: u64) {
        self.arrival.source = source;
    }
}

// === impl FanoutGuard ===

impl FanoutGuard {
    fn finish(&mut self) -> u32 {
        self.slot.take().map_or(0, |s| self.table.finish(s))
    }
}

impl Drop for FanoutGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

fn header<'a>(req: &'a Parts, name: &http::HeaderName) -> Option<&'a str> {
    req.headers.get(name)?.to_str().ok()
}
