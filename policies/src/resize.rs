//! In-place vertical pre-allocation: the CPU (and memory) a pod's app container
//! should request ahead of forecast load, and the bridge while new replicas start.
//!
//! Each sidecar plans for its own pod: its resource forecast is the load this pod will
//! see. Two rules, each optional:
//!
//! - **vertical**: the request follows the forecast need over the lead window,
//!   `need / target_utilization`, clamped to `[min, max]`;
//! - **bridge**: while a horizontal scale-up is pending (replicas requested but not
//!   ready), the pods already running take the load the new ones will take later, so
//!   the request rises to cover the forecast need, and goes back to the container's
//!   own request (`base`) once the new replicas are ready. When `max` or the node
//!   cannot cover all of it, the non-sheddable share is covered first and the plan
//!   says so, so tier admission can shed the rest.
//!
//! Memory's request may go down in place only where its limit need not follow (the
//! caller says so: a Guaranteed container's request is its limit, and Kubernetes 1.33
//! refuses in-place memory limit decreases). Never above what the node can still
//! give; the plan says when the node, not the forecast or `max`, set the size.
//! Increases apply at once; decreases (of either resource) wait
//! `cooldown` after the last change, and a change smaller than `min_change` (a share
//! of the current request) is not worth a resize.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::scale::Millis;

/// How a pod's container requests follow the forecast.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResizeConfig {
    /// Follow the forecast at any time (else only while bridging a scale-up).
    pub vertical: bool,
    /// Raise the running pods while new replicas start, and hand it back after.
    pub bridge: bool,
    /// Share of the request the forecast need may use.
    pub target_utilization: f64,
    /// Bounds of the CPU request, in cores.
    pub min_cpu: f64,
    pub max_cpu: f64,
    /// Bounds of the memory request, in bytes; memory is resized only with both set
    /// (and only where the container's `resizePolicy` allows it without a restart),
    /// and only upwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_memory: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<f64>,
    /// Smallest change worth a resize, as a share of the current request.
    pub min_change: f64,
    /// A decrease waits this long after the last change.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("signals.resize.{field}: {reason}")]
pub struct ResizeConfigError {
    pub field: &'static str,
    pub reason: &'static str,
}

/// What the plan is based on, for one pod.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ResizeInput {
    pub now: Millis,
    /// Forecast CPU cores this pod's service needs over the lead window (the planned
    /// bound); None without a resource forecast.
    pub cpu_need: Option<f64>,
    /// The part of `cpu_need` from tiers that are never shed.
    pub protected_cpu: Option<f64>,
    /// Forecast memory bytes over the lead window.
    pub memory_need: Option<f64>,
    /// The container's requests now, and as the pod spec set them (handed back to).
    pub current_cpu: f64,
    pub base_cpu: f64,
    pub current_memory: Option<f64>,
    pub base_memory: Option<f64>,
    /// Replicas asked for and ready: more asked for than ready is a pending scale-up.
    pub requested_replicas: u32,
    pub ready_replicas: u32,
    /// What the node can still give this pod beyond its current requests, if known.
    pub node_free_cpu: Option<f64>,
    pub node_free_memory: Option<f64>,
    /// The memory request may go down in place (its limit can stay where it is).
    pub memory_can_shrink: bool,
}

/// Why the planned request is what it is (a fixed set: usable as a metric label).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeReason {
    /// The forecast need sets it (vertical).
    Forecast,
    /// A pending scale-up: the running pod covers the forecast until new ones are ready.
    Bridge,
    /// As `Bridge`, but `max_cpu` or the node cover only the non-sheddable share.
    BridgeProtectedOnly,
    /// Back to the container's own request.
    Base,
    /// Capped by `max_cpu` or by what the node can give.
    AtLimit,
    /// A smaller change than `min_change`, or a decrease inside `cooldown`.
    Hold,
}

#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
pub struct ResizePlan {
    pub cpu: f64,
    pub memory: Option<f64>,
    pub reason: ResizeReason,
    /// Whether this differs from the current requests (a resize to send).
    pub change: bool,
    /// What the plan wanted before the node's free capacity cut it, when it did.
    pub node_capped_cpu: Option<f64>,
    pub node_capped_memory: Option<f64>,
}

/// Plans over time (remembers the last change for the cooldown).
pub struct Resizer {
    cfg: ResizeConfig,
    last_change: Option<Millis>,
}

// === impl ResizeConfig ===

impl Default for ResizeConfig {
    fn default() -> Self {
        Self {
            vertical: false,
            bridge: true,
            target_utilization: 0.8,
            min_cpu: 0.1,
            max_cpu: 4.0,
            min_memory: None,
            max_memory: None,
            min_change: 0.1,
            cooldown: Duration::from_secs(60),
        }
    }
}

impl ResizeConfig {
    pub fn validate(&self) -> Result<(), ResizeConfigError> {
        let err = |field, reason| Err(ResizeConfigError { field, reason });
        if !(self.target_utilization > 0.0 && self.target_utilization <= 1.0) {
            return err("target_utilization", "must be in (0, 1]");
        }
        if !(self.min_cpu.is_finite() && self.min_cpu > 0.0 && self.min_cpu <= self.max_cpu) {
            return err("min_cpu", "need 0 < min_cpu <= max_cpu");
        }
        if !self.max_cpu.is_finite() {
            return err("max_cpu", "must be a number of cores");
        }
        match (self.min_memory, self.max_memory) {
            (None, None) => {}
            (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi => {}
            _ => {
                return err(
                    "min_memory",
                    "set both min_memory and max_memory, 0 < min <= max",
                )
            }
        }
        if !(0.0..=1.0).contains(&self.min_change) {
            return err("min_change", "must be in [0, 1]");
        }
        if !self.vertical && !self.bridge {
            return err("vertical", "turn on vertical, bridge or both");
        }
        Ok(())
    }
}

// === impl Resizer ===

impl Resizer {
    pub fn new(cfg: ResizeConfig) -> Self {
        Self {
            cfg,
            last_change: None,
        }
    }

    pub fn config(&self) -> &ResizeConfig {
        &self.cfg
    }

    pub fn plan(&mut self, input: ResizeInput) -> ResizePlan {
        let cfg = &self.cfg;
        let u = cfg.target_utilization;
        let pending = input.requested_replicas > input.ready_replicas;
        let bridging = cfg.bridge && pending;
        let follows = cfg.vertical || bridging;
        let node_cap = input
            .node_free_cpu
            .map_or(f64::INFINITY, |free| input.current_cpu + free.max(0.0));
        let cap = cfg.max_cpu.min(node_cap);

        // What the forecast asks for, before any cap.
        let raw = match input.cpu_need.filter(|_| follows) {
            None => input.base_cpu,
            Some(need) => {
                let wanted = (need.max(0.0) / u).max(cfg.min_cpu);
                // The bridge never hands out less than the pod's own request.
                if cfg.vertical {
                    wanted
                } else {
                    wanted.max(input.base_cpu)
                }
            }
        };
        let (cpu, mut reason) = if input.cpu_need.filter(|_| follows).is_none() {
            (raw, ResizeReason::Base)
        } else {
            let why = if bridging {
                ResizeReason::Bridge
            } else {
                ResizeReason::Forecast
            };
            if raw <= cap {
                (raw, why)
            } else if bridging && input.protected_cpu.is_some_and(|p| p.max(0.0) / u > cap) {
                // Not even the non-sheddable share fits: the most there is.
                (cap, ResizeReason::AtLimit)
            } else if bridging && input.protected_cpu.is_some() {
                (cap, ResizeReason::BridgeProtectedOnly)
            } else {
                (cap, ResizeReason::AtLimit)
            }
        };
        let mut cpu = cpu.min(node_cap).max(0.0);
        if cpu + 1e-9 < raw && reason == ResizeReason::Base {
            reason = ResizeReason::AtLimit;
        }
        // The node, not max_cpu, set the size: what max_cpu alone would have given.
        let unbounded = raw.min(cfg.max_cpu);
        let node_capped_cpu = (cpu + 1e-9 < unbounded).then_some(unbounded);

        let mut node_capped_memory = None;
        let memory = match (cfg.min_memory, cfg.max_memory, input.current_memory) {
            (Some(lo), Some(hi), Some(current)) => {
                let node = input
                    .node_free_memory
                    .map_or(f64::INFINITY, |free| current + free.max(0.0));
                let wanted = match input.memory_need.filter(|_| follows) {
                    Some(need) => (need.max(0.0) / u).clamp(lo, hi),
                    None => input.base_memory.unwrap_or(current),
                };
                // Lowering the memory request needs the limit to stay put (see
                // `memory_can_shrink`); otherwise memory is only raised in place.
                let wanted = if input.memory_can_shrink {
                    wanted
                } else {
                    wanted.max(current.min(hi))
                };
                if wanted > node + 1e-9 {
                    node_capped_memory = Some(wanted);
                }
                Some(wanted.min(node))
            }
            _ => input.current_memory,
        };

        // Inside the cooldown, neither resource goes down; increases apply at once.
        let cooling = self
            .last_change
            .is_some_and(|at| input.now.saturating_sub(at) < cfg.cooldown.as_millis() as Millis);
        let mut held_cpu = cpu;
        let mut held_memory = memory;
        if cooling {
            held_cpu = held_cpu.max(input.current_cpu);
            if let (Some(m), Some(c)) = (held_memory, input.current_memory) {
                held_memory = Some(m.max(c));
            }
        }
        let differs = |new: f64, old: f64| (new - old).abs() > cfg.min_change * old.max(1e-9);
        let cpu_moves = differs(held_cpu, input.current_cpu);
        let mem_moves = match (held_memory, input.current_memory) {
            (Some(new), Some(old)) => differs(new, old),
            _ => false,
        };
        let change = cpu_moves || mem_moves;
        if !change {
            if (cpu - input.current_cpu).abs() > 1e-9 {
                reason = ResizeReason::Hold;
            }
            cpu = input.current_cpu;
        } else {
            cpu = held_cpu;
            self.last_change = Some(input.now);
        }
        ResizePlan {
            cpu,
            memory: if change {
                held_memory
            } else {
                input.current_memory
            },
            reason,
            change,
            node_capped_cpu,
            node_capped_memory,
        }
    }
}

#[cfg(test)]
#[path = "resize_tests.rs"]
mod tests;
