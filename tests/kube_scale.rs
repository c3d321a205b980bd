//! The Kubernetes scale signal through the real binary against a **recorded-contract fake
//! API server** — no cluster runs here. A small hyper server in this test answers the
//! calls prescale makes with the exact JSON shapes a real API server sends (GET an
//! `apps/v1` Deployment, LIST `autoscaling/v2` HorizontalPodAutoscalers with items
//! lacking `apiVersion`/`kind` as real lists do, GET/PATCH the Deployment's
//! `autoscaling/v1` Scale subresource, `v1` Status bodies for errors) and records every
//! request's method, path, query, content type, authorization and body. The sidecar
//! finds it through a generated kubeconfig (`server: http://127.0.0.1:PORT`,
//! `insecure-skip-tls-verify`, a bearer token). The fake plays the Deployment
//! controller too: `readyReplicas` reaches `spec.replicas` a fixed time after a
//! scale-up. What only a real cluster has (RBAC evaluation, admission, real pods) is
//! not exercised; RBAC is stood in for by a scripted 403.

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::fake_kube::{self, status, Recorded};
use support::*;

const TOKEN: &str = "fake-sa-token-1234";
const NS: &str = "shop";
const NAME: &str = "checkout";
const CREATED: &str = "2025-01-01T00:00:00Z";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// The fake cluster's state: one Deployment, maybe an HPA targeting it.
struct Cluster {
    spec: i32,
    /// Ready replicas before the last scale-up, and when it was asked for.
    ready_before: i32,
    scaled_at: Option<Instant>,
    /// How long new replicas take to become ready.
    startup: Duration,
    hpa_owns: bool,
    /// PATCHes to answer 403 (RBAC missing) before accepting.
    forbid_patches: usize,
    resource_version: u64,
}

impl Cluster {
    fn ready(&self) -> i32 {
        match self.scaled_at {
            Some(t) if t.elapsed() < self.startup => self.ready_before.min(self.spec),
            _ => self.spec,
        }
    }

    fn deployment(&self) -> Value {
        let ready = self.ready();
        let mut status = json!({
            "observedGeneration": 1,
            "replicas": self.spec,
            "updatedReplicas": self.spec,
            "availableReplicas": ready,
            "conditions": [{
                "type": "Available", "status": "True",
                "lastUpdateTime": CREATED, "lastTransitionTime": CREATED,
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability."
            }, {
                "type": "Progressing", "status": "True",
                "lastUpdateTime": CREATED, "lastTransitionTime": CREATED,
                "reason": "NewReplicaSetAvailable",
                "message": "ReplicaSet \"checkout-5d9c7b8f6b\" has successfully progressed."
            }]
        });
        // The API server omits zero counts.
        if ready > 0 {
            status["readyReplicas"] = json!(ready);
        }
        if self.spec > ready {
            status["unavailableReplicas"] = json!(self.spec - ready);
        }
        json!({
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": NAME, "namespace": NS,
                "uid": "6f1c2a0e-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
                "resourceVersion": self.resource_version.to_string(),
                "generation": 1,
                "creationTimestamp": CREATED,
                "labels": {"app": NAME},
                "annotations": {"deployment.kubernetes.io/revision": "1"}
            },
            "spec": {
                "replicas": self.spec,
                "selector": {"matchLabels": {"app": NAME}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": NAME}},
                    "spec": {
                        "containers": [{
                            "name": "app", "image": "registry.example/checkout:1.4.2",
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "resources": {},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                            "imagePullPolicy": "IfNotPresent"
                        }],
                        "restartPolicy": "Always",
                        "terminationGracePeriodSeconds": 30,
                        "dnsPolicy": "ClusterFirst",
                        "securityContext": {},
                        "schedulerName": "default-scheduler"
                    }
                },
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600
            },
            "status": status
        })
    }

    fn scale(&self) -> Value {
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": NAME, "namespace": NS,
                "uid": "6f1c2a0e-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
                "resourceVersion": self.resource_version.to_string(),
                "creationTimestamp": CREATED
            },
            "spec": {"replicas": self.spec},
            "status": {"replicas": self.spec, "selector": format!("app={NAME}")}
        })
    }

    fn hpas(&self) -> Value {
        let mut items = vec![json!({
            "metadata": {"name": "cart", "namespace": NS, "uid": "1",
                         "resourceVersion": "17", "creationTimestamp": CREATED},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cart"},
                     "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80}}}]},
            "status": {"currentReplicas": 1, "desiredReplicas": 1}
        })];
        if self.hpa_owns {
            items.push(json!({
                "metadata": {"name": "checkout-cpu", "namespace": NS, "uid": "2",
                             "resourceVersion": "18", "creationTimestamp": CREATED},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
                         "minReplicas": 1, "maxReplicas": 10,
                         "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70}}}],
                         "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                            "selectPolicy": "Max",
                            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}},
                "status": {"currentReplicas": 1, "desiredReplicas": 1,
                           "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                              "current": {"averageValue": "12m", "averageUtilization": 12}}}],
                           "conditions": [{"type": "AbleToScale", "status": "True",
                              "lastTransitionTime": CREATED, "reason": "ReadyForNewScale",
                              "message": "recommended size matches current size"}]}
            }));
        }
        json!({
            "kind": "HorizontalPodAutoscalerList",
            "apiVersion": "autoscaling/v2",
            "metadata": {"resourceVersion": self.resource_version.to_string()},
            "items": items
        })
    }
}

impl fake_kube::Cluster for Cluster {
    fn answer(&mut self, r: &Recorded) -> (u16, Value) {
        let deployment = format!("/apis/apps/v1/namespaces/{NS}/deployments/{NAME}");
        let scale = format!("{deployment}/scale");
        let hpas = format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers");
        let (method, path) = (r.method.as_str(), r.path.as_str());
        if method == "GET" && path == deployment {
            (200, self.deployment())
        } else if method == "GET" && path == hpas {
            (200, self.hpas())
        } else if method == "GET" && path == scale {
            (200, self.scale())
        } else if method == "PATCH" && path == scale {
            self.patch_scale(r)
        } else {
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }
}

impl Cluster {
    /// PATCH of the Scale subresource: 403 while RBAC is "missing", 415 for a body that
    /// is not a merge patch, else the replicas are set (not under `dryRun=All`).
    fn patch_scale(&mut self, r: &Recorded) -> (u16, Value) {
        if self.forbid_patches > 0 {
            self.forbid_patches -= 1;
            return status(
                403,
                "Forbidden",
                &format!("deployments.apps \"{NAME}\" is forbidden: User \"system:serviceaccount:{NS}:prescale\" cannot patch resource \"deployments/scale\" in API group \"apps\" in the namespace \"{NS}\""),
            );
        }
        if r.content_type.as_deref() != Some("application/merge-patch+json") {
            return status(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format",
            );
        }
        let patch: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        match patch["spec"]["replicas"].as_i64() {
            Some(n) => {
                let dry_run = r.query.contains("dryRun=All");
                if !dry_run && n as i32 != self.spec {
                    if n as i32 > self.spec {
                        self.ready_before = self.ready();
                        self.scaled_at = Some(Instant::now());
                    }
                    self.spec = n as i32;
                    self.resource_version += 1;
                }
                let mut s = self.scale();
                s["spec"]["replicas"] = json!(n);
                (200, s)
            }
            None => status(422, "Invalid", "spec.replicas: Required value"),
        }
    }
}

type FakeApi = fake_kube::FakeApi<Cluster>;

fn cluster(spec: i32, startup: Duration) -> Cluster {
    Cluster {
        spec,
        ready_before: spec,
        scaled_at: None,
        startup,
        hpa_owns: false,
        forbid_patches: 0,
        resource_version: 100,
    }
}

/// A sidecar deciding every second with at least `min_replicas`, signalling `api`.
async fn sidecar(api: &FakeApi, min_replicas: u32, extra: &str) -> (Proxy, tempfile::TempDir) {
    sidecar_sending_every(api, min_replicas, "1s", extra).await
}

/// As [`sidecar`], with at most one delivery per `min_interval`.
async fn sidecar_sending_every(
    api: &FakeApi,
    min_replicas: u32,
    min_interval: &str,
    extra: &str,
) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let admin = addr(free_port());
    let listen = addr(free_port());
    let upstream = addr(free_port());
    let yaml = format!(
        "{}policies:\n  scaling:\n    sync_period: 1s\n    min_replicas: {min_replicas}\nsignals:\n  kubernetes:\n    namespace: {NS}\n    deployment: {NAME}\n    kubeconfig: {}\n    min_interval: {min_interval}\n    readiness_poll: 200ms\n    backoff: 50ms\n{extra}",
        inbound_config(admin, listen, upstream, ""),
        kubeconfig.display()
    );
    let proxy = blocking(move || Proxy::start(&yaml, admin)).await;
    (proxy, dir)
}

async fn metric(proxy: &Proxy, name: &str, labels: &str) -> Option<f64> {
    let a = proxy.admin;
    let body = blocking(move || admin_get(a, "/metrics")).await?.1;
    metric_value(&body, name, labels)
}

async fn sends(proxy: &Proxy, outcome: &str) -> f64 {
    let labels = format!("signal=\"kubernetes\",outcome=\"{outcome}\"");
    metric(proxy, "prescale_signal_sends_total", &labels)
        .await
        .unwrap_or(-1.0)
}

async fn scale_view(proxy: &Proxy) -> Value {
    let a = proxy.admin;
    let (status, body) = blocking(move || admin_get(a, "/v1/scale"))
        .await
        .expect("GET /v1/scale");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desired_replicas_are_patched_and_the_startup_time_is_learned() {
    // One replica, ready; new ones take 2 s to become ready.
    let api = FakeApi::start(cluster(1, Duration::from_secs(2)), TOKEN, NS).await;
    // min_replicas 3: the very first decision asks for 3.
    let (proxy, _dir) = sidecar(&api, 3, "").await;

    let patches = api.wait_for_patches(1, Duration::from_secs(15)).await;
    assert_eq!(patches.len(), 1, "no PATCH:\n{}", proxy.logs());
    let p = &patches[0];
    assert_eq!(
        p.path,
        format!("/apis/apps/v1/namespaces/{NS}/deployments/{NAME}/scale")
    );
    assert_eq!(
        p.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&p.body).unwrap(),
        json!({"spec": {"replicas": 3}})
    );
    assert!(p.query.contains("fieldManager=prescale"), "{p:?}");
    assert!(!p.query.contains("dryRun"), "{p:?}");
    assert_eq!(
        p.authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    // Before writing, it read the Deployment and checked for an owning HPA.
    let before: Vec<String> = api
        .requests()
        .iter()
        .take_while(|r| r.method != "PATCH")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        before.contains(&format!(
            "GET /apis/apps/v1/namespaces/{NS}/deployments/{NAME}"
        )),
        "{before:?}"
    );
    assert!(
        before.contains(&format!(
            "GET /apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
        )),
        "{before:?}"
    );

    // readyReplicas reaches 3 two seconds after the PATCH: that is the start-up time.
    let deadline = Instant::now() + Duration::from_secs(15);
    let learned = loop {
        let view = scale_view(&proxy).await;
        if !view["learned_startup"].is_null() || Instant::now() > deadline {
            break view["learned_startup"].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seconds = learned["seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("nothing learned: {learned}\n{}", proxy.logs()));
    // 2 s, plus at most one 200 ms readiness poll and scheduling slack.
    assert!((1.9..3.5).contains(&seconds), "learned {seconds} s");
    assert_eq!(learned["observations"], 1, "{learned}");
    let gauge = metric(&proxy, "prescale_learned_startup_seconds", "")
        .await
        .expect("learned start-up gauge");
    assert!((gauge - seconds).abs() < 1e-9, "{gauge} vs {seconds}");
    // The new series are well-formed for Prometheus.
    if prometheus_usable("kube_scale metrics") {
        let a = proxy.admin;
        let body = blocking(move || admin_get(a, "/metrics")).await.unwrap().1;
        promtool_check(&body);
    }

    // The Deployment has 3 now: later decisions change nothing and write nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        api.patches().len(),
        1,
        "an unchanged number was written again"
    );
    assert_eq!(sends(&proxy, "ok").await, 1.0);
    assert!(sends(&proxy, "unchanged").await >= 1.0);
    assert_eq!(sends(&proxy, "failed").await, 0.0);
    let view = scale_view(&proxy).await;
    let last = &view["last_signals"][0];
    assert_eq!(last["signal"], "kubernetes", "{view}");
    assert_eq!(last["outcome"], "unchanged", "{view}");
    assert_eq!(last["desired_replicas"], 3, "{view}");
    // Decisions now plan with the learned start-up time, not the configured 120 s:
    // lead = learned + the 1 s sync period.
    let decision = &view["decision"];
    assert_eq!(decision["learned_startup"], true, "{view}");
    let lead = decision["lead_time_seconds"].as_f64().unwrap();
    assert!(
        (lead - (seconds + 1.0)).abs() < 1e-6,
        "lead {lead} vs learned {seconds}: {view}"
    );
    assert!(
        proxy.logs().contains("scaled the deployment"),
        "{}",
        proxy.logs()
    );
    assert!(
        proxy.logs().contains("replica start-up time observed"),
        "{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_owning_the_deployment_is_never_fought() {
    let mut c = cluster(1, Duration::from_secs(1));
    c.hpa_owns = true;
    let api = FakeApi::start(c, TOKEN, NS).await;
    let (proxy, _dir) = sidecar(&api, 3, "").await;

    // Several decisions, each refused: no PATCH, a counted refusal, one loud log line.
    let deadline = Instant::now() + Duration::from_secs(15);
    while sends(&proxy, "refused_hpa_owned").await < 3.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        sends(&proxy, "refused_hpa_owned").await >= 3.0,
        "{}",
        proxy.logs()
    );
    assert!(
        api.patches().is_empty(),
        "wrote despite the HPA: {:?}",
        api.patches()
    );
    assert_eq!(sends(&proxy, "ok").await, 0.0);
    let view = scale_view(&proxy).await;
    let last = &view["last_signals"][0];
    assert_eq!(last["signal"], "kubernetes", "{view}");
    assert_eq!(last["outcome"], "refused_hpa_owned", "{view}");
    assert!(
        last["error"]
            .as_str()
            .unwrap_or("")
            .contains("checkout-cpu"),
        "{view}"
    );
    let logs = proxy.logs();
    assert_eq!(
        logs.matches("REFUSING to scale").count(),
        1,
        "the refusal is logged once:\n{logs}"
    );
    assert!(logs.contains("checkout-cpu"), "{logs}");

    // The HPA is deleted: the next decision is applied.
    api.cluster.lock().unwrap().hpa_owns = false;
    let patches = api.wait_for_patches(1, Duration::from_secs(10)).await;
    assert_eq!(patches.len(), 1, "{}", proxy.logs());
    assert_eq!(
        serde_json::from_slice::<Value>(&patches[0].body).unwrap(),
        json!({"spec": {"replicas": 3}})
    );
    assert!(
        proxy
            .logs()
            .contains("no HorizontalPodAutoscaler targets the deployment any more"),
        "{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_patch_is_not_retried_and_dry_run_persists_nothing() {
    let mut c = cluster(1, Duration::from_secs(1));
    // RBAC not granted yet: the first PATCH is refused.
    c.forbid_patches = 1;
    let api = FakeApi::start(c, TOKEN, NS).await;
    let (proxy, _dir) = sidecar(&api, 2, "    dry_run: true\n    retries: 3\n").await;

    let patches = api.wait_for_patches(3, Duration::from_secs(15)).await;
    assert!(patches.len() >= 3, "{}", proxy.logs());
    // 403 is final for that decision: the next PATCH waited for min_interval (1 s),
    // it was not a 50 ms retry.
    let gap = patches[1].at - patches[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "retried a 403 after {gap:?}"
    );
    assert_eq!(sends(&proxy, "retry").await, 0.0);
    assert!(sends(&proxy, "failed").await >= 1.0);
    assert!(sends(&proxy, "ok").await >= 1.0);
    // Every PATCH asked the server not to persist; the Deployment never changed, so
    // each decision tried again and nothing was learned.
    for p in &patches {
        assert!(p.query.contains("dryRun=All"), "{p:?}");
    }
    assert_eq!(api.cluster.lock().unwrap().spec, 1);
    let view = scale_view(&proxy).await;
    assert!(view["learned_startup"].is_null(), "{view}");
    let failed = view["last_signals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["outcome"] == "failed")
        .cloned()
        .unwrap_or_else(|| panic!("no failed delivery: {view}"));
    assert_eq!(failed["status"], 403, "{failed}");
    assert_eq!(failed["attempts"], 1, "{failed}");
    assert!(
        failed["error"].as_str().unwrap_or("").contains("forbidden"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_polled_between_deliveries() {
    // New replicas take 2 s; deliveries are at most one per 6 s. The start-up time is
    // learned from the readiness polls (every 200 ms), not from the next delivery's
    // read of the Deployment 6 s later.
    let api = FakeApi::start(cluster(1, Duration::from_secs(2)), TOKEN, NS).await;
    let (proxy, _dir) = sidecar_sending_every(&api, 3, "6s", "").await;
    assert_eq!(
        api.wait_for_patches(1, Duration::from_secs(15)).await.len(),
        1,
        "{}",
        proxy.logs()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let learned = loop {
        let view = scale_view(&proxy).await;
        if !view["learned_startup"].is_null() || Instant::now() > deadline {
            break view["learned_startup"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seconds = learned["seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("nothing learned within 5 s of the PATCH: {learned}"));
    assert!((1.9..3.0).contains(&seconds), "learned {seconds} s");
    // Between the two deliveries the polls read the Deployment several times.
    let gets = api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/deployments/{NAME}")))
        .count();
    assert!(gets >= 5, "{gets} reads of the Deployment");
}
