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

/// NAB series from testdata/traces (real public data; see its README).
fn nab(file: &str) -> Option<Vec<f64>> {
    let path = crate::test_require::trace(&format!("NAB accuracy on {file}"), file)?;
    let text = std::fs::read_to_string(path).expect("the NAB series reads");
    Some(
        text.lines()
            .skip(1)
            .filter_map(|l| l.split(',').nth(1)?.trim().parse().ok())
            .collect(),
    )
}

/// Steps in 15 minutes for a series with `step_min` minutes per step.
fn fifteen_minutes(step_min: usize) -> usize {
    15usize.div_ceil(step_min)
}

fn assert_beats_seasonal_naive_with_calibrated_intervals(file: &str, step_min: usize) {
    let Some(series) = nab(file) else { return };
    let per_day = 24 * 60 / step_min;
    let mut p = ForecastParams::for_step(step_min as u64 * 60, fifteen_minutes(step_min));
    // Refit twice a day keeps this test fast; the sidecar refits hourly.
    p.refit_every = per_day / 2;
    // Evaluate after four days of warm-up.
    let ev = evaluate(&series, p, per_day * 4);
    eprintln!(
        "{file}: {}",
        serde_json::to_string(&ev.horizons).unwrap_or_default()
    );
    eprintln!("{file}: models {:?}", ev.models);
    let last = ev.horizons.last().expect("forecasts were made");
    let rel = last
        .relative_to_seasonal_naive
        .expect("seasonal-naive comparison");
    assert!(
        rel < 1.0,
        "{file}: MAE relative to seasonal-naive at 15 min = {rel}"
    );
    assert!(
        (0.85..=0.95).contains(&last.coverage),
        "{file}: 90 % interval coverage {}",
        last.coverage
    );
}

#[test]
fn nab_elb_requests_beat_seasonal_naive_at_15_minutes() {
    assert_beats_seasonal_naive_with_calibrated_intervals("nab_elb_request_count_8c0756.csv", 5);
}

#[test]
fn nab_nyc_taxi_beats_seasonal_naive_at_15_minutes() {
    assert_beats_seasonal_naive_with_calibrated_intervals("nab_nyc_taxi.csv", 30);
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
