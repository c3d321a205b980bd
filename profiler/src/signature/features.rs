//! The feature vector a signature is a cluster of, and its standardisation.

use crate::sample::{Arrival, Sample};

/// Dimensions of the feature vector.
pub const DIMS: usize = 8;

/// Names of the dimensions, in order (for `/v1/signatures`).
pub const NAMES: [&str; DIMS] = [
    "request_bytes",
    "response_bytes",
    "service_time_seconds",
    "fanout",
    "path_segments",
    "id_segments",
    "query_params",
    "write_method",
];

/// Dimensions known at arrival, before the request is forwarded.
pub const ARRIVAL: [usize; 5] = [0, 4, 5, 6, 7];

/// Dimensions stored as `ln(1 + x)`: sizes, times and counts span orders of magnitude,
/// and a 10× difference should weigh the same at 1 KB as at 1 MB.
const LOG: [bool; DIMS] = [true, true, true, true, false, false, false, false];

pub type Vector = [f64; DIMS];

/// The full vector of a finished request.
pub fn of_sample(s: &Sample) -> Vector {
    let mut v = of_arrival(&s.arrival);
    let c = &s.completion;
    v[0] = ln1p(s.arrival.request_bytes.max(c.request_bytes) as f64);
    v[1] = ln1p(c.response_bytes as f64);
    // Microseconds, so sub-millisecond costs still separate on the log scale.
    v[2] = ln1p(c.service_time_us as f64);
    v[3] = ln1p(f64::from(c.fanout));
    v
}

/// The arrival-time vector; completion dimensions are 0 and unused.
pub fn of_arrival(a: &Arrival) -> Vector {
    [
        ln1p(a.request_bytes as f64),
        0.0,
        0.0,
        0.0,
        f64::from(a.shape.segments),
        f64::from(a.shape.id_segments),
        f64::from(a.shape.query_params),
        if a.method.is_write() { 1.0 } else { 0.0 },
    ]
}

/// Back to natural units (bytes, seconds, calls, counts) for people.
pub fn natural(v: &Vector) -> Vector {
    let mut out = *v;
    for (i, x) in out.iter_mut().enumerate() {
        if LOG.get(i).copied().unwrap_or(false) {
            *x = x.exp_m1().max(0.0);
        }
    }
    // Service time was in microseconds.
    out[2] /= 1e6;
    out
}

fn ln1p(x: f64) -> f64 {
    x.max(0.0).ln_1p()
}

/// Per-dimension centring and scaling, so no dimension dominates by its units.
#[derive(Clone, Debug, PartialEq)]
pub struct Scaler {
    mean: Vector,
    scale: Vector,
}

// === impl Scaler ===

impl Scaler {
    pub fn identity() -> Self {
        Self {
            mean: [0.0; DIMS],
            scale: [1.0; DIMS],
        }
    }

    /// Fits mean and standard deviation; a (nearly) constant dimension keeps scale 1 so
    /// it contributes nothing rather than blowing up.
    pub fn fit(data: &[Vector]) -> Self {
        if data.is_empty() {
            return Self::identity();
        }
        let n = data.len() as f64;
        let mut mean = [0.0; DIMS];
        for v in data {
            for (m, x) in mean.iter_mut().zip(v) {
                *m += x / n;
            }
        }
        let mut var = [0.0; DIMS];
        for v in data {
            for ((s, x), m) in var.iter_mut().zip(v).zip(&mean) {
                *s += (x - m).powi(2) / n;
            }
        }
        let scale = var.map(|s| if s.sqrt() < 1e-9 { 1.0 } else { s.sqrt() });
        Self { mean, scale }
    }

    pub fn apply(&self, v: &Vector) -> Vector {
        let mut out = [0.0; DIMS];
        for (((o, x), m), s) in out.iter_mut().zip(v).zip(&self.mean).zip(&self.scale) {
            *o = (x - m) / s;
        }
        out
    }

    pub fn invert(&self, v: &Vector) -> Vector {
        let mut out = [0.0; DIMS];
        for (((o, x), m), s) in out.iter_mut().zip(v).zip(&self.mean).zip(&self.scale) {
            *o = x * s + m;
        }
        out
    }
}
