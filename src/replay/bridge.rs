//! What the resize bridge would have covered on a replayed log: while the predictive
//! policy's scale-ups were pending (replicas requested, not ready), the running pods'
//! CPU raised to cover the forecast need, as the live bridge does.
//!
//! The plan is the live one: `prescale_policies::resize::Resizer` (the default
//! `signals.resize` settings: bridge on, 80 % target utilisation, 10 % smallest
//! change, 60 s before a decrease; the CPU bounds scaled to the replica, from its own
//! request up to 4× it, as the default 4-core maximum is to a 1-core pod: replay's
//! replicas are sized by `--replica-capacity`, not by a pod spec), fed at each decision
//! the sidecar's CPU need (the upper bound of the CPU forecast over the lead window,
//! `costs::cpu_need_at`) split over the ready pods, as each pod's sidecar sees its
//! share of the load. A replica's own request (`base`) is the CPU its capacity
//! implies: capacity × the log's CPU seconds per request. A raised pod serves in
//! proportion to its CPU (capacity × cpu / base): the bridge helps only a CPU-bound
//! service, which is what a duration-as-CPU log assumes. Ready replicas are those at
//! each decision (timeline rows), held until the next.

use super::costs::{cpu_need_at, Issued};
use prescale_policies::resize::{ResizeConfig, ResizeInput, Resizer};
use serde::Serialize;

/// How far the bridge may raise a pod: its own request times this.
const MAX_FACTOR: f64 = 4.0;

/// `summary.json`'s `costs.bridge`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BridgeReport {
    /// CPU cores a replica requests (capacity × CPU seconds per request), and the most
    /// the bridge may raise it to.
    pub base_cpu_per_replica: f64,
    pub max_cpu_per_replica: f64,
    /// Seconds with a scale-up pending, and with the bridge raising CPU.
    pub pending_seconds: u64,
    pub bridged_seconds: u64,
    /// Mean extra cores the bridge gave the fleet while raised, and the most.
    pub mean_extra_cores: f64,
    pub peak_extra_cores: f64,
    /// Demand above ready capacity (request-seconds), without and with the bridge, and
    /// the share of it the bridge covered.
    pub shortfall_without: f64,
    pub shortfall_with: f64,
    pub covered_share: Option<f64>,
}

/// What replay hands the bridge.
pub struct BridgeInputs<'a> {
    /// (requested, ready) replicas at each decision row, every `row_every` seconds.
    pub rows: &'a [(u32, u32)],
    pub row_every: u64,
    pub demand: &'a [f64],
    /// Requests per second a replica serves at 100 %.
    pub capacity: f64,
    pub cpu_seconds_per_request: f64,
    /// The resource forecasts issued over the trace, in order, and the lead window.
    pub issued: &'a [Issued],
    pub lead_steps: usize,
    /// Unix ms of trace second 0 (`Issued::due` is Unix ms).
    pub start_ms: u64,
}

pub fn simulate(i: &BridgeInputs<'_>) -> Option<BridgeReport> {
    let base = i.capacity * i.cpu_seconds_per_request;
    if !(base.is_finite() && base > 0.0) {
        return None;
    }
    let mut resizer = Resizer::new(ResizeConfig {
        min_cpu: base,
        max_cpu: MAX_FACTOR * base,
        ..ResizeConfig::default()
    });
    let mut current = base;
    let mut r = BridgeReport {
        base_cpu_per_replica: base,
        max_cpu_per_replica: MAX_FACTOR * base,
        ..BridgeReport::default()
    };
    let mut extra_sum = 0.0;
    for (k, &(requested, ready)) in i.rows.iter().enumerate() {
        let t = k as u64 * i.row_every;
        let need = cpu_need_at(i.issued, i.start_ms + t * 1000, i.lead_steps);
        let plan = resizer.plan(ResizeInput {
            now: i.start_ms + t * 1000,
            cpu_need: need.map(|n| n / f64::from(ready.max(1))),
            protected_cpu: None,
            memory_need: None,
            current_cpu: current,
            base_cpu: base,
            current_memory: None,
            base_memory: None,
            requested_replicas: requested,
            ready_replicas: ready,
            node_free_cpu: None,
            node_free_memory: None,
            memory_can_shrink: false,
        });
        current = plan.cpu;
        let pending = requested > ready;
        let scale = (current / base).max(1.0);
        let extra = f64::from(ready) * (current - base).max(0.0);
        for s in t..(t + i.row_every).min(i.demand.len() as u64) {
            let d = i.demand.get(s as usize).copied().unwrap_or(0.0);
            let ready_capacity = f64::from(ready) * i.capacity;
            r.shortfall_without += (d - ready_capacity).max(0.0);
            r.shortfall_with += (d - ready_capacity * scale).max(0.0);
            r.pending_seconds += u64::from(pending);
            if extra > 0.0 {
                r.bridged_seconds += 1;
                extra_sum += extra;
                r.peak_extra_cores = r.peak_extra_cores.max(extra);
            }
        }
    }
    r.mean_extra_cores = extra_sum / r.bridged_seconds.max(1) as f64;
    r.covered_share =
        (r.shortfall_without > 0.0).then(|| 1.0 - r.shortfall_with / r.shortfall_without);
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prescale_profiler::resources::ResourcePoint;

    #[test]
    fn the_bridge_raises_running_pods_while_a_scale_up_is_pending_and_hands_back() {
        // Capacity 10 req/s at 0.1 CPU s a request: 1 core a replica. Demand jumps to
        // 30 req/s at t = 30 s; the forecast (issued at 20 s) needs 3 cores.
        let demand: Vec<f64> = (0..120).map(|s| if s < 30 { 8.0 } else { 30.0 }).collect();
        let issued = vec![Issued {
            origin: 0,
            due: 20_000,
            cpu: vec![ResourcePoint {
                step: 1,
                point: 2.5,
                lower: 2.0,
                upper: 3.0,
            }],
            network: Vec::new(),
        }];
        // Two replicas ready; a third asked for at 30 s, ready at 90 s.
        let rows: Vec<(u32, u32)> = (0..8)
            .map(|k| match k * 15 {
                t if t < 30 => (2, 2),
                t if t < 90 => (3, 2),
                _ => (3, 3),
            })
            .collect();
        let r = simulate(&BridgeInputs {
            rows: &rows,
            row_every: 15,
            demand: &demand,
            capacity: 10.0,
            cpu_seconds_per_request: 0.1,
            issued: &issued,
            lead_steps: 1,
            start_ms: 0,
        })
        .unwrap();
        assert!((r.base_cpu_per_replica - 1.0).abs() < 1e-12);
        assert_eq!(r.pending_seconds, 60);
        // Each of the two pods covers 1.5 cores of need at 80 %: 1.875 cores, 0.875
        // extra each while pending; back to base once the third is ready.
        assert_eq!(r.bridged_seconds, 60);
        assert!((r.peak_extra_cores - 1.75).abs() < 1e-9, "{r:?}");
        // Without it 10 req/s short for 60 s; with it 2 × 18.75 = 37.5 req/s ready.
        assert!((r.shortfall_without - 600.0).abs() < 1e-9, "{r:?}");
        assert!(r.shortfall_with.abs() < 1e-9, "{r:?}");
        assert_eq!(r.covered_share, Some(1.0));
        // No CPU cost known: nothing to bridge with.
        let none = simulate(&BridgeInputs {
            cpu_seconds_per_request: 0.0,
            rows: &rows,
            row_every: 15,
            demand: &demand,
            capacity: 10.0,
            issued: &issued,
            lead_steps: 1,
            start_ms: 0,
        });
        assert!(none.is_none());
    }
}
