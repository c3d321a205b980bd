//! The engine: observations in, intents out. The series and forecasters
//! (`series.rs`), the scaling rule (`prescale_policies::scale::Scaler`, called as is)
//! and the pre-shed model (`preshed.rs`) behind one type with explicit time.

use crate::preshed::PreShedding;
use crate::series::{SeriesKey, StepJudge};
use crate::view::{ForecastSummary, ForecastView};
use crate::Millis;
use prescale_policies::admission::PreShedConfig;
use prescale_policies::scale::{
    LeadForecast, ResourceNeed, ScaleDecision, ScaleInput, Scaler, ScalingConfig, StepBand,
};
use prescale_profiler::forecast::{Accuracy, Forecast, ForecastParams, ForecastPoint, Forecaster};
use prescale_profiler::series::Bucket;
use prescale_profiler::ForecastConfig;
use std::ops::Range;
use std::time::Duration;

/// The state of the live admission a decision's pre-shed level is for.
#[derive(Clone, Debug)]
pub struct AdmissionState {
    pub preshed: PreShedConfig,
    /// Share of demand in tiers that may be shed (the admission's own estimate).
    pub sheddable_fraction: f64,
}

/// What a decision is made on, besides the minutes fed before it.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// Decision time (Unix ms live, trace ms in replay).
    pub at: Millis,
    /// Busy concurrency over the last complete 10 s: the reactive floor.
    pub demand: f64,
    /// The span `demand` averages (its 10 s bucket live). A forecast step it falls
    /// inside is left to the floor (`LeadForecast::over_steps`); empty: none is.
    pub measured: Range<Millis>,
    /// Forecast CPU and memory over the lead window (the resource rules).
    pub need: ResourceNeed,
    /// The start-up time a signal learned from readiness, once there is one.
    pub learned_startup: Option<Duration>,
    /// The live admission, when there is one: the pre-shed level is computed for it.
    pub admission: Option<AdmissionState>,
    /// Replicas the platform reports, when known. None (the sidecar and replay today):
    /// the engine's own last decision stands in (the platform converges to it).
    pub replicas: Option<u32>,
}

/// What the engine wants done after one decision.
#[derive(Clone, Debug)]
pub struct Intent {
    pub at: Millis,
    pub decision: ScaleDecision,
    /// The previous decision's desired replicas; None for the first one.
    pub previous: Option<u32>,
    pub current_demand: f64,
    /// The span current demand averaged (as observed).
    pub measured: Range<Millis>,
    /// The lead-window forecast the rule planned with (None: no forecast yet).
    pub forecast: Option<LeadForecast>,
    /// The total forecast over the lead window, as sent with a decision.
    pub summary: Option<ForecastSummary>,
    /// Replicas the CPU and memory rules alone ask for (when configured).
    pub by_resources: (Option<u32>, Option<u32>),
    /// The pre-shed level for the admission observed (None: no admission).
    pub preshed: Option<f64>,
}

/// The one decision engine (see the crate doc).
pub struct Engine {
    series: crate::series::Series,
    scaler: Scaler,
    preshed: PreShedding,
    /// The sidecar does not see the platform's replica count; its own last decision
    /// stands in for it (the platform converges to it).
    current: u32,
    previous: Option<u32>,
    /// Multiplies the forecast the rule plans with: 1 live; replay's headroom sweep.
    headroom: f64,
}

impl Engine {
    pub fn new(fc: ForecastConfig, scaling: ScalingConfig) -> Self {
        Self {
            series: crate::series::Series::new(fc, &scaling),
            preshed: PreShedding::new(&scaling),
            current: scaling.min_replicas,
            previous: None,
            scaler: Scaler::new(scaling),
            headroom: 1.0,
        }
    }

    /// Seasonal periods in steps, replacing the daily and weekly ones (short synthetic
    /// traces in replay's tests). Call before feeding anything.
    pub fn with_periods(mut self, periods: Vec<usize>) -> Self {
        self.series.params.periods = periods;
        self
    }

    /// Steps start at `origin` (Unix ms) plus whole steps instead of on the Unix step
    /// grid: replay puts them on its trace's first row, so that a step and a row of a
    /// 5-minute series are the same span. Call before feeding anything.
    pub fn with_grid_origin(mut self, origin: Millis) -> Self {
        self.series.grid_offset = origin % self.series.step_ms;
        self
    }

    /// Plans with `factor` × the forecast (replay's what-if sweep; never live).
    pub fn with_headroom(mut self, factor: f64) -> Self {
        self.headroom = factor;
        self
    }

    /// A completed minute (in order); returns whether the forecasts were updated.
    /// Each completed step is judged by `judge` against the forecast made before it.
    pub fn add_minute(&mut self, b: &Bucket, judge: &mut dyn StepJudge) -> bool {
        self.series.add_minute(b, judge)
    }

    /// Time has reached `now` (after every minute complete at `now` was fed): closes
    /// the pending step once nothing more can arrive for it (its end plus
    /// `MINUTE_GRACE_MS`), and, once a minute of live traffic was fed, feeds every
    /// whole step since the last one fed that ended with no minute at all as zero
    /// demand, and forecasts. A step is judged like any other; several at once (a
    /// process that stood still) are not. Returns whether the forecasts were
    /// updated. Before live traffic no idle step is fed: with none yet there is
    /// nothing to forecast, and a restored or warm-started forecast is kept until
    /// the first minute says the service is being sent requests (it then fills the
    /// steps between with zeros, as it always has).
    pub fn advance(&mut self, now: Millis, judge: &mut dyn StepJudge) -> bool {
        self.series.advance(now, judge)
    }

    /// A minute the input says nothing about (replay's gaps): see `Series`.
    pub fn add_unknown_minute(&mut self, start: Millis) -> bool {
        self.series.add_unknown_minute(start, &mut ())
    }

    /// Minutes restored from a store, oldest first: they train the models; only the
    /// last calibration window is forecast, and nothing is judged.
    pub fn restore(&mut self, rows: &[Bucket]) -> bool {
        self.series.restore(rows)
    }

    /// Forecast parameters and step, to build a forecaster for a warm start.
    pub fn params(&self) -> &ForecastParams {
        &self.series.params
    }

    pub fn step_ms(&self) -> Millis {
        self.series.step_ms
    }

    /// Seeds the total with a forecaster fed elsewhere (warm start), the start of the
    /// last step it saw and that step's demand.
    pub fn seed_total(&mut self, f: Forecaster, last_start: Millis, last: f64) -> bool {
        self.series.seed_total(f, last_start, last)
    }

    /// Forgets history of the series in `refits` before their shift (see `Refit`).
    pub fn restart(&mut self, refits: &[crate::Refit], end: Millis) {
        self.series.restart(refits, end);
    }

    /// Steps observed by a series so far.
    pub fn observed(&self, key: SeriesKey) -> Option<usize> {
        self.series.series.get(&key).map(Forecaster::observed)
    }

    /// Start of the last step fed.
    pub fn last_fed(&self) -> Option<Millis> {
        self.series.last_fed
    }

    /// A fresh forecast of one series from what it has seen.
    pub fn forecast_now(&mut self, key: SeriesKey) -> Option<Forecast> {
        self.series.series.get_mut(&key)?.forecast()
    }

    /// The total planned with and how it was reconciled (see `reconcile.rs`); None
    /// before the first live step.
    pub fn reconciled(&self) -> Option<&crate::Reconciled> {
        self.series.reconcile.latest()
    }

    /// The reconciliation's errors per source and horizon step over every step
    /// scored since start, and how often each source was planned with.
    pub fn reconcile_scores(&self) -> crate::RunScores {
        self.series.reconcile.run_scores()
    }

    /// `GET /v1/forecast`.
    pub fn view(&self) -> ForecastView {
        self.series.view()
    }

    pub fn level(&self) -> f64 {
        self.series.fc.level
    }

    /// The latest forecast of each series, its last step's demand, its accuracy.
    pub fn latest(&self) -> impl Iterator<Item = (SeriesKey, &Forecast, f64, Accuracy)> {
        self.series.latest.iter().map(|(k, (fc, last))| {
            let acc = self
                .series
                .series
                .get(k)
                .map(Forecaster::accuracy)
                .unwrap_or_default();
            (*k, fc, *last, acc)
        })
    }

    /// The points of `fc` within the lead time in force.
    pub fn lead_points<'a>(&self, fc: &'a Forecast) -> impl Iterator<Item = &'a ForecastPoint> {
        self.series.lead_points(fc)
    }

    pub fn scaling(&self) -> &ScalingConfig {
        self.scaler.config()
    }

    /// The total forecast over the lead window, as sent with a decision.
    pub fn summary(&self) -> Option<ForecastSummary> {
        let fc = self.series.planned()?;
        let end = self.lead_points(fc).last()?;
        Some(ForecastSummary {
            demand_upper: self.lead_points(fc).map(|p| p.upper).fold(0.0, f64::max),
            point: end.point,
            lower: end.lower,
            upper: end.upper,
            level: self.series.fc.level,
            horizon_seconds: end.step as u64 * self.series.step_ms / 1000,
        })
    }

    /// One scaling decision on what was fed so far, and the pre-shed level after it.
    pub fn decide(&mut self, obs: Observation) -> Intent {
        self.scaler.learned_startup(obs.learned_startup);
        // The lead window is the steps that overlap [now, now + lead] in time:
        // capacity asked for now is ready at now + lead, so the demand of the step
        // that instant falls in counts, however little of it the window covers. Step
        // s of the forecast starts s steps after the last one fed (a step that ended
        // before now, while its last minute is on its way, is not in the window); the
        // step under way that current demand (averaging `measured`) measures is left
        // to the floor.
        let step_ms = self.series.step_ms;
        let lead_ms = self.scaler.lead_time().as_millis() as Millis;
        let (now, end) = (obs.at, obs.at + lead_ms);
        let first = self.series.last_fed.map_or(0, |l| l + step_ms);
        let start_of = |step: usize| first + (step as Millis).saturating_sub(1) * step_ms;
        if self.series.last_fed.is_some() {
            // The step `end` falls in ([start, end) steps: one ending at it is not).
            self.series.lead_steps =
                (end.saturating_sub(first).saturating_sub(1) / step_ms + 1).max(1) as usize;
        }
        let forecast = self.series.planned().and_then(|fc| {
            let steps = self
                .lead_points(fc)
                .map(|p| {
                    let start = start_of(p.step);
                    StepBand {
                        start,
                        end: start + step_ms,
                        point: p.point,
                        upper: p.upper,
                    }
                })
                .filter(|s| s.end > now);
            LeadForecast::over_steps(
                steps,
                obs.measured.clone(),
                self.series.fc.level,
                fc.calibrated,
            )
        });
        let planned = forecast.map(|f| {
            if self.headroom == 1.0 {
                f
            } else {
                LeadForecast {
                    point: f.point * self.headroom,
                    upper: f.upper * self.headroom,
                    ..f
                }
            }
        });
        let decision = self.scaler.decide_with(
            ScaleInput {
                now: obs.at,
                current_replicas: obs.replicas.unwrap_or(self.current),
                current_demand: obs.demand,
                forecast: planned,
            },
            obs.need,
        );
        let by_resources = self.scaler.config().replicas_for_resources(obs.need);
        let summary = self.summary();
        // Pre-shed for the forecast or current demand, whichever is higher: a spike
        // larger than forecast counts too (no forecast: nothing is pre-shed).
        let upper = forecast.map(|f| f.upper.max(obs.demand));
        let preshed = match &obs.admission {
            Some(a) => Some(self.preshed.after_decision(
                &a.preshed,
                a.sheddable_fraction,
                decision.desired,
                upper,
                obs.at,
            )),
            None => {
                self.preshed.record(decision.desired, obs.at);
                None
            }
        };
        let previous = self.previous.replace(decision.desired);
        self.current = decision.desired;
        Intent {
            at: obs.at,
            decision,
            previous,
            current_demand: obs.demand,
            measured: obs.measured,
            forecast,
            summary,
            by_resources,
            preshed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MINUTE_GRACE_MS;
    use prescale_profiler::series::{Cell, MINUTE_MS};
    use std::collections::BTreeMap;

    const T0: Millis = 1_700_000_040_000;

    fn minute(i: u64, demand: f64) -> Bucket {
        let work_us = (demand * 60e6) as u64;
        Bucket {
            start: T0 + i * MINUTE_MS,
            total: Cell {
                requests: 100,
                work_us,
            },
            by_signature: BTreeMap::new(),
        }
    }

    fn engine() -> Engine {
        Engine::new(ForecastConfig::default(), ScalingConfig::default())
    }

    fn upper_after(e: &mut Engine, at: Millis) -> f64 {
        let i = e.decide(Observation {
            at,
            demand: 10.0,
            ..Observation::default()
        });
        i.forecast.expect("a forecast").upper
    }

    #[test]
    fn unknown_minutes_are_gaps_where_unreported_minutes_are_zero_demand() {
        // Two hours at 10, then half an hour the input knows nothing about, then 10.
        let (mut gap, mut quiet) = (engine(), engine());
        for i in 0..120 {
            gap.add_minute(&minute(i, 10.0), &mut ());
            quiet.add_minute(&minute(i, 10.0), &mut ());
        }
        for i in 120..150 {
            gap.add_unknown_minute(T0 + i * MINUTE_MS);
        }
        gap.add_minute(&minute(150, 10.0), &mut ());
        // The sidecar never reports a minute without traffic: it was zero demand.
        quiet.add_minute(&minute(150, 10.0), &mut ());
        assert_eq!(gap.observed(SeriesKey::Total), Some(151));
        assert_eq!(quiet.observed(SeriesKey::Total), Some(151));
        let at = T0 + 151 * MINUTE_MS;
        let (g, q) = (upper_after(&mut gap, at), upper_after(&mut quiet, at));
        // Across the gap the level holds; after 30 zeros the forecast has fallen.
        assert!(g > 9.0, "gap: upper {g}");
        assert!(q < g, "zeros {q} vs gap {g}");
    }

    /// The point forecast one step ahead of the total, and the view's origin.
    fn next_point(e: &Engine) -> (f64, Option<Millis>) {
        let v = e.view();
        let point = v.series["total"].points[0].point;
        (point, v.origin)
    }

    #[test]
    fn idle_steps_are_closed_on_the_clock_as_zeros_and_forecast() {
        let mut e = engine();
        for i in 0..120 {
            e.add_minute(&minute(i, 10.0), &mut ());
        }
        let (busy, origin) = next_point(&e);
        assert_eq!(origin, Some(T0 + 119 * MINUTE_MS));
        assert!(busy > 9.0, "{busy}");
        // Nothing arrives for ten minutes. Until a step's end plus the grace nothing
        // moves: a minute of it may still be on its way.
        let first_idle_end = T0 + 121 * MINUTE_MS;
        assert!(!e.advance(first_idle_end + MINUTE_GRACE_MS - 1, &mut ()));
        assert_eq!(e.observed(SeriesKey::Total), Some(120));
        let mut points = vec![busy];
        for k in 0..10 {
            let now = first_idle_end + k * MINUTE_MS + MINUTE_GRACE_MS;
            assert!(e.advance(now, &mut ()), "idle step {k} forecast");
            // Asked again at the same instant: nothing more to close.
            assert!(!e.advance(now + 1_000, &mut ()));
            let (point, origin) = next_point(&e);
            assert_eq!(origin, Some(T0 + (120 + k) * MINUTE_MS), "step {k}");
            points.push(point);
        }
        assert_eq!(e.observed(SeriesKey::Total), Some(130));
        let idle = *points.last().unwrap();
        assert!(
            idle < 0.5 * busy,
            "ten zeros after two hours at 10: {points:?}"
        );
        assert!(points.windows(2).all(|w| w[1] <= w[0]), "{points:?}");
        // Decisions plan with steps ahead of now, not with the last busy step's.
        let i = e.decide(Observation {
            at: first_idle_end + 10 * MINUTE_MS + MINUTE_GRACE_MS,
            demand: 0.0,
            ..Observation::default()
        });
        let f = i.forecast.expect("a forecast of the steps ahead");
        assert!(f.point < 0.5 * busy, "{f:?}");
    }

    #[test]
    fn a_step_closes_on_the_clock_exactly_when_its_end_and_the_grace_have_passed() {
        // Five-minute steps: a step with traffic in its first two minutes only.
        let fc = ForecastConfig {
            step: Duration::from_secs(300),
            ..ForecastConfig::default()
        };
        let mut e = Engine::new(fc, ScalingConfig::default()).with_grid_origin(T0);
        for i in 0..12 {
            e.add_minute(&minute(i, 4.0), &mut ());
        }
        let open = T0 + 10 * MINUTE_MS;
        assert_eq!(e.last_fed(), Some(T0 + 5 * MINUTE_MS), "step 3 is open");
        let end = open + 5 * MINUTE_MS;
        assert!(!e.advance(end, &mut ()));
        assert!(!e.advance(end + MINUTE_GRACE_MS - 1, &mut ()));
        assert_eq!(e.last_fed(), Some(T0 + 5 * MINUTE_MS));
        assert_eq!(e.observed(SeriesKey::Total), Some(2));
        assert!(e.advance(end + MINUTE_GRACE_MS, &mut ()));
        assert_eq!(e.last_fed(), Some(open));
        assert_eq!(e.observed(SeriesKey::Total), Some(3));
        // Two minutes of 4 in a five-minute step: its demand, not a zero.
        let last = e.view().series["total"].last;
        assert!((last - 1.6).abs() < 1e-9, "{last}");
        // A minute of it arriving now is too late: already fed, dropped.
        assert!(!e.add_minute(&minute(14, 4.0), &mut ()));
        assert_eq!(e.observed(SeriesKey::Total), Some(3));
    }

    #[test]
    fn nothing_is_fed_before_any_traffic() {
        let mut e = engine();
        for k in 0..100 {
            assert!(!e.advance(T0 + k * 3_600_000, &mut ()));
        }
        assert_eq!(e.last_fed(), None);
        assert_eq!(e.observed(SeriesKey::Total), None);
        assert!(e.view().series.is_empty());
        assert_eq!(e.view().origin, None);
    }

    #[test]
    fn restored_history_is_not_worn_down_by_idle_steps_before_live_traffic() {
        // Two hours restored from the store, then a restart into an hour without a
        // request: a pod not yet receiving traffic looks the same as an idle one.
        let rows: Vec<Bucket> = (0..120).map(|i| minute(i, 10.0)).collect();
        let mut e = engine();
        assert!(e.restore(&rows));
        let (restored, origin) = next_point(&e);
        for k in 0..60 {
            e.advance(T0 + (121 + k) * MINUTE_MS + MINUTE_GRACE_MS, &mut ());
        }
        assert_eq!(next_point(&e), (restored, origin));
        assert_eq!(e.observed(SeriesKey::Total), Some(120));
        // The first live minute fills the steps between with zeros (as it always
        // did); from then on idle steps close on the clock.
        e.add_minute(&minute(181, 10.0), &mut ());
        assert_eq!(e.observed(SeriesKey::Total), Some(182));
        assert!(e.advance(T0 + 183 * MINUTE_MS + MINUTE_GRACE_MS, &mut ()));
        assert_eq!(e.observed(SeriesKey::Total), Some(183));
    }

    #[test]
    fn a_step_closed_on_the_clock_inside_a_gap_stays_a_gap() {
        // Five-minute steps, an hour at 10; then a step whose first three minutes the
        // input knows nothing about and whose last two had no requests.
        let fc = ForecastConfig {
            step: Duration::from_secs(300),
            ..ForecastConfig::default()
        };
        let build = || Engine::new(fc.clone(), ScalingConfig::default()).with_grid_origin(T0);
        let (mut gap, mut quiet) = (build(), build());
        for i in 0..60 {
            gap.add_minute(&minute(i, 10.0), &mut ());
            quiet.add_minute(&minute(i, 10.0), &mut ());
        }
        for i in 60..63 {
            gap.add_unknown_minute(T0 + i * MINUTE_MS);
        }
        let now = T0 + 65 * MINUTE_MS + MINUTE_GRACE_MS;
        assert!(gap.advance(now, &mut ()));
        assert!(quiet.advance(now, &mut ()));
        assert_eq!(gap.last_fed(), quiet.last_fed());
        let (g, q) = (next_point(&gap).0, next_point(&quiet).0);
        // Across the gap the level holds; the quiet step was a zero.
        assert!(g > 9.0, "gap: {g}");
        assert!(q < g, "zero {q} vs gap {g}");
    }

    #[test]
    fn each_decision_chains_the_previous_and_sets_a_level_only_for_an_admission() {
        let mut e = engine();
        for i in 0..30 {
            e.add_minute(&minute(i, 4.0), &mut ());
        }
        let at = T0 + 30 * MINUTE_MS;
        let first = e.decide(Observation {
            at,
            demand: 4.0,
            ..Observation::default()
        });
        assert_eq!(first.previous, None);
        assert_eq!(first.preshed, None, "no admission, no level");
        assert!(first.summary.is_some() && first.forecast.is_some());
        let second = e.decide(Observation {
            at: at + 15_000,
            demand: 4.0,
            admission: Some(AdmissionState {
                preshed: PreShedConfig {
                    enabled: true,
                    ..PreShedConfig::default()
                },
                sheddable_fraction: 1.0,
            }),
            ..Observation::default()
        });
        assert_eq!(second.previous, Some(first.decision.desired));
        let level = second.preshed.expect("a level for the admission");
        assert!((0.0..=1.0).contains(&level), "{level}");
    }

    #[test]
    fn the_step_current_demand_is_measured_inside_is_left_to_the_floor() {
        // A 30 s start-up: a 45 s lead window, inside one 60 s step or across two.
        let scaling = ScalingConfig {
            startup_time: Duration::from_secs(30),
            learn_startup_time: false,
            ..ScalingConfig::default()
        };
        let mut e = Engine::new(ForecastConfig::default(), scaling);
        for i in 0..120 {
            e.add_minute(&minute(i, 4.0 + (i % 3) as f64 * 0.2), &mut ());
        }
        let step1 = e.last_fed().expect("steps fed") + e.step_ms();
        // Current demand read from a bucket that began before the step: the step's
        // band is the forecast.
        let i = e.decide(Observation {
            at: step1 + 5_000,
            demand: 4.0,
            measured: step1 - 5_000..step1 + 5_000,
            ..Observation::default()
        });
        let upper = i.forecast.map(|f| f.upper);
        assert!(upper.is_some_and(|u| u > 4.0), "{:?}", i.forecast);
        // Read from inside the step, with [now, now + lead] inside it too: the floor
        // plans it, the forecast adds nothing.
        let i = e.decide(Observation {
            at: step1 + 10_000,
            demand: 4.0,
            measured: step1..step1 + 10_000,
            ..Observation::default()
        });
        assert_eq!(i.forecast.map(|f| f.upper), Some(0.0), "{:?}", i.forecast);
        // Later in the step the window reaches into the next one: capacity asked for
        // now is ready inside it, so its band is planned.
        let i = e.decide(Observation {
            at: step1 + 25_000,
            demand: 4.0,
            measured: step1 + 10_000..step1 + 20_000,
            ..Observation::default()
        });
        let upper = i.forecast.map(|f| f.upper);
        assert!(upper.is_some_and(|u| u > 4.0), "{:?}", i.forecast);
    }

    #[test]
    fn steps_start_on_the_grid_origin() {
        // Five-minute steps; rows from :04 (the ELB trace's phase).
        let fc = ForecastConfig {
            step: Duration::from_secs(300),
            ..ForecastConfig::default()
        };
        let origin = T0;
        assert_eq!(origin % 300_000, 4 * MINUTE_MS);
        let mut e = Engine::new(fc, ScalingConfig::default()).with_grid_origin(origin);
        // Its first five minutes are one step (on the Unix grid they would straddle
        // two): it closes with its fifth minute and starts at the origin.
        for i in 0..5 {
            e.add_minute(&minute(i, 4.0), &mut ());
        }
        assert_eq!(e.last_fed(), Some(origin));
        assert_eq!(e.observed(SeriesKey::Total), Some(1));
    }

    #[test]
    fn a_spike_above_the_forecast_raises_the_preshed_level_but_no_forecast_sets_none() {
        let admission = || {
            Some(AdmissionState {
                preshed: PreShedConfig {
                    enabled: true,
                    ..PreShedConfig::default()
                },
                sheddable_fraction: 1.0,
            })
        };
        let spike = |e: &mut Engine, at: Millis| {
            // Demand at 4 asked for its replicas (taken as ready); then 60 arrives, far
            // above the forecast, before any replica asked for it can be ready.
            e.decide(Observation {
                at,
                demand: 4.0,
                admission: admission(),
                ..Observation::default()
            });
            e.decide(Observation {
                at: at + 15_000,
                demand: 60.0,
                admission: admission(),
                ..Observation::default()
            })
        };
        let mut e = engine();
        for i in 0..30 {
            e.add_minute(&minute(i, 4.0), &mut ());
        }
        let i = spike(&mut e, T0 + 30 * MINUTE_MS);
        let upper = i.forecast.expect("a forecast").upper;
        assert!(upper < 20.0, "the forecast did not see it coming: {upper}");
        let level = i.preshed.expect("a level");
        assert!(level > 0.3, "60 against the ready capacity: {level}");
        // Without a forecast nothing is pre-shed, whatever current demand is.
        let i = spike(&mut engine(), T0);
        assert!(i.forecast.is_none());
        assert_eq!(i.preshed, Some(0.0));
    }
}
