//! Synthetic traffic for tests: three kinds of work about 10x apart in size and cost.

use crate::route::PathShape;
use crate::sample::{Arrival, Completion, InlinePath, Method, Sample};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256Plus;

/// Three kinds of work whose sizes and costs differ by about 10× from each other.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// GET /api/items/{id}: 2 KB, 2 ms, no fanout.
    Read,
    /// GET /api/search?q=..: 20 KB, 20 ms, 3 downstream calls.
    Search,
    /// POST /api/upload: 200 KB in, 200 B out, 200 ms, 1 call.
    Upload,
}

pub const KINDS: [Kind; 3] = [Kind::Read, Kind::Search, Kind::Upload];

fn noise(rng: &mut Xoshiro256Plus) -> f64 {
    // Log-normal-ish jitter, about ±30 %.
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((u - 0.5) * 0.6).exp()
}

pub fn sample(kind: Kind, rng: &mut Xoshiro256Plus) -> Sample {
    let n = rng.next_u64() % 100_000;
    let (method, target, req, resp, us, fanout) = match kind {
        Kind::Read => (
            Method::Get,
            format!("/api/items/{n}"),
            0.0,
            2_000.0,
            2_000.0,
            0,
        ),
        Kind::Search => (
            Method::Get,
            format!("/api/search?q=w{n}"),
            0.0,
            20_000.0,
            20_000.0,
            3,
        ),
        Kind::Upload => (
            Method::Post,
            "/api/upload".to_string(),
            200_000.0,
            200.0,
            200_000.0,
            1,
        ),
    };
    let mut j = || noise(rng);
    Sample {
        at: 0,
        arrival: Arrival {
            method,
            shape: PathShape::of(&target),
            request_bytes: (req * j()) as u64,
            source: 0,
            tier: 0,
        },
        completion: Completion {
            request_bytes: (req * j()) as u64,
            response_bytes: (resp * j()) as u64,
            service_time_us: (us * j()) as u64,
            status: 200,
            fanout,
        },
        path: InlinePath::new(&target),
        guess: None,
    }
}

pub fn population(seed: u64, n: usize) -> (Vec<Sample>, Vec<Kind>) {
    let mut rng = Xoshiro256Plus::seed_from_u64(seed);
    let kinds: Vec<Kind> = KINDS.iter().copied().cycle().take(n).collect();
    let samples = kinds.iter().map(|k| sample(*k, &mut rng)).collect();
    (samples, kinds)
}
