//! Recursive least squares with exponential forgetting: a linear regression refreshed
//! in O(D²) per observation, no allocation, equal to the batch fit on all the data so
//! far with older rows down-weighted.
//!
//! After rows (x_i, y_i), i = 1..n, the weights minimise
//! `Σ λ^(n-i) (y_i - w·x_i)² + λ^n δ |w|²` (an exponentially forgotten ridge; the
//! ridge term is the prior `P_0 = I/δ` and fades with the data it is worth). The
//! batch solution is what `bank_tests` compares against.

/// The regression state for `D` features.
#[derive(Clone, Debug)]
pub struct Rls<const D: usize> {
    w: [f64; D],
    /// The inverse of the weighted Gram matrix.
    p: [[f64; D]; D],
    lambda: f64,
    /// Rows learnt.
    n: usize,
}

/// The inverse Gram matrix's trace above which it is reset to the prior: forgetting
/// with features that stop varying lets `P` grow without bound (wind-up).
const MAX_TRACE: f64 = 1e8;

impl<const D: usize> Rls<D> {
    /// Forgetting factor `lambda` (0 < λ ≤ 1; 1 − 1/N remembers ~N rows) and ridge
    /// prior `delta`.
    pub fn new(lambda: f64, delta: f64) -> Self {
        let mut p = [[0.0; D]; D];
        for (i, row) in p.iter_mut().enumerate() {
            if let Some(v) = row.get_mut(i) {
                *v = 1.0 / delta.max(1e-12);
            }
        }
        Self {
            w: [0.0; D],
            p,
            lambda,
            n: 0,
        }
    }

    pub fn weights(&self) -> &[f64; D] {
        &self.w
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn predict(&self, x: &[f64; D]) -> f64 {
        self.w.iter().zip(x).map(|(w, x)| w * x).sum()
    }

    /// Learns one row.
    pub fn update(&mut self, x: &[f64; D], y: f64) {
        if !y.is_finite() || x.iter().any(|v| !v.is_finite()) {
            return;
        }
        // k = P x / (λ + xᵀ P x); w += k e; P = (P − k xᵀ P) / λ.
        let mut px = [0.0; D];
        for (o, row) in px.iter_mut().zip(&self.p) {
            *o = row.iter().zip(x).map(|(a, b)| a * b).sum();
        }
        let denom = self.lambda + x.iter().zip(&px).map(|(a, b)| a * b).sum::<f64>();
        if !(denom.is_finite() && denom > 0.0) {
            return;
        }
        let e = y - self.predict(x);
        let mut k = [0.0; D];
        for (k, px) in k.iter_mut().zip(&px) {
            *k = px / denom;
        }
        for (w, k) in self.w.iter_mut().zip(&k) {
            *w += k * e;
        }
        // P is symmetric, so xᵀP = (Px)ᵀ.
        let mut trace = 0.0;
        for (i, row) in self.p.iter_mut().enumerate() {
            let ki = k.get(i).copied().unwrap_or(0.0);
            for (j, v) in row.iter_mut().enumerate() {
                *v = (*v - ki * px.get(j).copied().unwrap_or(0.0)) / self.lambda;
            }
            trace += row.get(i).copied().unwrap_or(0.0);
        }
        self.n += 1;
        if !(trace.is_finite() && trace < MAX_TRACE) {
            // Keep the weights, start the confidence over.
            *self = Self {
                w: self.w,
                n: self.n,
                ..Self::new(self.lambda, 1.0)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rls;

    /// Solves `a w = b` by Gaussian elimination with partial pivoting.
    fn solve<const D: usize>(mut a: [[f64; D]; D], mut b: [f64; D]) -> [f64; D] {
        for c in 0..D {
            let p = (c..D)
                .max_by(|i, j| a[*i][c].abs().total_cmp(&a[*j][c].abs()))
                .expect("a row");
            a.swap(c, p);
            b.swap(c, p);
            for r in c + 1..D {
                let f = a[r][c] / a[c][c];
                let pivot = a[c];
                for (v, p) in a[r].iter_mut().zip(pivot).skip(c) {
                    *v -= f * p;
                }
                b[r] -= f * b[c];
            }
        }
        let mut w = [0.0; D];
        for c in (0..D).rev() {
            let s: f64 = (c + 1..D).map(|k| a[c][k] * w[k]).sum();
            w[c] = (b[c] - s) / a[c][c];
        }
        w
    }

    #[test]
    fn the_recursive_fit_at_t_equals_the_forgotten_ridge_refit_on_data_to_t() {
        // Rows with an intercept and two correlated regressors; the batch solution of
        // Σ λ^(n-i) (y_i - w·x_i)² + λ^n δ |w|², recomputed from scratch at each check.
        let (lambda, delta) = (0.98, 0.5);
        let mut rls = Rls::<3>::new(lambda, delta);
        let mut rows: Vec<([f64; 3], f64)> = Vec::new();
        let mut state: u64 = 17;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f64 / 500.0 - 1.0
        };
        for t in 0..300 {
            let u = next();
            let x = [1.0, u, 0.5 * u + next()];
            let y = 2.0 - 3.0 * x[1] + 0.7 * x[2] + 0.1 * next() + (t as f64 / 100.0);
            rls.update(&x, y);
            rows.push((x, y));
            if t % 37 != 0 {
                continue;
            }
            let n = rows.len();
            let mut a = [[0.0; 3]; 3];
            let mut b = [0.0; 3];
            for (i, (x, y)) in rows.iter().enumerate() {
                let w = lambda.powi((n - 1 - i) as i32);
                for r in 0..3 {
                    for c in 0..3 {
                        a[r][c] += w * x[r] * x[c];
                    }
                    b[r] += w * x[r] * y;
                }
            }
            for (r, row) in a.iter_mut().enumerate() {
                row[r] += lambda.powi(n as i32) * delta;
            }
            let want = solve(a, b);
            for (got, want) in rls.weights().iter().zip(want) {
                assert!(
                    (got - want).abs() < 1e-8,
                    "t={t}: {:?} vs {want:?}",
                    rls.weights()
                );
            }
        }
    }
}
