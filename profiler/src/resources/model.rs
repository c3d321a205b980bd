//! The per-signature cost model: what one request of each signature costs the service
//! in CPU, memory and I/O, regressed from resource samples and per-signature load.
//!
//! Per interval between two resource samples, with `r_s` the request rate and `c_s`
//! the concurrency (Σ service time / interval, Little's law) of signature `s`:
//!
//! ```text
//! cpu_cores          = b_cpu + Σ cpu_s · r_s     (cpu_s: CPU seconds per request)
//! memory_bytes       = b_mem + Σ mem_s · c_s     (mem_s: bytes per concurrent request)
//! io_bytes_per_second = b_io + Σ io_s  · r_s     (io_s: bytes per request)
//! ```
//!
//! fitted by non-negative least squares (a request never frees CPU), with the baseline
//! `b` what the service uses when idle. A coefficient is `identified` only when its
//! signature's load varied independently of the others' over the window kept (with a
//! fixed mix, any split of the total between signatures fits equally well) and the
//! data pin it down to ±50 % at one standard error (the larger of the classical error
//! from the loaded intervals' scatter and the robust HC2 one, so idle intervals that
//! the baseline fits exactly cannot make a cost look precise); otherwise the model says so
//! instead of inventing a number. A signature that truly costs next to nothing is
//! therefore reported unidentified: its cost cannot be told from noise.

use super::linalg::{nnls, Gram};
use crate::sample::Millis;
use crate::signature::SignatureId;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Intervals with traffic a signature needs before its cost can be identified.
pub const MIN_ROWS: usize = 5;

/// The share of a signature's load variance not explained by the other signatures'
/// loads (1 − R², i.e. 1 / VIF) under which its cost is not identified.
pub const MIN_INDEPENDENT_SHARE: f64 = 0.05;

/// The standard error, relative to the cost, above which the cost is not identified:
/// a number known only to ±50 % (one sd) is not one to size containers by.
pub const MAX_RELATIVE_ERROR: f64 = 0.5;

/// A signature's load over one interval.
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize)]
pub struct Load {
    /// Requests per second.
    pub rate: f64,
    /// Mean requests in service at once.
    pub concurrency: f64,
}

/// One interval between two resource samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// End of the interval.
    pub at: Millis,
    /// Mean CPU cores used over the interval.
    pub cpu_cores: Option<f64>,
    /// Memory in use at the end of the interval.
    pub memory_bytes: Option<f64>,
    /// I/O bytes per second over the interval.
    pub io_bytes_per_second: Option<f64>,
    pub load: BTreeMap<SignatureId, Load>,
}

/// A bounded window of observations. Idle intervals pin the baseline but carry
/// nothing about costs: they may fill at most a quarter of the window, so a quiet
/// night does not push every loaded interval out.
pub struct CostModel {
    rows: VecDeque<Observation>,
    cap: usize,
}

/// One coefficient.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Coef {
    pub value: f64,
    /// Standard error of `value` (least squares on the same rows); None when the
    /// signature's load is collinear with the others'.
    pub std_error: Option<f64>,
    pub identified: bool,
    /// Intervals in which the signature had traffic.
    pub rows: usize,
}

/// The fit for one resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Fit {
    /// The idle usage.
    pub baseline: f64,
    /// Standard deviation of what the model does not explain, per interval.
    pub residual_sd: f64,
    /// Intervals fitted.
    pub rows: usize,
    pub signatures: BTreeMap<SignatureId, Coef>,
}

/// The fits for every resource the source measures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Costs {
    pub cpu: Option<Fit>,
    pub memory: Option<Fit>,
    pub io: Option<Fit>,
}

// === impl CostModel ===

impl CostModel {
    /// Keeps at most `cap` intervals (at least 8).
    pub fn new(cap: usize) -> Self {
        Self {
            rows: VecDeque::new(),
            cap: cap.max(8),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Forgets every interval: after a re-fit that creates a signature, older rows
    /// split the same requests between different columns, and mixing the two
    /// splits biases every cost.
    pub fn clear(&mut self) {
        self.rows.clear();
    }

    /// Adds one interval, dropping the oldest (the oldest idle one when idle intervals
    /// already fill their quarter).
    pub fn observe(&mut self, obs: Observation) {
        let idle = |o: &Observation| o.load.values().all(|l| l.rate <= 0.0);
        if idle(&obs) {
            let idle_rows = self.rows.iter().filter(|o| idle(o)).count();
            if idle_rows >= self.cap / 4 {
                if let Some(i) = self.rows.iter().position(idle) {
                    self.rows.remove(i);
                }
            }
        }
        self.rows.push_back(obs);
        while self.rows.len() > self.cap {
            self.rows.pop_front();
        }
    }

    /// Fits every resource. O(rows · signatures²): 60 ms for 7 200 rows and 16
    /// signatures (`cargo bench --profile dev --bench resources`).
    pub fn fit(&self) -> Costs {
        Costs {
            cpu: fit(&self.rows, |o| o.cpu_cores, |l| l.rate),
            memory: fit(&self.rows, |o| o.memory_bytes, |l| l.concurrency),
            io: fit(&self.rows, |o| o.io_bytes_per_second, |l| l.rate),
        }
    }
}

/// Least squares of `y` on a baseline and each signature's `x`, non-negative.
fn fit(
    rows: &VecDeque<Observation>,
    y: impl Fn(&Observation) -> Option<f64>,
    x: impl Fn(&Load) -> f64,
) -> Option<Fit> {
    let used: Vec<(&Observation, f64)> = rows
        .iter()
        .filter_map(|o| Some((o, y(o).filter(|v| v.is_finite())?)))
        .collect();
    if used.len() < 2 {
        return None;
    }
    let sigs: Vec<SignatureId> = used
        .iter()
        .flat_map(|(o, _)| o.load.keys().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Column 0 is the baseline; column k + 1 is signature sigs[k].
    let p = sigs.len() + 1;
    let row_of = |o: &Observation| -> Vec<f64> {
        std::iter::once(1.0)
            .chain(sigs.iter().map(|s| o.load.get(s).map_or(0.0, &x).max(0.0)))
            .collect()
    };
    let mut gram = Gram::zeros(p);
    let mut xty = vec![0.0; p];
    let mut with_traffic = vec![0usize; p];
    for (o, yv) in &used {
        let r = row_of(o);
        for (i, xi) in r.iter().enumerate() {
            if let Some(b) = xty.get_mut(i) {
                *b += xi * yv;
            }
            if *xi > 0.0 {
                if let Some(c) = with_traffic.get_mut(i) {
                    *c += 1;
                }
            }
            for (j, xj) in r.iter().enumerate() {
                gram.add(i, j, xi * xj);
            }
        }
    }
    let beta = nnls(&gram, &xty);
    // Residual sums of squares over every row and over the loaded rows alone, and
    // the robust covariance, in one pass.
    let (mut rss, mut rss_loaded, mut n_loaded) = (0.0, 0.0, 0usize);
    let mut sandwich = Sandwich::new(&gram);
    for (o, yv) in &used {
        let r = row_of(o);
        let fitted: f64 = r.iter().zip(&beta).map(|(a, b)| a * b).sum();
        let e = yv - fitted;
        rss += e * e;
        if r.iter().skip(1).any(|v| *v > 0.0) {
            rss_loaded += e * e;
            n_loaded += 1;
        }
        if let Some(s) = sandwich.as_mut() {
            s.add(&r, e);
        }
    }
    let n = used.len();
    let free = beta.iter().filter(|b| **b > 0.0).count().max(1);
    let sigma2 = rss / (n.saturating_sub(free).max(1)) as f64;
    // The signatures' costs are pinned by the loaded rows only, where the scatter is:
    // idle rows, which the baseline fits exactly on a log, must not dilute it.
    let free_costs = beta.iter().skip(1).filter(|b| **b > 0.0).count();
    let sigma2_loaded = rss_loaded / (n_loaded.saturating_sub(free_costs).max(1)) as f64;
    let sigma2_costs = sigma2.max(sigma2_loaded);
    let robust = sandwich.map(|s| s.variances());
    let mut signatures = BTreeMap::new();
    for (k, sig) in sigs.iter().enumerate() {
        let j = k + 1;
        let (independent, sst) = independent_variance(&gram, j, n);
        let share = if sst > 0.0 { independent / sst } else { 0.0 };
        let rows = with_traffic.get(j).copied().unwrap_or(0);
        // The larger of the classical error (residual variance of the loaded rows)
        // and the robust one (each row's own residual): pooling one variance over
        // every row let idle rows shrink it (20 busy minutes among 1 180 idle ones
        // looked 8× more precise than they were).
        let std_error = (independent > 0.0 && share >= 1e-9).then(|| {
            let hc = robust
                .as_ref()
                .and_then(|v| v.get(j))
                .copied()
                // Singular even with the ridge: the classical error alone.
                .unwrap_or(0.0);
            (sigma2_costs / independent).max(hc).sqrt()
        });
        let value = beta.get(j).copied().unwrap_or(0.0);
        let precise = std_error.is_some_and(|se| se <= MAX_RELATIVE_ERROR * value);
        signatures.insert(
            *sig,
            Coef {
                value,
                std_error,
                identified: rows >= MIN_ROWS && share >= MIN_INDEPENDENT_SHARE && precise,
                rows,
            },
        );
    }
    Some(Fit {
        baseline: beta.first().copied().unwrap_or(0.0),
        residual_sd: sigma2.sqrt(),
        rows: n,
        signatures,
    })
}

/// Heteroscedasticity-consistent (HC2, MacKinnon and White) variances of the
/// coefficients: `G⁻¹ (Σ eᵢ² / (1 − hᵢ) · xᵢxᵢᵀ) G⁻¹`, each row weighted by its own
/// residual `eᵢ` and leverage `hᵢ = xᵢᵀG⁻¹xᵢ`, so busy intervals' scatter is not
/// averaged with idle ones'. HC2 rather than the more conservative HC3 (`(1 − hᵢ)²`):
/// it is unbiased when the scatter is in fact even, and with HC3 a live test's heavy
/// cost (24 intervals from the metrics API) came out unidentified in one run of three.
/// O(p²) per row over its non-zero entries, as building the Gram matrix is.
struct Sandwich {
    inv: Gram,
    meat: Gram,
    /// The current row's non-zero entries (kept to reuse the allocation).
    nz: Vec<(usize, f64)>,
}

impl Sandwich {
    /// None when `gram` cannot be inverted even with the ridge.
    fn new(gram: &Gram) -> Option<Self> {
        Some(Self {
            inv: ridged(gram).inverse()?,
            meat: Gram::zeros(gram.n),
            nz: Vec::with_capacity(gram.n),
        })
    }

    /// One row `x` with residual `e`.
    fn add(&mut self, x: &[f64], e: f64) {
        if e == 0.0 {
            return;
        }
        self.nz.clear();
        self.nz
            .extend(x.iter().copied().enumerate().filter(|(_, v)| *v != 0.0));
        // Both matrices are symmetric: the upper triangle only (the meat is mirrored
        // in `variances`), which halves the cost.
        let mut h = 0.0;
        for (k, &(a, xa)) in self.nz.iter().enumerate() {
            h += xa * xa * self.inv.get(a, a);
            for &(b, xb) in self.nz.iter().skip(k + 1) {
                h += 2.0 * xa * xb * self.inv.get(a, b);
            }
        }
        // A row with leverage 1 is fitted exactly whatever it holds; the floor keeps
        // its weight finite (and large).
        let w = e * e / (1.0 - h).max(1e-3);
        for (k, &(a, xa)) in self.nz.iter().enumerate() {
            for &(b, xb) in self.nz.iter().skip(k) {
                self.meat.add(a, b, w * xa * xb);
            }
        }
    }

    /// The variance of each coefficient.
    fn variances(&self) -> Vec<f64> {
        let p = self.inv.n;
        (0..p)
            .map(|j| {
                let mut v = 0.0;
                for a in 0..p {
                    for b in 0..p {
                        let m = self.meat.get(a.min(b), a.max(b));
                        v += self.inv.get(j, a) * m * self.inv.get(b, j);
                    }
                }
                v.max(0.0)
            })
            .collect()
    }
}

/// `g` plus a tiny ridge, which keeps solves defined when columns are collinear; it
/// changes every result by far less than anything reported.
fn ridged(g: &Gram) -> Gram {
    let mut r = g.clone();
    let trace: f64 = (0..r.n).map(|i| r.get(i, i)).sum::<f64>().max(1e-300);
    for i in 0..r.n {
        r.add(i, i, trace * 1e-12);
    }
    r
}

/// For column `j`: the residual sum of squares of that column regressed on all the
/// others (baseline included), and its centred sum of squares. Their ratio is the
/// share of its variation no other column explains (1 − R²).
fn independent_variance(gram: &Gram, j: usize, n: usize) -> (f64, f64) {
    let others: Vec<usize> = (0..gram.n).filter(|&i| i != j).collect();
    let g_oo = gram.restrict(&others);
    // The other columns may themselves be collinear.
    let ridged = ridged(&g_oo);
    let g_oj: Vec<f64> = others.iter().map(|&i| gram.get(i, j)).collect();
    let gjj = gram.get(j, j);
    let explained = ridged.solve(&g_oj).map_or(0.0, |w| {
        w.iter().zip(&g_oj).map(|(a, b)| a * b).sum::<f64>()
    });
    let sum = gram.get(0, j);
    let sst = gjj - sum * sum / n.max(1) as f64;
    ((gjj - explained).max(0.0), sst.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service with 0.05 cores idle, 20 ms of CPU per heavy (1) request, 2 ms per
    /// light (2), 1 MB per concurrent heavy request; `mix` gives each interval's rates.
    fn observe(model: &mut CostModel, mix: impl Fn(usize) -> (f64, f64), n: usize, noise: f64) {
        for i in 0..n {
            let (h, l) = mix(i);
            // Deterministic ±noise, alternating, so the test does not depend on a seed.
            let e = if i % 2 == 0 { noise } else { -noise };
            model.observe(Observation {
                at: i as Millis * 1000,
                cpu_cores: Some(0.05 + 0.020 * h + 0.002 * l + e),
                memory_bytes: Some(50e6 + 1e6 * (h * 0.03)),
                io_bytes_per_second: None,
                load: BTreeMap::from([
                    (
                        1,
                        Load {
                            rate: h,
                            concurrency: h * 0.03,
                        },
                    ),
                    (
                        2,
                        Load {
                            rate: l,
                            concurrency: l * 0.004,
                        },
                    ),
                ]),
            });
        }
    }

    #[test]
    fn a_varied_mix_recovers_each_signatures_cost() {
        let mut m = CostModel::new(600);
        // Phases: heavy only, light only, both, idle.
        observe(
            &mut m,
            |i| match (i / 10) % 4 {
                0 => (10.0, 0.0),
                1 => (0.0, 50.0),
                2 => (5.0, 30.0),
                _ => (0.0, 0.0),
            },
            80,
            0.01,
        );
        let cpu = m.fit().cpu.unwrap();
        let (h, l) = (&cpu.signatures[&1], &cpu.signatures[&2]);
        assert!(h.identified && l.identified, "{cpu:?}");
        assert!((h.value - 0.020).abs() < 0.002, "heavy {h:?}");
        assert!((l.value - 0.002).abs() < 0.0005, "light {l:?}");
        assert!((cpu.baseline - 0.05).abs() < 0.01, "{cpu:?}");
        // The standard error reflects the noise: present, small, not zero.
        let se = h.std_error.unwrap();
        assert!(se > 0.0 && se < 0.002, "{h:?}");
        let mem = m.fit().memory.unwrap();
        assert!((mem.signatures[&1].value - 1e6).abs() < 1e4, "{mem:?}");
        assert!(m.fit().io.is_none());
    }

    #[test]
    fn a_fixed_mix_leaves_costs_unidentified() {
        let mut m = CostModel::new(600);
        // Always 2 light per heavy: only the blend is known.
        observe(
            &mut m,
            |i| {
                let h = (i % 7) as f64;
                (h, 2.0 * h)
            },
            60,
            0.0,
        );
        let cpu = m.fit().cpu.unwrap();
        assert!(!cpu.signatures[&1].identified, "{cpu:?}");
        assert!(!cpu.signatures[&2].identified, "{cpu:?}");
        // Nor is one whose cost is lost in the noise (0.002 s ± 0.05 cores).
        let mut m = CostModel::new(600);
        observe(
            &mut m,
            |i| (((i / 10) % 2) as f64 * 10.0, ((i / 5) % 2) as f64),
            80,
            0.05,
        );
        let cpu = m.fit().cpu.unwrap();
        assert!(cpu.signatures[&1].identified, "{cpu:?}");
        assert!(!cpu.signatures[&2].identified, "{cpu:?}");
        // A signature that is idle throughout is not identified either.
        let mut m = CostModel::new(600);
        observe(&mut m, |i| ((i % 5) as f64, 0.0), 40, 0.0);
        let cpu = m.fit().cpu.unwrap();
        assert!(cpu.signatures[&1].identified, "{cpu:?}");
        assert!(!cpu.signatures[&2].identified, "{cpu:?}");
    }

    #[test]
    fn idle_intervals_cannot_crowd_out_loaded_ones() {
        let mut m = CostModel::new(40);
        observe(
            &mut m,
            |i| ((i % 5) as f64 + 1.0, (i % 3) as f64 * 10.0),
            30,
            0.0,
        );
        observe(&mut m, |_| (0.0, 0.0), 1000, 0.0);
        assert_eq!(m.len(), 40);
        let cpu = m.fit().cpu.unwrap();
        assert!(cpu.signatures[&1].identified, "{cpu:?}");
        assert!((cpu.signatures[&1].value - 0.020).abs() < 1e-6, "{cpu:?}");
    }

    /// The window for `rates_that_move_together_...`: 1 200 one-minute intervals, one
    /// busy an hour; and each signature's realised bytes per request.
    fn together(seed: u64) -> (CostModel, [f64; 2]) {
        // A linear congruential generator: the test does not depend on a crate's RNG.
        let mut state: u64 = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut uniform = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut m = CostModel::new(7200);
        // Σ bytes and Σ requests per signature.
        let mut sums = [(0.0, 0u32); 2];
        for i in 0..1200u32 {
            let busy = i % 60 == 0;
            let (mut heavy, mut light) = (0u32, 0u32);
            let mut bytes = 0.0;
            if busy {
                heavy = (uniform() * 3.0) as u32;
                light = 20 + (uniform() * 20.0) as u32;
                // Exponential sizes: the mean is the signature's cost.
                for (k, (n, mean)) in [(heavy, 1e6), (light, 1e4)].into_iter().enumerate() {
                    for _ in 0..n {
                        let b = -mean * (1.0 - uniform()).ln();
                        bytes += b;
                        if let Some(s) = sums.get_mut(k) {
                            s.0 += b;
                            s.1 += 1;
                        }
                    }
                }
            }
            let rate = |n: u32| Load {
                rate: f64::from(n) / 60.0,
                concurrency: 0.0,
            };
            let mut load = BTreeMap::new();
            if busy {
                load.insert(1, rate(heavy));
                load.insert(2, rate(light));
            }
            m.observe(Observation {
                at: Millis::from(i) * 60_000,
                cpu_cores: None,
                memory_bytes: None,
                io_bytes_per_second: Some(bytes / 60.0),
                load,
            });
        }
        (m, sums.map(|(b, n)| b / f64::from(n.max(1))))
    }

    /// Two signatures whose rates move together, as on a log whose requests all fall
    /// in one minute an hour: 20 busy intervals among 1 180 idle ones, both busy in the
    /// same intervals only (0–2 heavy requests, 20–39 light), each request's bytes
    /// drawn at random around its signature's mean (heavy 1 MB, light 10 kB). The idle
    /// intervals fit exactly; pooling their zero residuals into one residual variance
    /// made the costs look ~8× more precise than they are: seed 1's heavy cost was
    /// reported identified, 1.008 MB ± 17 kB, where its requests carried 883 kB.
    #[test]
    fn rates_that_move_together_do_not_give_an_identified_wrong_cost() {
        for seed in 1..=4u64 {
            let (m, logged) = together(seed);
            let io = m.fit().io.unwrap();
            // The truth is what the requests actually carried, as a log would show.
            for (id, truth) in [1, 2].into_iter().zip(logged) {
                let c = &io.signatures[&id];
                let se = c.std_error.unwrap_or(f64::INFINITY);
                // An identified cost is near the truth, and its error bar says how
                // near: never 3 standard errors off.
                assert!(
                    !c.identified
                        || ((c.value / truth - 1.0).abs() < 0.5
                            && (c.value - truth).abs() <= 3.0 * se),
                    "seed {seed}, signature {id}: {c:?} (truth {truth}) in {io:?}"
                );
            }
        }
    }
}
