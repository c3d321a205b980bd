//! The in-place resize signal (`signals.resize`) through the real binary, with a real
//! CPU-burning upstream (`tests/support/cpu_upstream.py`) read through
//! `resources.source: process`, against a **recorded-contract fake API server** — no
//! cluster runs here. A small hyper server in this test answers the calls prescale
//! makes with the JSON shapes a real API server (1.33+) sends: GET a `v1` Pod (two
//! containers, requests, limits), PATCH its `resize` subresource with a strategic merge
//! patch (answered with the whole Pod), GET an `apps/v1` Deployment, LIST
//! `autoscaling.k8s.io/v1` VerticalPodAutoscalers (404 when the CRD is not installed,
//! as the API server answers), `v1` Status bodies for errors; it records every request.
//! GET a `v1` Node (`status.allocatable`) and LIST `v1` Pods with a `spec.nodeName`
//! field selector (403 with RBAC's Status body where the test denies them), and
//! refuses a memory limit decrease with 422 unless the memory `resizePolicy` is
//! `RestartContainer`, as the 1.33 API server validates a resize.
//! It plays the kubelet too, deciding a resize as the kubelet does from 1.33: a pod
//! above the node's allocatable gets the `PodResizePending` condition with reason
//! `Infeasible`, one that fits the node but not beside the other pods reason
//! `Deferred` (re-tried at every read of the pod, as the kubelet retries), each with
//! the kubelet's message, and the container keeps its old allocation; a feasible one
//! is allocated at once.
//! What only a real cluster has (admission, the kubelet's cgroup writes) is not
//! exercised.
//!
//! Each test drives real load until the sidecar's cost model and forecast give a CPU
//! need (the first forecast step closes at the next wall-clock minute), so each takes
//! up to about two minutes. Needs `python3` (scripts/install-deps); under `CI=true` its
//! absence fails the tests, elsewhere they skip saying so.

mod support;

use serde_json::{json, Value};
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::cpu_upstream::{get, python_usable, CpuUpstream};
use support::fake_kube::{self, status, Recorded};
use support::*;

const TOKEN: &str = "fake-sa-token-5678";
const NS: &str = "shop";
const DEPLOYMENT: &str = "checkout";
const POD: &str = "checkout-7d9f8c6b5-x2x7q";
const CREATED: &str = "2025-01-01T00:00:00Z";
/// The longest a test waits for the first resize (a forecast step must close first).
const WAIT: Duration = Duration::from_secs(150);

/// The sidecar container's CPU request on the pod (it counts against the node too).
const SIDECAR_CPU: u64 = 50;
const MI: u64 = 1 << 20;

/// The fake cluster: one pod of one Deployment on one node, maybe VPAs, maybe a
/// neighbour pod on the node.
struct Cluster {
    /// The app container's CPU request and limit asked for (spec), in millicores.
    cpu: u64,
    cpu_limit: u64,
    /// Its memory request and limit (bytes), and the memory `resizePolicy`.
    memory: u64,
    memory_limit: u64,
    memory_policy: &'static str,
    /// The Deployment template's memory request (what a plan without a memory
    /// forecast hands back to).
    template_memory: u64,
    /// What the kubelet allocated.
    allocated: u64,
    allocated_memory: u64,
    /// The node's `status.allocatable` CPU (millicores) and memory.
    allocatable_cpu: u64,
    allocatable_memory: u64,
    /// Another pod on the node, requesting this much CPU (millicores); 0: none.
    neighbour_cpu: u64,
    /// The service account may read the node and list pods (else 403, as RBAC answers).
    node_readable: bool,
    /// The kubelet's verdict on the spec's size, if it is not allocated.
    verdict: Option<&'static str>,
    vpa_crd: bool,
    vpa_owns: bool,
    resource_version: u64,
}

impl Cluster {
    fn new() -> Self {
        Self {
            cpu: 100,
            cpu_limit: 200,
            memory: 64 * MI,
            memory_limit: 128 * MI,
            memory_policy: "RestartContainer",
            template_memory: 64 * MI,
            allocated: 100,
            allocated_memory: 64 * MI,
            allocatable_cpu: 4000,
            allocatable_memory: 8192 * MI,
            neighbour_cpu: 0,
            node_readable: true,
            verdict: None,
            vpa_crd: true,
            vpa_owns: false,
            resource_version: 500,
        }
    }

    /// The kubelet's admission of the spec's size (as it decides a resize from 1.33):
    /// more than the node's allocatable is `Infeasible`, more than what the other pods
    /// leave is `Deferred` (it retries, e.g. when a pod leaves); else allocated.
    fn kubelet(&mut self) {
        let pod_cpu = self.cpu + SIDECAR_CPU;
        self.verdict = if pod_cpu > self.allocatable_cpu {
            Some("Infeasible")
        } else if pod_cpu + self.neighbour_cpu > self.allocatable_cpu {
            Some("Deferred")
        } else {
            self.allocated = self.cpu;
            self.allocated_memory = self.memory;
            None
        };
    }

    fn pod(&self) -> Value {
        let mut conditions = vec![json!({"type": "Ready", "status": "True",
            "lastProbeTime": null, "lastTransitionTime": CREATED})];
        if let Some(reason) = self.verdict {
            let message = if reason == "Infeasible" {
                format!(
                    "Node didn't have enough capacity: cpu, requested: {}, capacity: {}",
                    self.cpu + SIDECAR_CPU,
                    self.allocatable_cpu
                )
            } else {
                format!(
                    "Node didn't have enough resource: cpu, requested: {}, used: {}, capacity: {}",
                    self.cpu + SIDECAR_CPU,
                    self.allocated + SIDECAR_CPU + self.neighbour_cpu,
                    self.allocatable_cpu
                )
            };
            conditions.push(json!({"type": "PodResizePending", "status": "True",
                "lastProbeTime": null, "lastTransitionTime": CREATED, "reason": reason,
                "message": message}));
        }
        json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": POD, "namespace": NS, "uid": "0b3c6f1e-1f2d-4c5b-9a8e-7d6c5b4a3f2e",
                         "resourceVersion": self.resource_version.to_string(),
                         "creationTimestamp": CREATED, "labels": {"app": DEPLOYMENT},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                            "name": "checkout-7d9f8c6b5", "uid": "3", "controller": true,
                            "blockOwnerDeletion": true}]},
            "spec": {
                "containers": [
                    {"name": "app", "image": "registry.example/checkout:1.4.2",
                     "resources": {"requests": {"cpu": format!("{}m", self.cpu), "memory": self.memory.to_string()},
                                   "limits": {"cpu": format!("{}m", self.cpu_limit), "memory": self.memory_limit.to_string()}},
                     "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"},
                                      {"resourceName": "memory", "restartPolicy": self.memory_policy}],
                     "terminationMessagePath": "/dev/termination-log",
                     "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"},
                    {"name": "prescale", "image": "registry.example/prescale:0.9",
                     "resources": {"requests": {"cpu": format!("{SIDECAR_CPU}m"), "memory": "64Mi"}},
                     "terminationMessagePath": "/dev/termination-log",
                     "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
                "restartPolicy": "Always", "nodeName": "node-a",
                "schedulerName": "default-scheduler", "serviceAccountName": "prescale"},
            "status": {
                "phase": "Running", "qosClass": "Burstable", "conditions": conditions,
                "containerStatuses": [
                    {"name": "app", "image": "registry.example/checkout:1.4.2", "imageID": "",
                     "ready": true, "restartCount": 0, "started": true,
                     "allocatedResources": {"cpu": format!("{}m", self.allocated),
                                            "memory": self.allocated_memory.to_string()},
                     "resources": {"requests": {"cpu": format!("{}m", self.allocated), "memory": self.allocated_memory.to_string()},
                                   "limits": {"cpu": format!("{}m", self.allocated * 2), "memory": self.memory_limit.to_string()}}},
                    {"name": "prescale", "image": "registry.example/prescale:0.9", "imageID": "",
                     "ready": true, "restartCount": 0, "started": true}]}
        })
    }

    /// `GET /api/v1/nodes/node-a`, as a kubelet-registered node reports itself.
    fn node(&self) -> Value {
        json!({
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": "node-a", "uid": "9", "resourceVersion": "77",
                         "creationTimestamp": CREATED,
                         "labels": {"kubernetes.io/hostname": "node-a", "kubernetes.io/os": "linux"}},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {
                "capacity": {"cpu": format!("{}m", self.allocatable_cpu + 100),
                             "memory": format!("{}Ki", (self.allocatable_memory + 256 * MI) / 1024),
                             "pods": "110"},
                "allocatable": {"cpu": format!("{}m", self.allocatable_cpu),
                                "memory": format!("{}Ki", self.allocatable_memory / 1024),
                                "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "lastHeartbeatTime": CREATED, "lastTransitionTime": CREATED}],
                "nodeInfo": {"kubeletVersion": "v1.35.0", "kubeProxyVersion": "", "machineID": "",
                             "systemUUID": "", "bootID": "", "kernelVersion": "6.1.0",
                             "osImage": "Debian GNU/Linux 12", "containerRuntimeVersion": "containerd://2.0.0",
                             "operatingSystem": "linux", "architecture": "amd64"}}
        })
    }

    /// `GET /api/v1/pods?fieldSelector=spec.nodeName=node-a,...`: this pod, and the
    /// neighbour when there is one.
    fn pods_on_node(&self) -> Value {
        let mut items = vec![self.pod()];
        if self.neighbour_cpu > 0 {
            items.push(json!({
                "metadata": {"name": "batch-0", "namespace": "data", "uid": "8",
                             "resourceVersion": "60", "creationTimestamp": CREATED},
                "spec": {"nodeName": "node-a", "containers": [{"name": "worker", "image": "batch:1",
                    "resources": {"requests": {"cpu": format!("{}m", self.neighbour_cpu), "memory": "256Mi"}}}]},
                "status": {"phase": "Running"}
            }));
        }
        json!({"kind": "PodList", "apiVersion": "v1",
               "metadata": {"resourceVersion": "78"}, "items": items})
    }

    fn deployment(&self) -> Value {
        json!({
            "kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": DEPLOYMENT, "namespace": NS, "uid": "1",
                         "resourceVersion": self.resource_version.to_string(),
                         "generation": 1, "creationTimestamp": CREATED},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": DEPLOYMENT}},
                     "template": {"metadata": {"labels": {"app": DEPLOYMENT}},
                        "spec": {"containers": [{"name": "app", "image": "registry.example/checkout:1.4.2",
                            "resources": {"requests": {"cpu": "100m", "memory": self.template_memory.to_string()},
                                          "limits": {"cpu": "200m", "memory": "128Mi"}}}]}}},
            "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                       "availableReplicas": 2, "updatedReplicas": 2}
        })
    }

    fn vpas(&self) -> Value {
        let vpa = |name: &str, target: &str, mode: &str| {
            json!({"metadata": {"name": name, "namespace": NS, "uid": name,
                                "resourceVersion": "40", "creationTimestamp": CREATED},
                   "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                            "updatePolicy": {"updateMode": mode}},
                   "status": {"recommendation": {"containerRecommendations": [{"containerName": "app",
                      "target": {"cpu": "150m", "memory": "100Mi"}}]}}})
        };
        // A VPA for another workload, and a recommend-only one for this: neither owns.
        let mut items = vec![
            vpa("cart", "cart", "Auto"),
            vpa("checkout-recommend", DEPLOYMENT, "Off"),
        ];
        if self.vpa_owns {
            items.push(vpa("checkout-vpa", DEPLOYMENT, "InPlaceOrRecreate"));
        }
        json!({"apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscalerList",
               "metadata": {"resourceVersion": "41", "continue": ""}, "items": items})
    }

    /// The API server applies a strategic merge patch of the app container's
    /// resources, with 1.33's validation of memory (a memory limit may not go down
    /// in place unless its `resizePolicy` restarts the container); the kubelet then
    /// allocates it, defers it or calls it infeasible.
    fn resize(&mut self, patch: &Value) -> (u16, Value) {
        let Some(app) = patch["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "app"))
        else {
            return status(422, "Invalid", "spec.containers: Required value");
        };
        let milli = |v: &Value| {
            v.as_str()
                .and_then(|s| s.strip_suffix('m'))
                .and_then(|s| s.parse::<u64>().ok())
        };
        let bytes = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
        let r = &app["resources"];
        if let Some(limit) = bytes(&r["limits"]["memory"]) {
            if limit < self.memory_limit && self.memory_policy != "RestartContainer" {
                return status(
                    422,
                    "Invalid",
                    &format!("Pod \"{POD}\" is invalid: spec.containers[0].resources.limits[memory]: Forbidden: memory limits cannot be decreased unless resizePolicy is RestartContainer"),
                );
            }
            self.memory_limit = limit;
        }
        if let Some(memory) = bytes(&r["requests"]["memory"]) {
            self.memory = memory;
        }
        if let Some(cpu) = milli(&r["requests"]["cpu"]) {
            self.cpu = cpu;
        }
        if let Some(limit) = milli(&r["limits"]["cpu"]) {
            self.cpu_limit = limit;
        }
        self.resource_version += 1;
        self.kubelet();
        (200, self.pod())
    }
}

impl fake_kube::Cluster for Cluster {
    fn answer(&mut self, r: &Recorded) -> (u16, Value) {
        let pod = format!("/api/v1/namespaces/{NS}/pods/{POD}");
        let resize = format!("{pod}/resize");
        let deployment = format!("/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOYMENT}");
        let vpas = format!("/apis/autoscaling.k8s.io/v1/namespaces/{NS}/verticalpodautoscalers");
        let (method, path) = (r.method.as_str(), r.path.as_str());
        let forbidden = |what: &str| {
            status(
                403,
                "Forbidden",
                &format!("{what} is forbidden: User \"system:serviceaccount:{NS}:prescale\" cannot {what} at the cluster scope"),
            )
        };
        if method == "GET" && path == pod {
            // The kubelet retries a deferred resize by itself (e.g. once a pod left).
            self.kubelet();
            (200, self.pod())
        } else if method == "GET" && path == deployment {
            (200, self.deployment())
        } else if method == "GET" && path == vpas && self.vpa_crd {
            (200, self.vpas())
        } else if method == "GET" && path == "/api/v1/nodes/node-a" {
            if self.node_readable {
                (200, self.node())
            } else {
                forbidden("get resource \"nodes\"")
            }
        } else if method == "GET" && path == "/api/v1/pods" {
            let selector = field_selector(&r.query);
            if !self.node_readable {
                forbidden("list resource \"pods\"")
            } else if selector.contains("spec.nodeName=node-a") {
                (200, self.pods_on_node())
            } else {
                status(
                    400,
                    "BadRequest",
                    &format!("unexpected fieldSelector {selector:?}"),
                )
            }
        } else if method == "PATCH" && path == resize {
            if r.content_type.as_deref() != Some("application/strategic-merge-patch+json") {
                status(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format",
                )
            } else {
                let patch: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                self.resize(&patch)
            }
        } else {
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }
}

/// The `fieldSelector` of a query string, percent-decoded.
fn field_selector(query: &str) -> String {
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("fieldSelector="))
        .unwrap_or("");
    let mut out = Vec::new();
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

type FakeApi = fake_kube::FakeApi<Cluster>;

/// Load through the proxy until `stop` or `WAIT`: phases of heavy and light request
/// rates (the mix varies so the cost model identifies each signature's CPU), paced,
/// bounded in time and count.
fn load(listen: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    const PHASES: &[(f64, f64)] = &[(10.0, 20.0), (4.0, 0.0), (12.0, 40.0), (0.0, 30.0)];
    std::thread::spawn(move || {
        let connect = || {
            let s = TcpStream::connect(listen).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            BufReader::new(s)
        };
        let (mut heavy, mut light) = (connect(), connect());
        let start = Instant::now();
        let mut sent = 0;
        let mut phase = 0;
        while !stop.load(Ordering::Relaxed) && start.elapsed() < WAIT && sent < 20_000 {
            let (h, l) = PHASES[phase % PHASES.len()];
            phase += 1;
            let began = Instant::now();
            let (mut nh, mut nl) = (0.0, 0.0);
            while began.elapsed() < Duration::from_secs(3) && !stop.load(Ordering::Relaxed) {
                let t = began.elapsed().as_secs_f64();
                if nh < h * t {
                    assert_eq!(get(&mut heavy, "/reports/heavy"), 200);
                    nh += 1.0;
                    sent += 1;
                } else if nl < l * t {
                    assert_eq!(get(&mut light, "/light"), 200);
                    nl += 1.0;
                    sent += 1;
                } else {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        sent
    })
}

/// What every resize test starts from: python3 (a skip outside CI, a failure under
/// `CI=true`), a temporary directory, and the CPU-burning upstream writing its pid file
/// into it. The directory outlives the upstream (dropped after it).
fn upstream(test: &str) -> Option<(tempfile::TempDir, CpuUpstream)> {
    if !python_usable(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let up = CpuUpstream::start(dir.path());
    Some((dir, up))
}

/// A sidecar in front of `up`, reading its usage from `/proc`, resizing through `api`.
fn sidecar(api: &FakeApi, up: &CpuUpstream, dir: &Path) -> (Proxy, SocketAddr) {
    sidecar_with(api, up, dir, "    min_cpu: 0.05\n    max_cpu: 0.12\n")
}

/// As [`sidecar`], with more `signals.resize` keys (indented four spaces).
fn sidecar_with(api: &FakeApi, up: &CpuUpstream, dir: &Path, extra: &str) -> (Proxy, SocketAddr) {
    let kubeconfig = api.kubeconfig(dir);
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: app}}\nclusters:\n  - {{name: app, endpoints: [\"{}\"]}}\nprofiler: {{refit_interval: 5s, min_samples: 50, tick: 1s, max_signatures: 2}}\nresources: {{source: process, pid_file: {}}}\npolicies:\n  scaling:\n    sync_period: 1s\nsignals:\n  resize:\n    namespace: {NS}\n    pod: {POD}\n    deployment: {DEPLOYMENT}\n    kubeconfig: {}\n    vertical: true\n    min_interval: 1s\n    poll: 300ms\n    backoff: 50ms\n{extra}",
        up.addr,
        up.pid_file.display(),
        kubeconfig.display()
    );
    (Proxy::start(&yaml, admin), listen)
}

fn sends(proxy: &Proxy, outcome: &str) -> f64 {
    proxy
        .metric(
            "prescale_signal_sends_total",
            &format!("signal=\"resize\",outcome=\"{outcome}\""),
        )
        .unwrap_or(-1.0)
}

/// Drives load until `done` holds (checked every 200 ms) or `WAIT` passes.
async fn drive_until(listen: SocketAddr, mut done: impl FnMut() -> bool) -> bool {
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(listen, stop.clone());
    let deadline = Instant::now() + WAIT;
    let ok = loop {
        if done() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || loader.join().unwrap())
        .await
        .unwrap();
    ok
}

fn resources_view(proxy: &Proxy) -> String {
    admin_get(proxy.admin, "/v1/resources")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecast_cpu_resizes_the_app_container_in_place() {
    let Some((dir, up)) = upstream("forecast_cpu_resizes_the_app_container_in_place") else {
        return;
    };
    let api = FakeApi::start(Cluster::new(), TOKEN, NS).await;
    // Memory bounds are set, but the container's memory resizePolicy restarts it.
    let (proxy, listen) = sidecar_with(
        &api,
        &up,
        dir.path(),
        "    min_cpu: 0.05\n    max_cpu: 0.12\n    min_memory: 104857600\n    max_memory: 104857600\n",
    );

    let patched = drive_until(listen, || !api.patches().is_empty()).await;
    assert!(
        patched,
        "no resize in {WAIT:?}: {}\n{}\n{:?}",
        resources_view(&proxy),
        proxy.logs(),
        api.requests()
    );
    let p = &api.patches()[0];
    assert_eq!(p.path, format!("/api/v1/namespaces/{NS}/pods/{POD}/resize"));
    assert_eq!(
        p.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert!(p.query.contains("fieldManager=prescale"), "{p:?}");
    // The heavy endpoint alone burns 0.13 cores on average over the phases: the
    // forecast need at 80 % is above max_cpu (0.12), so the request goes to max_cpu,
    // and the limit keeps its 2:1 ratio to it (the QoS class may not change).
    // Memory's resizePolicy needs a restart: memory is left alone, bounds or not.
    assert_eq!(
        serde_json::from_slice::<Value>(&p.body).unwrap(),
        json!({"spec": {"containers": [{"name": "app", "resources": {
            "requests": {"cpu": "120m"}, "limits": {"cpu": "240m"}}}]}}),
        "{}",
        resources_view(&proxy)
    );
    // Before writing it checked for a VPA (the recommend-only one does not own it).
    let before: Vec<String> = api
        .requests()
        .iter()
        .take_while(|r| r.method != "PATCH")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        before.contains(&format!(
            "GET /apis/autoscaling.k8s.io/v1/namespaces/{NS}/verticalpodautoscalers"
        )),
        "{before:?}"
    );
    // The resources view that drove it forecast CPU above what the pod had.
    let v: Value = serde_json::from_str(&resources_view(&proxy)).unwrap();
    let cpu = v["recommendation"]["cpu_cores"]["upper_bound"]
        .as_f64()
        .unwrap_or_else(|| panic!("no CPU recommendation: {v}"));
    assert!(cpu / 0.8 >= 0.12, "{v}");
    assert_eq!(
        proxy.metric("prescale_resize_planned_cpu_cores", ""),
        Some(0.12)
    );
    assert_eq!(sends(&proxy, "ok"), 1.0);
    // The pod has 120m now: later decisions write nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(api.patches().len(), 1, "{:?}", api.patches());
    assert!(
        proxy.logs().contains("resized the container"),
        "{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vpa_targeting_the_deployment_makes_resize_refuse() {
    let Some((dir, up)) = upstream("a_vpa_targeting_the_deployment_makes_resize_refuse") else {
        return;
    };
    let mut c = Cluster::new();
    c.vpa_owns = true;
    let api = FakeApi::start(c, TOKEN, NS).await;
    let (proxy, listen) = sidecar(&api, &up, dir.path());

    let refused = drive_until(listen, || sends(&proxy, "refused_vpa_owned") >= 2.0).await;
    assert!(refused, "{}\n{}", resources_view(&proxy), proxy.logs());
    assert!(api.patches().is_empty(), "{:?}", api.patches());
    assert_eq!(sends(&proxy, "ok"), 0.0);
    let logs = proxy.logs();
    assert_eq!(
        logs.matches("REFUSING to resize").count(),
        1,
        "the refusal is logged once:\n{logs}"
    );
    assert!(logs.contains("checkout-vpa"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infeasible_size_is_handed_back_and_not_asked_again() {
    let Some((dir, up)) = upstream("an_infeasible_size_is_handed_back_and_not_asked_again") else {
        return;
    };
    let mut c = Cluster::new();
    // The node cannot give the container more than 110m (160m allocatable, 50m for
    // the sidecar), and its room cannot be read (no RBAC for nodes): the kubelet's
    // verdict is what tells.
    c.allocatable_cpu = 110 + SIDECAR_CPU;
    c.node_readable = false;
    let api = FakeApi::start(c, TOKEN, NS).await;
    let (proxy, listen) = sidecar(&api, &up, dir.path());

    // 120m is asked for, the kubelet calls it Infeasible, the ask goes back to 100m;
    // the forecast keeps wanting 120m, which is then refused without a PATCH.
    let honoured = drive_until(listen, || {
        api.patches().len() >= 2 && sends(&proxy, "infeasible") >= 2.0
    })
    .await;
    let bodies: Vec<Value> = api
        .patches()
        .iter()
        .map(|p| serde_json::from_slice(&p.body).unwrap())
        .collect();
    assert!(honoured, "{bodies:?}\n{}", proxy.logs());
    let cpu = |b: &Value| b["spec"]["containers"][0]["resources"]["requests"]["cpu"].clone();
    assert_eq!(cpu(&bodies[0]), "120m", "{bodies:?}");
    assert_eq!(cpu(&bodies[1]), "100m", "handed back: {bodies:?}");
    // A few more decisions: 120m is not asked for again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked_again: usize = api
        .patches()
        .iter()
        .filter(|p| cpu(&serde_json::from_slice(&p.body).unwrap()) == "120m")
        .count();
    assert_eq!(asked_again, 1, "{:?}", api.patches());
    assert_eq!(
        proxy.metric("prescale_resize_pending_total", "reason=\"infeasible\""),
        Some(1.0)
    );
    assert!(
        proxy.logs().contains("Node didn't have enough capacity"),
        "{}",
        proxy.logs()
    );
}

/// A condition for [`drive_until`] that holds once `d` has passed since its first call.
fn false_after(d: Duration) -> impl FnMut() -> bool {
    let mut start = None;
    move || start.get_or_insert_with(Instant::now).elapsed() >= d
}

/// The `/v1/scale` view's `resize` object.
fn resize_status(proxy: &Proxy) -> Value {
    admin_get(proxy.admin, "/v1/scale")
        .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
        .map(|v| v["resize"].clone())
        .unwrap_or(Value::Null)
}

fn cpu_of(p: &Recorded) -> String {
    let b: Value = serde_json::from_slice(&p.body).unwrap();
    b["spec"]["containers"][0]["resources"]["requests"]["cpu"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn count(api: &FakeApi, method: &str, path: &str) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_room_caps_the_resize_and_is_read_once_per_refresh() {
    let Some((dir, up)) = upstream("the_nodes_room_caps_the_resize_and_is_read_once_per_refresh")
    else {
        return;
    };
    let mut c = Cluster::new();
    // 1000m allocatable; a batch pod holds 835m and the sidecar 50m: 115m is all the
    // app container may request, below max_cpu (120m).
    c.allocatable_cpu = 1000;
    c.neighbour_cpu = 835;
    let api = FakeApi::start(c, TOKEN, NS).await;
    let started = Instant::now();
    let (proxy, listen) = sidecar(&api, &up, dir.path());

    let patched = drive_until(listen, || !api.patches().is_empty()).await;
    assert!(
        patched,
        "no resize in {WAIT:?}: {}\n{}",
        resources_view(&proxy),
        proxy.logs()
    );
    let p = &api.patches()[0];
    assert_eq!(
        serde_json::from_slice::<Value>(&p.body).unwrap(),
        json!({"spec": {"containers": [{"name": "app", "resources": {
            "requests": {"cpu": "115m"}, "limits": {"cpu": "230m"}}}]}}),
        "capped at the node's room: {}",
        proxy.logs()
    );
    // It fit: the kubelet allocated it, nothing pending.
    {
        let c = api.cluster.lock().unwrap();
        assert_eq!((c.allocated, c.verdict), (115, None));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(api.patches().len(), 1, "{:?}", api.patches());
    assert!(
        proxy
            .metric("prescale_resize_node_capped_total", "resource=\"cpu\"")
            .unwrap_or(0.0)
            >= 1.0
    );
    let room = proxy.metric("prescale_resize_node_room_cpu_cores", "");
    assert!(room.is_some_and(|r| (r - 0.115).abs() < 1e-9), "{room:?}");
    let logs = proxy.logs();
    assert_eq!(
        logs.matches("the node has no room for the planned size")
            .count(),
        1,
        "logged once:\n{logs}"
    );
    // GET /v1/scale says why.
    let st = resize_status(&proxy);
    eprintln!("GET /v1/scale resize: {st}");
    assert_eq!(st["node"]["name"], "node-a", "{st}");
    assert!(
        (st["node"]["room_cpu_cores"].as_f64().unwrap() - 0.115).abs() < 1e-9,
        "{st}"
    );
    assert!(
        (st["planned_cpu_cores"].as_f64().unwrap() - 0.115).abs() < 1e-9,
        "{st}"
    );
    let capped = st["capped_by_node"].as_str().unwrap_or_default();
    assert!(
        capped.contains("wanted 0.120 cores") && capped.contains("room for 0.115"),
        "{st}"
    );

    // The node and its pods were read, cluster-wide with the node's field selector,
    // at most once per node_refresh (30 s) while the pod was polled every 300 ms.
    let elapsed = started.elapsed().as_secs_f64();
    let nodes = count(&api, "GET", "/api/v1/nodes/node-a");
    let lists: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/pods")
        .map(|r| field_selector(&r.query))
        .collect();
    let pods = count(&api, "GET", &format!("/api/v1/namespaces/{NS}/pods/{POD}"));
    assert!(
        nodes >= 1 && nodes <= 1 + (elapsed / 30.0) as usize,
        "{nodes} node reads in {elapsed:.0} s"
    );
    assert_eq!(lists.len(), nodes);
    assert!(lists
        .iter()
        .all(|s| s == "spec.nodeName=node-a,status.phase!=Succeeded,status.phase!=Failed"));
    assert!(pods > 10 * nodes, "{pods} pod reads, {nodes} node reads");
    // Every call it made is granted by the RBAC manifest shipped for resize.
    rbac_grants_every_request(&api.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_resize_is_left_to_the_kubelet_and_not_rewritten() {
    let Some((dir, up)) = upstream("a_deferred_resize_is_left_to_the_kubelet_and_not_rewritten")
    else {
        return;
    };
    let mut c = Cluster::new();
    // A batch pod leaves room for no more than the 100m the app has (4000m allocatable,
    // 3850m taken, 50m the sidecar); the node's room cannot be read (no RBAC for
    // nodes), so prescale asks and the kubelet defers (any ask up to max_cpu fits the
    // node's allocatable: never Infeasible).
    c.allocatable_cpu = 4000;
    c.neighbour_cpu = 3850;
    c.node_readable = false;
    let api = FakeApi::start(c, TOKEN, NS).await;
    // Every move of the forecast is a new plan (min_change 0), and no decrease is
    // made (cooldown): what the sidecar offers while deferred are larger asks.
    let (proxy, listen) = sidecar_with(
        &api,
        &up,
        dir.path(),
        "    min_cpu: 0.05\n    max_cpu: 3.9\n    min_change: 0\n    cooldown: 10m\n",
    );

    let deferred = drive_until(listen, || {
        api.cluster.lock().unwrap().verdict == Some("Deferred")
    })
    .await;
    assert!(
        deferred,
        "{:?}\n{}",
        api.patches().iter().map(cpu_of).collect::<Vec<_>>(),
        proxy.logs()
    );
    // Ten more seconds of load and decisions (one a second) while it stays deferred:
    // nothing is written over it. (Larger plans held count as outcome `deferred`;
    // the rule itself is tested by `control/src/signals/resize.rs`.)
    let first = api.patches().len();
    drive_until(listen, false_after(Duration::from_secs(10))).await;
    let asked: Vec<String> = api.patches().iter().map(cpu_of).collect();
    assert_eq!(first, 1, "{asked:?}");
    assert_eq!(
        asked.len(),
        1,
        "re-patched while deferred: {asked:?}\n{}",
        proxy.logs()
    );
    assert_eq!(api.cluster.lock().unwrap().verdict, Some("Deferred"));
    eprintln!(
        "deferred ask {asked:?}, larger plans held: {}",
        sends(&proxy, "deferred")
    );
    assert_eq!(
        proxy.metric("prescale_resize_pending_total", "reason=\"deferred\""),
        Some(1.0),
        "each deferred ask counted once"
    );
    let st = resize_status(&proxy);
    assert!(
        st["pending"]
            .as_str()
            .is_some_and(|p| p.starts_with("Deferred: Node didn't have enough resource")),
        "{st}"
    );
    // The room could not be read: counted, warned once, said in the status.
    assert!(
        proxy
            .metric("prescale_resize_node_read_errors_total", "")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        st["node_error"].as_str().is_some_and(|e| e.contains("403")),
        "{st}"
    );
    assert_eq!(
        proxy
            .logs()
            .matches("reading the node's room failed")
            .count(),
        1,
        "{}",
        proxy.logs()
    );
    // The batch pod leaves: the kubelet applies the deferred ask by itself.
    api.cluster.lock().unwrap().neighbour_cpu = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (verdict, allocated, cpu) = {
            let c = api.cluster.lock().unwrap();
            (c.verdict, c.allocated, c.cpu)
        };
        if verdict.is_none() {
            assert_eq!(allocated, cpu);
            break;
        }
        assert!(Instant::now() < deadline, "still {verdict:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_resized_where_its_policy_allows_and_its_limit_never_lowered() {
    let Some((dir, up)) =
        upstream("memory_is_resized_where_its_policy_allows_and_its_limit_never_lowered")
    else {
        return;
    };
    let mut c = Cluster::new();
    // Memory resizes without a restart; the pod holds 160Mi (limit 320Mi), more than
    // the 100Mi the config allows (and than the template's request): the first plan,
    // before any forecast, takes it down.
    c.memory_policy = "NotRequired";
    c.memory = 160 * MI;
    c.memory_limit = 320 * MI;
    c.allocated_memory = 160 * MI;
    c.template_memory = 100 * MI;
    let api = FakeApi::start(c, TOKEN, NS).await;
    let (proxy, listen) = sidecar_with(
        &api,
        &up,
        dir.path(),
        "    min_cpu: 0.05\n    max_cpu: 0.12\n    min_memory: 104857600\n    max_memory: 104857600\n",
    );

    let patched = drive_until(listen, || !api.patches().is_empty()).await;
    assert!(patched, "{}\n{:?}", proxy.logs(), api.requests());
    let p = &api.patches()[0];
    // The memory request goes down (the CPU stays at the template's 100m); the
    // memory limit is left where it is (1.33's API server refuses lowering it in
    // place, and this fake does too; on 1.34+ it could OOM-kill a container using
    // more).
    assert_eq!(
        serde_json::from_slice::<Value>(&p.body).unwrap(),
        json!({"spec": {"containers": [{"name": "app", "resources": {
            "requests": {"cpu": "100m", "memory": "104857600"},
            "limits": {"cpu": "200m"}}}]}}),
        "{}",
        proxy.logs()
    );
    assert_eq!(sends(&proxy, "ok"), 1.0, "{}", proxy.logs());
    let c = api.cluster.lock().unwrap();
    assert_eq!(
        (c.memory, c.memory_limit, c.allocated_memory),
        (100 * MI, 320 * MI, 100 * MI)
    );
    drop(c);
    assert_eq!(
        proxy.metric("prescale_resize_planned_memory_bytes", ""),
        Some(104857600.0)
    );
}

/// Each recorded request as an RBAC check (`apiGroup`, `resource` with subresource,
/// verb, namespaced) must be allowed by `deploy/kubernetes/rbac-resize.yaml`: the
/// Role for namespaced requests, the ClusterRole for cluster-scope ones.
fn rbac_grants_every_request(requests: &[Recorded]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/rbac-resize.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let rules = |kind: &str| -> Vec<serde_yaml_ng::Value> {
        docs.iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .flat_map(|d| d["rules"].as_sequence().cloned().unwrap_or_default())
            .collect()
    };
    let (role, cluster) = (rules("Role"), rules("ClusterRole"));
    let strs = |v: &serde_yaml_ng::Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    for r in requests {
        let segs: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
        let (group, rest) = match segs.as_slice() {
            ["api", _v, rest @ ..] => ("", rest),
            ["apis", g, _v, rest @ ..] => (*g, rest),
            _ => panic!("unexpected path {}", r.path),
        };
        let (namespaced, rest) = match rest {
            ["namespaces", _ns, rest @ ..] => (true, rest),
            rest => (false, rest),
        };
        let (resource, verb) = match (rest, r.method.as_str()) {
            ([res], "GET") => (res.to_string(), "list"),
            ([res, _name], "GET") => (res.to_string(), "get"),
            ([res, _name, sub], "GET") => (format!("{res}/{sub}"), "get"),
            ([res, _name, sub], "PATCH") => (format!("{res}/{sub}"), "patch"),
            _ => panic!("unexpected request {} {}", r.method, r.path),
        };
        let granted = (if namespaced { &role } else { &cluster })
            .iter()
            .any(|rule| {
                strs(&rule["apiGroups"]).iter().any(|g| g == group)
                    && strs(&rule["resources"]).contains(&resource)
                    && strs(&rule["verbs"]).iter().any(|v| v == verb)
            });
        assert!(
            granted,
            "{} {} ({verb} {group}/{resource}, namespaced: {namespaced}) is not granted by {}",
            r.method,
            r.path,
            path.display()
        );
    }
}

#[test]
fn bad_resize_config_is_a_startup_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, line, expect) in [
        (
            "    min_cpu: 2\n    max_cpu: 1\n",
            13,
            "signals.resize.min_cpu",
        ),
        ("    pod: x\n    poll: 1ms\n", 14, "signals.resize.poll"),
        ("    container: App_1\n", 13, "signals.resize.container"),
        (
            "    target_utilization: 1.5\n",
            13,
            "signals.resize.target_utilization",
        ),
        ("    vertical: maybe\n", 13, "vertical"),
        ("    min_memory: 1000\n", 13, "signals.resize.min_memory"),
        (
            "    node_refresh: 100ms\n",
            13,
            "signals.resize.node_refresh",
        ),
    ] {
        let path = dir.path().join("mesh.yaml");
        std::fs::write(
            &path,
            format!(
                "listeners:\n  - name: in\n    direction: inbound\n    address: 127.0.0.1:{}\n    cluster: c\nclusters:\n  - name: c\n    endpoints: [\"127.0.0.1:9\"]\nsignals:\n  resize:\n    namespace: {NS}\n    deployment: {DEPLOYMENT}\n{bad}",
                free_port()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .expect("run prescale");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: started\n{stderr}");
        let at = format!("{}:{line}:", path.display());
        assert!(stderr.contains(&at), "{bad}: no {at} in\n{stderr}");
        assert!(stderr.contains(expect), "{bad}: no {expect} in\n{stderr}");
    }
}
