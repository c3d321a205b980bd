//! The in-place resize signal (`signals.resize`) through the real binary, with a real
//! CPU-burning upstream (`tests/support/cpu_upstream.py`) read through
//! `resources.source: process`, against a **recorded-contract fake API server** — no
//! cluster runs here. A small hyper server in this test answers the calls prescale
//! makes with the JSON shapes a real API server (1.33+) sends: GET a `v1` Pod (two
//! containers, requests, limits), PATCH its `resize` subresource with a strategic merge
//! patch (answered with the whole Pod), GET an `apps/v1` Deployment, LIST
//! `autoscaling.k8s.io/v1` VerticalPodAutoscalers (404 when the CRD is not installed,
//! as the API server answers), `v1` Status bodies for errors; it records every request.
//! It plays the kubelet too: a resize above the node's capacity gets the
//! `PodResizePending` condition with reason `Infeasible` and the kubelet's message,
//! and the container keeps its old allocation; a feasible one is allocated at once.
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

/// The fake cluster: one pod of one Deployment, maybe VPAs, and a node.
struct Cluster {
    /// The app container's CPU request and limit asked for (spec), in millicores.
    cpu: u64,
    cpu_limit: u64,
    /// What the kubelet allocated.
    allocated: u64,
    /// The node gives at most this much CPU to the container.
    node_capacity: u64,
    /// The kubelet's verdict on the spec's size, if it is not allocated.
    infeasible: bool,
    vpa_crd: bool,
    vpa_owns: bool,
    resource_version: u64,
}

impl Cluster {
    fn new() -> Self {
        Self {
            cpu: 100,
            cpu_limit: 200,
            allocated: 100,
            node_capacity: 4000,
            infeasible: false,
            vpa_crd: true,
            vpa_owns: false,
            resource_version: 500,
        }
    }

    fn pod(&self) -> Value {
        let mut conditions = vec![json!({"type": "Ready", "status": "True",
            "lastProbeTime": null, "lastTransitionTime": CREATED})];
        if self.infeasible {
            conditions.push(json!({"type": "PodResizePending", "status": "True",
                "lastProbeTime": null, "lastTransitionTime": CREATED, "reason": "Infeasible",
                "message": format!("Node didn't have enough capacity: cpu, requested: {}, capacity: {}",
                    self.cpu, self.node_capacity)}));
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
                     "resources": {"requests": {"cpu": format!("{}m", self.cpu), "memory": "64Mi"},
                                   "limits": {"cpu": format!("{}m", self.cpu_limit), "memory": "128Mi"}},
                     "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"},
                                      {"resourceName": "memory", "restartPolicy": "RestartContainer"}],
                     "terminationMessagePath": "/dev/termination-log",
                     "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"},
                    {"name": "prescale", "image": "registry.example/prescale:0.9",
                     "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                     "terminationMessagePath": "/dev/termination-log",
                     "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
                "restartPolicy": "Always", "nodeName": "node-a",
                "schedulerName": "default-scheduler", "serviceAccountName": "prescale"},
            "status": {
                "phase": "Running", "qosClass": "Burstable", "conditions": conditions,
                "containerStatuses": [
                    {"name": "app", "image": "registry.example/checkout:1.4.2", "imageID": "",
                     "ready": true, "restartCount": 0, "started": true,
                     "resources": {"requests": {"cpu": format!("{}m", self.allocated), "memory": "64Mi"},
                                   "limits": {"cpu": format!("{}m", self.allocated * 2), "memory": "128Mi"}}},
                    {"name": "prescale", "image": "registry.example/prescale:0.9", "imageID": "",
                     "ready": true, "restartCount": 0, "started": true}]}
        })
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
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
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
    /// resources; the kubelet then allocates it or marks it Infeasible.
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
        if let Some(cpu) = milli(&app["resources"]["requests"]["cpu"]) {
            self.cpu = cpu;
        }
        if let Some(limit) = milli(&app["resources"]["limits"]["cpu"]) {
            self.cpu_limit = limit;
        }
        self.resource_version += 1;
        self.infeasible = self.cpu > self.node_capacity;
        if !self.infeasible {
            self.allocated = self.cpu;
        }
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
        if method == "GET" && path == pod {
            (200, self.pod())
        } else if method == "GET" && path == deployment {
            (200, self.deployment())
        } else if method == "GET" && path == vpas && self.vpa_crd {
            (200, self.vpas())
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

/// A sidecar in front of `up`, reading its usage from `/proc`, resizing through `api`.
fn sidecar(api: &FakeApi, up: &CpuUpstream, dir: &Path) -> (Proxy, SocketAddr) {
    let kubeconfig = api.kubeconfig(dir);
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: app}}\nclusters:\n  - {{name: app, endpoints: [\"{}\"]}}\nprofiler: {{refit_interval: 5s, min_samples: 50, tick: 1s, max_signatures: 2}}\nresources: {{source: process, pid_file: {}}}\npolicies:\n  scaling:\n    sync_period: 1s\nsignals:\n  resize:\n    namespace: {NS}\n    pod: {POD}\n    deployment: {DEPLOYMENT}\n    kubeconfig: {}\n    vertical: true\n    min_cpu: 0.05\n    max_cpu: 0.12\n    min_interval: 1s\n    poll: 300ms\n    backoff: 50ms\n",
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
    if !python_usable("forecast_cpu_resizes_the_app_container_in_place") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let up = CpuUpstream::start(dir.path());
    let api = FakeApi::start(Cluster::new(), TOKEN, NS).await;
    let (proxy, listen) = sidecar(&api, &up, dir.path());

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
    // Memory's resizePolicy needs a restart: memory is left alone.
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
    if !python_usable("a_vpa_targeting_the_deployment_makes_resize_refuse") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let up = CpuUpstream::start(dir.path());
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
    if !python_usable("an_infeasible_size_is_handed_back_and_not_asked_again") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let up = CpuUpstream::start(dir.path());
    let mut c = Cluster::new();
    // The node cannot give the container more than 110m.
    c.node_capacity = 110;
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
