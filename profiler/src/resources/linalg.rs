//! Small dense least squares: normal equations, a pivoted solve and Lawson–Hanson
//! non-negative least squares.
//!
//! The systems here have at most one column per signature plus the baseline (≤ 18),
//! so a few dozen lines of Gaussian elimination serve better than a matrix crate.

/// A symmetric matrix stored row-major, `n × n`.
#[derive(Clone, Debug)]
pub struct Gram {
    pub n: usize,
    pub a: Vec<f64>,
}

// === impl Gram ===

impl Gram {
    pub fn zeros(n: usize) -> Self {
        Self {
            n,
            a: vec![0.0; n * n],
        }
    }

    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.a.get(i * self.n + j).copied().unwrap_or(0.0)
    }

    pub fn add(&mut self, i: usize, j: usize, v: f64) {
        if let Some(x) = self.a.get_mut(i * self.n + j) {
            *x += v;
        }
    }

    /// The sub-matrix on `idx` (rows and columns).
    pub fn restrict(&self, idx: &[usize]) -> Gram {
        let mut g = Gram::zeros(idx.len());
        for (r, &i) in idx.iter().enumerate() {
            for (c, &j) in idx.iter().enumerate() {
                g.add(r, c, self.get(i, j));
            }
        }
        g
    }

    /// Solves `self · x = b` by Gaussian elimination with partial pivoting. None when
    /// the matrix is singular to working precision (a column that carries nothing
    /// the others do not).
    pub fn solve(&self, b: &[f64]) -> Option<Vec<f64>> {
        let n = self.n;
        if b.len() != n {
            return None;
        }
        let scale = (0..n).map(|i| self.get(i, i).abs()).fold(0.0, f64::max);
        if n == 0 {
            return Some(Vec::new());
        }
        if scale <= 0.0 {
            return None;
        }
        let w = n + 1;
        let mut m = vec![0.0; n * w];
        for i in 0..n {
            for j in 0..n {
                *m.get_mut(i * w + j)? = self.get(i, j);
            }
            *m.get_mut(i * w + n)? = *b.get(i)?;
        }
        for col in 0..n {
            let cell = |r: usize| m.get(r * w + col).map_or(0.0, |v| v.abs());
            let pivot = (col..n).max_by(|&x, &y| cell(x).total_cmp(&cell(y)))?;
            if m.get(pivot * w + col)?.abs() <= scale * 1e-12 {
                return None;
            }
            if pivot != col {
                for j in 0..w {
                    m.swap(pivot * w + j, col * w + j);
                }
            }
            let p = *m.get(col * w + col)?;
            for r in (col + 1)..n {
                let f = *m.get(r * w + col)? / p;
                if f != 0.0 {
                    for j in col..w {
                        let v = *m.get(col * w + j)?;
                        *m.get_mut(r * w + j)? -= f * v;
                    }
                }
            }
        }
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            let mut s = *m.get(i * w + n)?;
            for j in (i + 1)..n {
                s -= *m.get(i * w + j)? * x.get(j)?;
            }
            *x.get_mut(i)? = s / *m.get(i * w + i)?;
        }
        x.iter().all(|v| v.is_finite()).then_some(x)
    }
}

impl Gram {
    /// The inverse, column by column; None when singular (see [`Gram::solve`]).
    /// O(n⁴) by repeated elimination, nothing for n ≤ 18.
    pub fn inverse(&self) -> Option<Gram> {
        let n = self.n;
        let mut inv = Gram::zeros(n);
        for j in 0..n {
            let e: Vec<f64> = (0..n).map(|i| if i == j { 1.0 } else { 0.0 }).collect();
            for (i, v) in self.solve(&e)?.into_iter().enumerate() {
                inv.add(i, j, v);
            }
        }
        Some(inv)
    }
}

/// Non-negative least squares on the normal equations (`gram = XᵀX`, `xty = Xᵀy`):
/// min ‖Xβ − y‖² subject to β ≥ 0, by Lawson and Hanson's active-set method. Columns
/// that are all zero stay at zero.
// Every index is below `n`, the length of `beta`, `passive` and `grad`, or below
// `idx.len()`, the length of `z`: indexing cannot panic, and `get` everywhere would
// bury the algorithm.
#[allow(clippy::indexing_slicing)]
pub fn nnls(gram: &Gram, xty: &[f64]) -> Vec<f64> {
    let n = gram.n;
    let mut beta = vec![0.0; n];
    let mut passive = vec![false; n];
    let tol = 1e-10
        * (0..n)
            .map(|i| gram.get(i, i))
            .fold(0.0, f64::max)
            .max(1e-300);
    // Each outer step frees one variable; 3n bounds the loop against cycling.
    for _ in 0..(3 * n + 3) {
        let grad: Vec<f64> = (0..n)
            .map(|i| {
                xty.get(i).copied().unwrap_or(0.0)
                    - (0..n).map(|j| gram.get(i, j) * beta[j]).sum::<f64>()
            })
            .collect();
        let next = (0..n)
            .filter(|&i| !passive[i] && grad[i] > tol && gram.get(i, i) > 0.0)
            .max_by(|&a, &b| grad[a].total_cmp(&grad[b]));
        let Some(j) = next else { break };
        passive[j] = true;
        // Inner loop: solve on the passive set, step back towards feasibility.
        for _ in 0..(n + 1) {
            let idx: Vec<usize> = (0..n).filter(|&i| passive[i]).collect();
            let sub = gram.restrict(&idx);
            let rhs: Vec<f64> = idx
                .iter()
                .map(|&i| xty.get(i).copied().unwrap_or(0.0))
                .collect();
            let Some(z) = sub.solve(&rhs) else {
                // Dependent on the others: this column adds nothing; leave it out.
                passive[j] = false;
                break;
            };
            if z.iter().all(|v| *v > 0.0) {
                for (k, &i) in idx.iter().enumerate() {
                    beta[i] = z[k];
                }
                break;
            }
            let mut alpha = 1.0f64;
            for (k, &i) in idx.iter().enumerate() {
                if z[k] <= 0.0 {
                    let d = beta[i] - z[k];
                    if d > 0.0 {
                        alpha = alpha.min(beta[i] / d);
                    }
                }
            }
            let scale = z.iter().map(|v| v.abs()).fold(0.0, f64::max);
            for (k, &i) in idx.iter().enumerate() {
                beta[i] += alpha * (z[k] - beta[i]);
                // The variable that set `alpha` lands on zero (up to rounding).
                if beta[i] <= 4.0 * f64::EPSILON * scale {
                    beta[i] = 0.0;
                    passive[i] = false;
                }
            }
        }
    }
    beta
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(rows: &[(Vec<f64>, f64)]) -> (Gram, Vec<f64>) {
        let n = rows[0].0.len();
        let mut g = Gram::zeros(n);
        let mut b = vec![0.0; n];
        for (x, y) in rows {
            for i in 0..n {
                b[i] += x[i] * y;
                for j in 0..n {
                    g.add(i, j, x[i] * x[j]);
                }
            }
        }
        (g, b)
    }

    #[test]
    fn solve_recovers_a_known_system() {
        let mut g = Gram::zeros(2);
        g.add(0, 0, 2.0);
        g.add(0, 1, 1.0);
        g.add(1, 0, 1.0);
        g.add(1, 1, 3.0);
        let x = g.solve(&[3.0, 5.0]).unwrap();
        assert!(
            (x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12,
            "{x:?}"
        );
        let mut singular = Gram::zeros(2);
        for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            singular.add(i, j, 1.0);
        }
        assert!(singular.solve(&[1.0, 1.0]).is_none());
    }

    #[test]
    fn nnls_matches_least_squares_when_unconstrained_and_clamps_otherwise() {
        // y = 1 + 2a + 0.5b exactly: NNLS finds it.
        let rows: Vec<_> = (0..20)
            .map(|i| {
                let (a, b) = ((i % 5) as f64, (i / 5) as f64);
                (vec![1.0, a, b], 1.0 + 2.0 * a + 0.5 * b)
            })
            .collect();
        let (g, b) = normal(&rows);
        let beta = nnls(&g, &b);
        for (got, want) in beta.iter().zip([1.0, 2.0, 0.5]) {
            assert!((got - want).abs() < 1e-9, "{beta:?}");
        }
        // y = 10 − a: the unconstrained slope is negative; NNLS clamps it to 0 and
        // the intercept takes the mean, 5.5.
        let rows: Vec<_> = (0..10)
            .map(|i| (vec![1.0, i as f64], 10.0 - i as f64))
            .collect();
        let (g, b) = normal(&rows);
        let beta = nnls(&g, &b);
        assert_eq!(beta[1], 0.0, "{beta:?}");
        assert!((beta[0] - 5.5).abs() < 1e-9, "{beta:?}");
    }
}
