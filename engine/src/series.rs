//! The step series: completed minutes folded into forecast steps, one forecaster per
//! series (the total and each signature), zeros for steps without traffic, restored
//! history replayed, and a confirmed level shift restarting a series.

use crate::reconcile::Reconciler;
use crate::view::{ForecastView, PointView, ReconciledView, SeriesForecast};
use crate::{Millis, MINUTE_GRACE_MS};
use prescale_policies::scale::ScalingConfig;
use prescale_profiler::anomaly::{signature_subject, subject_signature, TOTAL};
use prescale_profiler::forecast::{Forecast, ForecastParams, ForecastPoint, Forecaster};
use prescale_profiler::series::{Bucket, MINUTE_MS, UNCLASSIFIED};
use prescale_profiler::ForecastConfig;
use std::collections::BTreeMap;

/// The series forecast: the total, or one signature.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SeriesKey {
    Total,
    Signature(u32),
}

impl SeriesKey {
    /// The anomaly subject of a series (`total`, `signature:<id>`).
    pub fn subject(self) -> String {
        match self {
            SeriesKey::Total => TOTAL.into(),
            SeriesKey::Signature(id) => signature_subject(id),
        }
    }

    /// Its label in views and metrics (`total`, or the signature id).
    pub fn label(self) -> String {
        match self {
            SeriesKey::Total => "total".into(),
            SeriesKey::Signature(id) => id.to_string(),
        }
    }
}

/// A level shift the forecaster must absorb: forget `subject`'s history before `since`.
#[derive(Clone, Debug, PartialEq)]
pub struct Refit {
    pub subject: String,
    pub since: Millis,
}

/// Judges each live step against the forecast made before it (the sidecar's anomaly
/// handling); returns the series to restart. Replay passes `()`: no judgements.
pub trait StepJudge {
    fn judge(
        &mut self,
        end: Millis,
        subject: &str,
        actual: f64,
        expected: &ForecastPoint,
    ) -> Vec<Refit>;
}

impl StepJudge for () {
    fn judge(&mut self, _: Millis, _: &str, _: f64, _: &ForecastPoint) -> Vec<Refit> {
        Vec::new()
    }
}

pub(crate) struct Series {
    pub(crate) fc: ForecastConfig,
    pub(crate) params: ForecastParams,
    pub(crate) step_ms: Millis,
    /// Per series: its forecaster, the step being accumulated, the last step fed.
    pub(crate) series: BTreeMap<SeriesKey, Forecaster>,
    /// The step being accumulated: its start, demand per series, minutes unknown.
    pending_step: Option<(Millis, BTreeMap<SeriesKey, f64>, u64)>,
    pub(crate) last_fed: Option<Millis>,
    /// A minute of live traffic was fed (not restored history, not a warm start):
    /// from then on a step without any minute is idle, a known zero. Before it the
    /// sidecar cannot tell idle from not yet receiving traffic (a pod that is not
    /// ready), so a seeded or restored forecast is not worn down by zeros.
    seen_traffic: bool,
    pub(crate) latest: BTreeMap<SeriesKey, (Forecast, f64)>,
    /// While replaying restored history, steps before this only train the models:
    /// forecasting (and scoring) every old step would cost a refit per hour of it.
    quiet_before: Option<Millis>,
    /// Restored history is never judged: its anomalies are old news.
    replaying: bool,
    /// Forecast steps up to the one the lead window ends in (set at each decision:
    /// the window is [now, now + lead], the learned start-up time may change lead).
    pub(crate) lead_steps: usize,
    /// Steps start at this offset (ms, below one step) from the Unix step grid.
    pub(crate) grid_offset: Millis,
    /// The total's direct and bottom-up forecasts, scored; the decision plans with
    /// what it reconciles.
    pub(crate) reconcile: Reconciler,
}

impl Series {
    pub(crate) fn new(fc: ForecastConfig, scaling: &ScalingConfig) -> Self {
        let step_s = fc.step.as_secs().max(60);
        // Forecast as far as the longest lead time planned for, counted from the step
        // under way (one more: [now, now + lead] may end in the step after the last
        // whole one); decide on the lead in force.
        let horizon = (scaling.horizon().as_secs().div_ceil(step_s) as usize).max(1) + 1;
        let lead_steps = (scaling.lead_time().as_secs().div_ceil(step_s) as usize).max(1);
        let mut params = ForecastParams::for_step(step_s, horizon);
        params.level = fc.level;
        params.refit_every = ((fc.refit_interval.as_secs() / step_s) as usize).max(1);
        let reconcile = Reconciler::new(&params, step_s * 1000, params.calibration_window);
        Self {
            step_ms: step_s * 1000,
            reconcile,
            params,
            fc,
            series: BTreeMap::new(),
            pending_step: None,
            last_fed: None,
            seen_traffic: false,
            quiet_before: None,
            latest: BTreeMap::new(),
            replaying: false,
            lead_steps,
            grid_offset: 0,
        }
    }

    /// Seeds the total series with a forecaster fed elsewhere (warm start), the start
    /// of its last step and that step's demand; returns whether a forecast was made.
    pub(crate) fn seed_total(&mut self, mut f: Forecaster, last_start: Millis, last: f64) -> bool {
        let fc = f.forecast();
        self.series.insert(SeriesKey::Total, f);
        self.last_fed = Some(last_start);
        self.reconcile.clear();
        if let Some(fc) = fc {
            self.latest.insert(SeriesKey::Total, (fc, last));
        }
        true
    }

    /// The total forecast the decision plans with: the reconciled one (see
    /// `reconcile.rs`), else the direct one (a warm start seeds only that).
    pub(crate) fn planned(&self) -> Option<&Forecast> {
        match self.reconcile.latest() {
            Some(r) => Some(&r.planned),
            None => self.latest.get(&SeriesKey::Total).map(|(fc, _)| fc),
        }
    }

    /// The points of `fc` within the lead time in force.
    pub(crate) fn lead_points<'a>(
        &self,
        fc: &'a Forecast,
    ) -> impl Iterator<Item = &'a ForecastPoint> {
        let lead = self.lead_steps;
        fc.points.iter().filter(move |p| p.step <= lead)
    }

    /// Folds a minute into its forecast step; returns whether forecasts were updated.
    pub(crate) fn add_minute(&mut self, b: &Bucket, judge: &mut dyn StepJudge) -> bool {
        self.seen_traffic |= !self.replaying;
        let (mut updated, step_start) = self.open_step(b.start, judge);
        let Some((_, acc, _)) = self.pending_step.as_mut() else {
            return updated;
        };
        let demand = |work_us: u64| work_us as f64 / (self.step_ms as f64 * 1000.0);
        *acc.entry(SeriesKey::Total).or_default() += demand(b.total.work_us);
        for (sig, cell) in &b.by_signature {
            if *sig != UNCLASSIFIED {
                *acc.entry(SeriesKey::Signature(*sig)).or_default() += demand(cell.work_us);
            }
        }
        // A minute that completes its step closes it at once.
        if b.start + MINUTE_MS >= step_start + self.step_ms {
            updated |= self.close_step(judge);
        }
        updated
    }

    /// A minute nothing is known about (a gap in a replayed input, not quiet): a step
    /// at least half unknown is fed to the forecasters as a gap, never as zeros.
    pub(crate) fn add_unknown_minute(&mut self, start: Millis, judge: &mut dyn StepJudge) -> bool {
        let (mut updated, step_start) = self.open_step(start, judge);
        if let Some((_, _, unknown)) = self.pending_step.as_mut() {
            *unknown += 1;
        }
        if start + MINUTE_MS >= step_start + self.step_ms {
            updated |= self.close_step(judge);
        }
        updated
    }

    /// The start of the step holding `t` (on the grid in force).
    fn step_of(&self, t: Millis) -> Millis {
        t.saturating_sub((t + self.step_ms - self.grid_offset) % self.step_ms)
    }

    /// Closes on the clock what can no longer receive a minute at `now`: the pending
    /// step once its end plus the grace has passed, then, once live traffic was fed,
    /// every whole step since the last one fed that ended without a single minute, as
    /// zeros (an idle service sends none: an idle step is a known zero, not a gap).
    /// Returns whether forecasts were updated.
    ///
    /// The caller must have handed over every minute complete at `now` (end plus
    /// `MINUTE_GRACE_MS`) first: the sidecar's profiler sends them before its `Now`,
    /// replay feeds the minutes due before advancing, unknown minutes included, so a
    /// step inside a gap is closed by what was fed about it (a gap), never as zeros.
    /// A minute that arrives after its step was closed here is dropped by
    /// `close_step` (already fed); only a bucket created after its minute was complete
    /// can (a lone request that outlived the grace, stamped at arrival), and the
    /// profiler never re-sends a minute either, so that is the grace's existing loss.
    pub(crate) fn advance(&mut self, now: Millis, judge: &mut dyn StepJudge) -> bool {
        let Some(settled) = now.checked_sub(MINUTE_GRACE_MS) else {
            return false;
        };
        let mut updated = false;
        if let Some((start, _, _)) = &self.pending_step {
            if start + self.step_ms <= settled {
                updated |= self.close_step(judge);
            }
        }
        // The last whole step that ended by `settled`; a step still pending (a minute
        // of it arrived, it has not ended) closes with its own zero fill.
        let Some(last_ended) = self.step_of(settled).checked_sub(self.step_ms) else {
            return updated;
        };
        match self.last_fed {
            Some(fed) if self.seen_traffic && self.pending_step.is_none() && last_ended > fed => {
                // An empty step: `close_step` feeds the steps before it as zeros
                // (bounded by the history kept) and it as zero, then forecasts.
                self.pending_step = Some((last_ended, BTreeMap::new(), 0));
                updated |= self.close_step(judge);
            }
            _ => {}
        }
        updated
    }

    /// Closes the pending step if `minute` starts another, and opens its step.
    fn open_step(&mut self, minute: Millis, judge: &mut dyn StepJudge) -> (bool, Millis) {
        let step_start = self.step_of(minute);
        let mut updated = false;
        if let Some((start, _, _)) = &self.pending_step {
            if *start != step_start {
                updated = self.close_step(judge);
            }
        }
        self.pending_step
            .get_or_insert_with(|| (step_start, BTreeMap::new(), 0));
        (updated, step_start)
    }

    /// Feeds restored minutes; only the last `calibration_window` steps are also
    /// forecast, which is what calibrates the intervals and scores the models.
    pub(crate) fn restore(&mut self, rows: &[Bucket]) -> bool {
        let last = rows.last().map_or(0, |b| b.start);
        let span = self.step_ms * self.params.calibration_window as Millis;
        self.quiet_before = Some(last.saturating_sub(span));
        self.replaying = true;
        let mut updated = false;
        for b in rows {
            updated |= self.add_minute(b, &mut ());
        }
        self.quiet_before = None;
        self.replaying = false;
        updated
    }

    /// Feeds the accumulated step to every series (zeros for series and steps with no
    /// traffic), then forecasts each.
    fn close_step(&mut self, judge: &mut dyn StepJudge) -> bool {
        let Some((start, acc, unknown)) = self.pending_step.take() else {
            return false;
        };
        let gap = 2 * unknown * MINUTE_MS >= self.step_ms;
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
        for k in 0..missing as Millis {
            let at = start.saturating_sub((missing as Millis - k) * self.step_ms);
            self.reconcile.observe(at, Some(0.0), Some(0.0));
        }
        // What no signature holds (unclassified work): the bottom-up sum forecasts it
        // too, so that it forecasts the same quantity as the total.
        let total = acc.get(&SeriesKey::Total).copied().unwrap_or(0.0);
        let signatures: f64 = acc
            .iter()
            .filter(|(k, _)| **k != SeriesKey::Total)
            .map(|(_, v)| v)
            .sum();
        let known = |v: f64| (!gap).then_some(v);
        self.reconcile
            .observe(start, known(total), known((total - signatures).max(0.0)));
        for (key, f) in &mut self.series {
            for _ in 0..missing {
                f.observe(0.0);
            }
            // A gap repeats the previous value (see `Forecaster::observe`).
            f.observe(match gap {
                true => f64::NAN,
                false => acc.get(key).copied().unwrap_or(0.0),
            });
        }
        self.last_fed = Some(start);
        if self.quiet_before.is_some_and(|q| start < q) {
            return false;
        }
        if !self.replaying && !gap {
            self.judge_step(start, &acc, judge);
        }
        self.latest.clear();
        for (key, f) in &mut self.series {
            if let Some(fc) = f.forecast() {
                self.latest
                    .insert(*key, (fc, acc.get(key).copied().unwrap_or(0.0)));
            }
        }
        match self.latest.get(&SeriesKey::Total) {
            Some((direct, _)) => {
                let signatures = self
                    .latest
                    .iter()
                    .filter(|(k, _)| **k != SeriesKey::Total)
                    .map(|(_, (fc, _))| fc);
                self.reconcile.issue(start, direct, signatures);
            }
            None => self.reconcile.clear(),
        }
        true
    }

    /// Judges the step that began at `start` against each series' one-step forecast
    /// made just before it (calibrated ones only: the fallback interval is a guess),
    /// and restarts the forecasters of series with a confirmed level shift.
    fn judge_step(
        &mut self,
        start: Millis,
        acc: &BTreeMap<SeriesKey, f64>,
        judge: &mut dyn StepJudge,
    ) {
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
            refits.extend(judge.judge(end, &key.subject(), actual, point));
        }
        self.restart(&refits, end);
    }

    /// Restarts each series of `refits` from its shift: only the steps since it began
    /// (up to `end`) are kept.
    pub(crate) fn restart(&mut self, refits: &[Refit], end: Millis) {
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

    pub(crate) fn view(&self) -> ForecastView {
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
                    key.label(),
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
        let at = |step: usize| origin.unwrap_or(0) + self.step_ms * (step as u64 + 1);
        let points = |ps: &[ForecastPoint]| {
            ps.iter()
                .map(|p| PointView {
                    at: at(p.step),
                    point: p.point,
                    lower: p.lower,
                    upper: p.upper,
                })
                .collect()
        };
        let total = self.reconcile.latest().map(|r| ReconciledView {
            choice: r.choice.clone(),
            planned: points(&r.planned.points),
            bottom_up: r.bottom_up.as_deref().map(points),
        });
        ForecastView {
            total,
            step_seconds: self.step_ms / 1000,
            level: self.fc.level,
            horizon_steps: self.params.horizon,
            lead_steps: self.lead_steps,
            origin,
            series,
        }
    }
}
