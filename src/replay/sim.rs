//! Steps a replica pool through the trace second by second under one scaling policy,
//! and measures what it cost and where it fell short.
//!
//! The predictive and HPA policies call exactly the shipped code (the sidecar's
//! decision engine `prescale_engine::Engine`, `prescale_policies::Hpa`); time is trace
//! time.

use super::engine::{self as eng, DecisionRow, EngineSetup, Minute};
use super::pool::{Pool, Sec};
use super::shed::{TierShed, Tiers};
use prescale_engine::Engine;
use prescale_policies::hpa::{HpaBehavior, MetricSource, MetricSpec, MetricTarget, PodCounts};
use prescale_policies::scale::ScalingConfig;
use prescale_policies::{Hpa, HpaSpec, MetricSample};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::Duration;

/// The trace and the platform it runs on; shared by every policy.
pub struct World<'a> {
    /// Demand in requests per second, one value per second of the trace.
    pub demand: &'a [f64],
    /// Requests per second one replica serves at 100 %.
    pub capacity: f64,
    pub target_utilization: f64,
    pub start_delay: Sec,
    pub start_jitter: Sec,
    /// Age of the newest metric a decision can see.
    pub metric_lag: Sec,
    pub sync_period: Sec,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub scale_down_stabilization: Sec,
    /// Timeline rows every this many seconds.
    pub row_every: Sec,
}

pub enum Policy<'a> {
    /// prescale: the sidecar's decision engine, planning with its forecast times
    /// `headroom` (1: as the sidecar does).
    Predictive {
        engine: &'a EngineSetup<'a>,
        headroom: f64,
    },
    /// The Kubernetes HPA v2 on CPU-like utilisation of the ready replicas.
    Hpa { target_utilization: f64 },
    /// Perfect foresight with the same start-up delay: sized at 100 % of capacity,
    /// requested exactly one start-up delay ahead of need. The cost floor.
    Oracle,
    /// A fixed fleet sized for the trace's peak at the target utilisation.
    StaticPeak,
}

/// What one policy did (the per-policy object of `summary.json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    /// Seconds with demand above ready replicas × capacity (true overload).
    pub under_provisioned_seconds: u64,
    pub under_provisioned_fraction: f64,
    /// Seconds with demand above ready × capacity × target utilisation.
    pub over_target_seconds: u64,
    pub over_target_fraction: f64,
    /// Requests beyond ready capacity, as a share of all requests.
    pub overload_request_fraction: f64,
    /// Replica-hours from request to removal (starting replicas cost money too).
    pub replica_hours: f64,
    pub scaling_actions: u64,
    /// Actions opposite to the previous one within 10 minutes (flapping).
    pub reversals: u64,
    /// Mean seconds by which ready capacity arrived before demand steps (negative:
    /// late), capped at ±30 min per step; None without steps.
    pub mean_lead_seconds_before_steps: Option<f64>,
    pub demand_steps: usize,
    pub peak_replicas: u32,
    pub mean_replicas: f64,
    /// Requests shed per tier at ready capacity (and with pre-shedding, predictive).
    pub shed_by_tier: Vec<TierShed>,
}

/// An outcome and its timeline rows (desired, ready) at every `row_every`.
pub struct Run {
    pub outcome: Outcome,
    pub rows: Vec<(u32, u32)>,
    /// The engine's decisions (predictive policy only).
    pub decisions: Vec<DecisionRow>,
    /// The engine's forecasts and their accuracy at the end, as the sidecar's
    /// `/v1/forecast` would show them (predictive policy only).
    pub forecast: Option<prescale_engine::ForecastView>,
    /// The reconciliation's errors per source over the whole trace (predictive only).
    pub reconcile: Option<prescale_engine::RunScores>,
}

/// Lead times are capped so one early step cannot dominate the mean.
const LEAD_CAP: Sec = 1800;

impl World<'_> {
    pub fn seconds(&self) -> Sec {
        self.demand.len() as Sec
    }

    /// Replicas needed for `demand` at `utilization` of capacity, within bounds.
    pub fn replicas_at(&self, demand: f64, utilization: f64) -> u32 {
        let n = (demand.max(0.0) / (self.capacity * utilization) - 1e-9).ceil();
        (n.min(f64::from(self.max_replicas)) as u32).clamp(self.min_replicas, self.max_replicas)
    }

    fn mean(&self, from: Sec, to: Sec) -> f64 {
        let (a, b) = (from as usize, (to as usize).min(self.demand.len()));
        match self.demand.get(a..b) {
            Some(w) if !w.is_empty() => w.iter().sum::<f64>() / w.len() as f64,
            _ => 0.0,
        }
    }

    /// Demand over the sync period ending `metric_lag` before `t`.
    fn lagged(&self, t: Sec) -> f64 {
        let end = t.saturating_sub(self.metric_lag);
        self.mean(end.saturating_sub(self.sync_period), end.max(1))
    }

    fn peak(&self) -> f64 {
        self.demand.iter().copied().fold(0.0, f64::max)
    }

    /// The scaling section the predictive policy runs without `--config`: the world's
    /// capacity, bounds and periods, start-up known exactly.
    pub fn scaling(&self) -> ScalingConfig {
        ScalingConfig {
            capacity_per_replica: self.capacity,
            target_utilization: self.target_utilization,
            startup_time: Duration::from_secs(self.start_delay),
            // The simulated start-up delay is known exactly: nothing to learn.
            learn_startup_time: false,
            max_startup_time: None,
            sync_period: Duration::from_secs(self.sync_period),
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            max_scale_up_step: 0,
            scale_down_stabilization: Duration::from_secs(self.scale_down_stabilization),
            ..ScalingConfig::default()
        }
    }

    /// Times (s) at which demand steps up: the replicas it needs at 100 % rise 20 %
    /// and at least one above their maximum over the previous 10 minutes. (At 100 %,
    /// so the lead measures when capacity to serve the step was there.)
    pub fn demand_steps(&self) -> Vec<(Sec, u32)> {
        let need: Vec<u32> = self
            .demand
            .iter()
            .map(|d| self.replicas_at(*d, 1.0))
            .collect();
        let mut window: VecDeque<(Sec, u32)> = VecDeque::new();
        let mut steps = Vec::new();
        let mut last_step: Option<Sec> = None;
        for (t, n) in need.iter().enumerate() {
            let t = t as Sec;
            while window.front().is_some_and(|(at, _)| at + 600 < t) {
                window.pop_front();
            }
            let before = window.iter().map(|(_, n)| *n).max();
            if let Some(before) = before {
                let recent = last_step.is_some_and(|s| t - s < 600);
                if !recent && t >= 600 && *n > before && f64::from(*n) >= 1.2 * f64::from(before) {
                    steps.push((t, *n));
                    last_step = Some(t);
                }
            }
            // Keep the window a monotone deque of maxima.
            while window.back().is_some_and(|(_, m)| m <= n) {
                window.pop_back();
            }
            window.push_back((t, *n));
        }
        steps
    }

    /// Runs `policy` over the whole trace.
    pub fn run(&self, policy: &Policy) -> Run {
        self.run_with(policy, None)
    }

    /// Runs `policy` over the whole trace, and admission over `tiers` when given.
    pub fn run_with(&self, policy: &Policy, tiers: Option<&Tiers>) -> Run {
        let n = self.seconds();
        let mut ledger = tiers.map(Tiers::ledger).unwrap_or_default();
        let mut driver = Driver::new(self, policy);
        let first = driver.initial(self);
        let mut pool = Pool::new(first, self.start_delay, self.start_jitter);
        let mut o = Outcome::default();
        let mut rows = Vec::with_capacity((n / self.row_every.max(1)) as usize + 1);
        let mut ready_log: Vec<u32> = Vec::with_capacity(n as usize);
        let (mut demand_total, mut excess, mut replica_seconds) = (0.0, 0.0, 0.0);
        let mut desired = first;
        for t in 0..n {
            pool.advance(t);
            if let Some(d) = driver.decide(self, t, &pool) {
                desired = d;
                pool.scale_to(d, t);
            }
            let d = self.demand.get(t as usize).copied().unwrap_or(0.0);
            let capacity = f64::from(pool.ready()) * self.capacity;
            if d > capacity + 1e-9 {
                o.under_provisioned_seconds += 1;
            }
            if d > capacity * self.target_utilization + 1e-9 {
                o.over_target_seconds += 1;
            }
            if let Some(tiers) = tiers {
                tiers.account(&mut ledger, t, d, capacity, driver.preshed());
            }
            demand_total += d;
            excess += (d - capacity).max(0.0);
            replica_seconds += f64::from(pool.requested());
            o.peak_replicas = o.peak_replicas.max(pool.requested());
            ready_log.push(pool.ready());
            if t % self.row_every.max(1) == 0 {
                rows.push((desired, pool.ready()));
            }
        }
        let (decisions, forecast, reconcile) = match driver {
            Driver::Predictive {
                decisions, engine, ..
            } => (
                decisions,
                Some(engine.view()),
                Some(engine.reconcile_scores()),
            ),
            _ => (Vec::new(), None, None),
        };
        o.shed_by_tier = ledger;
        let secs = n.max(1) as f64;
        o.under_provisioned_fraction = o.under_provisioned_seconds as f64 / secs;
        o.over_target_fraction = o.over_target_seconds as f64 / secs;
        o.overload_request_fraction = if demand_total > 0.0 {
            excess / demand_total
        } else {
            0.0
        };
        o.replica_hours = replica_seconds / 3600.0;
        o.mean_replicas = replica_seconds / secs;
        o.scaling_actions = pool.actions;
        o.reversals = pool.reversals;
        let steps = self.demand_steps();
        o.demand_steps = steps.len();
        o.mean_lead_seconds_before_steps = mean_lead(&ready_log, &steps);
        Run {
            outcome: o,
            rows,
            decisions,
            forecast,
            reconcile,
        }
    }
}

/// For each step (t, need): how long before t ready capacity had reached the need
/// (continuously), or how long after t it did (negative).
fn mean_lead(ready: &[u32], steps: &[(Sec, u32)]) -> Option<f64> {
    if steps.is_empty() {
        return None;
    }
    let at = |t: Sec| ready.get(t as usize).copied().unwrap_or(0);
    let total: f64 = steps
        .iter()
        .map(|(t, need)| {
            let t = *t;
            if at(t) >= *need {
                let mut lead = 0;
                while lead < LEAD_CAP && t > lead && at(t - lead - 1) >= *need {
                    lead += 1;
                }
                lead as f64
            } else {
                let late = (1..=LEAD_CAP)
                    .find(|d| at(t + d) >= *need)
                    .unwrap_or(LEAD_CAP);
                -(late as f64)
            }
        })
        .sum();
    Some(total / steps.len() as f64)
}

/// Per-policy decision state.
enum Driver<'a> {
    Predictive {
        setup: &'a EngineSetup<'a>,
        engine: Box<Engine>,
        minutes: std::iter::Peekable<std::vec::IntoIter<Minute>>,
        decisions: Vec<DecisionRow>,
        /// The pre-shed level of the last decision.
        preshed: f64,
    },
    Hpa(Box<Hpa>),
    /// Replicas requested at each second (sliding maximum of need over the start-up
    /// delay ahead).
    Oracle(Vec<u32>),
    Static(u32),
}

impl<'a> Driver<'a> {
    fn new(w: &World, policy: &Policy<'a>) -> Self {
        match policy {
            Policy::Predictive { engine, headroom } => Driver::Predictive {
                setup: engine,
                engine: Box::new(engine.engine(*headroom)),
                minutes: engine.minutes().into_iter().peekable(),
                decisions: Vec::new(),
                preshed: 0.0,
            },
            Policy::Hpa { target_utilization } => {
                let percent = (target_utilization * 100.0).round().clamp(1.0, 100.0) as u32;
                let spec = HpaSpec::new(
                    w.min_replicas,
                    w.max_replicas,
                    MetricSpec::new(
                        MetricSource::Resource,
                        MetricTarget::Utilization {
                            average_utilization: percent,
                        },
                    ),
                )
                // The API server defaults `behavior`: this is what a cluster runs.
                .with_behavior(HpaBehavior::default());
                match Hpa::new(spec) {
                    Ok(h) => Driver::Hpa(Box::new(h)),
                    // Bounds were validated by the caller; fall back to a fixed fleet.
                    Err(_) => Driver::Static(w.min_replicas),
                }
            }
            Policy::Oracle => Driver::Oracle(oracle_plan(w)),
            Policy::StaticPeak => Driver::Static(w.replicas_at(w.peak(), w.target_utilization)),
        }
    }

    /// The pre-shed level in force (the predictive policy's engine only).
    fn preshed(&self) -> Option<f64> {
        match self {
            Driver::Predictive { preshed, .. } => Some(*preshed),
            _ => None,
        }
    }

    fn initial(&self, w: &World) -> u32 {
        match self {
            Driver::Oracle(plan) => plan.first().copied().unwrap_or(w.min_replicas),
            Driver::Static(n) => *n,
            _ => w.replicas_at(w.mean(0, w.sync_period), w.target_utilization),
        }
    }

    fn decide(&mut self, w: &World, t: Sec, pool: &Pool) -> Option<u32> {
        if let Driver::Predictive {
            setup,
            engine,
            minutes,
            ..
        } = self
        {
            // Minutes reach the engine as they end, as the profiler sends them.
            while let Some((_, start, bucket)) = minutes.next_if(|(due, _, _)| *due <= t * 1000) {
                match bucket {
                    Some(b) => engine.add_minute(&b, &mut ()),
                    None => engine.add_unknown_minute(start),
                };
            }
            // Then the clock, as the sidecar's `Now` follows its minutes: every minute
            // due by now was fed, a gap's unknown ones too, so a step closed here
            // without one was idle (zero demand) and a gap stays a gap.
            engine.advance(eng::unix_ms(setup, t), &mut ());
        }
        match self {
            Driver::Oracle(plan) => plan.get(t as usize).copied(),
            Driver::Static(_) => None,
            _ if !t.is_multiple_of(w.sync_period.max(1)) => None,
            Driver::Predictive {
                setup,
                engine,
                decisions,
                preshed,
                ..
            } => {
                let obs = eng::observation(setup, t)?;
                let intent = engine.decide(obs);
                let desired = intent.decision.desired;
                *preshed = intent.preshed.unwrap_or(0.0);
                decisions.push(DecisionRow { t, intent });
                Some(desired)
            }
            Driver::Hpa(hpa) => {
                let ready = pool.ready();
                // A saturated replica cannot report more than all of its capacity.
                let sample = (ready > 0).then(|| MetricSample {
                    value: (100.0 * w.lagged(t) / (f64::from(ready) * w.capacity)).min(100.0),
                    pods: Some(PodCounts {
                        ready,
                        unready: pool.requested() - ready,
                        missing: 0,
                    }),
                });
                hpa.sync(t * 1000, pool.requested(), sample)
                    .ok()
                    .map(|d| d.desired)
            }
        }
    }
}

/// requested(t) = max need (at 100 %) over [t, t + start delay]: each replica is
/// asked for exactly when it must start to be ready in time, and kept while needed.
fn oracle_plan(w: &World) -> Vec<u32> {
    let need: Vec<u32> = w.demand.iter().map(|d| w.replicas_at(*d, 1.0)).collect();
    let span = (w.start_delay + w.start_jitter) as usize;
    let mut plan = vec![w.min_replicas; need.len()];
    let mut window: VecDeque<(usize, u32)> = VecDeque::new();
    // Walk backwards keeping a monotone deque of maxima over [t, t + span].
    for t in (0..need.len()).rev() {
        let n = need.get(t).copied().unwrap_or(w.min_replicas);
        while window.back().is_some_and(|(_, m)| *m <= n) {
            window.pop_back();
        }
        window.push_back((t, n));
        while window.front().is_some_and(|(at, _)| *at > t + span) {
            window.pop_front();
        }
        if let (Some(slot), Some((_, m))) = (plan.get_mut(t), window.front()) {
            *slot = *m;
        }
    }
    plan
}

#[cfg(test)]
mod tests;
