//! Forecasts and scaling decisions at the edge: a thread that turns completed minute
//! buckets into per-signature demand forecasts, decides desired replicas every sync
//! period, and publishes both (metrics, `/v1/forecast`, `/v1/scale`).
//!
//! It runs apart from the profiler thread because model fits take up to a few hundred
//! milliseconds; nothing here is on the data path.

use crate::anomalies::{Anomalies, Refit};
use crate::clock::Clock;
use crate::metrics as m;
use crate::signals::{Decision, DecisionSink, ForecastSummary, NoSignals, SentSignal};
use crate::tiers::LiveTiers;
use arc_swap::ArcSwap;
use prescale_policies::scale::{
    LeadForecast, ResourceNeed, ScaleDecision, ScaleInput, Scaler, ScalingConfig, StepBand,
};
use prescale_profiler::anomaly::{signature_subject, subject_signature, TOTAL};
use prescale_profiler::forecast::{
    Accuracy, Forecast, ForecastParams, ForecastPoint, Forecaster, ModelKind,
};
use prescale_profiler::sample::Millis;
use prescale_profiler::series::{Bucket, MINUTE_MS, UNCLASSIFIED};
use prescale_profiler::ForecastConfig;
use serde::Serialize;
use std::collections::BTreeMap;
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
    /// reactive floor.
    Now {
        at: Millis,
        measured: Range<Millis>,
        demand: f64,
    },
}

/// The series forecast: the total, or one signature.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SeriesKey {
    Total,
    Signature(u32),
}

/// `GET /v1/forecast`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForecastView {
    pub step_seconds: u64,
    pub level: f64,
    pub horizon_steps: usize,
    /// Of those, the steps the scaling decision looks at (the lead time in force).
    pub lead_steps: usize,
    /// Unix milliseconds of the last observed step.
    pub origin: Option<Millis>,
    /// `total` and each signature id.
    pub series: BTreeMap<String, SeriesForecast>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SeriesForecast {
    pub model: ModelKind,
    pub calibrated: bool,
    /// Demand (busy concurrency) observed in the last step.
    pub last: f64,
    pub points: Vec<PointView>,
    pub accuracy: Accuracy,
}

#[derive(Clone, Debug, Serialize)]
pub struct PointView {
    /// Unix milliseconds at the end of the forecast step.
    pub at: Millis,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
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
        let shared = me.clone();
        std::thread::Builder::new()
            .name("forecaster".into())
            .spawn(move || run(shared, rx, fc, scaling, warm_start, anomalies, clock))?;
        Ok(me)
    }

    /// `GET /v1/scale`: the last decision and the last signal deliveries.
    pub fn scale_view(&self) -> ScaleView {
        let mut view = (**self.scale.load()).clone();
        view.last_signals = self.signals.recent();
        view.learned_startup = self.signals.learned_startup();
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

struct State {
    fc: ForecastConfig,
    params: ForecastParams,
    step_ms: Millis,
    /// Per series: its forecaster, the step being accumulated, the last step fed.
    series: BTreeMap<SeriesKey, Forecaster>,
    pending_step: Option<(Millis, BTreeMap<SeriesKey, f64>)>,
    last_fed: Option<Millis>,
    latest: BTreeMap<SeriesKey, (Forecast, f64)>,
    /// While replaying restored history, steps before this only train the models:
    /// forecasting (and scoring) every old step would cost a refit per hour of it.
    quiet_before: Option<Millis>,
    /// Judges each live step against the forecast made before it (never restored
    /// history: its anomalies are old news).
    anomalies: Arc<Anomalies>,
    replaying: bool,
    /// Forecast steps the scaling rule looks at: the lead time in force (the learned
    /// start-up time may shorten or lengthen it up to the horizon forecast).
    lead_steps: usize,
}

fn run(
    shared: Arc<Forecasting>,
    rx: Receiver<Update>,
    fc: ForecastConfig,
    scaling: ScalingConfig,
    mut warm_start: Option<Box<dyn WarmStart>>,
    anomalies: Arc<Anomalies>,
    clock: Clock,
) {
    let mut st = State::new(fc, &scaling, anomalies);
    let mut scaler = Scaler::new(scaling.clone());
    let mut now_demand: Option<(Millis, Range<Millis>, f64)> = None;
    // The sidecar does not see the platform's replica count; its own last decision
    // stands in for it (the platform converges to it).
    let mut current = scaling.min_replicas;
    let mut previous: Option<u32> = None;
    let mut preshed = crate::tiers::PreShedding::new(&scaling);
    // A series-time period (`--time-scale` shortens the wait).
    let sync = clock.wall(scaling.sync_period);
    let mut next_sync = clock.instant() + sync;
    loop {
        let wait = next_sync.saturating_duration_since(clock.instant());
        match rx.recv_timeout(wait) {
            Ok(Update::History(rows)) => {
                warm_start = None;
                if st.replay(&rows) {
                    shared.forecast.store(Arc::new(st.view()));
                    st.export();
                }
            }
            Ok(Update::Minute(b)) => {
                // The profiler sends restored history before anything else: the store
                // was not empty, so there is nothing to warm-start.
                warm_start = None;
                if st.add_minute(&b) {
                    shared.forecast.store(Arc::new(st.view()));
                    st.export();
                }
            }
            Ok(Update::Now {
                at,
                measured,
                demand,
            }) => {
                if let Some(source) = warm_start.take() {
                    if st.warm_start(source, at) {
                        shared.forecast.store(Arc::new(st.view()));
                        st.export();
                    }
                }
                now_demand = Some((at, measured, demand));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if clock.instant() >= next_sync {
            next_sync = clock.instant() + sync;
            if let Some((at, measured, demand)) = now_demand.clone() {
                // The start-up time learned from readiness, once there is one.
                let learned = shared.signals.learned_startup();
                scaler.learned_startup(
                    learned.and_then(|l| Duration::try_from_secs_f64(l.seconds).ok()),
                );
                let need = shared.resource_need.lock().map(|g| *g).unwrap_or_default();
                let view = st.decide(&mut scaler, current, (at, measured), demand, need);
                if let Some(d) = &view.decision {
                    shared.signals.publish(&Decision {
                        desired: d.desired,
                        previous,
                        reason: d.reason,
                        lead_time_seconds: d.lead_time_seconds,
                        forecast: st.summary(),
                        current_demand: demand,
                        at,
                        resources: need,
                    });
                    previous = Some(d.desired);
                    current = d.desired;
                    preshed.after_decision(
                        shared.tiers.as_ref(),
                        d.desired,
                        // A spike larger than forecast counts too.
                        view.forecast_upper.map(|u| u.max(demand)),
                        at,
                    );
                }
                shared.scale.store(Arc::new(view));
            }
        }
    }
}

// === impl State ===

impl State {
    fn new(fc: ForecastConfig, scaling: &ScalingConfig, anomalies: Arc<Anomalies>) -> Self {
        let step_s = fc.step.as_secs().max(60);
        // Forecast as far as the longest lead time planned for; decide on the lead in
        // force.
        let horizon = (scaling.horizon().as_secs().div_ceil(step_s) as usize).max(1);
        let lead_steps = (scaling.lead_time().as_secs().div_ceil(step_s) as usize).max(1);
        let mut params = ForecastParams::for_step(step_s, horizon);
        params.level = fc.level;
        params.refit_every = ((fc.refit_interval.as_secs() / step_s) as usize).max(1);
        Self {
            step_ms: step_s * 1000,
            params,
            fc,
            series: BTreeMap::new(),
            pending_step: None,
            last_fed: None,
            quiet_before: None,
            latest: BTreeMap::new(),
            anomalies,
            replaying: false,
            lead_steps,
        }
    }

    /// Seeds the total forecast from Prometheus history before any live step (see
    /// `warm_start`); returns whether a forecast was made.
    fn warm_start(&mut self, source: Box<dyn WarmStart>, now: Millis) -> bool {
        let params = self.params.clone();
        let Some((mut f, last_start, last)) =
            source.seed(now, self.step_ms, &mut || Forecaster::new(params.clone()))
        else {
            return false;
        };
        let fc = f.forecast();
        self.series.insert(SeriesKey::Total, f);
        self.last_fed = Some(last_start);
        if let Some(fc) = fc {
            self.latest.insert(SeriesKey::Total, (fc, last));
        }
        true
    }

    /// The total forecast over the lead window, as sent with a decision.
    fn summary(&self) -> Option<ForecastSummary> {
        let (fc, _) = self.latest.get(&SeriesKey::Total)?;
        let end = self.lead_points(fc).last()?;
        Some(ForecastSummary {
            demand_upper: self.lead_points(fc).map(|p| p.upper).fold(0.0, f64::max),
            point: end.point,
            lower: end.lower,
            upper: end.upper,
            level: self.fc.level,
            horizon_seconds: end.step as u64 * self.step_ms / 1000,
        })
    }

    /// The points of `fc` within the lead time in force.
    fn lead_points<'a>(
        &self,
        fc: &'a Forecast,
    ) -> impl Iterator<Item = &'a prescale_profiler::forecast::ForecastPoint> {
        let lead = self.lead_steps;
        fc.points.iter().filter(move |p| p.step <= lead)
    }

    /// Folds a minute into its forecast step; returns whether forecasts were updated.
    fn add_minute(&mut self, b: &Bucket) -> bool {
        let step_start = b.start - b.start % self.step_ms;
        let mut updated = false;
        if let Some((start, _)) = &self.pending_step {
            if *start != step_start {
                updated = self.close_step();
            }
        }
        let (_, acc) = self
            .pending_step
            .get_or_insert_with(|| (step_start, BTreeMap::new()));
        let demand = |work_us: u64| work_us as f64 / (self.step_ms as f64 * 1000.0);
        *acc.entry(SeriesKey::Total).or_default() += demand(b.total.work_us);
        for (sig, cell) in &b.by_signature {
            if *sig != UNCLASSIFIED {
                *acc.entry(SeriesKey::Signature(*sig)).or_default() += demand(cell.work_us);
            }
        }
        // A minute that completes its step closes it at once.
        if b.start + MINUTE_MS >= step_start + self.step_ms {
            updated |= self.close_step();
        }
        updated
    }

    /// Feeds restored minutes; only the last `calibration_window` steps are also
    /// forecast, which is what calibrates the intervals and scores the models.
    fn replay(&mut self, rows: &[Bucket]) -> bool {
        let last = rows.last().map_or(0, |b| b.start);
        let span = self.step_ms * self.params.calibration_window as Millis;
        self.quiet_before = Some(last.saturating_sub(span));
        self.replaying = true;
        let mut updated = false;
        for b in rows {
            updated |= self.add_minute(b);
        }
        self.quiet_before = None;
        self.replaying = false;
        updated
    }

    /// Feeds the accumulated step to every series (zeros for series and steps with no
    /// traffic), then forecasts each.
    fn close_step(&mut self) -> bool {
        let Some((start, acc)) = self.pending_step.take() else {
            return false;
        };
        if self.last_fed.is_some_and(|l| start <= l) {
            return false; // out of order: already fed
        }
        // Steps with no traffic at all were never reported: they are zeros. A gap
        // longer than the history kept is cut short.
        let missing = self
            .last_fed
            .map_or(0, |l| {
                ((start - l) / self.step_ms).saturating_sub(1) as usize
            })
            .min(self.params.max_history);
        for key in acc.keys() {
            if !self.series.contains_key(key) {
                let mut f = Forecaster::new(self.params.clone());
                // A new signature had no demand before it appeared.
                if self.last_fed.is_some() && *key != SeriesKey::Total {
                    for _ in 0..missing.min(60) {
                        f.observe(0.0);
                    }
                }
                self.series.insert(*key, f);
            }
        }
        for (key, f) in &mut self.series {
            for _ in 0..missing {
                f.observe(0.0);
            }
            f.observe(acc.get(key).copied().unwrap_or(0.0));
        }
        self.last_fed = Some(start);
        if self.quiet_before.is_some_and(|q| start < q) {
            return false;
        }
        if !self.replaying {
            self.judge_step(start, &acc);
        }
        self.latest.clear();
        for (key, f) in &mut self.series {
            if let Some(fc) = f.forecast() {
                self.latest
                    .insert(*key, (fc, acc.get(key).copied().unwrap_or(0.0)));
            }
        }
        true
    }

    /// Judges the step that began at `start` against each series' one-step forecast
    /// made just before it (calibrated ones only: the fallback interval is a guess),
    /// and restarts the forecasters of series with a confirmed level shift.
    fn judge_step(&mut self, start: Millis, acc: &BTreeMap<SeriesKey, f64>) {
        let end = start + self.step_ms;
        let mut refits = Vec::new();
        for (key, f) in &self.series {
            let Some((fc, _)) = self.latest.get(key) else {
                continue;
            };
            // Only when it forecast exactly this step (no gap in between).
            // The band at the configured level, not the adapted published one.
            let point: Option<&ForecastPoint> = fc.judged.as_ref();
            let (true, Some(point)) = (fc.calibrated && fc.origin + 1 == f.observed(), point)
            else {
                continue;
            };
            let actual = acc.get(key).copied().unwrap_or(0.0);
            refits.extend(
                self.anomalies
                    .observe_rate(end, &label_subject(*key), actual, point),
            );
        }
        self.restart(&refits, end);
    }

    /// Restarts each series of `refits` from its shift: only the steps since it began
    /// (up to `end`) are kept.
    fn restart(&mut self, refits: &[Refit], end: Millis) {
        for r in refits {
            let key = match subject_signature(&r.subject) {
                Some(id) => SeriesKey::Signature(id),
                None if r.subject == TOTAL => SeriesKey::Total,
                None => continue,
            };
            let keep = end.saturating_sub(r.since).div_ceil(self.step_ms).max(1) as usize;
            if let Some(f) = self.series.get_mut(&key) {
                f.restart_keeping(keep);
            }
        }
    }

    fn view(&self) -> ForecastView {
        let origin = self.last_fed;
        let series = self
            .latest
            .iter()
            .map(|(key, (fc, last))| {
                let points = fc
                    .points
                    .iter()
                    .map(|p| PointView {
                        at: origin.unwrap_or(0) + self.step_ms * (p.step as u64 + 1),
                        point: p.point,
                        lower: p.lower,
                        upper: p.upper,
                    })
                    .collect();
                let accuracy = self
                    .series
                    .get(key)
                    .map(Forecaster::accuracy)
                    .unwrap_or_default();
                (
                    label(*key),
                    SeriesForecast {
                        model: fc.model,
                        calibrated: fc.calibrated,
                        last: *last,
                        points,
                        accuracy,
                    },
                )
            })
            .collect();
        ForecastView {
            step_seconds: self.step_ms / 1000,
            level: self.fc.level,
            horizon_steps: self.params.horizon,
            lead_steps: self.lead_steps,
            origin,
            series,
        }
    }

    fn decide(
        &mut self,
        scaler: &mut Scaler,
        current: u32,
        (at, measured): (Millis, Range<Millis>),
        demand: f64,
        need: ResourceNeed,
    ) -> ScaleView {
        let step_s = (self.step_ms / 1000).max(1);
        self.lead_steps = (scaler.lead_time().as_secs().div_ceil(step_s) as usize).max(1);
        // Step s of the forecast starts s steps after the last one fed: the step under
        // way that current demand (averaging `measured`) measures is left to the floor.
        let first = self.last_fed.map_or(0, |l| l + self.step_ms);
        let forecast = self.latest.get(&SeriesKey::Total).and_then(|(fc, _)| {
            let steps = self.lead_points(fc).map(|p| {
                let start = first + (p.step as Millis).saturating_sub(1) * self.step_ms;
                StepBand {
                    start,
                    end: start + self.step_ms,
                    point: p.point,
                    upper: p.upper,
                }
            });
            LeadForecast::over_steps(steps, measured, self.fc.level, fc.calibrated)
        });
        let d = scaler.decide_with(
            ScaleInput {
                now: at,
                current_replicas: current,
                current_demand: demand,
                forecast,
            },
            need,
        );
        let (cpu, memory) = scaler.config().replicas_for_resources(need);
        for (rule, n) in [("cpu", cpu), ("memory", memory)] {
            if let Some(n) = n {
                ::metrics::gauge!(m::DESIRED_REPLICAS_BY_RULE, "rule" => rule).set(f64::from(n));
            }
        }
        ::metrics::gauge!(m::DESIRED_REPLICAS).set(f64::from(d.desired));
        ::metrics::gauge!(m::DESIRED_REPLICAS_BY_RULE, "rule" => "predictive")
            .set(f64::from(d.predictive));
        ::metrics::gauge!(m::DESIRED_REPLICAS_BY_RULE, "rule" => "reactive")
            .set(f64::from(d.reactive));
        ::metrics::gauge!(m::DEMAND).set(demand);
        let reason = serde_json::to_value(d.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        ::metrics::counter!(m::SCALE_DECISIONS, "reason" => reason).increment(1);
        let cfg = scaler.config();
        ScaleView {
            at: Some(at),
            decision: Some(d),
            current_demand: demand,
            forecast_upper: forecast.map(|f| f.upper),
            capacity_per_replica: cfg.capacity_per_replica,
            target_utilization: cfg.target_utilization,
            last_signals: Vec::new(),
            learned_startup: None,
        }
    }

    /// Publishes forecast gauges: each series' point and bounds per horizon step, and
    /// its accuracy. Labels: series (`total` or a signature id, ≤ 17 values),
    /// `q` (the point as 0.5 and the interval bounds as their quantiles; `quantile` is
    /// reserved for summaries), horizon (≤ horizon_steps values).
    fn export(&self) {
        let lo = format!(
            "{}",
            ((1.0 - self.fc.level) / 2.0 * 1000.0).round() / 1000.0
        );
        let hi = format!(
            "{}",
            ((1.0 + self.fc.level) / 2.0 * 1000.0).round() / 1000.0
        );
        for (key, (fc, _)) in &self.latest {
            let sig = label(*key);
            for p in &fc.points {
                let horizon = format!("{}s", p.step as u64 * self.step_ms / 1000);
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
            let max = |f: fn(&prescale_profiler::forecast::ForecastPoint) -> f64| {
                self.lead_points(fc).map(f).fold(0.0, f64::max)
            };
            for (q, v) in [
                ("0.5", max(|p| p.point)),
                (lo.as_str(), max(|p| p.lower)),
                (hi.as_str(), max(|p| p.upper)),
            ] {
                ::metrics::gauge!(m::FORECAST_DEMAND, "signature" => sig.clone(), "q" => q.to_string(), "horizon" => "lead").set(v);
            }
            if let Some(f) = self.series.get(key) {
                let acc = f.accuracy();
                if let Some(Some(r)) = acc.relative_mae.last() {
                    ::metrics::gauge!(m::FORECAST_ERROR, "signature" => sig.clone()).set(*r);
                }
                if let Some(c) = acc.coverage {
                    ::metrics::gauge!(m::FORECAST_COVERAGE, "signature" => sig.clone()).set(c);
                }
            }
        }
    }
}

/// The anomaly subject of a series (`total`, `signature:<id>`).
fn label_subject(key: SeriesKey) -> String {
    match key {
        SeriesKey::Total => TOTAL.into(),
        SeriesKey::Signature(id) => signature_subject(id),
    }
}

fn label(key: SeriesKey) -> String {
    match key {
        SeriesKey::Total => "total".into(),
        SeriesKey::Signature(id) => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AnomaliesConfig;
    use prescale_profiler::anomaly::AnomalyConfig;
    use prescale_profiler::series::Cell;

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

    #[test]
    fn each_step_is_judged_against_the_forecast_before_it_and_a_shift_restarts_the_model() {
        let anomalies = Anomalies::start(
            &AnomalyConfig::default(),
            &AnomaliesConfig::default(),
            Vec::new(),
            None,
        );
        let mut st = State::new(
            ForecastConfig::default(),
            &ScalingConfig::default(),
            anomalies.clone(),
        );
        // Two hours of demand around 4 with white noise (calibrates the intervals).
        let noise = |i: u64| {
            let x = i
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 33) % 1000) as f64 / 1000.0 - 0.5
        };
        for i in 0..120 {
            st.add_minute(&minute(i, 4.0 + noise(i)));
        }
        let v = anomalies.response().view;
        assert_eq!(v.raised_total["rate"], 0, "{v:?}");
        // Demand climbs 3 a minute for 20 minutes, faster than any model follows
        // between fits: first a rate anomaly on the total and the signature, then a
        // confirmed shift, and the forecasters restart from it.
        for i in 120..140 {
            st.add_minute(&minute(i, 4.0 + 3.0 * (i - 119) as f64 + noise(i)));
        }
        let v = anomalies.response().view;
        assert_eq!(v.raised_total["rate"], 2, "total and signature 1: {v:?}");

        // A confirmed shift that began 5 steps ago: the total's forecaster keeps only
        // those steps, the signature's keeps its history.
        let end = st.last_fed.unwrap() + st.step_ms;
        // The climb may already have restarted the signature's forecaster (a shift
        // confirmed on it); whatever it holds now, restarting the total leaves it be.
        let signature_before = st.series[&SeriesKey::Signature(1)].observed();
        let refit = Refit {
            subject: TOTAL.into(),
            since: end - 5 * st.step_ms,
        };
        st.restart(&[refit], end);
        assert_eq!(st.series[&SeriesKey::Total].observed(), 5);
        assert_eq!(
            st.series[&SeriesKey::Signature(1)].observed(),
            signature_before
        );
        let fc = st
            .series
            .get_mut(&SeriesKey::Total)
            .unwrap()
            .forecast()
            .unwrap();
        assert!(fc.points[0].point > 40.0, "{fc:?}");
    }

    #[test]
    fn the_step_current_demand_is_measured_inside_is_left_to_the_floor() {
        let anomalies = Anomalies::start(
            &AnomalyConfig::default(),
            &AnomaliesConfig::default(),
            Vec::new(),
            None,
        );
        // A 30 s start-up: the lead window (45 s) is the forecast's first step only.
        let scaling = ScalingConfig {
            startup_time: Duration::from_secs(30),
            learn_startup_time: false,
            ..ScalingConfig::default()
        };
        let mut st = State::new(ForecastConfig::default(), &scaling, anomalies);
        for i in 0..120 {
            st.add_minute(&minute(i, 4.0 + (i % 3) as f64 * 0.2));
        }
        let mut scaler = Scaler::new(scaling);
        let step1 = st.last_fed.expect("steps fed") + st.step_ms;
        let need = ResourceNeed::default();
        // Current demand read from a bucket that began before the step: the step's
        // band is the forecast.
        let v = st.decide(
            &mut scaler,
            1,
            (step1 + 5_000, step1 - 5_000..step1 + 5_000),
            4.0,
            need,
        );
        assert!(v.forecast_upper.is_some_and(|u| u > 4.0), "{v:?}");
        // Read from inside the step: the floor plans it, the forecast adds nothing.
        let v = st.decide(
            &mut scaler,
            1,
            (step1 + 25_000, step1 + 10_000..step1 + 20_000),
            4.0,
            need,
        );
        assert_eq!(v.forecast_upper, Some(0.0), "{v:?}");
    }
}
