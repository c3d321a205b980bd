//! Forecasting cost: a 14-day restore (20 160 one-minute observations fed to a fresh
//! forecaster, then one forecast: what a warm start costs), and the per-step cost of
//! one series (observe + forecast; the filter bank does the same O(1) work every
//! step, there is no refit to amortise). `cargo bench --bench forecast`.
//!
//! The series is synthetic but shaped like real traffic: the hourly profile of a real
//! day (NYC taxi demand, the demo's shape), a weekend dip, and noise; the cost of a fit
//! depends on the length and periods, not on the values.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use prescale_profiler::forecast::{ForecastParams, Forecaster};

/// Relative demand per hour of a real day (nab_nyc_taxi.csv, 2014-07-01, peak = 1).
const HOURLY: [f64; 24] = [
    0.55, 0.37, 0.26, 0.18, 0.16, 0.22, 0.43, 0.68, 0.78, 0.76, 0.74, 0.75, 0.78, 0.79, 0.82, 0.82,
    0.80, 0.87, 0.98, 1.00, 0.96, 0.93, 0.89, 0.74,
];

fn series(days: usize) -> Vec<f64> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    (0..days * 1440)
        .map(|m| {
            // xorshift noise, ±10 %
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = 0.9 + 0.2 * (state % 1000) as f64 / 1000.0;
            let (hour, frac) = ((m / 60) % 24, (m % 60) as f64 / 60.0);
            let shape = HOURLY[hour] * (1.0 - frac) + HOURLY[(hour + 1) % 24] * frac;
            let weekend = if (m / 1440) % 7 >= 5 { 0.7 } else { 1.0 };
            200.0 * shape * weekend * noise
        })
        .collect()
}

/// A forecaster that has seen `history` (observing is cheap; no fit happens yet).
fn primed(history: &[f64]) -> Forecaster {
    // The sidecar's horizon for a 135 s lead time on 1-minute steps.
    let mut f = Forecaster::new(ForecastParams::for_step(60, 3));
    for y in history {
        f.observe(*y);
    }
    f
}

fn bench(c: &mut Criterion) {
    let history = series(14);
    assert_eq!(history.len(), 20_160);
    let mut g = c.benchmark_group("forecast");
    g.sample_size(10);
    // A warm start: 14 days of history observed, then a forecast.
    g.bench_function("restore_14d_1m", |b| {
        b.iter_batched(
            || (),
            |()| black_box(primed(&history).forecast()),
            BatchSize::LargeInput,
        )
    });
    // What the sidecar does every step for one series: one observation and one
    // forecast.
    let mut f = primed(&history);
    let _ = f.forecast();
    let mut i = 0usize;
    g.bench_function("step_amortized", |b| {
        b.iter(|| {
            i += 1;
            f.observe(history[i % history.len()]);
            black_box(f.forecast())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
