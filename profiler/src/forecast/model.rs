//! The kinds of model a published forecast comes from, and seasonal-naive (the
//! reference every accuracy number is relative to).

use serde::Serialize;

/// A forecasting model, as reported with a forecast: the kind of the bank member that
/// ranked first (see [`super::bank`]); the published point is a combination.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Tomorrow looks like now: the fallback for any history.
    LastValue,
    /// Tomorrow looks like the same time one season ago (the reference).
    SeasonalNaive,
    /// Exponential smoothing of the level (and a damped trend).
    Ets,
    /// Exponential smoothing of the series minus a learned daily or weekly profile.
    SeasonalEts,
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
}
