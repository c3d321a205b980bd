//! Calibrated intervals: split-conformal quantiles of recent signed forecast errors,
//! kept separately for each horizon step.
//!
//! augurs' MSTL intervals ignore the uncertainty of the seasonal components, so they
//! are too narrow; the errors a model actually made at each horizon are the honest
//! measure. With exchangeable errors, the empirical (1±level)/2 quantiles give
//! intervals whose coverage is close to `level`.

use std::collections::VecDeque;

/// Recent errors (actual − point) per horizon step, each a bounded ring.
#[derive(Clone, Debug)]
pub struct Calibration {
    window: usize,
    errors: Vec<VecDeque<f64>>,
}

/// Errors needed at a horizon before its quantiles are trusted.
pub const MIN_ERRORS: usize = 30;

// === impl Calibration ===

impl Calibration {
    pub fn new(horizon: usize, window: usize) -> Self {
        Self {
            window: window.max(MIN_ERRORS),
            errors: vec![VecDeque::new(); horizon],
        }
    }

    /// Records the error of a forecast `step` steps ahead (1-based).
    pub fn record(&mut self, step: usize, error: f64) {
        if !error.is_finite() {
            return;
        }
        if let Some(ring) = step.checked_sub(1).and_then(|i| self.errors.get_mut(i)) {
            if ring.len() == self.window {
                ring.pop_front();
            }
            ring.push_back(error);
        }
    }

    /// Offsets `(below, above)` to add to a point forecast `step` steps ahead for a
    /// central interval of `level`; `None` until enough errors were seen.
    pub fn offsets(&self, step: usize, level: f64) -> Option<(f64, f64)> {
        let ring = step.checked_sub(1).and_then(|i| self.errors.get(i))?;
        if ring.len() < MIN_ERRORS {
            return None;
        }
        // Two order statistics by selection (O(n)), not a sort of the window per call.
        let mut values: Vec<f64> = ring.iter().copied().collect();
        let alpha = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
        Some((
            select_quantile(&mut values, alpha),
            select_quantile(&mut values, 1.0 - alpha),
        ))
    }

    /// Mean absolute error at `step`, over the errors kept.
    pub fn mae(&self, step: usize) -> Option<f64> {
        let ring = step.checked_sub(1).and_then(|i| self.errors.get(i))?;
        (!ring.is_empty()).then(|| ring.iter().map(|e| e.abs()).sum::<f64>() / ring.len() as f64)
    }

    /// Errors kept at `step`.
    pub fn len(&self, step: usize) -> usize {
        step.checked_sub(1)
            .and_then(|i| self.errors.get(i))
            .map_or(0, VecDeque::len)
    }
}

/// `quantile` of unsorted values by selection (reorders `values`).
fn select_quantile(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let a = *values.select_nth_unstable_by(lo, f64::total_cmp).1;
    // The next order statistic is the smallest of what selection put above `lo`.
    let b = values
        .get(lo + 1..)
        .and_then(|above| above.iter().copied().min_by(f64::total_cmp))
        .filter(|_| pos > lo as f64)
        .unwrap_or(a);
    a + (b - a) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_cover_the_requested_share_of_past_errors() {
        let mut c = Calibration::new(2, 1000);
        // Errors -50..=49 at step 1: a 90 % interval spans about -45 .. 44.
        for e in -50..50 {
            c.record(1, f64::from(e));
        }
        let (lo, hi) = c.offsets(1, 0.9).unwrap();
        assert!(
            (lo - -45.05).abs() < 1e-9 && (hi - 44.05).abs() < 1e-9,
            "{lo} {hi}"
        );
        let covered = (-50..50)
            .filter(|e| (lo..=hi).contains(&f64::from(*e)))
            .count();
        assert_eq!(covered, 90);
        // Step 2 has no errors yet: no interval rather than a made-up one.
        assert_eq!(c.offsets(2, 0.9), None);
        assert_eq!(c.offsets(3, 0.9), None);
        assert!((c.mae(1).unwrap() - 25.0).abs() < 1e-9);
    }
}
