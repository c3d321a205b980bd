//! The predictive policy: the sidecar's decision engine (`prescale_engine::Engine`) on
//! trace time, fed as the sidecar's forecaster thread feeds it.
//!
//! Each minute of the trace goes to the engine once it has ended (plus the sidecar's
//! `MINUTE_GRACE_MS`); a minute without requests is not sent (the sidecar has no
//! bucket for it), and a minute the input has no data for goes as unknown, never as
//! zero demand. Every second, after the minutes due, the engine is advanced to the
//! trace's clock (`Engine::advance`, as the sidecar's forecaster on each `Now`): a
//! step that has ended with no minute is closed then as zero demand, so forecasts go
//! on through idle time as live. At each sync instant the
//! engine decides on demand over the last complete 10 s, as the sidecar decides on its
//! last 10 s bucket: replay's demand, the arrival rate averaged over `--resolution`
//! (a sparse log's 10 s of arrivals is Poisson noise, where a busy sidecar's 10 s of
//! busy concurrency is not). With it goes the span of arrivals the reading averages,
//! as the sidecar sends its bucket's: the engine leaves a forecast step that current
//! demand is measured inside to the floor. Demand is requests per second: a request counts
//! one second of work, so the engine's busy concurrency reads as a rate and
//! `capacity_per_replica` as requests per second per replica.
//!
//! A request log's minutes carry the profiler's per-signature split (the buckets the
//! sidecar's profiler hands its forecaster, see `Trace::minutes`), each signature's
//! work in the same unit, so the engine forecasts every signature and reconciles the
//! total (direct, bottom-up, combined) as live. What no signature holds (requests
//! before the first fit, and any the log's minute totals count beyond the buckets)
//! is the engine's unclassified remainder. A count series feeds the total only.

use super::pool::Sec;
use super::shed::Tiers;
use prescale_engine::{AdmissionState, Engine, Intent, Observation, MINUTE_GRACE_MS};
use prescale_policies::admission::PreShedConfig;
use prescale_policies::scale::ScalingConfig;
use prescale_profiler::series::{Bucket, Cell, MINUTE_MS};
use prescale_profiler::ForecastConfig;
use std::collections::BTreeMap;
use std::ops::Range;

type Millis = u64;

/// How the engine is built and what it is fed: shared by every run of the policy.
pub struct EngineSetup<'a> {
    pub forecast: ForecastConfig,
    pub scaling: ScalingConfig,
    /// `policies.admission.preshed` of the config (the default without `--config`).
    pub preshed: PreShedConfig,
    /// Seasonal periods in steps instead of daily and weekly (tests' short traces).
    pub periods: Option<Vec<usize>>,
    /// Unix seconds of trace second 0 on the engine's clock (`engine_start_unix`).
    pub start_unix: u64,
    /// Requests per second of the trace.
    pub arrivals: &'a [f64],
    /// Demand per second (arrivals averaged over the resolution).
    pub demand: &'a [f64],
    /// Seconds per aligned window `demand` is averaged over (see `Trace::demand`).
    pub resolution: Sec,
    /// Seconds from the start the input has no data for (`trace.gaps`).
    pub gaps: Vec<(Sec, Sec)>,
    /// The profiler's minute buckets of a request log, oldest first (`Trace::minutes`;
    /// empty for a count series).
    pub signatures: &'a [Bucket],
    /// The tiers and their mix: the sheddable share the pre-shed level is for.
    pub tiers: Option<&'a Tiers>,
}

/// One decision of the engine, as `decisions.csv` writes it.
#[derive(Clone, Debug)]
pub struct DecisionRow {
    /// Trace second of the decision.
    pub t: Sec,
    pub intent: Intent,
}

/// The minute buckets of a trace: (trace ms at which it is handed over, Unix ms of its
/// start, the bucket or None when mostly inside a gap).
pub type Minute = (Sec, Millis, Option<Bucket>);

/// Unix seconds the engine's clock gives trace second 0. A count series' rows are the
/// input's own intervals: its first row is put on the nearest minute (a shift of at
/// most 30 s, the same for every row), so that each of the engine's minute buckets,
/// 10 s readings and forecast steps lies inside one row, as a live sidecar's buckets
/// hold the very seconds they count. On the recorded clock a series whose rows start
/// at :42:53 has every minute straddle two rows, and replay would measure a blur of
/// two rows that no live sidecar sees. A request log keeps its clock: its times are
/// the requests' own, and the profiler cut its minute buckets on them.
pub fn engine_start_unix(trace: &super::trace::Trace) -> u64 {
    match trace.interval {
        0 => trace.start_unix,
        _ => (trace.start_unix + 30) / 60 * 60,
    }
}

impl EngineSetup<'_> {
    pub fn engine(&self, headroom: f64) -> Engine {
        // Steps start on the trace's first row (the nearest minute: the minutes are on
        // the Unix minute grid), as its rows and the demand windows do: on the Unix grid
        // a 5-minute series starting at :04 would have every row and every reading
        // straddle two steps, so no reading ever measures a step. The sidecar's steps
        // are on the Unix grid: its minutes are.
        let e = Engine::new(self.forecast.clone(), self.scaling.clone())
            .with_headroom(headroom)
            .with_grid_origin((self.start_unix + 30) / 60 * 60_000);
        match &self.periods {
            Some(p) => e.with_periods(p.clone()),
            None => e,
        }
    }

    /// Minutes on the Unix minute grid, as the sidecar's profiler hands them over.
    pub fn minutes(&self) -> Vec<Minute> {
        let n = self.arrivals.len() as u64;
        let first = self.start_unix / 60;
        let last = (self.start_unix + n).div_ceil(60);
        let mut unknown = vec![0u64; (last - first) as usize];
        for (start, seconds) in &self.gaps {
            for s in *start..start + seconds {
                if let Some(u) = unknown.get_mut(((self.start_unix + s) / 60 - first) as usize) {
                    *u += 1;
                }
            }
        }
        (first..last)
            .zip(unknown)
            .map(|(m, u)| {
                let (from, to) = (
                    (m * 60).saturating_sub(self.start_unix),
                    ((m + 1) * 60 - self.start_unix).min(n),
                );
                let requests = (2 * u < to - from).then(|| {
                    self.arrivals
                        .get(from as usize..to as usize)
                        .map_or(0.0, |w| w.iter().sum::<f64>())
                });
                (m, requests)
            })
            // The sidecar has no bucket for a minute without requests.
            .filter(|(_, requests)| *requests != Some(0.0))
            .map(|(m, requests)| {
                let start = m * MINUTE_MS;
                let split = self
                    .signatures
                    .binary_search_by_key(&start, |b| b.start)
                    .ok()
                    .and_then(|i| self.signatures.get(i));
                (
                    ((m + 1) * 60).saturating_sub(self.start_unix) * 1000 + MINUTE_GRACE_MS,
                    start,
                    requests.map(|n| bucket(start, n, split)),
                )
            })
            .collect()
    }

    /// Mean demand over the last complete 10 s (on the Unix grid) before `t`, and the
    /// arrivals it averages (Unix ms), as the sidecar reports its 10 s bucket: the
    /// window widened to the resolution windows whose mean each of its seconds holds.
    /// A forecast step is measured only by a reading as fine as the step (see
    /// `LeadForecast::over_steps`), so a coarse resolution leaves every step's band.
    pub fn demand_at(&self, t: Sec) -> Option<(Range<Millis>, f64)> {
        let end = (self.start_unix + t) / 10 * 10;
        let from = end.checked_sub(10)?.checked_sub(self.start_unix)?;
        let w = self.demand.get(from as usize..(from + 10) as usize)?;
        let r = self.resolution.max(1);
        let span = (from / r * r)..(from + 10).div_ceil(r) * r;
        let ms = |s: Sec| (self.start_unix + s) * 1000;
        Some((ms(span.start)..ms(span.end), w.iter().sum::<f64>() / 10.0))
    }

    /// The admission the pre-shed level is computed for at `t`: the config's pre-shed
    /// settings switched on (the shed table shows with and without), and the
    /// sheddable share of the last minute's demand.
    pub fn admission(&self, t: Sec) -> AdmissionState {
        AdmissionState {
            preshed: PreShedConfig {
                enabled: true,
                ..self.preshed.clone()
            },
            sheddable_fraction: self.tiers.map_or(1.0, |tiers| tiers.sheddable_fraction(t)),
        }
    }
}

/// A minute's bucket: one second of work per request, for the total (`requests`) and
/// for each signature of the profiler's bucket of that minute (`split`), if any.
pub fn bucket(start: Millis, requests: f64, split: Option<&Bucket>) -> Bucket {
    let by_signature = split.map_or_else(BTreeMap::new, |b| {
        b.by_signature
            .iter()
            .map(|(sig, c)| (*sig, request_work(c.requests)))
            .collect()
    });
    Bucket {
        start,
        total: Cell {
            requests: requests.round() as u64,
            work_us: (requests * 1e6).round() as u64,
        },
        by_signature,
    }
}

/// `n` requests as replay's work: one second each (see the module doc).
fn request_work(n: u64) -> Cell {
    Cell {
        requests: n,
        work_us: n.saturating_mul(1_000_000),
    }
}

/// Unix ms of trace second `t`: the engine's clock in replay.
pub fn unix_ms(setup: &EngineSetup, t: Sec) -> Millis {
    (setup.start_unix + t) * 1000
}

/// The engine's observation at trace second `t`, if a decision can be made then.
pub fn observation(setup: &EngineSetup, t: Sec) -> Option<Observation> {
    let (measured, demand) = setup.demand_at(t)?;
    Some(Observation {
        at: unix_ms(setup, t),
        measured,
        demand,
        admission: Some(setup.admission(t)),
        ..Observation::default()
    })
}
