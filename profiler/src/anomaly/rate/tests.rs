//! Scripted series through the rate detector: with a fixed (stale) forecast, where
//! every step is known, and through the shipped forecaster, as the sidecar runs it.

use super::*;
use crate::forecast::{ForecastParams, Forecaster};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256Plus;

const STEP: Millis = 60_000;

fn fixed(point: f64, half: f64) -> ForecastPoint {
    ForecastPoint {
        step: 1,
        point,
        lower: point - half,
        upper: point + half,
    }
}

fn detector() -> RateDetector {
    RateDetector::new("total", RateParams::default(), ChangePointParams::default())
}

fn raised(events: &[AnomalyEvent], kind: AnomalyKind) -> Option<&Anomaly> {
    events.iter().find_map(|e| match e {
        AnomalyEvent::Raised(a) if a.kind == kind => Some(a),
        _ => None,
    })
}

/// Uniform noise in [-1, 1).
fn noise(rng: &mut Xoshiro256Plus) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

#[test]
fn a_sustained_surge_is_raised_on_its_third_step_and_clears_after_it() {
    let mut d = detector();
    let mut rng = Xoshiro256Plus::seed_from_u64(1);
    // Normal traffic inside the interval 90..110: nothing.
    for t in 0..200 {
        let ev = d.observe(t * STEP, 100.0 + 8.0 * noise(&mut rng), &fixed(100.0, 10.0));
        assert!(ev.is_empty(), "step {t}: {ev:?}");
    }
    // Three times the traffic for four steps: raised on the third, dated from the first.
    let mut at = None;
    for t in 200..204 {
        let ev = d.observe(t * STEP, 300.0, &fixed(100.0, 10.0));
        if let Some(a) = raised(&ev, AnomalyKind::Rate) {
            assert_eq!(a.since, 200 * STEP);
            assert_eq!(a.direction, Some(Direction::Above));
            // (300 - 110) / 20 = 9.5 interval widths beyond the upper bound.
            assert!((a.severity - 9.5).abs() < 1e-9, "{}", a.severity);
            at = Some(t);
        }
    }
    assert_eq!(at, Some(202));
    // Back to normal: cleared after three calm steps, and quiet afterwards.
    let mut cleared = None;
    for t in 204..300 {
        for e in d.observe(t * STEP, 100.0, &fixed(100.0, 10.0)) {
            match e {
                AnomalyEvent::Cleared {
                    kind, since, at, ..
                } => {
                    assert_eq!((kind, since), (AnomalyKind::Rate, 200 * STEP));
                    cleared = Some(at);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(cleared, Some(206 * STEP));
    assert!(d.active().is_none());
}

#[test]
fn isolated_misses_and_a_dip_inside_the_margin_are_not_anomalies() {
    let mut d = detector();
    for t in 0..100u64 {
        // Every third step misses the interval by a lot; never three in five.
        let y = if t % 3 == 0 { 400.0 } else { 100.0 };
        assert!(d.observe(t * STEP, y, &fixed(100.0, 10.0)).is_empty());
    }
    for t in 100..120u64 {
        // Just below the interval for good, but within the margin: neither a rate
        // anomaly nor a level shift (a shift must be as far out as a rate anomaly).
        assert!(d.observe(t * STEP, 85.0, &fixed(100.0, 10.0)).is_empty());
    }
    // Gaps are skipped, not judged.
    assert!(d
        .observe(120 * STEP, f64::NAN, &fixed(100.0, 10.0))
        .is_empty());
}

#[test]
fn a_level_shift_becomes_one_change_point_and_refit_request_then_silence() {
    let mut d = detector();
    for t in 0..50 {
        d.observe(t * STEP, 100.0, &fixed(100.0, 10.0));
    }
    // The level doubles for good, while the (stale) forecast still says 100.
    let mut log = Vec::new();
    for t in 50..600 {
        for e in d.observe(t * STEP, 200.0, &fixed(100.0, 10.0)) {
            log.push((t, e));
        }
    }
    let kinds: Vec<(u64, &str)> = log
        .iter()
        .filter(|(_, e)| !matches!(e, AnomalyEvent::Updated(_)))
        .map(|(t, e)| {
            let name = match e {
                AnomalyEvent::Raised(a) => a.kind.as_str(),
                AnomalyEvent::Cleared { .. } => "cleared",
                AnomalyEvent::RefitRequested { .. } => "refit",
                AnomalyEvent::Updated(_) => unreachable!(),
            };
            (*t, name)
        })
        .collect();
    // A rate anomaly first; once the shift is confirmed (the confirmation window is
    // full of shifted steps) it gives way to one change point and one refit request,
    // dated from the shift's first step.
    assert_eq!(
        kinds,
        vec![
            (52, "rate"),
            (57, "cleared"),
            (57, "change_point"),
            (57, "refit")
        ]
    );
    assert!(log.iter().any(|(_, e)| matches!(
        e,
        AnomalyEvent::RefitRequested { since, .. } if *since == 50 * STEP
    )));
    let cp = d.shift().expect("shift active");
    assert_eq!(cp.evidence.get("shift"), Some(&100.0));
    // The caller refits; the forecast now says 200: the change point ends quietly.
    let mut after = Vec::new();
    for t in 600..700 {
        after.extend(d.observe(t * STEP, 200.0, &fixed(200.0, 10.0)));
    }
    assert!(
        matches!(
            after.as_slice(),
            [AnomalyEvent::Cleared {
                kind: AnomalyKind::ChangePoint,
                ..
            }]
        ),
        "{after:?}"
    );
    // And a real surge on top of the new level is still seen.
    let mut seen = false;
    for t in 700..705 {
        seen |= raised(
            &d.observe(t * STEP, 600.0, &fixed(200.0, 10.0)),
            AnomalyKind::Rate,
        )
        .is_some();
    }
    assert!(seen);
}

#[test]
fn an_unabsorbed_shift_is_excused_only_for_max_shift_steps() {
    let cp = ChangePointParams {
        max_shift_steps: 100,
        ..ChangePointParams::default()
    };
    let mut d = RateDetector::new("signature:2", RateParams::default(), cp);
    let mut refits = Vec::new();
    for t in 0..400u64 {
        for e in d.observe(t * STEP, 200.0, &fixed(100.0, 10.0)) {
            if let AnomalyEvent::RefitRequested { at, .. } = e {
                refits.push(at / STEP);
            }
        }
    }
    // The caller never refitted: a reminder every ~100 steps, not an alert per step.
    assert_eq!(refits.len(), 4, "{refits:?}");
}

/// A day-shaped series (period 48) with ±10 % noise.
fn seasonal(t: u64, rng: &mut Xoshiro256Plus) -> f64 {
    let phase = (t % 48) as f64 / 48.0 * std::f64::consts::TAU;
    (100.0 + 40.0 * phase.sin()) * (1.0 + 0.1 * noise(rng))
}

fn forecaster() -> Forecaster {
    Forecaster::new(ForecastParams {
        horizon: 1,
        level: 0.9,
        periods: vec![48],
        max_history: 1000,
        refit_every: 48,
        calibration_window: 500,
        non_negative: true,
    })
}

/// Feeds `f(t)` through the shipped forecaster and the detector, each actual judged
/// against the one-step forecast made before it; returns the events by step.
fn live(steps: u64, mut f: impl FnMut(u64) -> f64) -> Vec<(u64, AnomalyEvent)> {
    let mut fc = forecaster();
    let mut d = detector();
    let mut prev: Option<ForecastPoint> = None;
    let mut out = Vec::new();
    for t in 0..steps {
        let y = f(t);
        if let Some(p) = prev {
            // The first 200 steps warm the forecaster up (calibration needs errors).
            if t >= 200 {
                out.extend(d.observe(t * STEP, y, &p).into_iter().map(|e| (t, e)));
            }
        }
        fc.observe(y);
        prev = fc.forecast().and_then(|x| x.points.first().copied());
    }
    out
}

#[test]
fn with_the_shipped_forecaster_a_3x_surge_is_flagged_within_three_steps() {
    let mut rng = Xoshiro256Plus::seed_from_u64(7);
    let events = live(700, |t| {
        let y = seasonal(t, &mut rng);
        if (600..620).contains(&t) {
            3.0 * y
        } else {
            y
        }
    });
    let raised: Vec<(u64, &Anomaly)> = events
        .iter()
        .filter_map(|(t, e)| match e {
            AnomalyEvent::Raised(a) => Some((*t, a)),
            _ => None,
        })
        .collect();
    let surge = raised
        .iter()
        .find(|(t, _)| *t >= 600)
        .expect("surge flagged");
    assert!(surge.0 <= 602, "flagged at step {}", surge.0);
    assert_eq!(surge.1.since, 600 * STEP);
    assert_eq!(surge.1.direction, Some(Direction::Above));
    // Before the surge, 400 steps of ordinary noise raised nothing.
    assert!(raised.iter().all(|(t, _)| *t >= 600), "{raised:?}");
}

#[test]
fn with_the_shipped_forecaster_a_level_shift_goes_quiet() {
    let mut rng = Xoshiro256Plus::seed_from_u64(11);
    let events = live(1100, |t| {
        let y = seasonal(t, &mut rng);
        // The level rises by 150 for good (the daily shape stays the same).
        if t >= 600 {
            y + 150.0
        } else {
            y
        }
    });
    let raised: Vec<u64> = events
        .iter()
        .filter(|(_, e)| matches!(e, AnomalyEvent::Raised(_)))
        .map(|(t, _)| *t)
        .collect();
    // The shift is reported (as a rate anomaly, a change point, or both) right away…
    assert!(
        raised.first().is_some_and(|t| (600..=606).contains(t)),
        "{raised:?}"
    );
    // …and the forecaster's residual correction learns the new level within a few
    // steps, so the report ends soon and nothing follows.
    let last = events.last().map_or(0, |e| e.0);
    assert!(last < 620, "still reporting at step {last}: {events:?}");
    assert_eq!(raised.len(), 1, "{raised:?}");
}

/// A detector with a short spike memory, so the scripted series stay small.
fn with_memory(memory: usize) -> RateDetector {
    let p = RateParams {
        spike_memory: memory,
        ..RateParams::default()
    };
    RateDetector::new("total", p, ChangePointParams::default())
}

#[test]
fn a_lone_spike_beyond_everything_remembered_raises_at_once_and_clears() {
    let mut d = with_memory(200);
    let mut rng = Xoshiro256Plus::seed_from_u64(3);
    // Ordinary traffic with an occasional single-step miss of one or two widths.
    for t in 0..400u64 {
        let y = if t % 50 == 25 {
            110.0 + 20.0 * (1.0 + (t % 100) as f64 / 100.0)
        } else {
            100.0 + 8.0 * noise(&mut rng)
        };
        let ev = d.observe(t * STEP, y, &fixed(100.0, 10.0));
        assert!(ev.is_empty(), "step {t}: {ev:?}");
    }
    // One step five widths above the bound, then normal again: raised on that very
    // step (no sustain needed), dated from it, with its severity.
    let ev = d.observe(400 * STEP, 210.0, &fixed(100.0, 10.0));
    let a = raised(&ev, AnomalyKind::Rate).expect("spike raised");
    assert_eq!(a.since, 400 * STEP);
    assert_eq!(a.direction, Some(Direction::Above));
    assert!((a.severity - 5.0).abs() < 1e-9, "{}", a.severity);
    let mut cleared = None;
    for t in 401..420u64 {
        for e in d.observe(t * STEP, 100.0, &fixed(100.0, 10.0)) {
            match e {
                AnomalyEvent::Cleared { at, .. } => cleared = Some(at / STEP),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(cleared, Some(403));
    // The same spike again soon after is no record: nothing.
    assert!(d.observe(420 * STEP, 210.0, &fixed(100.0, 10.0)).is_empty());
}

#[test]
fn spikes_are_ordinary_on_a_series_full_of_them() {
    // A heavy-tailed series: a jump of 5 to 8 widths every 40 steps.
    let mut d = with_memory(200);
    let mut raised_at = Vec::new();
    for t in 0..2000u64 {
        let y = if t % 40 == 0 {
            110.0 + 20.0 * (5.0 + (t / 40 % 4) as f64)
        } else {
            100.0
        };
        if raised(
            &d.observe(t * STEP, y, &fixed(100.0, 10.0)),
            AnomalyKind::Rate,
        )
        .is_some()
        {
            raised_at.push(t);
        }
    }
    assert!(raised_at.is_empty(), "{raised_at:?}");
    // A jump well beyond the largest of them still is a record.
    let ev = d.observe(2000 * STEP, 110.0 + 20.0 * 12.0, &fixed(100.0, 10.0));
    assert!(raised(&ev, AnomalyKind::Rate).is_some(), "{ev:?}");
}

#[test]
fn a_spike_needs_a_full_memory_and_the_severity_floor() {
    // Before `spike_memory` steps were judged, a lone spike is not raised.
    let mut d = with_memory(100);
    for t in 0..50u64 {
        d.observe(t * STEP, 100.0, &fixed(100.0, 10.0));
    }
    assert!(d.observe(50 * STEP, 300.0, &fixed(100.0, 10.0)).is_empty());
    // After a calm memory, a record only 1.5 widths out is below `spike_excess`.
    let mut d = with_memory(100);
    for t in 0..150u64 {
        d.observe(t * STEP, 100.0, &fixed(100.0, 10.0));
    }
    assert!(d.observe(150 * STEP, 140.0, &fixed(100.0, 10.0)).is_empty());
    // 0 turns the rule off: only sustained misses raise.
    let mut d = with_memory(0);
    for t in 0..150u64 {
        d.observe(t * STEP, 100.0, &fixed(100.0, 10.0));
    }
    assert!(d
        .observe(150 * STEP, 1000.0, &fixed(100.0, 10.0))
        .is_empty());
}

#[test]
fn a_record_dip_raises_below() {
    let mut d = with_memory(100);
    for t in 0..150u64 {
        d.observe(t * STEP, 1000.0, &fixed(1000.0, 100.0));
    }
    // (900 - 300) / 200 = 3 widths below the lower bound.
    let ev = d.observe(150 * STEP, 300.0, &fixed(1000.0, 100.0));
    let a = raised(&ev, AnomalyKind::Rate).expect("dip raised");
    assert_eq!(a.direction, Some(Direction::Below));
    assert!((a.severity - 3.0).abs() < 1e-9, "{}", a.severity);
}

#[test]
fn the_sliding_maximum_matches_a_brute_force_one() {
    let mut rng = Xoshiro256Plus::seed_from_u64(5);
    for len in [1usize, 2, 7, 50] {
        let mut m = SlidingMax::new(len);
        let mut seen: Vec<f64> = Vec::new();
        for i in 0..500 {
            // Many zeros and ties, some runs of decreasing values.
            let x = match i % 5 {
                0 => 0.0,
                1 => 3.0,
                _ => (4.0 * noise(&mut rng)).max(0.0),
            };
            let want = (seen.len() >= len)
                .then(|| seen.iter().rev().take(len).fold(0.0f64, |a, b| a.max(*b)));
            assert_eq!(m.push(x), want, "len {len}, step {i}");
            assert!(m.run.len() <= len);
            seen.push(x);
        }
    }
    assert_eq!(SlidingMax::new(0).push(1.0), None);
}
