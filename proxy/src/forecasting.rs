//! Forecasts and scaling decisions at the edge: a thread that feeds completed minute
//! buckets to the decision engine (`prescale_engine::Engine`: per-signature series,
//! forecasts, the scaling decision, the pre-shed level), asks it for a decision every
//! sync period, and carries its intents out (metrics, `/v1/forecast`, `/v1/scale`,
//! signals, the admission's pre-shed level). `prescale replay` runs the same engine.
//!
//! It runs apart from the profiler thread because model fits take up to a few hundred
//! milliseconds; nothing here is on the data path.

use crate::anomalies::{Anomalies, Refit};
use crate::clock::Clock;
use crate::metrics as m;
use crate::signals::{Decision, DecisionSink, NoSignals, SentSignal};
use crate::tiers::LiveTiers;
use arc_swap::ArcSwap;
use prescale_engine::{Engine, Intent, Observation, Source, StepJudge};
pub use prescale_engine::{ForecastView, PointView, SeriesForecast};
use prescale_policies::scale::{ResourceNeed, ScaleDecision, ScalingConfig};
use prescale_profiler::forecast::{ForecastPoint, Forecaster};
use prescale_profiler::sample::Millis;
use prescale_profiler::series::Bucket;
use prescale_profiler::ForecastConfig;
use serde::Serialize;
use std::ops::Range;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Seeds the total forecast from history kept elsewhere (Prometheus, in
/// `prescale-control`) when the store brings none. Runs once, on the forecaster thread.
pub trait WarmStart: Send {
    /// A forecaster built with `make` and fed the history before `now`, with the start
    /// of the last step fed and that step's demand; None for a cold start.
    fn seed(
        self: Box<Self>,
        now: Millis,
        step_ms: Millis,
        make: &mut dyn FnMut() -> Forecaster,
    ) -> Option<(Forecaster, Millis, f64)>;
}

/// What the profiler thread sends.
pub enum Update {
    /// A completed minute bucket (in order; restored history first).
    Minute(Bucket),
    /// Minutes restored from the store at start, oldest first, in one message: the
    /// store may hold two weeks (20 160 minutes), more than the channel holds.
    History(Vec<Bucket>),
    /// Total demand over the last complete 10 s bucket (`measured`), for the
    /// reactive floor. Sent after every minute complete at `at`: the engine closes
    /// on the clock the steps no minute can reach any more (idle ones as zeros).
    Now {
        at: Millis,
        measured: Range<Millis>,
        demand: f64,
    },
}

/// `GET /v1/scale`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScaleView {
    pub at: Option<Millis>,
    pub decision: Option<ScaleDecision>,
    pub current_demand: f64,
    pub forecast_upper: Option<f64>,
    pub capacity_per_replica: f64,
    pub target_utilization: f64,
    /// The last signal deliveries (webhook), newest first; filled in when read.
    pub last_signals: Vec<SentSignal>,
    /// Replica start-up time learned from readiness (the `kubernetes` signal); filled
    /// in when read. With `scaling.learn_startup_time` the decision plans with it.
    pub learned_startup: Option<crate::signals::startup::LearnedStartup>,
    /// The in-place resize (`signals.resize`): last plan, node room, reason; filled
    /// in when read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize: Option<crate::signals::ResizeStatus>,
}

/// Shared with the admin API and the profiler thread.
pub struct Forecasting {
    tx: SyncSender<Update>,
    pub forecast: ArcSwap<ForecastView>,
    pub scale: ArcSwap<ScaleView>,
    /// Where decisions go besides the metrics.
    pub signals: Arc<dyn DecisionSink>,
    /// The live tier admission, whose pre-shed level follows each decision.
    tiers: Option<LiveTiers>,
    /// Forecast CPU and memory over the lead window, from `resources` (the CPU and
    /// memory rules of the scaling decision).
    resource_need: std::sync::Mutex<ResourceNeed>,
}

// === impl Forecasting ===

impl Forecasting {
    /// Starts the forecasting thread, with no signals besides the metrics and no
    /// anomaly detection.
    pub fn spawn(fc: ForecastConfig, scaling: ScalingConfig) -> std::io::Result<Arc<Self>> {
        Self::spawn_with(
            fc,
            scaling,
            Arc::new(NoSignals),
            None,
            Anomalies::disabled(),
            Clock::system(),
            None,
        )
    }

    /// Starts the forecasting thread; decisions also go to `signals`, when the store
    /// brings no history `warm_start` seeds the total forecast, and each closed step is
    /// judged by `anomalies` against the forecast made before it.
    pub fn spawn_with(
        fc: ForecastConfig,
        scaling: ScalingConfig,
        signals: Arc<dyn DecisionSink>,
        warm_start: Option<Box<dyn WarmStart>>,
        anomalies: Arc<Anomalies>,
        clock: Clock,
        tiers: Option<LiveTiers>,
    ) -> std::io::Result<Arc<Self>> {
        let (me, driver, rx) = Self::build(fc, scaling, signals, warm_start, anomalies, tiers);
        std::thread::Builder::new()
            .name("forecaster".into())
            .spawn(move || run(driver, rx, clock))?;
        Ok(me)
    }

    /// The shared state and its driver, without the thread: the caller feeds the
    /// driver itself (`tests/engine_agreement.rs` checks the sidecar's driver against
    /// `prescale replay` this way). Updates sent through [`Forecasting::send`] are lost.
    pub fn manual(fc: ForecastConfig, scaling: ScalingConfig) -> (Arc<Self>, Driver) {
        let (me, driver, _) = Self::build(
            fc,
            scaling,
            Arc::new(NoSignals),
            None,
            Anomalies::disabled(),
            None,
        );
        (me, driver)
    }

    fn build(
        fc: ForecastConfig,
        scaling: ScalingConfig,
        signals: Arc<dyn DecisionSink>,
        warm_start: Option<Box<dyn WarmStart>>,
        anomalies: Arc<Anomalies>,
        tiers: Option<LiveTiers>,
    ) -> (Arc<Self>, Driver, Receiver<Update>) {
        // A day of minutes fits; beyond that the oldest updates are dropped.
        let (tx, rx) = std::sync::mpsc::sync_channel(1440);
        let me = Arc::new(Self {
            tx,
            forecast: ArcSwap::from_pointee(ForecastView::default()),
            scale: ArcSwap::from_pointee(ScaleView::default()),
            signals,
            tiers,
            resource_need: std::sync::Mutex::new(ResourceNeed::default()),
        });
        let driver = Driver {
            shared: me.clone(),
            engine: Engine::new(fc, scaling),
            warm_start,
            anomalies,
            now_demand: None,
        };
        (me, driver, rx)
    }

    /// `GET /v1/scale`: the last decision and the last signal deliveries.
    pub fn scale_view(&self) -> ScaleView {
        let mut view = (**self.scale.load()).clone();
        view.last_signals = self.signals.recent();
        view.learned_startup = self.signals.learned_startup();
        view.resize = self.signals.resize_status();
        view
    }

    /// The resource sampler's latest forecast need, for the next decision.
    pub fn set_resource_need(&self, need: ResourceNeed) {
        if let Ok(mut g) = self.resource_need.lock() {
            *g = need;
        }
    }

    /// Never blocks the profiler thread: a full queue drops the update.
    pub fn send(&self, u: Update) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(u) {
            ::metrics::counter!(m::FORECAST_UPDATES_DROPPED).increment(1);
        }
    }
}

/// Feeds the engine and carries its intents out; owned by the forecaster thread.
pub struct Driver {
    shared: Arc<Forecasting>,
    engine: Engine,
    warm_start: Option<Box<dyn WarmStart>>,
    /// Judges each live step (rate anomalies) and may restart a series.
    anomalies: Arc<Anomalies>,
    /// The newest total demand over a complete 10 s bucket, and that bucket.
    now_demand: Option<(Millis, Range<Millis>, f64)>,
}

/// The forecaster thread: updates as they come, a decision every sync period.
fn run(mut driver: Driver, rx: Receiver<Update>, clock: Clock) {
    // A series-time period (`--time-scale` shortens the wait).
    let sync = clock.wall(driver.engine.scaling().sync_period);
    let mut next_sync = clock.instant() + sync;
    loop {
        let wait = next_sync.saturating_duration_since(clock.instant());
        match rx.recv_timeout(wait) {
            Ok(u) => driver.update(u),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if clock.instant() >= next_sync {
            next_sync = clock.instant() + sync;
            driver.sync();
        }
    }
}

/// The sidecar's anomaly handling as the engine's judge of each step.
struct Judge<'a>(&'a Anomalies);

impl StepJudge for Judge<'_> {
    fn judge(
        &mut self,
        end: Millis,
        subject: &str,
        actual: f64,
        expected: &ForecastPoint,
    ) -> Vec<Refit> {
        self.0.observe_rate(end, subject, actual, expected)
    }
}

// === impl Driver ===

impl Driver {
    /// One update from the profiler thread.
    pub fn update(&mut self, u: Update) {
        let updated = match u {
            Update::History(rows) => {
                // The store was not empty: there is nothing to warm-start.
                self.warm_start = None;
                self.engine.restore(&rows)
            }
            Update::Minute(b) => {
                // The profiler sends restored history before anything else.
                self.warm_start = None;
                self.engine.add_minute(&b, &mut Judge(&self.anomalies))
            }
            Update::Now {
                at,
                measured,
                demand,
            } => {
                self.now_demand = Some((at, measured, demand));
                let seeded = match self.warm_start.take() {
                    Some(source) => self.warm_start(source, at),
                    None => false,
                };
                // The profiler sent every minute complete at `at` before this: steps
                // that can no longer receive one close now, idle ones as zeros.
                seeded | self.engine.advance(at, &mut Judge(&self.anomalies))
            }
        };
        if updated {
            self.shared.forecast.store(Arc::new(self.engine.view()));
            self.export();
        }
    }

    /// Seeds the total forecast from Prometheus history before any live step (see
    /// `WarmStart`); returns whether a forecast was made.
    fn warm_start(&mut self, source: Box<dyn WarmStart>, now: Millis) -> bool {
        let params = self.engine.params().clone();
        match source.seed(now, self.engine.step_ms(), &mut || {
            Forecaster::new(params.clone())
        }) {
            Some((f, last_start, last)) => self.engine.seed_total(f, last_start, last),
            None => false,
        }
    }

    /// The sync period's decision (none before the first demand report): published to
    /// `/v1/scale`, the metrics and the signals, and the pre-shed level set on the live
    /// admission. Returns the engine's intent.
    pub fn sync(&mut self) -> Option<Intent> {
        let (at, measured, demand) = self.now_demand.clone()?;
        let shared = self.shared.clone();
        let live = crate::tiers::admission_state(shared.tiers.as_ref());
        // The bridge covers non-sheddable tiers' CPU first: their share of demand as
        // the live admission estimates it.
        let need = shared
            .resource_need
            .lock()
            .map(|g| *g)
            .unwrap_or_default()
            .with_sheddable_share(live.as_ref().map(|(_, s)| s.sheddable_fraction));
        let intent = self.engine.decide(Observation {
            at,
            measured,
            demand,
            need,
            // The start-up time learned from readiness, once there is one.
            learned_startup: shared
                .signals
                .learned_startup()
                .and_then(|l| Duration::try_from_secs_f64(l.seconds).ok()),
            admission: live.as_ref().map(|(_, state)| state.clone()),
            // The sidecar reads no cluster API: its own last decision stands in.
            replicas: None,
        });
        if let (Some((policy, _)), Some(level)) = (&live, intent.preshed) {
            crate::tiers::apply_preshed(policy, level);
        }
        let d = &intent.decision;
        decision_metrics(&intent);
        shared.signals.publish(&Decision {
            desired: d.desired,
            previous: intent.previous,
            reason: d.reason,
            lead_time_seconds: d.lead_time_seconds,
            forecast: intent.summary.clone(),
            current_demand: demand,
            at,
            resources: need,
        });
        let cfg = self.engine.scaling();
        shared.scale.store(Arc::new(ScaleView {
            at: Some(at),
            decision: Some(*d),
            current_demand: demand,
            forecast_upper: intent.forecast.map(|f| f.upper),
            capacity_per_replica: cfg.capacity_per_replica,
            target_utilization: cfg.target_utilization,
            last_signals: Vec::new(),
            learned_startup: None,
            resize: None,
        }));
        Some(intent)
    }

    /// The engine this driver feeds.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Publishes forecast gauges: each series' point and bounds per horizon step, and
    /// its accuracy. Labels: series (`total` or a signature id, ≤ 17 values),
    /// `q` (the point as 0.5 and the interval bounds as their quantiles; `quantile` is
    /// reserved for summaries), horizon (≤ horizon_steps values).
    fn export(&self) {
        let e = &self.engine;
        let level = e.level();
        let lo = format!("{}", ((1.0 - level) / 2.0 * 1000.0).round() / 1000.0);
        let hi = format!("{}", ((1.0 + level) / 2.0 * 1000.0).round() / 1000.0);
        let step_ms = e.step_ms();
        let planned = e.reconciled().map(|r| &r.planned);
        for (key, fc, _, acc) in e.latest() {
            let sig = key.label();
            for p in &fc.points {
                let horizon = format!("{}s", p.step as u64 * step_ms / 1000);
                for (q, v) in [
                    ("0.5", p.point),
                    (lo.as_str(), p.lower),
                    (hi.as_str(), p.upper),
                ] {
                    ::metrics::gauge!(m::FORECAST_DEMAND, "signature" => sig.clone(), "q" => q.to_string(), "horizon" => horizon.clone()).set(v);
                }
            }
            // The whole lead window in one series: what the scaling rule uses, and what
            // an HPA External metric or a KEDA query sums across the fleet.
            // For the total that is the reconciled forecast, not the direct one.
            let lead = match planned {
                Some(p) if sig == "total" => p,
                _ => fc,
            };
            let max = |f: fn(&ForecastPoint) -> f64| e.lead_points(lead).map(f).fold(0.0, f64::max);
            for (q, v) in [
                ("0.5", max(|p| p.point)),
                (lo.as_str(), max(|p| p.lower)),
                (hi.as_str(), max(|p| p.upper)),
            ] {
                ::metrics::gauge!(m::FORECAST_DEMAND, "signature" => sig.clone(), "q" => q.to_string(), "horizon" => "lead").set(v);
            }
            if let Some(Some(r)) = acc.relative_mae.last() {
                ::metrics::gauge!(m::FORECAST_ERROR, "signature" => sig.clone()).set(*r);
            }
            if let Some(c) = acc.coverage {
                ::metrics::gauge!(m::FORECAST_COVERAGE, "signature" => sig.clone()).set(c);
            }
        }
        // The total planned with: which source at each horizon step, and each source's
        // error over its window. Labels: source (≤ 4 values) × horizon.
        if let Some(r) = e.reconciled() {
            let s = &r.choice;
            for (i, chosen) in s.chosen.iter().enumerate() {
                let horizon = format!("{}s", (i as u64 + 1) * step_ms / 1000);
                for source in Source::ALL {
                    let on = if *chosen == source { 1.0 } else { 0.0 };
                    ::metrics::gauge!(m::FORECAST_TOTAL_SOURCE, "source" => source.label(), "horizon" => horizon.clone()).set(on);
                }
                for (source, score) in [
                    (Source::Direct.label(), &s.errors.direct),
                    (Source::BottomUp.label(), &s.errors.bottom_up),
                    (Source::Combined.label(), &s.errors.combined),
                    ("planned", &s.errors.planned),
                ] {
                    if let Some(Some(mae)) = score.mae.get(i) {
                        ::metrics::gauge!(m::FORECAST_TOTAL_ERROR, "source" => source, "horizon" => horizon.clone()).set(*mae);
                    }
                }
            }
        }
    }
}

/// The decision's gauges and counter.
fn decision_metrics(intent: &Intent) {
    let d = &intent.decision;
    let (cpu, memory) = intent.by_resources;
    for (rule, n) in [("cpu", cpu), ("memory", memory)] {
        if let Some(n) = n {
            ::metrics::gauge!(m::DESIRED_REPLICAS_BY_RULE, "rule" => rule).set(f64::from(n));
        }
    }
    ::metrics::gauge!(m::DESIRED_REPLICAS).set(f64::from(d.desired));
    ::metrics::gauge!(m::DESIRED_REPLICAS_BY_RULE, "rule" => "predictive")
        .set(f64::from(d.predictive));
    ::metrics::gauge!(m::DESIRED_REPLICAS_BY_RULE, "rule" => "reactive").set(f64::from(d.reactive));
    ::metrics::gauge!(m::DEMAND).set(intent.current_demand);
    let reason = serde_json::to_value(d.reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    ::metrics::counter!(m::SCALE_DECISIONS, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AnomaliesConfig;
    use prescale_engine::SeriesKey;
    use prescale_profiler::anomaly::AnomalyConfig;
    use prescale_profiler::anomaly::TOTAL;
    use prescale_profiler::series::{Cell, MINUTE_MS};
    use std::collections::BTreeMap;

    fn minute(i: u64, demand: f64) -> Bucket {
        let work_us = (demand * 60e6) as u64;
        Bucket {
            start: 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS + i * MINUTE_MS,
            total: Cell {
                requests: 100,
                work_us,
            },
            by_signature: BTreeMap::from([(
                1,
                Cell {
                    requests: 100,
                    work_us,
                },
            )]),
        }
    }

    /// The sidecar's anomaly handling with its defaults, and an engine with its own.
    fn judged_engine() -> (Arc<Anomalies>, Engine) {
        let anomalies = Anomalies::start(
            &AnomalyConfig::default(),
            &AnomaliesConfig::default(),
            Vec::new(),
            None,
        );
        let engine = Engine::new(ForecastConfig::default(), ScalingConfig::default());
        (anomalies, engine)
    }

    #[test]
    fn each_step_is_judged_against_the_forecast_before_it_and_a_shift_restarts_the_model() {
        let (anomalies, mut st) = judged_engine();
        let mut judge = Judge(&anomalies);
        // Two hours of demand around 4 with white noise (calibrates the intervals).
        let noise = |i: u64| {
            let x = i
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 33) % 1000) as f64 / 1000.0 - 0.5
        };
        for i in 0..120 {
            st.add_minute(&minute(i, 4.0 + noise(i)), &mut judge);
        }
        let v = anomalies.response().view;
        assert_eq!(v.raised_total["rate"], 0, "{v:?}");
        // Demand climbs 3 a minute for 20 minutes, faster than any model follows
        // between fits: first a rate anomaly on the total and the signature, then a
        // confirmed shift, and the forecasters restart from it.
        for i in 120..140 {
            st.add_minute(
                &minute(i, 4.0 + 3.0 * (i - 119) as f64 + noise(i)),
                &mut judge,
            );
        }
        let v = anomalies.response().view;
        assert_eq!(v.raised_total["rate"], 2, "total and signature 1: {v:?}");

        // A confirmed shift that began 5 steps ago: the total's forecaster keeps only
        // those steps, the signature's keeps its history.
        let end = st.last_fed().unwrap() + st.step_ms();
        // The climb may already have restarted the signature's forecaster (a shift
        // confirmed on it); whatever it holds now, restarting the total leaves it be.
        let signature_before = st.observed(SeriesKey::Signature(1)).unwrap();
        let refit = Refit {
            subject: TOTAL.into(),
            since: end - 5 * st.step_ms(),
        };
        st.restart(&[refit], end);
        assert_eq!(st.observed(SeriesKey::Total), Some(5));
        assert_eq!(st.observed(SeriesKey::Signature(1)), Some(signature_before));
        let fc = st.forecast_now(SeriesKey::Total).unwrap();
        assert!(fc.points[0].point > 40.0, "{fc:?}");
    }

    #[test]
    fn idle_steps_closed_on_the_clock_are_judged_once_not_in_a_restart_loop() {
        let (anomalies, mut st) = judged_engine();
        let mut judge = Judge(&anomalies);
        let noise = |i: u64| ((i * 7919) % 100) as f64 / 100.0 - 0.5;
        for i in 0..120 {
            st.add_minute(&minute(i, 4.0 + noise(i)), &mut judge);
        }
        assert_eq!(anomalies.response().view.raised_total["rate"], 0);
        // Then six hours without a request, the clock ticking every 10 s as the
        // profiler's `Now` does.
        let first = minute(120, 0.0).start;
        let grace = prescale_engine::MINUTE_GRACE_MS;
        let mut restarts = 0;
        let mut observed = st.observed(SeriesKey::Total).unwrap();
        // The sidecar's judge, counting the steps it is asked about.
        struct Counted<'a>(Judge<'a>, usize);
        impl StepJudge for Counted<'_> {
            fn judge(
                &mut self,
                end: Millis,
                subject: &str,
                actual: f64,
                expected: &ForecastPoint,
            ) -> Vec<Refit> {
                self.1 += 1;
                self.0.judge(end, subject, actual, expected)
            }
        }
        let mut judge = Counted(judge, 0);
        for tick in 0..=6 * 360 {
            st.advance(first + tick * 10_000 + grace, &mut judge);
            let now = st.observed(SeriesKey::Total).unwrap();
            restarts += usize::from(now < observed);
            observed = now;
        }
        assert_eq!(st.last_fed(), Some(first + (6 * 60 - 1) * MINUTE_MS));
        // The drop to zero is real: every idle step of both series (total, signature
        // 1) is judged once calibrated, as a busy one would be; at most one anomaly
        // of each kind and one restart per series come of the whole idle time.
        assert!(judge.1 >= 2 * 300, "{} judgements", judge.1);
        let v = anomalies.response().view;
        assert!(v.raised_total.values().all(|n| *n <= 2), "{v:?}");
        assert!(restarts <= 1, "{restarts} restarts of the total");
        assert!(v.refits_requested <= 2, "{v:?}");
        // And the forecast is what six hours of nothing say.
        let fc = st.forecast_now(SeriesKey::Total).unwrap();
        assert!(fc.points[0].point < 0.5, "{fc:?}");
    }

    /// History as a Prometheus warm start loads it: `steps` steps of `demand`, the
    /// last ending a minute before the first `Now`.
    struct Steady {
        steps: u64,
        demand: f64,
    }

    impl WarmStart for Steady {
        fn seed(
            self: Box<Self>,
            now: Millis,
            step_ms: Millis,
            make: &mut dyn FnMut() -> Forecaster,
        ) -> Option<(Forecaster, Millis, f64)> {
            let mut f = make();
            for i in 0..self.steps {
                f.observe(self.demand + if i % 2 == 0 { 0.2 } else { -0.2 });
            }
            let last_start = now - now % step_ms - 2 * step_ms;
            Some((f, last_start, self.demand))
        }
    }

    /// A warm-started sidecar that gets no traffic yet (a new pod not in the
    /// endpoints, or the profiler off) keeps the seeded forecast through idle time;
    /// the clock closes steps as zeros only once a live minute was fed.
    #[test]
    fn a_warm_started_forecast_is_not_worn_down_by_the_clock_before_live_traffic() {
        let (shared, mut driver) =
            Forecasting::manual(ForecastConfig::default(), ScalingConfig::default());
        driver.warm_start = Some(Box::new(Steady {
            steps: 240,
            demand: 6.0,
        }));
        let first = minute(0, 0.0).start + MINUTE_MS / 2;
        let now = |tick: u64| Update::Now {
            at: first + tick * 10_000,
            measured: 0..0,
            demand: 0.0,
        };
        driver.update(now(0));
        let seeded = (**shared.forecast.load()).clone();
        let point = |v: &ForecastView| {
            let v = serde_json::to_value(v).unwrap();
            let origin = v["origin"].clone();
            (v["series"]["total"]["points"][0]["point"].as_f64(), origin)
        };
        let (p0, origin0) = point(&seeded);
        assert!(p0.is_some_and(|p| (p - 6.0).abs() < 1.0), "{p0:?}");
        // Two idle hours of the profiler's 10 s clock: nothing moves.
        for tick in 1..=720 {
            driver.update(now(tick));
        }
        assert_eq!(point(&shared.forecast.load()), (p0, origin0.clone()));
        // One live minute, then an idle hour: steps close as zeros and the forecast
        // falls.
        let live = (first + 720 * 10_000) / MINUTE_MS - minute(0, 0.0).start / MINUTE_MS;
        driver.update(Update::Minute(minute(live, 6.0)));
        for tick in 727..=1_086 {
            driver.update(now(tick));
        }
        let (p1, origin1) = point(&shared.forecast.load());
        assert_ne!(origin1, origin0);
        assert!(p1.is_some_and(|p| p < 3.0), "{p1:?}");
    }

    #[test]
    fn the_forecast_view_reports_the_direct_and_bottom_up_totals_and_the_choice() {
        let (shared, mut driver) =
            Forecasting::manual(ForecastConfig::default(), ScalingConfig::default());
        // Signature 1 holds half the work; the rest is unclassified.
        for i in 0..90 {
            let mut b = minute(i, 2.0 + (i % 5) as f64);
            b.total.work_us *= 2;
            driver.update(Update::Minute(b));
        }
        let v = serde_json::to_value(&**shared.forecast.load()).unwrap();
        let total = &v["total"];
        let steps = v["horizon_steps"].as_u64().unwrap() as usize;
        for key in ["chosen", "direct_weight", "planned", "bottom_up"] {
            assert_eq!(
                total[key].as_array().map(Vec::len),
                Some(steps),
                "{key}: {total}"
            );
        }
        for source in ["direct", "bottom_up", "combined", "planned"] {
            let mae = total["errors"][source]["mae"].as_array().unwrap();
            assert!(
                mae.iter().all(|m| m.as_f64().is_some()),
                "{source}: {total}"
            );
        }
        assert!(total["chosen"].as_array().unwrap().iter().all(|c| [
            "direct",
            "bottom_up",
            "combined"
        ]
        .contains(&c.as_str().unwrap())));
        // The bottom-up sum forecasts the whole total, unclassified work included.
        let (direct, bottom_up) = (
            v["series"]["total"]["points"][0]["point"].as_f64().unwrap(),
            total["bottom_up"][0]["point"].as_f64().unwrap(),
        );
        assert!(
            (direct - bottom_up).abs() < 0.3 * direct,
            "{direct} vs {bottom_up}"
        );
    }
}
