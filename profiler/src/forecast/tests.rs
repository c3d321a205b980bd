use super::eval::evaluate;
use super::*;

fn params(horizon: usize, periods: Vec<usize>) -> ForecastParams {
    ForecastParams {
        horizon,
        level: 0.9,
        periods,
        max_history: 5000,
        refit_every: 24,
        calibration_window: 500,
        non_negative: true,
    }
}

#[test]
fn short_flat_zero_and_gappy_series_never_panic_or_produce_nan() {
    let cases: Vec<Vec<f64>> = vec![
        vec![5.0],
        vec![0.0; 300],
        vec![7.0; 300],
        (0..300)
            .map(|i| {
                if i % 10 == 0 {
                    f64::NAN
                } else {
                    (i % 24) as f64
                }
            })
            .collect(),
        (0..300)
            .map(|i| if i > 150 { 0.0 } else { 100.0 })
            .collect(),
    ];
    for series in cases {
        let mut f = Forecaster::new(params(5, vec![24]));
        for y in &series {
            f.observe(*y);
            let fc = f.forecast().expect("a forecast once there is history");
            for p in &fc.points {
                assert!(
                    p.point.is_finite() && p.lower.is_finite() && p.upper.is_finite(),
                    "{fc:?}"
                );
                assert!(p.lower <= p.point && p.point <= p.upper, "{fc:?}");
                assert!(p.lower >= 0.0, "non-negative demand: {fc:?}");
            }
        }
    }
    assert!(Forecaster::new(params(3, vec![])).forecast().is_none());
}

#[test]
fn a_clean_daily_pattern_is_learned_and_its_interval_is_calibrated() {
    // A daily sine (period 48 steps) plus deterministic noise.
    let series: Vec<f64> = (0..48 * 20)
        .map(|i| {
            let season = 100.0 + 50.0 * (i as f64 * std::f64::consts::TAU / 48.0).sin();
            let noise = ((i * 7919) % 23) as f64 - 11.0;
            season + noise
        })
        .collect();
    let ev = evaluate(&series, params(3, vec![48]), 48 * 6);
    let h1 = &ev.horizons[0];
    // A model that learns the season is far better than repeating the last value, and
    // at least as good as seasonal-naive (which carries a whole day's noise).
    assert!(
        h1.relative_to_seasonal_naive.unwrap() < 1.0,
        "{:?}",
        ev.horizons
    );
    assert!(
        (0.8..=0.97).contains(&h1.coverage),
        "coverage {}",
        h1.coverage
    );
}

#[test]
fn gaps_are_not_scored_and_summaries_stay_finite() {
    let series: Vec<f64> = (0..600)
        .map(|i| {
            if i % 50 == 7 {
                f64::NAN
            } else {
                // Noise keeps seasonal-naive's error above zero, so there is a ratio.
                10.0 + (i % 24) as f64 + ((i * 7919) % 13) as f64 / 4.0
            }
        })
        .collect();
    let ev = evaluate(&series, params(3, vec![24]), 100);
    assert!(ev.rows.iter().all(|r| r.actual.is_finite()));
    for h in &ev.horizons {
        assert!(
            h.mae.is_finite() && h.mase.is_finite() && h.smape.is_finite(),
            "{h:?}"
        );
        assert!(
            h.relative_to_seasonal_naive.is_some_and(f64::is_finite),
            "{h:?}"
        );
    }
}

#[test]
fn a_restart_after_a_level_shift_forecasts_the_new_level_only() {
    // 200 steps around 10, then 80 steps around 50: a step change.
    let noise = |i: usize| ((i * 7919) % 13) as f64 / 13.0 - 0.5;
    let mut f = Forecaster::new(params(1, vec![]));
    for i in 0..200 {
        f.observe(10.0 + noise(i));
        f.forecast();
    }
    for i in 200..280 {
        f.observe(50.0 + noise(i));
        f.forecast();
    }
    // Restarted on the 80 steps since the shift: the old level is gone from the
    // history, and the interval was calibrated on post-shift errors only, so it is
    // narrow again (the old one had to cover a 40-unit miss).
    f.restart_keeping(80);
    assert_eq!(f.observed(), 80);
    let fc = f.forecast().unwrap();
    let p = fc.points[0];
    assert!((p.point - 50.0).abs() < 2.0, "{p:?}");
    assert!(fc.calibrated, "{fc:?}");
    assert!(p.upper - p.lower < 5.0, "{p:?}");
    // Keeping more than there is keeps everything; 0 forgets everything.
    f.restart_keeping(10_000);
    assert_eq!(f.observed(), 80);
    f.restart_keeping(0);
    assert!(f.forecast().is_none());
}

#[test]
fn intervals_are_calibrated_on_a_series_with_known_noise() {
    // A daily sine (48 steps) plus i.i.d. noise, the sum of 4 uniforms on [-5, 5]
    // (near-normal, sd = 10 / sqrt(12) * 2 = 5.77): a 90 % interval should cover about
    // 90 % of what follows, and its half-width should be near 1.645 sd once the
    // level and season are learned.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1_000_000) as f64 / 1_000_000.0 * 10.0 - 5.0
    };
    let sd = 10.0 / 12f64.sqrt() * 2.0;
    let series: Vec<f64> = (0..48 * 60)
        .map(|i| {
            let season = 200.0 + 50.0 * (i as f64 * std::f64::consts::TAU / 48.0).sin();
            season + (0..4).map(|_| uniform()).sum::<f64>()
        })
        .collect();
    let ev = evaluate(&series, params(3, vec![48]), 48 * 20);
    for h in &ev.horizons {
        assert!(
            (0.87..=0.93).contains(&h.coverage),
            "step {}: coverage {}",
            h.horizon_steps,
            h.coverage
        );
    }
    let widths: Vec<f64> = ev
        .rows
        .iter()
        .filter(|r| r.horizon_steps == 1)
        .map(|r| (r.upper - r.lower) / 2.0)
        .collect();
    let mean = widths.iter().sum::<f64>() / widths.len() as f64;
    assert!(
        (1.645 * sd * 0.9..=1.645 * sd * 1.3).contains(&mean),
        "half-width {mean} vs 1.645 sd = {}",
        1.645 * sd
    );
}

#[test]
fn without_a_season_mase_is_scaled_by_the_naive_error_over_the_whole_history() {
    // No seasonal period: each origin's scale is the one-step naive MAE over its whole
    // history (up to the 14-day cap), not over the last 14 points.
    let series: Vec<f64> = (0..400)
        .map(|i| if i % 37 < 3 { 50.0 } else { (i % 5) as f64 })
        .collect();
    let ev = evaluate(&series, params(1, vec![]), 100);
    let h = ev.horizons.first().expect("scored");
    let scaled: Vec<f64> = ev
        .rows
        .iter()
        .filter(|r| r.origin >= 100)
        .map(|r| {
            let hist = &series[..r.origin];
            let scale =
                hist.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (hist.len() - 1) as f64;
            (r.actual - r.point).abs() / scale
        })
        .collect();
    let want = scaled.iter().sum::<f64>() / scaled.len() as f64;
    assert!((h.mase - want).abs() < 1e-9, "{} vs {want}", h.mase);
}
