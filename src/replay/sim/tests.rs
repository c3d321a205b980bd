//! Policy behaviour on small scripted traces.

use super::*;
use prescale_profiler::ForecastConfig;

/// The engine as replay builds it without `--config`, seasonal at `period` minutes,
/// fed `demand` as arrivals from a minute-aligned start.
fn engine<'a>(w: &World, demand: &'a [f64], period: usize) -> EngineSetup<'a> {
    EngineSetup {
        forecast: ForecastConfig::default(),
        scaling: w.scaling(),
        preshed: Default::default(),
        periods: Some(vec![period]),
        start_unix: 1_700_000_040,
        arrivals: demand,
        demand,
        resolution: 1,
        gaps: Vec::new(),
        signatures: &[],
        tiers: None,
    }
}

fn world(demand: &[f64]) -> World<'_> {
    World {
        demand,
        capacity: 10.0,
        target_utilization: 0.5,
        start_delay: 60,
        start_jitter: 0,
        metric_lag: 0,
        sync_period: 15,
        min_replicas: 1,
        max_replicas: 50,
        scale_down_stabilization: 300,
        row_every: 1,
    }
}

/// The HPA on a demand step from 10 to 30 req/s at t = 300 s, replicas serving 10 req/s
/// at 100 %, target 50 % utilisation, start-up 60 s, no metric lag, default behaviour.
/// By hand (Kubernetes' replica calculator):
/// - start: ceil(10 / (10 × 0.5)) = 2 replicas, 50 % utilisation;
/// - t = 300: the sync sees [285, 300): still 50 %, ratio 1, no change;
/// - t = 315: sees 30 req/s on 2 replicas = 150 %, reported capped at 100 % (a saturated
///   replica cannot do more), ratio 2 → 4 (default policy allows +100 % or +4 pods);
/// - t = 330 … 360: 2 ready at 100 % + 2 unready counted at 0 % over 4 pods = 50 %:
///   ratio 1, hold 4;
/// - t = 375: the 2 new replicas are ready; 30 / 40 = 75 %, ratio 1.5 → 6;
/// - t = 390 … : hold 6 (then 6 ready at 50 %).
///
/// Under-provisioned: demand 30 > ready × 10 from t = 300 until 4 are ready at 375: 75 s.
#[test]
fn hpa_reproduces_hand_computed_decisions_on_a_step() {
    let demand: Vec<f64> = (0..900)
        .map(|t| if t < 300 { 10.0 } else { 30.0 })
        .collect();
    let w = world(&demand);
    let run = w.run(&Policy::Hpa {
        target_utilization: 0.5,
    });
    let desired = |t: usize| run.rows[t].0;
    let ready = |t: usize| run.rows[t].1;
    assert_eq!(desired(0), 2);
    assert_eq!(desired(314), 2);
    assert_eq!(desired(315), 4);
    assert_eq!(desired(374), 4);
    assert_eq!(ready(374), 2);
    assert_eq!(ready(375), 4);
    assert_eq!(desired(375), 6);
    assert_eq!(desired(899), 6);
    assert_eq!(ready(899), 6);
    assert_eq!(run.outcome.under_provisioned_seconds, 75);
    assert_eq!(run.outcome.scaling_actions, 2);
    assert_eq!(run.outcome.reversals, 0);
}

/// A square wave (10 ↔ 40 req/s every 10 minutes) the forecaster can learn.
fn square_wave() -> Vec<f64> {
    (0..10 * 3600)
        .map(|t| if (t / 600) % 2 == 0 { 10.0 } else { 40.0 })
        .collect()
}

#[test]
fn oracle_is_never_short_and_costs_least() {
    let demand = square_wave();
    let w = world(&demand);
    let setup = engine(&w, &demand, 20);
    let oracle = w.run(&Policy::Oracle).outcome;
    assert_eq!(oracle.under_provisioned_seconds, 0);
    for p in [
        Policy::Predictive {
            engine: &setup,
            headroom: 1.0,
        },
        Policy::Hpa {
            target_utilization: 0.5,
        },
        Policy::StaticPeak,
    ] {
        let o = w.run(&p).outcome;
        assert!(
            oracle.replica_hours <= o.replica_hours + 1e-9,
            "oracle {} > {}",
            oracle.replica_hours,
            o.replica_hours
        );
    }
    let peak = w.run(&Policy::StaticPeak).outcome;
    assert_eq!(peak.under_provisioned_seconds, 0);
    assert_eq!(peak.scaling_actions, 0);
    assert_eq!(peak.peak_replicas, 8);
}

#[test]
fn predictive_scales_before_repeating_steps_and_beats_the_hpa() {
    let demand = square_wave();
    let w = World {
        metric_lag: 30,
        ..world(&demand)
    };
    let setup = engine(&w, &demand, 20);
    let predictive = w
        .run(&Policy::Predictive {
            engine: &setup,
            headroom: 1.0,
        })
        .outcome;
    let hpa = w
        .run(&Policy::Hpa {
            target_utilization: 0.5,
        })
        .outcome;
    assert!(hpa.demand_steps >= 20, "{} steps", hpa.demand_steps);
    assert!(
        predictive.under_provisioned_seconds * 4 < hpa.under_provisioned_seconds,
        "predictive {} s vs hpa {} s short",
        predictive.under_provisioned_seconds,
        hpa.under_provisioned_seconds
    );
    let lead = predictive
        .mean_lead_seconds_before_steps
        .unwrap_or(f64::MIN);
    let hpa_lead = hpa.mean_lead_seconds_before_steps.unwrap_or(f64::MAX);
    assert!(
        lead > 0.0 && hpa_lead < 0.0,
        "lead {lead} vs hpa {hpa_lead}"
    );
}

#[test]
fn demand_steps_need_a_real_rise() {
    let flat = vec![10.0; 3600];
    assert!(world(&flat).demand_steps().is_empty());
    let step: Vec<f64> = (0..3600)
        .map(|t| if t < 1200 { 10.0 } else { 25.0 })
        .collect();
    assert_eq!(world(&step).demand_steps(), vec![(1200, 3)]);
}

#[test]
fn the_demand_reading_spans_the_resolution_windows_it_averages() {
    let demand = vec![1.0; 1200];
    let w = world(&demand);
    let fine = engine(&w, &demand, 60);
    let ms = |s: Sec| (fine.start_unix + s) * 1000;
    // Per-second demand: the last complete 10 s before the decision.
    assert_eq!(fine.demand_at(345), Some((ms(330)..ms(340), 1.0)));
    // Demand averaged over 300 s windows: each second of the reading holds its
    // window's mean, so the reading is of the whole window (a step of it is measured
    // only by a reading as fine as the step).
    let coarse = EngineSetup {
        resolution: 300,
        ..engine(&w, &demand, 60)
    };
    assert_eq!(coarse.demand_at(345), Some((ms(300)..ms(600), 1.0)));
    assert_eq!(coarse.demand_at(305), Some((ms(0)..ms(300), 1.0)));
    // Before a complete 10 s there is no reading.
    assert_eq!(fine.demand_at(5), None);
}

/// A 5-minute series whose rows start at :04 (the ELB trace's phase): the engine's
/// steps start on its first row, so a step and a row are the same span.
#[test]
fn the_engines_steps_start_on_the_traces_first_row() {
    let demand = vec![10.0; 600];
    let w = world(&demand);
    let mut setup = engine(&w, &demand, 12);
    setup.forecast.step = std::time::Duration::from_secs(300);
    assert_eq!(
        setup.start_unix % 300,
        240,
        "a trace off the Unix step grid"
    );
    let mut e = setup.engine(1.0);
    for (_, _, bucket) in setup.minutes().into_iter().take(5) {
        e.add_minute(&bucket.expect("no gaps"), &mut ());
    }
    assert_eq!(e.last_fed(), Some(setup.start_unix * 1000));
}
