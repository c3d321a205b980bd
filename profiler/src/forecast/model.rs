//! The candidate models a series is forecast with, from cheapest to richest.

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::{Fit, Predict};
use serde::Serialize;

/// A forecasting model. Cheap ones are recomputed at every step; `Ets` and `Mstl`
/// are fitted on a schedule and their path is corrected by recent residuals between
/// fits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Tomorrow looks like now: the fallback for any history.
    LastValue,
    /// Tomorrow looks like the same time one season ago.
    SeasonalNaive,
    /// Exponential smoothing (AutoETS), for series without usable seasonality.
    Ets,
    /// MSTL decomposition with an AutoETS trend, for series with one or more seasons.
    Mstl,
}

/// Which models a history of `n` points supports, given the seasonal periods (in
/// steps) that the configuration allows. Short, flat or new series get the cheap ones.
pub fn candidates(n: usize, periods: &[usize]) -> Vec<ModelKind> {
    let mut out = vec![ModelKind::LastValue];
    if n >= 1 && periods.iter().any(|p| *p >= 2 && n >= *p) {
        out.push(ModelKind::SeasonalNaive);
    }
    let seasonal: Vec<usize> = usable_periods(n, periods);
    if n >= 24 {
        if seasonal.is_empty() {
            out.push(ModelKind::Ets);
        } else {
            out.push(ModelKind::Mstl);
        }
    }
    out
}

/// Periods with at least two full seasons of history (what MSTL needs to separate a
/// season from noise).
pub fn usable_periods(n: usize, periods: &[usize]) -> Vec<usize> {
    periods
        .iter()
        .copied()
        .filter(|p| *p >= 2 && n >= 2 * p)
        .collect()
}

/// Fits `kind` on `history` and returns its point path for `len` steps after the
/// history's end; `None` when the model cannot be fitted or returns non-finite values
/// (a flat or zero series can do that), so the caller falls back to a simpler model.
pub fn fit_path(
    kind: ModelKind,
    history: &[f64],
    periods: &[usize],
    len: usize,
) -> Option<Vec<f64>> {
    let path = match kind {
        ModelKind::LastValue | ModelKind::SeasonalNaive => return None,
        ModelKind::Ets => {
            AutoETS::non_seasonal()
                .fit(history)
                .ok()?
                .predict(len, None)
                .ok()?
                .point
        }
        ModelKind::Mstl => {
            let periods = usable_periods(history.len(), periods);
            if periods.is_empty() {
                return None;
            }
            let model = MSTLModel::new(periods, AutoETS::non_seasonal().into_trend_model());
            model.fit(history).ok()?.predict(len, None).ok()?.point
        }
    };
    (path.len() == len && path.iter().all(|v| v.is_finite())).then_some(path)
}

/// Seasonal-naive point `step` steps (1-based) after the end of `history`.
pub fn seasonal_naive(history: &[f64], period: usize, step: usize) -> Option<f64> {
    let n = history.len();
    if period == 0 || n < period {
        return None;
    }
    let seasons_back = step.div_ceil(period);
    let idx = (n + step - 1).checked_sub(seasons_back * period)?;
    history.get(idx).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_naive_repeats_the_last_season() {
        let h = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0];
        assert_eq!(seasonal_naive(&h, 3, 1), Some(10.0));
        assert_eq!(seasonal_naive(&h, 3, 3), Some(30.0));
        assert_eq!(seasonal_naive(&h, 3, 4), Some(10.0));
        assert_eq!(seasonal_naive(&h, 7, 1), None);
    }

    #[test]
    fn candidates_grow_with_history_and_degenerate_series_do_not_fit() {
        assert_eq!(candidates(5, &[48]), vec![ModelKind::LastValue]);
        assert_eq!(
            candidates(60, &[48]),
            vec![
                ModelKind::LastValue,
                ModelKind::SeasonalNaive,
                ModelKind::Ets
            ]
        );
        assert_eq!(candidates(100, &[48]).last(), Some(&ModelKind::Mstl));
        // All-zero history: whatever the model does, no NaN or infinity escapes.
        if let Some(p) = fit_path(ModelKind::Mstl, &[0.0; 200], &[48], 5) {
            assert!(p.iter().all(|v| v.is_finite()));
        }
        assert!(fit_path(ModelKind::Ets, &[3.0; 50], &[], 5)
            .is_none_or(|p| p.iter().all(|v| v.is_finite())));
    }
}
