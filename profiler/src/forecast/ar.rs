//! A direct autoregression per horizon step on what a member's seasonal profile does
//! not explain (or on the series itself), refreshed in O(1) per observation.
//!
//! An exponential-smoothing level follows a burst as if it were a new level; the
//! residuals of minute-level demand decay back over a few steps, and a regression on
//! the last few residuals learns how fast, separately for each horizon step (a
//! direct forecast: no compounding of one-step errors).

use super::rls::Rls;

/// Lags of the autoregressive members.
pub(crate) const AR_LAGS: usize = 6;
/// Their features: an intercept and the lags.
pub(crate) const AR_D: usize = AR_LAGS + 1;

/// A direct autoregression per horizon step on what the member's profile does not
/// explain: `d_(t+h) = w_h · [1, d_t, …, d_(t-L+1)]`, each `w_h` refreshed by
/// recursive least squares with forgetting when its target arrives.
#[derive(Clone, Debug)]
pub(crate) struct Ar {
    /// The last `AR_LAGS + horizon` deviations, ring by the member's own index.
    past: Vec<f64>,
    fits: Vec<Rls<AR_D>>,
    /// Deviations seen.
    n: usize,
}

impl Ar {
    pub(crate) fn new(h: usize, lambda: f64, delta: f64) -> Self {
        Self {
            past: vec![0.0; AR_LAGS + h],
            fits: vec![Rls::new(lambda, delta); h],
            n: 0,
        }
    }

    /// The features at the member's index `i` (needs `i + 1 >= AR_LAGS`).
    fn features(&self, i: usize) -> [f64; AR_D] {
        let r = self.past.len().max(1);
        let mut x = [1.0; AR_D];
        for (lag, v) in x.iter_mut().skip(1).enumerate() {
            *v = self.past.get((i + r - lag) % r).copied().unwrap_or(0.0);
        }
        x
    }

    pub(crate) fn push(&mut self, d: f64) {
        let r = self.past.len().max(1);
        let i = self.n;
        if let Some(v) = self.past.get_mut(i % r) {
            *v = d;
        }
        self.n += 1;
        for step in 1..=self.fits.len() {
            let Some(origin) = i.checked_sub(step).filter(|o| o + 1 >= AR_LAGS) else {
                break;
            };
            let x = self.features(origin);
            if let Some(fit) = self.fits.get_mut(step - 1) {
                fit.update(&x, d);
            }
        }
    }

    /// The deviation `step` ahead of the latest; None until the fit has seen rows.
    pub(crate) fn predict(&self, step: usize) -> Option<f64> {
        let last = self.n.checked_sub(1).filter(|i| i + 1 >= AR_LAGS)?;
        let fit = self.fits.get(step - 1).filter(|f| f.rows() >= 4 * AR_D)?;
        Some(fit.predict(&self.features(last)))
    }
}

#[cfg(test)]
impl Ar {
    /// The regression weights for `step` (intercept first).
    pub(crate) fn weights(&self, step: usize) -> Option<[f64; AR_D]> {
        self.fits.get(step - 1).map(|f| *f.weights())
    }
}

#[cfg(test)]
mod tests {
    use super::{Ar, AR_D};

    /// Deterministic noise in [-1, 1) (xorshift).
    fn noise(state: &mut u64) -> f64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state % 2_000_000) as f64 / 1_000_000.0 - 1.0
    }

    #[test]
    fn direct_fits_learn_an_ar2_process_and_its_two_step_weights() {
        // d_t = 0.6 d_(t-1) + 0.25 d_(t-2) + e_t. One step ahead the best weights are
        // (0.6, 0.25, 0, ...); two steps ahead, substituting d_(t+1):
        // d_(t+2) = (0.6² + 0.25) d_t + 0.6·0.25 d_(t-1) + noise.
        let (a1, a2) = (0.6, 0.25);
        let mut ar = Ar::new(3, 1.0 - 1.0 / 20_000.0, 1.0);
        let mut state = 5;
        let (mut d1, mut d2) = (0.0, 0.0);
        for _ in 0..20_000 {
            let d = a1 * d1 + a2 * d2 + noise(&mut state);
            ar.push(d);
            (d2, d1) = (d1, d);
        }
        let one = ar.weights(1).expect("step 1");
        let two = ar.weights(2).expect("step 2");
        let want_one = [0.0, a1, a2, 0.0, 0.0, 0.0, 0.0];
        let want_two = [0.0, a1 * a1 + a2, a1 * a2, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(AR_D, want_one.len());
        for i in 0..AR_D {
            assert!((one[i] - want_one[i]).abs() < 0.05, "step 1: {one:?}");
            assert!((two[i] - want_two[i]).abs() < 0.05, "step 2: {two:?}");
        }
        // The forecast applies those weights to the latest deviations.
        let p1 = ar.predict(1).expect("a forecast");
        assert!(
            (p1 - (one[0] + one[1] * d1 + one[2] * d2)).abs() < 0.2,
            "{p1}"
        );
    }
}
