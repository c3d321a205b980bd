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

pub use external::{ExternalSource, RateToUsage};
pub use source::{SampleError, Source, Usage};
pub use view::ResourcesView;

use crate::config::ResourcesConfig;
use crate::forecasting::Forecasting;
use crate::profiling::Profiling;
use arc_swap::ArcSwap;
use prescale_policies::scale::ResourceNeed;
use prescale_profiler::resources::{CostModel, Load, Observation};
use prescale_profiler::sample::Millis;
use prescale_profiler::signature::SignatureId;
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use export::describe;

/// Most intervals kept (each ≤ 18 loads): bounds memory (a few MB) and the fit (33 ms
/// for 7 200 intervals × 18 signatures in a debug build).
pub const MAX_INTERVALS: usize = 7_200;

/// Per-signature (requests, work µs) since start.
pub type Totals = BTreeMap<SignatureId, (u64, u64)>;

/// The profiler's totals at one tick.
pub struct Tick {
    pub at: Millis,
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
        let cap = (cfg.window.as_secs_f64() / tick.as_secs_f64().max(0.1)).ceil() as usize;
        // Memory and fit time grow with the window: a day at 100 ms ticks would be
        // 864 000 intervals. Two hours at 1 s is plenty to separate the signatures.
        let cap = cap.min(MAX_INTERVALS);
        let sampler = Sampler {
            source,
            model: CostModel::new(cap),
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
    source: Source,
    model: CostModel,
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
        while let Ok(tick) = rx.recv() {
            let started = Instant::now();
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
                        }
                        let dt = started.duration_since(*t0).as_secs_f64();
                        source_io = usage.io_bytes.map(|b| b / dt.max(1e-3));
                        if let Some(obs) = observation(&tick, totals0, bytes0, &usage, dt) {
                            last = Some(obs.clone());
                            self.model.observe(obs);
                        }
                    }
                    prev = Some((started, tick.totals, tick.bytes));
                }
            }
            let costs = self.model.fit();
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
                concurrency: w.saturating_sub(w0) as f64 / 1e6 / dt,
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
