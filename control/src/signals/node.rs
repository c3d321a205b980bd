//! What this pod's node can still give its app container: the Node's
//! `status.allocatable` less what every other pod on it (and this pod's other
//! containers) requests, counted as the kubelet admits a resize by
//! (allocatable − Σ requests of the active pods).
//!
//! A container's request is the largest of what its spec asks for, what the kubelet
//! allocated (`status.containerStatuses[].allocatedResources`) and what it runs with
//! (`status.containerStatuses[].resources`): a pod with a resize under way holds the
//! larger one, as the scheduler counts it. A pod's request is Kubernetes' effective
//! request: the larger of its containers plus its sidecars (`restartPolicy: Always`
//! init containers) and its largest plain init container plus the sidecars started
//! before it, plus `spec.overhead`.

use crate::quantity::{bytes, cpu_cores};
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// The node's room for the app container, from one read of the node and its pods.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRoom {
    pub node: String,
    pub allocatable_cpu: f64,
    pub allocatable_memory: f64,
    /// Requested by everything on the node but the app container itself.
    pub others_cpu: f64,
    pub others_memory: f64,
    /// Active pods counted (this one included).
    pub pods: usize,
}

impl NodeRoom {
    /// The most the app container may request: allocatable less everything else.
    pub fn cpu_room(&self) -> f64 {
        (self.allocatable_cpu - self.others_cpu).max(0.0)
    }

    pub fn memory_room(&self) -> f64 {
        (self.allocatable_memory - self.others_memory).max(0.0)
    }
}

/// The room on `node` for container `container` of pod `namespace/pod`, from the
/// node's pods (already filtered to the active phases). None without an allocatable
/// CPU on the node.
pub fn room(
    node: &Node,
    pods: &[Pod],
    namespace: &str,
    pod: &str,
    container: &str,
) -> Option<NodeRoom> {
    let allocatable = node.status.as_ref()?.allocatable.as_ref()?;
    let allocatable_cpu = allocatable.get("cpu").and_then(|q| cpu_cores(&q.0))?;
    let allocatable_memory = allocatable
        .get("memory")
        .and_then(|q| bytes(&q.0))
        .unwrap_or(f64::INFINITY);
    let (mut others_cpu, mut others_memory, mut count) = (0.0, 0.0, 0);
    for p in pods.iter().filter(|p| active(p)) {
        let me = p.metadata.namespace.as_deref() == Some(namespace)
            && p.metadata.name.as_deref() == Some(pod);
        let (cpu, memory) = pod_requests(p, me.then_some(container));
        others_cpu += cpu;
        others_memory += memory;
        count += 1;
    }
    Some(NodeRoom {
        node: node.metadata.name.clone().unwrap_or_default(),
        allocatable_cpu,
        allocatable_memory,
        others_cpu,
        others_memory,
        pods: count,
    })
}

/// Pods that hold resources on the node: not `Succeeded` or `Failed` (the field
/// selector asks for these already; a fake or an old server may not filter).
fn active(p: &Pod) -> bool {
    !matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The pod's effective CPU (cores) and memory (bytes) requests, leaving out container
/// `skip` (the one being resized).
pub fn pod_requests(p: &Pod, skip: Option<&str>) -> (f64, f64) {
    let Some(spec) = p.spec.as_ref() else {
        return (0.0, 0.0);
    };
    let status = p.status.as_ref();
    let statuses = status.and_then(|s| s.container_statuses.as_deref());
    let init_statuses = status.and_then(|s| s.init_container_statuses.as_deref());
    let mut main = (0.0, 0.0);
    for c in spec
        .containers
        .iter()
        .filter(|c| Some(c.name.as_str()) != skip)
    {
        add(&mut main, container_requests(c, statuses));
    }
    // Sidecars run beside the containers; a plain init container runs alone, beside
    // the sidecars declared before it.
    let mut sidecars = (0.0, 0.0);
    let mut init = (0.0_f64, 0.0_f64);
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, init_statuses);
        if c.restart_policy.as_deref() == Some("Always") {
            add(&mut sidecars, r);
        } else {
            init.0 = init.0.max(sidecars.0 + r.0);
            init.1 = init.1.max(sidecars.1 + r.1);
        }
    }
    add(&mut main, sidecars);
    let overhead = spec.overhead.as_ref();
    (
        main.0.max(init.0) + get(overhead, "cpu", cpu_cores),
        main.1.max(init.1) + get(overhead, "memory", bytes),
    )
}

fn add(to: &mut (f64, f64), r: (f64, f64)) {
    to.0 += r.0;
    to.1 += r.1;
}

/// The largest of the spec's request, the kubelet's allocation and what it runs with.
fn container_requests(c: &Container, statuses: Option<&[ContainerStatus]>) -> (f64, f64) {
    let spec = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let status = statuses.and_then(|ss| ss.iter().find(|s| s.name == c.name));
    let allocated = status.and_then(|s| s.allocated_resources.as_ref());
    let actual = status
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref());
    let most = |name: &str, parse: fn(&str) -> Option<f64>| {
        [spec, allocated, actual]
            .into_iter()
            .map(|m| get(m, name, parse))
            .fold(0.0, f64::max)
    };
    (most("cpu", cpu_cores), most("memory", bytes))
}

fn get(
    map: Option<&BTreeMap<String, Quantity>>,
    name: &str,
    parse: fn(&str) -> Option<f64>,
) -> f64 {
    map.and_then(|m| m.get(name))
        .and_then(|q| parse(&q.0))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_room_is_allocatable_less_every_other_request() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "node-a"},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                       "capacity": {"cpu": "4", "memory": "8Gi"}}
        }))
        .unwrap();
        let me = pod(json!({
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"containers": [
                {"name": "app", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"name": "log", "resources": {"requests": {"cpu": "100m"}}}],
                "initContainers": [
                {"name": "prescale", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}]},
            "status": {"phase": "Running"}
        }));
        // Another pod mid-resize: spec 200m, the kubelet still holds 300m for it.
        let other = pod(json!({
            "metadata": {"name": "db-0", "namespace": "data"},
            "spec": {"containers": [{"name": "db", "resources": {"requests": {"cpu": "200m", "memory": "1Gi"}}}],
                     "initContainers": [{"name": "migrate", "resources": {"requests": {"cpu": "1"}}}],
                     "overhead": {"cpu": "10m"}},
            "status": {"phase": "Running", "containerStatuses": [{"name": "db", "image": "db", "imageID": "",
                "ready": true, "restartCount": 0, "allocatedResources": {"cpu": "300m", "memory": "1Gi"}}]}
        }));
        let done = pod(json!({
            "metadata": {"name": "job-1", "namespace": "data"},
            "spec": {"containers": [{"name": "j", "resources": {"requests": {"cpu": "1"}}}]},
            "status": {"phase": "Succeeded"}
        }));
        let r = room(&node, &[me, other, done], "shop", "web-1", "app").unwrap();
        assert_eq!(r.node, "node-a");
        assert_eq!(r.allocatable_cpu, 2.0);
        assert_eq!(r.pods, 2);
        // Mine without the app: 100m + 50m; the other: max(300m, init 1) + 10m.
        assert!((r.others_cpu - (0.15 + 1.0 + 0.01)).abs() < 1e-9, "{r:?}");
        assert!((r.cpu_room() - 0.84).abs() < 1e-9, "{r:?}");
        assert_eq!(r.others_memory, 64.0 * 1048576.0 + 1073741824.0);
        // A node without allocatable CPU gives no room at all.
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        assert!(room(&bare, &[], "shop", "web-1", "app").is_none());
    }
}
