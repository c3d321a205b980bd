//! The forecaster run offline over the trace's step series once, its forecasts kept by
//! origin, for the report's accuracy scores (MASE, sMAPE, coverage per horizon) and the
//! timeline's forecast band as of the time each would have been available (an origin's
//! forecast exists `lag` after its step ends). Decisions do not read these: the
//! predictive policy runs the sidecar's engine (`engine.rs`).

use super::pool::Sec;
use prescale_profiler::forecast::eval::{self, EvalRow, HorizonSummary};
use prescale_profiler::forecast::ForecastParams;
use std::collections::BTreeMap;

/// (point, lower, upper) in requests per second.
pub type Band = (f64, f64, f64);

pub struct Forecasts {
    /// Seconds per step of the series.
    pub step: Sec,
    /// Delay from the end of a step to its forecast being usable.
    pub lag: Sec,
    pub horizon: usize,
    /// `by_origin[o][s - 1]`: the forecast made after `o` observations for `s` steps on.
    by_origin: Vec<Vec<Option<Band>>>,
    pub summary: Vec<HorizonSummary>,
    pub models: BTreeMap<String, usize>,
    pub seasonal_period: Option<usize>,
    pub warmup_steps: usize,
    pub level: f64,
    pub fit_seconds: f64,
}

impl Forecasts {
    /// Runs the forecaster over `series` (mean rate per step). Forecasts are made from
    /// the first step; accuracy is scored after `warmup` steps.
    pub fn run(series: &[f64], params: ForecastParams, step: Sec, lag: Sec, warmup: usize) -> Self {
        let started = prescale_proxy::clock::Stopwatch::start();
        let ev = eval::evaluate(series, params.clone(), 1);
        let fit_seconds = started.elapsed().as_secs_f64();
        let (summary, seasonal_period) = eval::score(series, &ev.rows, &params, warmup);
        let mut by_origin = vec![vec![None; params.horizon]; series.len() + 1];
        for EvalRow {
            origin,
            horizon_steps,
            point,
            lower,
            upper,
            ..
        } in &ev.rows
        {
            if let Some(slot) = by_origin
                .get_mut(*origin)
                .and_then(|o| o.get_mut(horizon_steps - 1))
            {
                *slot = Some((*point, *lower, *upper));
            }
        }
        Self {
            step,
            lag,
            horizon: params.horizon,
            by_origin,
            summary,
            models: ev.models,
            seasonal_period,
            warmup_steps: warmup,
            level: params.level,
            fit_seconds,
        }
    }

    /// Observations whose forecast is usable at `t`.
    fn origin_at(&self, t: Sec) -> Option<usize> {
        let o = (t.checked_sub(self.lag)? / self.step) as usize;
        (o >= 1).then_some(o)
    }

    fn band(&self, origin: usize, bucket: usize) -> Option<Band> {
        let s = (bucket + 1).checked_sub(origin).filter(|s| *s >= 1)?;
        *self.by_origin.get(origin)?.get(s - 1)?
    }

    /// What was forecast, `lead` ahead, for the step containing `t`: the band the
    /// scaling decision for `t` had to rely on.
    pub fn as_seen_ahead(&self, t: Sec, lead: Sec) -> Option<Band> {
        let origin = self.origin_at(t.checked_sub(lead)?)?;
        self.band(origin, (t / self.step) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forecasts_are_used_only_after_their_step_ends_plus_lag() {
        let series: Vec<f64> = (0..200).map(|i| 10.0 + (i % 20) as f64).collect();
        let params = ForecastParams {
            periods: vec![20],
            ..ForecastParams::for_step(60, 4)
        };
        let f = Forecasts::run(&series, params, 60, 30, 50);
        // Before the first step ends (plus lag) there is nothing to go on.
        assert_eq!(f.origin_at(60), None);
        assert!(f.origin_at(90).is_some());
        // Far beyond the horizon of the newest origin: nothing.
        assert!(f.band(5, 5 + 10).is_none());
        let (p, lo, hi) = f.as_seen_ahead(60 * 100, 120).unwrap_or_default();
        assert!(lo <= p && p <= hi, "{lo} <= {p} <= {hi}");
        assert!(!f.summary.is_empty());
    }
}
