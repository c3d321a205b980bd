//! Resource costs at the edge: a thread that reads the local service's CPU and memory
//! at every profiler tick, regresses them on the per-signature load, and publishes
//! per-signature costs and resource forecasts (`/v1/resources`, metrics).
//!
//! Nothing here is on the data path. The profiler thread hands over its per-signature
//! totals with a non-blocking send (a full channel drops the tick), and a source that
//! fails or hangs stalls only this thread.

mod export;
mod external;
mod source;
mod view;
mod window;

pub use external::{ExternalSource, RateToUsage};
pub use source::{SampleError, Source, Usage};
pub use view::ResourcesView;

use crate::config::ResourcesConfig;
use crate::forecasting::Forecasting;
use crate::profiling::Profiling;
use arc_swap::ArcSwap;
use prescale_policies::scale::ResourceNeed;
use prescale_profiler::resources::{CostModel, Costs, Load, Observation};
use prescale_profiler::sample::Millis;
use prescale_profiler::signature::SignatureId;
use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use export::describe;

/// Most intervals kept (each ≤ 18 loads): bounds memory (a few MB) and the fit (60 ms
/// for 7 200 intervals × 16 signatures, `cargo bench --profile dev --bench resources`).
pub const MAX_INTERVALS: usize = 7_200;

/// The source is read at most this often: with a shorter profiler tick, ticks in
/// between are skipped. Over a short interval a request's CPU often lands in the
/// interval after the one that counts it, and the counters' 10 ms resolution weighs
/// more: both pull the fitted costs toward zero (about 20 % low at 500 ms ticks, five
/// times too low at the demo's 100 ms).
const MIN_READ_INTERVAL: Duration = Duration::from_millis(800);

/// Per-signature (requests, work µs) since start.
pub type Totals = BTreeMap<SignatureId, (u64, u64)>;

/// The profiler's totals at one tick.
pub struct Tick {
    pub at: Millis,
    /// The same instant on the system clock (Unix ms), which platform timestamps
    /// are compared with (`at` is series time, faster in a demo).
    pub wall: Millis,
    pub totals: Totals,
    /// Request plus response body bytes per signature since start.
    pub bytes: BTreeMap<SignatureId, u64>,
}

/// Shared with the admin API.
pub struct Resources {
    pub view: ArcSwap<ResourcesView>,
}

// === impl Resources ===

impl Resources {
    /// Starts the sampler thread and asks the profiler for its ticks; `tick` is the
    /// profiler's, and sets how many intervals `cfg.window` holds.
    pub fn spawn(
        cfg: &ResourcesConfig,
        tick: Duration,
        profiling: &Arc<Profiling>,
        forecasting: Arc<Forecasting>,
        external: Option<Box<dyn ExternalSource>>,
    ) -> std::io::Result<Arc<Self>> {
        let source = Source::new(cfg, external);
        let me = Arc::new(Self {
            view: ArcSwap::from_pointee(ResourcesView::empty(source.name())),
        });
        // Two ticks of slack: a slow read skips ticks instead of queueing them.
        let (tx, rx): (SyncSender<Tick>, Receiver<Tick>) = std::sync::mpsc::sync_channel(2);
        profiling.feed_resources(tx);
        let read_every = tick.max(MIN_READ_INTERVAL).as_secs_f64();
        let cap = (cfg.window.as_secs_f64() / read_every).ceil() as usize;
        // Memory and fit time grow with the window: a day at 100 ms ticks would be
        // 864 000 intervals. Two hours at 1 s is plenty to separate the signatures.
        let cap = cap.min(MAX_INTERVALS);
        let sampler = Sampler {
            time_scale: profiling.time_scale().max(1.0),
            source,
            model: CostModel::new(cap),
            ring: window::TickRing::default(),
            profiling: profiling.clone(),
            forecasting,
            shared: me.clone(),
        };
        std::thread::Builder::new()
            .name("resources".into())
            .spawn(move || sampler.run(rx))?;
        Ok(me)
    }
}

struct Sampler {
    /// `run --time-scale` (1 outside the demo): the profiler's work totals are series
    /// time, stretched by it; CPU is read in wall time.
    time_scale: f64,
    source: Source,
    model: CostModel,
    /// Recent ticks, for readings over a platform's own window.
    ring: window::TickRing,
    profiling: Arc<Profiling>,
    forecasting: Arc<Forecasting>,
    shared: Arc<Resources>,
}

// === impl Sampler ===

impl Sampler {
    fn run(mut self, rx: Receiver<Tick>) {
        let name = self.source.name();
        let mut prev: Option<(Instant, Totals, BTreeMap<SignatureId, u64>)> = None;
        let mut source_io = None;
        let mut failing = false;
        let mut exported = std::collections::BTreeSet::new();
        let (mut samples, mut errors) = (0u64, 0u64);
        let mut last = None;
        // Platform readings waiting for the ticks to span their window, and the end
        // of the newest taken (a platform sample read twice is one row).
        let mut pending: VecDeque<Reading> = VecDeque::new();
        let mut last_end: Option<Millis> = None;
        // The costs as last fitted, when that fit started and how long it took, and
        // whether the window restarted since.
        let mut costs = Costs::default();
        let mut last_fit: Option<(Instant, Duration)> = None;
        let mut restarted = false;
        while let Ok(tick) = rx.recv() {
            let started = Instant::now();
            let at = tick.at;
            // Every tick goes into the ring (a platform's window spans them), read or not.
            self.ring.push(tick.wall, &tick.totals, &tick.bytes);
            if prev
                .as_ref()
                .is_some_and(|(t0, ..)| started.duration_since(*t0) < MIN_READ_INTERVAL)
            {
                continue;
            }
            match self.source.read() {
                Err(e) => {
                    errors += 1;
                    ::metrics::counter!(export::SAMPLE_ERRORS, "source" => name).increment(1);
                    // One warning per outage, not one per tick.
                    if !failing {
                        tracing::warn!(source = name, error = %e, "resource source failing");
                    } else {
                        tracing::debug!(source = name, error = %e, "resource source still failing");
                    }
                    failing = true;
                    prev = None;
                }
                Ok(usage) => {
                    if failing {
                        tracing::info!(source = name, "resource source recovered");
                    }
                    failing = false;
                    samples += 1;
                    ::metrics::counter!(export::SAMPLES, "source" => name).increment(1);
                    if let Some((t0, totals0, bytes0)) = &prev {
                        if tick.totals.keys().any(|id| !totals0.contains_key(id)) {
                            tracing::info!(
                                intervals = self.model.len(),
                                "new signature: resource cost window restarted"
                            );
                            self.model.clear();
                            restarted = true;
                            // Windows reaching back before the re-fit split the same
                            // requests differently: start the ticks over too.
                            self.ring.clear();
                            self.ring.push(tick.wall, &tick.totals, &tick.bytes);
                        }
                        let dt = started.duration_since(*t0).as_secs_f64();
                        source_io = usage.io_bytes.map(|b| b / dt.max(1e-3));
                        let own = usage.window.is_none();
                        if let Some(obs) =
                            observation(&tick, totals0, bytes0, &usage, dt, self.time_scale)
                                .filter(|_| own)
                        {
                            last = Some(obs.clone());
                            self.model.observe(obs);
                        }
                    }
                    if let (Some(window), Some(cpu_seconds)) = (usage.window, usage.cpu_seconds) {
                        if last_end.is_none_or(|end| window.1 > end) {
                            last_end = Some(window.1);
                            pending.push_back(Reading {
                                window,
                                cpu_seconds,
                                memory_bytes: usage.memory_bytes,
                            });
                            if pending.len() > MAX_PENDING {
                                pending.pop_front();
                            }
                        }
                    }
                    prev = Some((started, tick.totals, tick.bytes));
                }
            }
            // Readings whose window the ticks now span (a platform's sample may be a
            // little newer than the tick that triggered its read).
            while pending
                .front()
                .is_some_and(|r| self.ring.newest().is_some_and(|n| n >= r.window.1))
            {
                let Some(r) = pending.pop_front() else { break };
                if let Some(obs) = windowed(&r, &self.ring, at) {
                    last = Some(obs.clone());
                    self.model.observe(obs);
                }
            }
            let since = last_fit.map(|(at, took)| (started.duration_since(at), took));
            if refit_due(since, restarted) {
                let fit_started = Instant::now();
                costs = self.model.fit();
                last_fit = Some((fit_started, fit_started.elapsed()));
                restarted = false;
            }
            let view = view::build(view::Inputs {
                source: name,
                samples,
                errors,
                intervals: self.model.len(),
                last: last.as_ref(),
                source_io,
                costs: &costs,
                profile: &self.profiling.view.load(),
                forecast: &self.forecasting.forecast.load(),
                time_scale: self.time_scale,
            });
            export::export(&view, last.as_ref(), &mut exported);
            let r = &view.recommendation;
            self.forecasting.set_resource_need(ResourceNeed {
                cpu_cores: r.cpu_cores.as_ref().map(|c| c.upper_bound),
                memory_bytes: r.memory_bytes.as_ref().map(|c| c.upper_bound),
                // Set at each decision from the live tier admission.
                protected_cpu_cores: None,
            });
            ::metrics::gauge!(export::FIT_SECONDS).set(started.elapsed().as_secs_f64());
            self.shared.view.store(Arc::new(view));
        }
    }
}

/// The most of one core the refit may take: a refit waits until `1 / REFIT_SHARE`
/// times its last duration has passed since it started. A window of a few hundred
/// intervals refits at every tick; a full one (7 200 intervals × 16 signatures, 60 ms
/// in `cargo bench --profile dev --bench resources`) every 6 s instead of every tick.
const REFIT_SHARE: f64 = 0.01;

/// Whether to refit now, given the time since the last fit started and how long it
/// took (None: never fitted), and whether the window restarted since (a new
/// signature: the old costs are for other columns).
fn refit_due(since_last: Option<(Duration, Duration)>, restarted: bool) -> bool {
    restarted
        || since_last
            .is_none_or(|(elapsed, took)| elapsed.as_secs_f64() * REFIT_SHARE >= took.as_secs_f64())
}

/// Platform readings kept waiting for the ticks to span their window.
const MAX_PENDING: usize = 8;

/// A platform's CPU over its own window, and memory at its end.
struct Reading {
    window: (Millis, Millis),
    cpu_seconds: f64,
    memory_bytes: Option<f64>,
}

/// One interval from a platform reading and the sidecar's load over the same window;
/// None for a window too short or one the ticks kept do not span (before a re-fit).
fn windowed(r: &Reading, ring: &window::TickRing, at: Millis) -> Option<Observation> {
    let (from, to) = r.window;
    let dt = to.saturating_sub(from) as f64 / 1000.0;
    if dt < 0.05 {
        return None;
    }
    let w = ring.load(from, to)?;
    Some(Observation {
        at,
        cpu_cores: Some(r.cpu_seconds / dt),
        memory_bytes: r.memory_bytes,
        io_bytes_per_second: Some(w.network_bytes_per_second),
        load: w.load,
    })
}

/// One interval from two consecutive ticks and the usage between them. None for an
/// interval too short to measure or without a CPU reading. The network column is the
/// sidecar's own count of request and response body bytes: exact, and there for every
/// source (the sources' I/O counters miss socket `send`/`recv` or count disk).
fn observation(
    tick: &Tick,
    before: &Totals,
    bytes_before: &BTreeMap<SignatureId, u64>,
    usage: &Usage,
    dt: f64,
    time_scale: f64,
) -> Option<Observation> {
    let cpu = usage.cpu_seconds?;
    if dt < 0.05 {
        return None;
    }
    let load = tick
        .totals
        .iter()
        .map(|(sig, (r, w))| {
            let (r0, w0) = before.get(sig).copied().unwrap_or((0, 0));
            let load = Load {
                rate: r.saturating_sub(r0) as f64 / dt,
                // Work is series time (stretched by the time scale), dt wall time.
                concurrency: w.saturating_sub(w0) as f64 / 1e6 / dt / time_scale,
            };
            (*sig, load)
        })
        .collect();
    Some(Observation {
        at: tick.at,
        cpu_cores: Some(cpu / dt),
        memory_bytes: usage.memory_bytes,
        io_bytes_per_second: Some(network_bytes(&tick.bytes, bytes_before) / dt),
        load,
    })
}

/// Body bytes carried between two ticks, all signatures.
fn network_bytes(now: &BTreeMap<SignatureId, u64>, before: &BTreeMap<SignatureId, u64>) -> f64 {
    now.iter()
        .map(|(sig, b)| b.saturating_sub(before.get(sig).copied().unwrap_or(0)) as f64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refit_keeps_within_its_share_of_a_core() {
        let ms = Duration::from_millis;
        // Never fitted, or the window restarted: now.
        assert!(refit_due(None, false));
        assert!(refit_due(Some((ms(1), ms(60))), true));
        // A 0.4 ms fit: at every 1 s tick.
        assert!(refit_due(
            Some((ms(1000), Duration::from_micros(400))),
            false
        ));
        // A 60 ms fit: not before 6 s have passed since it started.
        assert!(!refit_due(Some((ms(1000), ms(60))), false));
        assert!(!refit_due(Some((ms(5999), ms(60))), false));
        assert!(refit_due(Some((ms(6000), ms(60))), false));
    }
}
