//! The run's timeline (what the admin API said at each refresh) and what it shows:
//! how far ahead of demand the predictive rule asked for each replica, what the
//! project's HPA would have done on the same demand, and the lunch spike's handling.
//!
//! Times are series time (the sidecar's scaled clock), so leads read in the minutes a
//! real day would have.

use super::view::{Observed, SeenAnomaly};
use crate::replay::sim::{Policy, World};
use serde::Serialize;
use std::collections::BTreeMap;

type Millis = u64;

/// One refresh.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Series time (Unix ms).
    pub at: Millis,
    /// Total demand (busy concurrency) over the last complete forecast step (five
    /// minutes in the demo; the last minute before the first step closes): what
    /// "demand needed" is measured on.
    pub demand: f64,
    /// Demand the load generator offered at that moment: its rate × the mix's mean
    /// service time. The ramp's levels are measured on it (the measured demand of one
    /// step is noisy at a high time scale: one slow request weighs minutes of work).
    pub offered: f64,
    /// The total forecast at the end of the lead window: where it points, and its band.
    pub forecast_at: Option<Millis>,
    pub forecast_point: Option<f64>,
    pub forecast_lower: Option<f64>,
    pub forecast_upper: Option<f64>,
    /// The forecast's last observed step (changes with every new forecast).
    pub forecast_origin: Option<Millis>,
    pub desired: u32,
    pub predictive: u32,
    pub reactive: u32,
    pub preshed_level: f64,
    pub anomalies: u64,
    /// Requests the load generator saw shed (any tier), so far.
    pub shed: u64,
    /// Requests the sidecar refused by pre-shedding, per tier, so far.
    pub preshed_by_tier: BTreeMap<String, u64>,
}

/// The replica model the analysis uses (the sidecar's scaling config).
#[derive(Clone, Copy, Debug)]
pub struct Model {
    pub capacity_per_replica: f64,
    pub target_utilization: f64,
    pub startup_s: u64,
    pub max_replicas: u32,
}

/// When one rule first asked for `replicas`, against when demand first needed them.
#[derive(Clone, Debug, Serialize)]
pub struct Level {
    pub replicas: u32,
    /// Series ms.
    pub demand_at: Millis,
    pub predictive_at: Option<Millis>,
    pub reactive_at: Option<Millis>,
    pub hpa_at: Option<Millis>,
}

/// What the summary and the report state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Analysis {
    pub samples: usize,
    /// Times the forecast changed (a new step observed and forecast).
    pub forecast_changes: usize,
    /// Per replica level of the morning ramp.
    pub levels: Vec<Level>,
    /// Median over those levels of (demand needed it − predictive asked for it), s.
    pub predictive_lead_s: Option<f64>,
    /// Same for the HPA (negative: after demand needed it).
    pub hpa_lead_s: Option<f64>,
    /// At the ramp's middle level: series time the predictive rule, the reactive rule
    /// and the HPA first asked for it.
    pub predictive_first_raise: Option<Millis>,
    pub reactive_first_raise: Option<Millis>,
    pub hpa_first_raise: Option<Millis>,
    /// Minutes with demand above ready capacity (100 %), replicas ready `startup`
    /// after being asked for: with the sidecar's decisions, and with the HPA's.
    pub prescale_short_minutes: f64,
    pub hpa_short_minutes: f64,
    pub hpa_peak_replicas: u32,
    pub peak_preshed: f64,
    /// Within the lunch spike's window: the highest pre-shed level, anomalies raised.
    pub spike_preshed: f64,
    pub spike_anomalies: u64,
    /// Requests pre-shed per tier: within the lunch spike's window, and over the run.
    pub spike_preshed_by_tier: BTreeMap<String, u64>,
    pub preshed_by_tier: BTreeMap<String, u64>,
    /// Requests shed over the run (as the load generator saw them).
    pub shed: u64,
    pub anomalies: u64,
    /// The anomaly that began within the spike: a `rate` (or `change_point`) anomaly
    /// above the forecast on the total if there is one, else on a signature, else the
    /// first of any kind.
    pub spike_anomaly: Option<SeenAnomaly>,
    /// First series time an anomaly was counted.
    pub first_anomaly: Option<Millis>,
    /// The HPA's desired replicas at each sample (for the chart).
    pub hpa_desired: Vec<u32>,
}

/// Samples so far.
#[derive(Default)]
pub struct Timeline {
    pub samples: Vec<Sample>,
    /// Every anomaly seen active, once (by kind, subject and start), oldest first.
    pub anomalies: Vec<SeenAnomaly>,
}

impl Timeline {
    /// Adds what a refresh saw; nothing before the first scaling decision.
    pub fn push(&mut self, obs: &Observed, offered: f64, shed: u64) {
        for a in &obs.active_anomalies {
            let known = self
                .anomalies
                .iter()
                .any(|k| (&k.kind, &k.subject, k.since) == (&a.kind, &a.subject, a.since));
            // Bounded: a run raises tens.
            if !known && self.anomalies.len() < 10_000 {
                self.anomalies.push(a.clone());
            }
        }
        let Some(sc) = &obs.scale else { return };
        if sc.at == 0 || self.samples.last().is_some_and(|s| s.at >= sc.at) {
            return;
        }
        let fc = obs.forecast.as_ref();
        self.samples.push(Sample {
            at: sc.at,
            demand: fc.map_or(sc.current_demand, |f| f.last),
            offered,
            forecast_at: fc.map(|f| f.lead_at),
            forecast_point: fc.map(|f| f.lead_point),
            forecast_lower: fc.map(|f| f.lead_lower),
            forecast_upper: fc.map(|f| f.lead_upper),
            forecast_origin: fc.and_then(|f| f.origin),
            desired: sc.desired as u32,
            predictive: sc.predictive as u32,
            reactive: sc.reactive as u32,
            preshed_level: obs.preshed_level.unwrap_or(0.0),
            anomalies: obs.anomalies.unwrap_or(0),
            shed,
            preshed_by_tier: obs.preshed_by_tier.clone().unwrap_or_default(),
        });
    }
}

/// How long (series time) a rule must keep asking for a ramp level for it to count
/// as asked for.
const HOLD_MS: Millis = 10 * 60_000;

/// Demand needs `replicas_at(demand)` replicas at the target utilisation.
fn replicas_at(m: &Model, demand: f64) -> u32 {
    let n = (demand.max(0.0) / (m.capacity_per_replica * m.target_utilization) - 1e-9).ceil();
    (n.min(f64::from(m.max_replicas)) as u32).max(1)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Analyses the run; `ramp_end` (series ms) ends the morning window the leads are
/// measured on (before the lunch spike).
/// `spike` is the lunch spike's window (series ms).
pub fn analyse(
    samples: &[Sample],
    seen: &[SeenAnomaly],
    m: &Model,
    ramp_end: Millis,
    spike: (Millis, Millis),
) -> Analysis {
    let mut a = Analysis {
        samples: samples.len(),
        ..Analysis::default()
    };
    let Some(first) = samples.first() else {
        return a;
    };
    a.forecast_changes = samples
        .windows(2)
        .filter(|w| w[1].forecast_origin != w[0].forecast_origin && w[1].forecast_origin.is_some())
        .count();
    let need: Vec<u32> = samples.iter().map(|s| replicas_at(m, s.offered)).collect();
    let hpa = hpa_desired(samples, m);
    // When a rule first asked for `level` and kept asking for it for `HOLD_MS`: one
    // noisy reading (a loaded host slows the upstream, so measured demand jumps for a
    // sample) does not count as a scale-up, for any rule alike.
    let first_above = |v: &dyn Fn(usize) -> u32, level: u32| {
        (0..samples.len())
            .find(|&i| {
                samples[i].at <= ramp_end
                    && samples[i..]
                        .iter()
                        .enumerate()
                        .take_while(|(_, s)| s.at <= samples[i].at + HOLD_MS)
                        .all(|(k, _)| v(i + k) >= level)
            })
            .map(|i| samples[i].at)
    };
    // The morning ramp's levels: from above where demand started, to the most the
    // morning needed.
    let start_level = need.first().copied().unwrap_or(1).max(first.predictive);
    let top = samples
        .iter()
        .zip(&need)
        .filter(|(s, _)| s.at <= ramp_end)
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(1);
    let (mut p_leads, mut h_leads) = (Vec::new(), Vec::new());
    for level in start_level + 1..=top {
        let Some(demand_at) = first_above(&|i| need[i], level) else {
            continue;
        };
        let predictive_at = first_above(&|i| samples[i].predictive, level);
        let hpa_at = first_above(&|i| hpa.get(i).copied().unwrap_or(1), level);
        let reactive_at = first_above(&|i| samples[i].reactive, level);
        if let Some(p) = predictive_at {
            p_leads.push(demand_at as f64 / 1000.0 - p as f64 / 1000.0);
        }
        if let Some(h) = hpa_at {
            h_leads.push(demand_at as f64 / 1000.0 - h as f64 / 1000.0);
        }
        a.levels.push(Level {
            replicas: level,
            demand_at,
            predictive_at,
            reactive_at,
            hpa_at,
        });
    }
    // "Raised" for the ramp: when each first asked for its middle level.
    if let Some(mid) = a.levels.get(a.levels.len() / 2) {
        a.predictive_first_raise = mid.predictive_at;
        a.reactive_first_raise = mid.reactive_at;
        a.hpa_first_raise = mid.hpa_at;
    }
    a.predictive_lead_s = median(&mut p_leads);
    a.hpa_lead_s = median(&mut h_leads);
    // Shortfall: ready(t) = what was asked for one start-up time earlier.
    let startup_ms = m.startup_s * 1000;
    let short = |asked: &dyn Fn(usize) -> u32| {
        let mut minutes = 0.0;
        for i in 1..samples.len() {
            let t = samples[i].at;
            let ready = samples
                .iter()
                .rposition(|s| s.at + startup_ms <= t)
                .map_or(asked(0), asked);
            if samples[i].demand > f64::from(ready) * m.capacity_per_replica + 1e-9 {
                minutes += (t - samples[i - 1].at) as f64 / 60_000.0;
            }
        }
        minutes
    };
    a.prescale_short_minutes = short(&|i| samples[i].desired);
    a.hpa_short_minutes = short(&|i| hpa.get(i).copied().unwrap_or(1));
    a.hpa_peak_replicas = hpa.iter().copied().max().unwrap_or(1);
    a.peak_preshed = samples.iter().map(|s| s.preshed_level).fold(0.0, f64::max);
    let last = samples.last().unwrap_or(first);
    a.shed = last.shed;
    a.preshed_by_tier = last.preshed_by_tier.clone();
    a.anomalies = last.anomalies.saturating_sub(first.anomalies);
    a.first_anomaly = samples
        .iter()
        .find(|s| s.anomalies > first.anomalies)
        .map(|s| s.at);
    let in_spike: Vec<&Sample> = samples
        .iter()
        .filter(|s| (spike.0..=spike.1).contains(&s.at))
        .collect();
    a.spike_preshed = in_spike.iter().map(|s| s.preshed_level).fold(0.0, f64::max);
    let before = samples
        .iter()
        .rev()
        .find(|s| s.at < spike.0)
        .map_or(first.anomalies, |s| s.anomalies);
    a.spike_anomalies = in_spike
        .last()
        .map_or(0, |s| s.anomalies.saturating_sub(before));
    // Pre-sheds within the spike: the last count in it less the last before it.
    let before = samples.iter().rev().find(|s| s.at < spike.0);
    if let Some(end) = in_spike.last() {
        for (tier, n) in &end.preshed_by_tier {
            let was = before
                .and_then(|b| b.preshed_by_tier.get(tier))
                .copied()
                .unwrap_or(0);
            a.spike_preshed_by_tier
                .insert(tier.clone(), n.saturating_sub(was));
        }
    }
    // The anomaly that names the spike: one that began within it, best a rate or
    // change-point anomaly above the forecast on the total, then on a signature, then
    // any other.
    let in_window = |x: &&SeenAnomaly| (spike.0..=spike.1).contains(&x.since);
    let demand_above = |x: &&SeenAnomaly| {
        matches!(x.kind.as_str(), "rate" | "change_point") && x.direction == "above"
    };
    let rank = |x: &&SeenAnomaly| match (demand_above(x), x.subject == "total") {
        (true, true) => 0,
        (true, false) => 1,
        _ => 2,
    };
    a.spike_anomaly = seen
        .iter()
        .filter(in_window)
        .min_by_key(|x| (rank(x), x.since))
        .cloned();
    a.hpa_desired = hpa;
    a
}

/// The project's HPA (`prescale_policies::Hpa`, as `prescale replay` runs it) on the
/// run's demand, second by second: its desired replicas at each sample.
fn hpa_desired(samples: &[Sample], m: &Model) -> Vec<u32> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Vec::new();
    };
    let seconds = ((last.at - first.at) / 1000 + 1) as usize;
    let mut demand = vec![0.0; seconds];
    let mut j = 0;
    for (t, d) in demand.iter_mut().enumerate() {
        let at = first.at + t as u64 * 1000;
        while j + 1 < samples.len() && samples[j + 1].at <= at {
            j += 1;
        }
        *d = samples[j].demand;
    }
    let world = World {
        demand: &demand,
        capacity: m.capacity_per_replica,
        target_utilization: m.target_utilization,
        start_delay: m.startup_s,
        start_jitter: 0,
        // The demand reading is the last complete minute; the HPA's metric pipeline
        // (metrics-server) adds about as much again.
        metric_lag: 60,
        sync_period: 15,
        min_replicas: 1,
        max_replicas: m.max_replicas,
        scale_down_stabilization: 300,
        row_every: 1,
    };
    let run = world.run(&Policy::Hpa {
        target_utilization: m.target_utilization,
    });
    samples
        .iter()
        .map(|s| {
            let t = ((s.at - first.at) / 1000) as usize;
            run.rows.get(t).map_or(1, |(desired, _)| *desired)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model {
            capacity_per_replica: 1.0,
            target_utilization: 0.5,
            startup_s: 600,
            max_replicas: 20,
        }
    }

    /// Demand ramps 1 → 6 over an hour; the predictive rule asks for each level 10
    /// minutes early.
    fn ramp() -> Vec<Sample> {
        (0..120u64)
            .map(|min| {
                let demand_at = |m: u64| 1.0 + 5.0 * (m.saturating_sub(30) as f64 / 60.0).min(1.0);
                let d = demand_at(min);
                let ahead = demand_at(min + 10);
                // Two replicas per busy worker (capacity 1 at 50 %).
                Sample {
                    at: min * 60_000,
                    demand: d,
                    offered: d,
                    predictive: (2.0 * ahead).ceil() as u32,
                    reactive: (2.0 * d).ceil() as u32,
                    desired: (2.0 * ahead).ceil() as u32,
                    forecast_origin: Some(min / 2 * 60_000),
                    ..Sample::default()
                }
            })
            .collect()
    }

    #[test]
    fn leads_are_measured_per_level_and_the_hpa_trails_demand() {
        let s = ramp();
        let a = analyse(&s, &[], &model(), u64::MAX, (0, 0));
        assert_eq!(a.forecast_changes, 59);
        assert_eq!(a.levels.len(), 10, "{:?}", a.levels);
        let lead = a.predictive_lead_s.unwrap();
        assert!((500.0..=660.0).contains(&lead), "{lead}");
        let hpa = a.hpa_lead_s.unwrap();
        assert!(hpa <= 0.0, "{hpa}");
        assert!(a.predictive_first_raise.is_some());
        assert!(a.predictive_first_raise < a.reactive_first_raise);
        assert!(a.hpa_first_raise >= a.reactive_first_raise);
        assert!(a.hpa_short_minutes > a.prescale_short_minutes);
    }

    #[test]
    fn one_noisy_reading_is_not_a_ramp_level_asked_for() {
        // The reactive rule jumps to the top for one minute early in the ramp (a
        // loaded host slowed the upstream for a sample), then follows demand again.
        let mut s = ramp();
        let clean = analyse(&s, &[], &model(), u64::MAX, (0, 0));
        s[35].reactive = 12;
        let a = analyse(&s, &[], &model(), u64::MAX, (0, 0));
        assert_eq!(a.reactive_first_raise, clean.reactive_first_raise);
        assert!(a.predictive_first_raise < a.reactive_first_raise);
    }

    #[test]
    fn the_spike_counts_its_own_presheds_and_names_its_anomaly() {
        let tiers = |batch: u64, standard: u64| {
            BTreeMap::from([
                ("batch".to_string(), batch),
                ("critical".to_string(), 0),
                ("standard".to_string(), standard),
            ])
        };
        // Minutes 0..60; the spike is minutes 20..=40. Two batch requests pre-shed
        // before it (start-up), 9 batch and 3 standard within, 1 batch after.
        let samples: Vec<Sample> = (0..60u64)
            .map(|min| Sample {
                at: min * 60_000,
                offered: 1.0,
                demand: 1.0,
                preshed_by_tier: match min {
                    0..=19 => tiers(2, 0),
                    20..=40 => tiers(2 + (min - 19).min(9), (min - 19).min(3)),
                    _ => tiers(12, 3),
                },
                ..Sample::default()
            })
            .collect();
        let anomaly = |kind: &str, subject: &str, at_min: u64, direction: &str| SeenAnomaly {
            kind: kind.into(),
            subject: subject.into(),
            since: at_min * 60_000,
            direction: direction.into(),
            ..SeenAnomaly::default()
        };
        let seen = [
            anomaly("share_shift", "signature:1", 25, "above"),
            anomaly("rate", "signature:2", 24, "above"),
            anomaly("rate", "total", 26, "above"),
            anomaly("rate", "total", 50, "above"),
        ];
        let a = analyse(
            &samples,
            &seen,
            &model(),
            u64::MAX,
            (20 * 60_000, 40 * 60_000),
        );
        assert_eq!(a.spike_preshed_by_tier, tiers(9, 3));
        assert_eq!(a.preshed_by_tier, tiers(12, 3));
        let named = a.spike_anomaly.expect("the spike's anomaly");
        assert_eq!(
            (named.subject.as_str(), named.since),
            ("total", 26 * 60_000)
        );
        // Without a total one, a signature's rate anomaly in the spike stands in.
        let a = analyse(
            &samples,
            &seen[..2],
            &model(),
            u64::MAX,
            (20 * 60_000, 40 * 60_000),
        );
        assert_eq!(
            a.spike_anomaly.map(|x| x.subject),
            Some("signature:2".into())
        );
    }
}
