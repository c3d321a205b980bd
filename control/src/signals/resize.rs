//! The in-place resize signal: at each scaling decision the [`Resizer`] plans this
//! pod's app container requests from the forecast CPU and memory, and the plan is
//! applied through the pod `resize` subresource with the `kube` client.
//!
//! The pod and its Deployment are read every `poll` (requests, limits, `resizePolicy`,
//! the kubelet's verdict on the last resize, ready replicas); a decision is planned
//! against what was read last and offered to the one [`Sender`] (latest wins, at most
//! one resize per `min_interval`). Each delivery:
//!
//! 1. LISTs the namespace's VerticalPodAutoscalers and **refuses** when one targets the
//!    Deployment in any mode but `Off` (it would resize or evict the pod after us);
//! 2. GETs the pod: a size already asked for is not written again (`unchanged`, or
//!    `deferred` / `infeasible` with the kubelet's reason);
//! 3. never asks again, for `infeasible_retry`, for at least an ask the kubelet
//!    called `Infeasible` in every resource that ask raised (the node cannot give it);
//! 4. PATCHes `pods/{pod}/resize` with a strategic merge patch of the container's
//!    requests, scaling its CPU limit by the same factor (so the QoS class, which a
//!    resize may not change, stays). Memory only where the container's
//!    `resizePolicy` needs no restart; its limit rises with its request and is never
//!    lowered in place (the request alone goes down, where it is below the limit).
//!
//! The node's room (its `status.allocatable` less every other request on it, see
//! [`super::node`]) is read with the pod, at most once per `node_refresh`, and the
//! plan never asks for more: a plan the node cut is logged once, counted, and shown in
//! `GET /v1/scale`. While the kubelet reports the current ask `Deferred`, no larger
//! ask is written (it retries by itself; a smaller one may fit and is).
//!
//! When a poll finds the kubelet reporting the pod's current ask `Infeasible`
//! (condition `PodResizePending`, or `status.resize` before Kubernetes 1.33), the ask
//! is handed back to what the container has (so quota is not held for a size the
//! pod never gets) and remembered as the ceiling above.

use super::kube::{client, CallError};
use super::node::{room, NodeRoom};
use super::sender::{Attempt, Ended, OutcomeMetrics, Sender, Signal};
use super::{Decision, Outcome};
use crate::quantity::{bytes, cpu_cores};
use ::kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use ::kube::Api;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Node, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use metrics::{Counter, Gauge};
use prescale_policies::resize::{ResizeInput, ResizePlan, ResizeReason, Resizer};
use prescale_proxy::config::{ResizeSignalConfig, RetryPolicy};
use prescale_proxy::signals::{now_ms, rfc3339, NodeStatus, ResizeStatus};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// `prescale_resize_planned_cpu_cores`: the CPU request the last plan asked for.
pub const PLANNED_CPU: &str = "prescale_resize_planned_cpu_cores";
/// `prescale_resize_planned_memory_bytes`: the memory request the last plan asked for.
pub const PLANNED_MEMORY: &str = "prescale_resize_planned_memory_bytes";
/// `prescale_resize_pending_total{reason}`: asks the kubelet left pending.
pub const PENDING: &str = "prescale_resize_pending_total";

/// `prescale_resize_node_capped_total{resource}`: plans the node's room cut.
pub const NODE_CAPPED: &str = "prescale_resize_node_capped_total";
/// `prescale_resize_node_room_cpu_cores`: the most the app container may request on
/// its node (allocatable less every other request), as last read.
pub const NODE_ROOM_CPU: &str = "prescale_resize_node_room_cpu_cores";
/// `prescale_resize_node_room_memory_bytes`: the same for memory.
pub const NODE_ROOM_MEMORY: &str = "prescale_resize_node_room_memory_bytes";
/// `prescale_resize_node_read_errors_total`: failed reads of the node or its pods.
pub const NODE_READ_ERRORS: &str = "prescale_resize_node_read_errors_total";

/// VPAs read at most (one page): the refusal is best effort beyond that.
const VPA_PAGE: u32 = 500;

/// The outcomes this signal ends deliveries with.
const OUTCOMES: [Outcome; 7] = [
    Outcome::Ok,
    Outcome::Failed,
    Outcome::Dropped,
    Outcome::Unchanged,
    Outcome::RefusedVpaOwned,
    Outcome::Infeasible,
    Outcome::Deferred,
];

/// The resize sender: targets offered to it are applied by the one [`Sender`].
pub type Resizing = Sender<ResizeSignal>;

/// One size to give the container.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    pub cpu_milli: u64,
    /// Bytes; None leaves memory as it is.
    pub memory: Option<u64>,
    pub reason: ResizeReason,
}

/// The kubelet's verdict on a resize it has not applied.
#[derive(Clone, Debug, PartialEq)]
pub enum Pending {
    Infeasible(String),
    Deferred(String),
}

/// What a read of the pod shows of the container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView {
    /// Requests and limits asked for (the pod spec).
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    pub cpu_limit: Option<f64>,
    pub memory_limit: Option<f64>,
    /// What the container has now (its status), when the kubelet reports it.
    pub allocated_cpu: Option<f64>,
    pub allocated_memory: Option<f64>,
    /// Memory can be resized without restarting the container.
    pub memory_resizable: bool,
    pub pending: Option<Pending>,
    /// The node the pod runs on (`spec.nodeName`).
    pub node_name: Option<String>,
}

impl PodView {
    /// The memory request may go down in place with the limit left where it is: no
    /// limit, or one above the request (a request equal to its limit, Guaranteed,
    /// would need the limit lowered too, which Kubernetes 1.33 refuses in place and
    /// 1.34+ does only when usage is below it).
    pub fn memory_can_shrink(&self) -> bool {
        match (self.memory, self.memory_limit) {
            (Some(r), Some(l)) => r < l,
            _ => true,
        }
    }
}

/// The last reads, which plans are made against.
#[derive(Default)]
struct Seen {
    pod: Option<PodView>,
    /// The Deployment template's requests: what the bridge hands back to.
    base_cpu: Option<f64>,
    base_memory: Option<f64>,
    /// `spec.replicas` and `status.readyReplicas` of the Deployment.
    replicas: Option<(u32, u32)>,
    /// A CPU the kubelet could not give, and when that was seen.
    ceiling: Option<(Ceiling, Instant)>,
    /// The last ask found pending, so each is logged and counted once.
    pending_noted: Option<(u64, bool)>,
    /// The VPA last found targeting the Deployment, so the refusal is logged once.
    owner: Option<String>,
    warned_no_request: bool,
    /// The ask to hand back after an `Infeasible` verdict, for the next poll to offer.
    hand_back: Option<Target>,
    /// Reads are failing (logged once per outage).
    read_failing: bool,
    /// The node's room as last read, and when (Unix ms).
    node: Option<(NodeRoom, u64)>,
    /// When the node was last read (or tried): at most once per `node_refresh`.
    node_tried: Option<Instant>,
    /// Why the node could not be read, while it cannot (logged once per outage).
    node_error: Option<String>,
    /// The last plan, and what the node cut from it (for `GET /v1/scale`).
    last_plan: Option<ResizePlan>,
    capped: Option<String>,
}

/// An ask the kubelet called `Infeasible`, in the resources it raised above what the
/// container had: asking at least as much of each again is refused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ceiling {
    pub cpu_milli: Option<u64>,
    pub memory: Option<u64>,
}

impl Ceiling {
    /// Whether `t` asks at least the infeasible size in every resource it raised;
    /// `memory` is what the spec keeps when `t` leaves memory alone.
    fn refuses(&self, t: &Target, memory: Option<f64>) -> bool {
        let memory = t.memory.or(memory.map(|m| m.round() as u64));
        let cpu_ok = self.cpu_milli.is_none_or(|c| t.cpu_milli >= c);
        let memory_ok = self.memory.is_none_or(|c| memory.is_some_and(|m| m >= c));
        (self.cpu_milli.is_some() || self.memory.is_some()) && cpu_ok && memory_ok
    }

    fn describe(&self) -> String {
        match (self.cpu_milli, self.memory) {
            (Some(c), Some(m)) => format!("{c}m CPU with {m} bytes of memory"),
            (Some(c), None) => format!("{c}m CPU"),
            (None, Some(m)) => format!("{m} bytes of memory"),
            (None, None) => "that size".into(),
        }
    }
}

/// What one attempt did.
#[derive(Debug, PartialEq)]
enum Applied {
    Patched { from: Option<f64> },
    Unchanged,
    Pending(Pending),
    AboveCeiling(Ceiling),
    RefusedVpaOwned(String),
}

/// The typed endpoints used.
struct Apis {
    pods: Api<Pod>,
    /// Cluster-wide: the node, and every pod on it.
    nodes: Api<Node>,
    all_pods: Api<Pod>,
    deployments: Api<Deployment>,
    vpas: Api<DynamicObject>,
}

/// The resize signal: plans at each decision, applies the plan.
pub struct ResizeSignal {
    cfg: ResizeSignalConfig,
    pod: String,
    /// None only in unit tests, which never deliver.
    apis: Option<Apis>,
    resizer: Mutex<Resizer>,
    seen: Mutex<Seen>,
    next_poll: Mutex<Instant>,
    planned_cpu: Gauge,
    planned_memory: Gauge,
    infeasible: Counter,
    deferred: Counter,
    capped_cpu: Counter,
    capped_memory: Counter,
    room_cpu: Gauge,
    room_memory: Gauge,
    node_errors: Counter,
}

/// Builds the client (a bad kubeconfig, or no pod name, is a startup error) and starts
/// the sender on its own thread and runtime.
pub fn spawn(cfg: &ResizeSignalConfig) -> std::io::Result<Arc<Resizing>> {
    let pod = cfg.pod_name().ok_or_else(|| {
        std::io::Error::other(
            "signals.resize: no pod name (set signals.resize.pod, or POD_NAME from the downward API)",
        )
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = rt
        .block_on(client(cfg.kubeconfig.as_deref(), cfg.timeout))
        .map_err(|e| std::io::Error::other(format!("signals.resize: {e}")))?;
    let gvk = GroupVersionKind::gvk("autoscaling.k8s.io", "v1", "VerticalPodAutoscaler");
    let vpa = ApiResource::from_gvk_with_plural(&gvk, "verticalpodautoscalers");
    let apis = Apis {
        pods: Api::namespaced(client.clone(), &cfg.namespace),
        nodes: Api::all(client.clone()),
        all_pods: Api::all(client.clone()),
        deployments: Api::namespaced(client.clone(), &cfg.namespace),
        vpas: Api::namespaced_with(client, &cfg.namespace, &vpa),
    };
    let me = Arc::new(new(cfg, pod, Some(apis)));
    me.spawn(rt, "signal-resize".into())?;
    tracing::info!(signal = "resize", namespace = %cfg.namespace, pod = %me.signal().pod,
        container = %cfg.container, deployment = %cfg.deployment, dry_run = cfg.dry_run,
        "the app container is resized in place through the pod resize subresource");
    Ok(me)
}

fn new(cfg: &ResizeSignalConfig, pod: String, apis: Option<Apis>) -> Resizing {
    ::metrics::describe_gauge!(
        PLANNED_CPU,
        "CPU request (cores) the last resize plan asked for the app container."
    );
    ::metrics::describe_gauge!(
        PLANNED_MEMORY,
        ::metrics::Unit::Bytes,
        "Memory request the last resize plan asked for the app container."
    );
    ::metrics::describe_counter!(
        PENDING,
        "Resizes the kubelet left pending, by reason (infeasible, deferred); each ask counted once."
    );
    let metrics = OutcomeMetrics::new(
        prescale_proxy::metrics::SIGNAL_SENDS,
        "signal",
        "resize",
        &OUTCOMES,
        Some(::metrics::gauge!(prescale_proxy::metrics::SIGNAL_LAST_SUCCESS, "signal" => "resize")),
    );
    ::metrics::describe_counter!(
        NODE_CAPPED,
        "Resize plans cut to what the node still has room for (allocatable less every other request), by resource."
    );
    ::metrics::describe_gauge!(
        NODE_ROOM_CPU,
        "Most CPU (cores) the app container may request on its node: allocatable less every other request, as last read."
    );
    ::metrics::describe_gauge!(
        NODE_ROOM_MEMORY,
        ::metrics::Unit::Bytes,
        "Most memory the app container may request on its node: allocatable less every other request, as last read."
    );
    ::metrics::describe_counter!(
        NODE_READ_ERRORS,
        "Failed reads of the pod's node or of the pods on it (resizes are then not capped by the node)."
    );
    let capped = |resource: &'static str| {
        let c = ::metrics::counter!(NODE_CAPPED, "resource" => resource);
        c.increment(0);
        c
    };
    let node_errors = ::metrics::counter!(NODE_READ_ERRORS);
    node_errors.increment(0);
    let pending = |reason: &'static str| {
        let c = ::metrics::counter!(PENDING, "reason" => reason);
        c.increment(0);
        c
    };
    let signal = ResizeSignal {
        cfg: cfg.clone(),
        pod,
        apis,
        resizer: Mutex::new(Resizer::new(cfg.plan())),
        seen: Mutex::new(Seen::default()),
        // Due at once: the first read is at start.
        next_poll: Mutex::new(Instant::now()),
        planned_cpu: ::metrics::gauge!(PLANNED_CPU),
        planned_memory: ::metrics::gauge!(PLANNED_MEMORY),
        infeasible: pending("infeasible"),
        deferred: pending("deferred"),
        capped_cpu: capped("cpu"),
        capped_memory: capped("memory"),
        room_cpu: ::metrics::gauge!(NODE_ROOM_CPU),
        room_memory: ::metrics::gauge!(NODE_ROOM_MEMORY),
        node_errors,
    };
    Sender::new(signal, metrics)
}

/// Plans for a decision and offers the plan when it changes the container.
pub fn decide(sender: &Resizing, d: &Decision) {
    if let Some(t) = sender.signal().plan(d) {
        sender.offer(t);
    }
}

// === impl ResizeSignal ===

impl Signal for ResizeSignal {
    type Item = Target;
    type Prepared = Target;

    fn name(&self) -> &'static str {
        "resize"
    }

    fn retry(&self) -> RetryPolicy {
        self.cfg.retry()
    }

    fn min_interval(&self) -> Duration {
        self.cfg.min_interval
    }

    fn ask(&self, t: &Target) -> u64 {
        // Millicores in the low 32 bits, MiB above: sizes that differ ask differently.
        t.cpu_milli.min(u64::from(u32::MAX)) | (t.memory.unwrap_or(0) >> 20) << 32
    }

    fn prepare(&self, t: &Target) -> Result<Target, String> {
        Ok(*t)
    }

    async fn attempt(&self, t: &Target) -> Attempt {
        let Some(apis) = &self.apis else {
            return Attempt::Retry {
                status: None,
                error: "no Kubernetes client".into(),
                retry_after: None,
            };
        };
        let done = |outcome, error| Attempt::Done {
            outcome,
            status: None,
            error,
        };
        let error = match self.apply(apis, t).await {
            Ok(Applied::Patched { from }) => {
                tracing::info!(signal = "resize", pod = %self.pod, container = %self.cfg.container,
                    from_cpu = from, to_cpu = t.cpu_milli as f64 / 1000.0, memory = t.memory,
                    reason = ?t.reason, dry_run = self.cfg.dry_run, "resized the container");
                return done(Outcome::Ok, None);
            }
            Ok(Applied::Unchanged) => return done(Outcome::Unchanged, None),
            Ok(Applied::Pending(Pending::Deferred(why))) => {
                return done(Outcome::Deferred, Some(why))
            }
            Ok(Applied::Pending(Pending::Infeasible(why))) => {
                return done(Outcome::Infeasible, Some(why))
            }
            Ok(Applied::AboveCeiling(c)) => {
                let why = format!(
                    "the kubelet called {} Infeasible on this node; not asked again before signals.resize.infeasible_retry",
                    c.describe()
                );
                return done(Outcome::Infeasible, Some(why));
            }
            Ok(Applied::RefusedVpaOwned(vpa)) => {
                let why = format!(
                    "VerticalPodAutoscaler {vpa} targets deployment {}; prescale does not resize its pods",
                    self.cfg.deployment
                );
                return done(Outcome::RefusedVpaOwned, Some(why));
            }
            Err(e) => e,
        };
        let status = match &error {
            CallError::Api { code, .. } => Some(*code),
            _ => None,
        };
        if super::kube::retryable(&error) {
            Attempt::Retry {
                status,
                error: error.to_string(),
                retry_after: None,
            }
        } else {
            Attempt::Done {
                outcome: Outcome::Failed,
                status,
                error: Some(error.to_string()),
            }
        }
    }

    fn finish(&self, t: &Target, _: Option<Target>, e: &Ended) {
        if e.outcome == Outcome::Failed {
            tracing::error!(signal = "resize", pod = %self.pod, cpu_milli = t.cpu_milli,
                attempts = e.attempts, status = e.status,
                error = e.error.as_deref().unwrap_or(""), "resize failed");
        }
    }

    /// The pod and Deployment are read every `poll` (the first time at once).
    fn chore_due(&self, _: Option<Instant>) -> Option<Instant> {
        Some(*self.next_poll.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn chore(&self) -> Option<Target> {
        *self.next_poll.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now() + self.cfg.poll;
        let apis = self.apis.as_ref()?;
        let dep = self.call(apis.deployments.get(&self.cfg.deployment)).await;
        let pod = self.call(apis.pods.get(&self.pod)).await;
        let failed = match (&dep, &pod) {
            (Err(e), _) => Some(format!("deployment {}: {e}", self.cfg.deployment)),
            (_, Err(e)) => Some(format!("pod {}: {e}", self.pod)),
            _ => None,
        };
        self.note_read(failed);
        if let Ok(dep) = dep {
            self.observe_deployment(&dep);
        }
        if let Ok(pod) = pod {
            self.observe_pod(&pod);
            self.read_node(apis).await;
        }
        // An Infeasible ask found here or by a delivery is handed back now.
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hand_back
            .take()
    }
}

impl ResizeSignal {
    /// The plan for a decision, if it changes the container (and the pod was read).
    fn plan(&self, d: &Decision) -> Option<Target> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let pod = seen.pod.clone()?;
        let Some(cpu) = pod.cpu else {
            if !seen.warned_no_request {
                seen.warned_no_request = true;
                tracing::warn!(signal = "resize", pod = %self.pod, container = %self.cfg.container,
                    "the container has no CPU request: an in-place resize cannot add one (it would change the QoS class); not resizing");
            }
            return None;
        };
        let (requested, ready) = seen.replicas.unwrap_or((0, 0));
        let memory = pod.memory.filter(|_| pod.memory_resizable);
        let node = seen.node.as_ref().map(|(r, _)| r.clone());
        let input = ResizeInput {
            now: d.at,
            cpu_need: d.resources.cpu_cores,
            protected_cpu: d.resources.protected_cpu_cores,
            memory_need: d.resources.memory_bytes,
            current_cpu: cpu,
            base_cpu: seen.base_cpu.unwrap_or(cpu),
            current_memory: memory,
            base_memory: seen.base_memory.or(memory),
            requested_replicas: requested,
            ready_replicas: ready,
            // The planner caps at current + free: the room, exactly.
            node_free_cpu: node.as_ref().map(|r| r.cpu_room() - cpu),
            node_free_memory: node
                .as_ref()
                .filter(|r| r.allocatable_memory.is_finite())
                .zip(memory)
                .map(|(r, m)| r.memory_room() - m),
            memory_can_shrink: pod.memory_can_shrink(),
        };
        let plan = self
            .resizer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plan(input);
        self.planned_cpu.set(plan.cpu);
        if let Some(m) = plan.memory {
            self.planned_memory.set(m);
        }
        self.note_capped(&mut seen, &plan, node.as_ref());
        tracing::debug!(signal = "resize", ?plan, ?input, "resize planned");
        plan.change.then(|| Target {
            cpu_milli: milli(plan.cpu),
            memory: plan.memory.map(|m| m.round() as u64),
            reason: plan.reason,
        })
    }

    /// One attempt: check for a VPA, read the pod, patch if needed.
    async fn apply(&self, apis: &Apis, t: &Target) -> Result<Applied, CallError> {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((ceiling, at)) = seen.ceiling {
                let memory = seen.pod.as_ref().and_then(|p| p.memory);
                if at.elapsed() >= self.cfg.infeasible_retry {
                    seen.ceiling = None;
                } else if ceiling.refuses(t, memory) {
                    return Ok(Applied::AboveCeiling(ceiling));
                }
            }
        }
        let owner = self.owning_vpa(apis).await?;
        self.note_owner(owner.as_deref());
        if let Some(vpa) = owner {
            return Ok(Applied::RefusedVpaOwned(vpa));
        }
        let pod = self.call(apis.pods.get(&self.pod)).await?;
        self.observe_pod(&pod);
        let Some(view) = view(&pod, &self.cfg.container) else {
            return Err(CallError::Api {
                code: 404,
                reason: "NotFound".into(),
                message: format!("pod {} has no container {}", self.pod, self.cfg.container),
            });
        };
        let same_memory = t
            .memory
            .is_none_or(|m| view.memory.is_some_and(|v| v.round() as u64 == m));
        if view.cpu.map(milli) == Some(t.cpu_milli) && same_memory {
            return Ok(match view.pending {
                Some(p) => Applied::Pending(p),
                None => Applied::Unchanged,
            });
        }
        if let Some(why) = wait_for_deferred(&view, t) {
            return Ok(Applied::Pending(Pending::Deferred(why)));
        }
        let params = PatchParams {
            field_manager: Some(self.cfg.field_manager.clone()),
            dry_run: self.cfg.dry_run,
            ..PatchParams::default()
        };
        let patch = Patch::Strategic(body(&self.cfg.container, &view, t));
        let after = self
            .call(
                apis.pods
                    .patch_subresource("resize", &self.pod, &params, &patch),
            )
            .await?;
        if !self.cfg.dry_run {
            self.observe_pod(&after);
        }
        Ok(Applied::Patched { from: view.cpu })
    }

    /// The first VPA targeting the Deployment in a mode that writes (not `Off`). A
    /// cluster without the VPA CRD answers 404: no VPA.
    async fn owning_vpa(&self, apis: &Apis) -> Result<Option<String>, CallError> {
        match self
            .call(apis.vpas.list(&ListParams::default().limit(VPA_PAGE)))
            .await
        {
            Ok(list) => Ok(list
                .items
                .iter()
                .find_map(|v| vpa_owner(v, &self.cfg.deployment))),
            Err(CallError::Api { code: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Logs a change of owner once: the refusal loudly, the release quietly.
    fn note_owner(&self, owner: Option<&str>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.owner.as_deref() == owner {
            return;
        }
        match owner {
            Some(vpa) => tracing::error!(signal = "resize", namespace = %self.cfg.namespace,
                deployment = %self.cfg.deployment, vpa,
                "REFUSING to resize: VerticalPodAutoscaler {vpa} targets this deployment and would undo every resize; \
                 prescale leaves its pods alone (set its updateMode to Off to use prescale's resizes, see docs/resources.md)"),
            None => tracing::info!(signal = "resize", deployment = %self.cfg.deployment,
                "no VerticalPodAutoscaler targets the deployment any more; resizing its pod"),
        }
        seen.owner = owner.map(str::to_string);
    }

    /// Logs a failing read once per outage, and the recovery.
    fn note_read(&self, failed: Option<String>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match (failed, seen.read_failing) {
            (Some(e), false) => {
                tracing::warn!(signal = "resize", error = %e, "reading the pod or deployment failed; no resize is planned without them");
                seen.read_failing = true;
            }
            (Some(e), true) => tracing::debug!(signal = "resize", error = %e, "still failing"),
            (None, true) => {
                tracing::info!(signal = "resize", "reading the pod and deployment again");
                seen.read_failing = false;
            }
            (None, false) => {}
        }
    }

    fn observe_deployment(&self, dep: &Deployment) {
        let spec = &dep.spec;
        let requested = spec.replicas.unwrap_or(1);
        let ready = dep
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let template = spec
            .template
            .spec
            .as_ref()
            .and_then(|p| p.containers.iter().find(|c| c.name == self.cfg.container))
            .and_then(|c| c.resources.as_ref());
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.replicas = Some((
            u32::try_from(requested).unwrap_or(0),
            u32::try_from(ready).unwrap_or(0),
        ));
        if let Some(r) = template {
            seen.base_cpu = request(r, "cpu", cpu_cores).or(seen.base_cpu);
            seen.base_memory = request(r, "memory", bytes).or(seen.base_memory);
        }
    }

    /// Keeps the pod's view; an ask found `Infeasible` is noted, becomes the ceiling,
    /// and is handed back to what the container has (by the next poll).
    fn observe_pod(&self, pod: &Pod) {
        let back = self.note_pending(pod);
        if back.is_some() {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .hand_back = back;
        }
    }

    fn note_pending(&self, pod: &Pod) -> Option<Target> {
        let view = view(pod, &self.cfg.container)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.pod = Some(view.clone());
        let asked = view.cpu.map(milli)?;
        let Some(pending) = &view.pending else {
            seen.pending_noted = None;
            return None;
        };
        let infeasible = matches!(pending, Pending::Infeasible(_));
        if seen.pending_noted == Some((asked, infeasible)) {
            return None;
        }
        seen.pending_noted = Some((asked, infeasible));
        match pending {
            Pending::Deferred(why) => {
                self.deferred.increment(1);
                tracing::info!(signal = "resize", pod = %self.pod, cpu_milli = asked, reason = %why,
                    "the kubelet deferred the resize; it retries by itself");
                None
            }
            Pending::Infeasible(why) => {
                self.infeasible.increment(1);
                let back = view.allocated_cpu.or(seen.base_cpu)?;
                let (ceiling, memory_back) = infeasible_ask(&view, back);
                seen.ceiling = Some((ceiling, Instant::now()));
                tracing::warn!(signal = "resize", pod = %self.pod, cpu_milli = asked, memory = view.memory,
                    reason = %why, back_to_cpu = back, back_to_memory = memory_back,
                    "the node cannot give this size (Infeasible): handing the ask back and not asking for it again before infeasible_retry");
                (milli(back) != asked || memory_back.is_some()).then(|| Target {
                    cpu_milli: milli(back),
                    memory: memory_back,
                    reason: ResizeReason::AtLimit,
                })
            }
        }
    }

    /// Reads the node and the pods on it, at most once per `node_refresh`, once the
    /// pod (and so its node) is known.
    async fn read_node(&self, apis: &Apis) {
        if !self.cfg.node_capacity {
            return;
        }
        let name = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen
                .node_tried
                .is_some_and(|t| t.elapsed() < self.cfg.node_refresh)
            {
                return;
            }
            let Some(name) = seen.pod.as_ref().and_then(|p| p.node_name.clone()) else {
                return;
            };
            seen.node_tried = Some(Instant::now());
            name
        };
        // Pods holding resources on the node, as `kubectl describe node` lists them.
        let on_node = ListParams::default().fields(&format!(
            "spec.nodeName={name},status.phase!=Succeeded,status.phase!=Failed"
        ));
        let read = match self.call(apis.nodes.get(&name)).await {
            Err(e) => Err(format!("get node {name}: {e}")),
            Ok(node) => match self.call(apis.all_pods.list(&on_node)).await {
                Err(e) => Err(format!("list pods on node {name}: {e}")),
                Ok(pods) => room(
                    &node,
                    &pods.items,
                    &self.cfg.namespace,
                    &self.pod,
                    &self.cfg.container,
                )
                .ok_or_else(|| format!("node {name} reports no allocatable cpu")),
            },
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok(r) => {
                self.room_cpu.set(r.cpu_room());
                if r.allocatable_memory.is_finite() {
                    self.room_memory.set(r.memory_room());
                }
                if seen.node_error.take().is_some() {
                    tracing::info!(signal = "resize", node = %r.node, "reading the node again: resizes are capped by its room");
                }
                tracing::debug!(signal = "resize", room = ?r, "node read");
                seen.node = Some((r, now_ms()));
            }
            Err(e) => {
                self.node_errors.increment(1);
                if seen.node_error.is_none() {
                    tracing::warn!(signal = "resize", error = %e,
                        "reading the node's room failed (needs get on nodes and list on pods, see docs/kubernetes.md);                          resizes are not capped by the node until it can be read");
                }
                // A room that cannot be refreshed is not trusted: no cap rather than
                // an old one (the kubelet's Infeasible verdict still bounds the ask).
                seen.node = None;
                seen.node_error = Some(e);
            }
        }
    }

    /// Counts and explains a plan the node cut; logs once per stretch of such plans.
    fn note_capped(&self, seen: &mut Seen, plan: &ResizePlan, node: Option<&NodeRoom>) {
        seen.last_plan = Some(*plan);
        let mut why = Vec::new();
        if let (Some(wanted), Some(r)) = (plan.node_capped_cpu, node) {
            self.capped_cpu.increment(1);
            why.push(format!(
                "cpu: wanted {wanted:.3} cores, node {} has room for {:.3} (allocatable {:.3}, requested by the rest {:.3})",
                r.node,
                r.cpu_room(),
                r.allocatable_cpu,
                r.others_cpu
            ));
        }
        if let (Some(wanted), Some(r)) = (plan.node_capped_memory, node) {
            self.capped_memory.increment(1);
            why.push(format!(
                "memory: wanted {wanted:.0} bytes, node {} has room for {:.0} (allocatable {:.0}, requested by the rest {:.0})",
                r.node,
                r.memory_room(),
                r.allocatable_memory,
                r.others_memory
            ));
        }
        let why = (!why.is_empty()).then(|| why.join("; "));
        if let Some(w) = &why {
            if seen.capped.is_none() {
                tracing::info!(signal = "resize", pod = %self.pod, capped = %w,
                    "the node has no room for the planned size: asking for what it can give");
            }
        }
        seen.capped = why;
    }

    /// The last plan, the node's room and what bounded it, for `GET /v1/scale`.
    pub fn status(&self) -> ResizeStatus {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let node = seen.node.as_ref().map(|(r, at)| NodeStatus {
            name: r.node.clone(),
            allocatable_cpu_cores: r.allocatable_cpu,
            allocatable_memory_bytes: r.allocatable_memory,
            others_cpu_cores: r.others_cpu,
            others_memory_bytes: r.others_memory,
            room_cpu_cores: r.cpu_room(),
            room_memory_bytes: r.memory_room(),
            pods: r.pods,
            read_at: rfc3339(*at),
        });
        let reason = seen.last_plan.as_ref().and_then(|p| {
            serde_json::to_value(p.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
        });
        ResizeStatus {
            planned_cpu_cores: seen.last_plan.map(|p| p.cpu),
            planned_memory_bytes: seen.last_plan.and_then(|p| p.memory),
            reason,
            capped_by_node: seen.capped.clone(),
            node,
            node_error: seen.node_error.clone(),
            pending: seen.pod.as_ref().and_then(|v| {
                v.pending.as_ref().map(|p| match p {
                    Pending::Infeasible(m) => format!("Infeasible: {m}"),
                    Pending::Deferred(m) => format!("Deferred: {m}"),
                })
            }),
        }
    }

    /// Runs one API call under the configured timeout.
    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, ::kube::Error>>,
    ) -> Result<T, CallError> {
        super::kube::call(self.cfg.timeout, fut).await
    }
}

/// What an `Infeasible` ask raised above what the container has (the ceiling), and
/// the memory to hand back to when memory was raised (CPU goes back to `cpu_back`).
/// A CPU the ask did not raise is no part of the ceiling: the node may still give it.
fn infeasible_ask(view: &PodView, cpu_back: f64) -> (Ceiling, Option<u64>) {
    let asked = view.cpu.map(milli);
    let cpu_milli = asked.filter(|&a| a > milli(cpu_back));
    let memory_back = match (view.memory, view.allocated_memory) {
        (Some(spec), Some(had)) if view.memory_resizable && spec > had => Some(had.round() as u64),
        _ => None,
    };
    let memory = memory_back.and(view.memory.map(|m| m.round() as u64));
    // Neither raised (the verdict is about something else): the CPU asked is the ceiling.
    let cpu_milli = if cpu_milli.is_none() && memory.is_none() {
        asked
    } else {
        cpu_milli
    };
    (Ceiling { cpu_milli, memory }, memory_back)
}

/// While the kubelet defers the current ask (no room now; it retries by itself as room
/// frees up), a larger ask cannot fit sooner: wait (the kubelet's message). A smaller
/// one, in CPU or memory, may fit and is written.
fn wait_for_deferred(view: &PodView, t: &Target) -> Option<String> {
    let Some(Pending::Deferred(why)) = &view.pending else {
        return None;
    };
    let larger_cpu = view.cpu.is_some_and(|c| t.cpu_milli >= milli(c));
    let larger_memory = t
        .memory
        .is_none_or(|m| view.memory.is_none_or(|v| m as f64 >= v));
    (larger_cpu && larger_memory).then(|| why.clone())
}

/// The strategic merge patch for the container: requests, and limits scaled by the
/// same factor as their requests (a Guaranteed pod stays Guaranteed).
fn body(container: &str, view: &PodView, t: &Target) -> Value {
    let cpu = t.cpu_milli as f64 / 1000.0;
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    requests.insert("cpu".into(), json!(format!("{}m", t.cpu_milli)));
    if let (Some(limit), Some(old)) = (view.cpu_limit, view.cpu) {
        limits.insert(
            "cpu".into(),
            json!(format!("{}m", milli(limit * cpu / old.max(1e-3)))),
        );
    }
    if let Some(m) = t.memory {
        requests.insert("memory".into(), json!(m.to_string()));
        // A memory limit is raised with its request, never lowered in place: 1.33
        // refuses that without a restart, and on 1.34+ it OOM-kills a container whose
        // usage is above it (the kubelet's check is best effort). The request alone
        // goes down: the scheduler and quota get the memory back.
        if let (Some(limit), Some(old)) = (view.memory_limit, view.memory) {
            if m as f64 > old {
                let scaled = (limit * m as f64 / old.max(1.0)).round() as u64;
                limits.insert("memory".into(), json!(scaled.to_string()));
            }
        }
    }
    let mut resources = serde_json::Map::new();
    resources.insert("requests".into(), Value::Object(requests));
    if !limits.is_empty() {
        resources.insert("limits".into(), Value::Object(limits));
    }
    json!({ "spec": { "containers": [ { "name": container, "resources": resources } ] } })
}

/// The container's requests, limits, resize policy and pending verdict.
pub fn view(pod: &Pod, container: &str) -> Option<PodView> {
    let c: &Container = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)?;
    let r = c.resources.clone().unwrap_or_default();
    let memory_resizable = !c.resize_policy.iter().flatten().any(|p| {
        p.resource_name == "memory"
            && p.restart_policy != "NotRequired"
            && !p.restart_policy.is_empty()
    });
    let status = pod.status.as_ref();
    let allocated_cpu = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|s| s.name == container))
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| request(r, "cpu", cpu_cores));
    let allocated_memory = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|s| s.name == container))
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| request(r, "memory", bytes));
    // Kubernetes ≥ 1.33: a `PodResizePending` condition; before: `status.resize`.
    let condition = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "PodResizePending" && c.status == "True")
        })
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        });
    let legacy = status
        .and_then(|s| s.resize.clone())
        .map(|r| (r, String::new()));
    let pending = condition
        .or(legacy)
        .and_then(|(reason, message)| match reason.as_str() {
            "Infeasible" => Some(Pending::Infeasible(message)),
            "Deferred" => Some(Pending::Deferred(message)),
            _ => None,
        });
    Some(PodView {
        cpu: request(&r, "cpu", cpu_cores),
        memory: request(&r, "memory", bytes),
        cpu_limit: limit(&r, "cpu", cpu_cores),
        memory_limit: limit(&r, "memory", bytes),
        allocated_cpu,
        allocated_memory,
        memory_resizable,
        pending,
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
    })
}

/// The VPA's name if it targets Deployment `name` in a mode that writes.
fn vpa_owner(v: &DynamicObject, name: &str) -> Option<String> {
    let spec = v.data.get("spec")?;
    let target = spec.get("targetRef")?;
    let kind = target.get("kind").and_then(Value::as_str);
    let target_name = target.get("name").and_then(Value::as_str);
    let mode = spec
        .pointer("/updatePolicy/updateMode")
        .and_then(Value::as_str)
        .unwrap_or("Auto");
    (kind == Some("Deployment") && target_name == Some(name) && mode != "Off")
        .then(|| v.metadata.name.clone().unwrap_or_default())
}

fn request(r: &ResourceRequirements, name: &str, parse: fn(&str) -> Option<f64>) -> Option<f64> {
    quantity(r.requests.as_ref(), name, parse)
}

fn limit(r: &ResourceRequirements, name: &str, parse: fn(&str) -> Option<f64>) -> Option<f64> {
    quantity(r.limits.as_ref(), name, parse)
}

fn quantity(
    map: Option<&BTreeMap<String, Quantity>>,
    name: &str,
    parse: fn(&str) -> Option<f64>,
) -> Option<f64> {
    map?.get(name).and_then(|q| parse(&q.0))
}

/// Cores as whole millicores (at least 1: the API server's smallest CPU unit).
fn milli(cores: f64) -> u64 {
    ((cores * 1000.0).round() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_pod_view_reads_requests_policy_and_the_kubelets_verdict() {
        let p = pod(json!({
            "metadata": {"name": "checkout-1"},
            "spec": {"containers": [
                {"name": "prescale", "image": "prescale"},
                {"name": "app", "image": "app",
                 "resources": {"requests": {"cpu": "500m", "memory": "256Mi"},
                               "limits": {"cpu": "1", "memory": "512Mi"}},
                 "resizePolicy": [{"resourceName": "memory", "restartPolicy": "RestartContainer"}]}]},
            "status": {
                "conditions": [{"type": "PodResizePending", "status": "True",
                                "reason": "Infeasible", "message": "Node didn't have enough capacity: cpu, requested: 8000, capacity: 4000"}],
                "containerStatuses": [{"name": "app", "image": "app", "imageID": "", "ready": true,
                    "restartCount": 0, "resources": {"requests": {"cpu": "250m"}}}]}
        }));
        let v = view(&p, "app").unwrap();
        assert_eq!(v.cpu, Some(0.5));
        assert_eq!(v.cpu_limit, Some(1.0));
        assert_eq!(v.memory, Some(268_435_456.0));
        assert_eq!(v.allocated_cpu, Some(0.25));
        assert!(!v.memory_resizable);
        assert!(matches!(v.pending, Some(Pending::Infeasible(m)) if m.contains("capacity")));
        assert!(view(&p, "other").is_none());

        // Before 1.33: `status.resize`; no resizePolicy: memory needs no restart.
        let p = pod(json!({
            "metadata": {"name": "checkout-1"},
            "spec": {"containers": [{"name": "app", "image": "app",
                "resources": {"requests": {"cpu": "1"}}}]},
            "status": {"resize": "Deferred"}
        }));
        let v = view(&p, "app").unwrap();
        assert!(v.memory_resizable);
        assert_eq!(v.pending, Some(Pending::Deferred(String::new())));
    }

    #[test]
    fn the_patch_scales_limits_with_requests_so_the_qos_class_stays() {
        let v = PodView {
            cpu: Some(0.5),
            cpu_limit: Some(0.5),
            memory: Some(1000.0),
            memory_limit: Some(2000.0),
            ..PodView::default()
        };
        let t = Target {
            cpu_milli: 750,
            memory: Some(1500),
            reason: ResizeReason::Forecast,
        };
        assert_eq!(
            body("app", &v, &t),
            json!({"spec": {"containers": [{"name": "app", "resources": {
                "requests": {"cpu": "750m", "memory": "1500"},
                "limits": {"cpu": "750m", "memory": "3000"}}}]}})
        );
        // Memory down: the request alone goes down, the limit stays where it is (a
        // limit decrease in place is refused by 1.33 and can OOM-kill on 1.34+).
        let down = Target {
            cpu_milli: 500,
            memory: Some(600),
            reason: ResizeReason::Forecast,
        };
        assert_eq!(
            body("app", &v, &down),
            json!({"spec": {"containers": [{"name": "app", "resources": {
                "requests": {"cpu": "500m", "memory": "600"},
                "limits": {"cpu": "500m"}}}]}})
        );
        assert!(v.memory_can_shrink());
        // A request equal to its limit (Guaranteed) cannot go down alone.
        let guaranteed = PodView {
            memory_limit: Some(1000.0),
            ..v.clone()
        };
        assert!(!guaranteed.memory_can_shrink());
        // No limits: none are added.
        let v = PodView {
            cpu: Some(0.5),
            ..PodView::default()
        };
        let t = Target { memory: None, ..t };
        assert_eq!(
            body("app", &v, &t),
            json!({"spec": {"containers": [{"name": "app", "resources": {
                "requests": {"cpu": "750m"}}}]}})
        );
    }

    #[test]
    fn an_infeasible_ask_is_handed_back_and_bounds_what_it_raised() {
        let t = |cpu_milli, memory| Target {
            cpu_milli,
            memory,
            reason: ResizeReason::Forecast,
        };
        // CPU raised 250m -> 500m, memory left alone: a CPU ceiling, nothing else.
        let v = PodView {
            cpu: Some(0.5),
            memory: Some(1000.0),
            allocated_memory: Some(1000.0),
            memory_resizable: true,
            ..PodView::default()
        };
        let (c, back) = infeasible_ask(&v, 0.25);
        assert_eq!((c.cpu_milli, c.memory, back), (Some(500), None, None));
        assert!(c.refuses(&t(500, None), v.memory));
        assert!(c.refuses(&t(600, Some(2000)), v.memory));
        assert!(!c.refuses(&t(400, None), v.memory));
        // Memory raised 1000 -> 3000 with the CPU as allocated: memory is handed back
        // and is the ceiling; more CPU with the memory it has is not refused.
        let v = PodView {
            cpu: Some(0.25),
            memory: Some(3000.0),
            ..v
        };
        let (c, back) = infeasible_ask(&v, 0.25);
        assert_eq!(
            (c.cpu_milli, c.memory, back),
            (None, Some(3000), Some(1000))
        );
        assert!(c.refuses(&t(250, Some(3000)), Some(1000.0)));
        assert!(!c.refuses(&t(400, None), Some(1000.0)));
        assert!(!c.refuses(&t(400, Some(2000)), Some(1000.0)));
        // Memory that needs a restart is not handed back in place.
        let fixed = PodView {
            memory_resizable: false,
            ..v
        };
        let (c, back) = infeasible_ask(&fixed, 0.25);
        assert_eq!((c.cpu_milli, c.memory, back), (Some(250), None, None));
    }

    #[test]
    fn a_deferred_ask_is_not_written_over_by_a_larger_one() {
        let v = PodView {
            cpu: Some(0.3),
            memory: Some(1000.0),
            pending: Some(Pending::Deferred("no room".into())),
            ..PodView::default()
        };
        let t = |cpu_milli, memory| Target {
            cpu_milli,
            memory,
            reason: ResizeReason::Forecast,
        };
        // More CPU, the same or more memory: wait for the kubelet.
        assert_eq!(
            wait_for_deferred(&v, &t(400, None)).as_deref(),
            Some("no room")
        );
        assert!(wait_for_deferred(&v, &t(400, Some(2000))).is_some());
        // Less of either may fit: written.
        assert_eq!(wait_for_deferred(&v, &t(200, None)), None);
        assert_eq!(wait_for_deferred(&v, &t(400, Some(500))), None);
        // Not deferred (allocated, or Infeasible, handled elsewhere): written.
        let allocated = PodView {
            pending: None,
            ..v.clone()
        };
        assert_eq!(wait_for_deferred(&allocated, &t(400, None)), None);
    }

    #[test]
    fn only_a_vpa_that_writes_owns_the_deployment() {
        let vpa = |name: &str, target: &str, mode: Option<&str>| -> DynamicObject {
            let mut spec = json!({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}});
            if let Some(m) = mode {
                spec["updatePolicy"] = json!({"updateMode": m});
            }
            serde_json::from_value(json!({"apiVersion": "autoscaling.k8s.io/v1",
                "kind": "VerticalPodAutoscaler", "metadata": {"name": name}, "spec": spec}))
            .unwrap()
        };
        assert_eq!(
            vpa_owner(&vpa("v", "checkout", None), "checkout").as_deref(),
            Some("v")
        );
        assert_eq!(
            vpa_owner(&vpa("v", "checkout", Some("InPlaceOrRecreate")), "checkout").as_deref(),
            Some("v")
        );
        assert_eq!(
            vpa_owner(&vpa("v", "checkout", Some("Off")), "checkout"),
            None
        );
        assert_eq!(vpa_owner(&vpa("v", "cart", None), "checkout"), None);
    }
}
