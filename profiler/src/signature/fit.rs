//! Clustering: k-means (linfa-clustering) over standardised vectors, with k chosen
//! automatically by silhouette within configured bounds.

use super::features::{Vector, DIMS};
use linfa::traits::{Fit, Predict};
use linfa::DatasetBase;
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256Plus;

/// How a fit searches for k.
#[derive(Clone, Debug, PartialEq)]
pub struct FitParams {
    pub min_k: usize,
    pub max_k: usize,
    /// Below this best silhouette the data has no clear structure: one signature.
    pub min_silhouette: f64,
    /// Points used to score silhouettes (the score is quadratic in them).
    pub silhouette_sample: usize,
    pub seed: u64,
}

/// The chosen clustering, in standardised space.
#[derive(Clone, Debug)]
pub struct Clustering {
    pub centroids: Vec<Vector>,
    /// Cluster index of each input point.
    pub labels: Vec<usize>,
    /// Silhouette of the chosen k (0 when k = 1).
    pub silhouette: f64,
}

/// Clusters standardised points. Returns `None` only for empty input.
pub fn cluster(points: &[Vector], p: &FitParams) -> Option<Clustering> {
    if points.is_empty() {
        return None;
    }
    let data = Array2::from_shape_fn((points.len(), DIMS), |(i, j)| {
        points.get(i).and_then(|v| v.get(j)).copied().unwrap_or(0.0)
    });
    let dataset = DatasetBase::from(data);
    let distinct = distinct_points(points, p.max_k);
    let mut best: Option<Clustering> = None;
    for k in p.min_k.max(2)..=p.max_k.min(distinct) {
        let rng = Xoshiro256Plus::seed_from_u64(p.seed ^ k as u64);
        let Ok(model) = KMeans::params_with_rng(k, rng)
            .n_runs(3)
            .max_n_iterations(100)
            .tolerance(1e-4)
            .fit(&dataset)
        else {
            continue;
        };
        let labels: Vec<usize> = model.predict(&dataset).to_vec();
        let centroids: Vec<Vector> = model
            .centroids()
            .rows()
            .into_iter()
            .map(|r| {
                let mut v = [0.0; DIMS];
                for (o, x) in v.iter_mut().zip(r.iter()) {
                    *o = *x;
                }
                v
            })
            .collect();
        let score = silhouette(
            points,
            &labels,
            k,
            &subsample(points.len(), p.silhouette_sample, p.seed),
        );
        if best.as_ref().is_none_or(|b| score > b.silhouette) {
            best = Some(Clustering {
                centroids,
                labels,
                silhouette: score,
            });
        }
    }
    match best {
        Some(b) if b.silhouette >= p.min_silhouette => Some(b),
        // No k >= 2 separates the data well: everything is one signature.
        _ if p.min_k <= 1 || distinct < 2 => Some(single(points)),
        b => b,
    }
}

fn single(points: &[Vector]) -> Clustering {
    let n = points.len() as f64;
    let mut c = [0.0; DIMS];
    for v in points {
        for (o, x) in c.iter_mut().zip(v) {
            *o += x / n;
        }
    }
    Clustering {
        centroids: vec![c],
        labels: vec![0; points.len()],
        silhouette: 0.0,
    }
}

/// Distinct points, counted up to `cap` (k cannot exceed them).
fn distinct_points(points: &[Vector], cap: usize) -> usize {
    let mut seen: Vec<&Vector> = Vec::new();
    for v in points {
        if !seen.contains(&v) {
            seen.push(v);
            if seen.len() >= cap {
                break;
            }
        }
    }
    seen.len()
}

pub fn distance2(a: &Vector, b: &Vector) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// At most `max` distinct indices below `n`, drawn pseudo-randomly (seeded, so a fit is
/// reproducible). Evenly spaced picks would alias with periodic traffic.
fn subsample(n: usize, max: usize, seed: u64) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let mut rng = Xoshiro256Plus::seed_from_u64(seed);
    // Partial Fisher-Yates over the index range.
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..max {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(max);
    idx
}

/// Mean silhouette over the points at `idx`.
fn silhouette(points: &[Vector], labels: &[usize], k: usize, idx: &[usize]) -> f64 {
    let mut total = 0.0;
    let mut counted = 0usize;
    for &i in idx {
        let (Some(pi), Some(&li)) = (points.get(i), labels.get(i)) else {
            continue;
        };
        let mut sum = vec![0.0; k];
        let mut cnt = vec![0usize; k];
        for &j in idx {
            if i == j {
                continue;
            }
            let (Some(pj), Some(&lj)) = (points.get(j), labels.get(j)) else {
                continue;
            };
            if let (Some(s), Some(c)) = (sum.get_mut(lj), cnt.get_mut(lj)) {
                *s += distance2(pi, pj).sqrt();
                *c += 1;
            }
        }
        let own = match (sum.get(li), cnt.get(li)) {
            (Some(s), Some(&c)) if c > 0 => s / c as f64,
            // A singleton cluster has silhouette 0 by convention.
            _ => {
                counted += 1;
                continue;
            }
        };
        let other = sum
            .iter()
            .zip(&cnt)
            .enumerate()
            .filter(|(l, (_, c))| *l != li && **c > 0)
            .map(|(_, (s, c))| s / *c as f64)
            .fold(f64::INFINITY, f64::min);
        if other.is_finite() {
            total += (other - own) / own.max(other).max(1e-12);
        }
        counted += 1;
    }
    if counted == 0 {
        0.0
    } else {
        total / counted as f64
    }
}

/// Pairs new centroids with old ones (both standardised by the same scaler), closest
/// first, so a signature keeps its id across re-fits. Returns, for each new centroid,
/// the index of its old partner if it is within `radius`.
pub fn match_centroids(new: &[Vector], old: &[Vector], radius: f64) -> Vec<Option<usize>> {
    let mut pairs: Vec<(f64, usize, usize)> = Vec::with_capacity(new.len() * old.len());
    for (i, n) in new.iter().enumerate() {
        for (j, o) in old.iter().enumerate() {
            pairs.push((distance2(n, o), i, j));
        }
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = vec![None; new.len()];
    let mut taken = vec![false; old.len()];
    for (d, i, j) in pairs {
        if d > radius * radius {
            break;
        }
        let free_new = out.get(i).is_some_and(Option::is_none);
        let free_old = taken.get(j).is_some_and(|t| !t);
        if free_new && free_old {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(j);
            }
            if let Some(t) = taken.get_mut(j) {
                *t = true;
            }
        }
    }
    out
}
