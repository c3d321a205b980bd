//! Anomaly detection and remediation through the real binary: a source that suddenly
//! sends 20× its usual rate is flagged and (enforced) demoted while another source is
//! unaffected, or (shadow) only counted; an upstream whose service time doubles at a
//! constant mix raises `cost_drift`; a real Alertmanager receives the alert and its
//! resolution, and so does a webhook (a hyper receiver), in Alertmanager's webhook
//! payload.
//!
//! Sources are hyper HTTP/1.1 clients bound to distinct loopback addresses (127.0.0.2
//! surges, 127.0.0.3 stays quiet): with no trusted header or certificate, the client
//! address is the source identity. Detection intervals are shortened in the config
//! (`profiler.anomalies.source.interval: 2s`, `drift.interval: 2s`) so each test runs
//! well within a minute and a half. Every loop is bounded in count and time.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const SURGING: [u8; 4] = [127, 0, 0, 2];
const QUIET: [u8; 4] = [127, 0, 0, 3];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A keep-alive HTTP/1.1 connection to `to` from the loopback address `from`; `None`
/// once the proxy is gone (a failed test's clients wind down instead of panicking).
async fn connect(from: [u8; 4], to: SocketAddr) -> Option<Sender> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket
        .bind(SocketAddr::from((IpAddr::from(from), 0)))
        .ok()?;
    let stream = socket.connect(to).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// What a client saw, and when (since the test began).
#[derive(Clone, Debug)]
struct Reply {
    at: Duration,
    status: u16,
    shed: Option<String>,
}

/// `GET path` on `sender` (10 s bound); `None` if the connection broke.
async fn get(sender: &mut Sender, path: &str, t0: Instant) -> Option<Reply> {
    sender.ready().await.ok()?;
    let req = http::Request::get(path)
        .header("host", "inbound")
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let shed = resp
        .headers()
        .get("x-prescale-shed")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    resp.into_body().collect().await.ok()?;
    Some(Reply {
        at: t0.elapsed(),
        status,
        shed,
    })
}

async fn admin_json(proxy: &Proxy, path: &'static str) -> Value {
    let a = proxy.admin;
    let (status, body) = blocking(move || admin_get(a, path))
        .await
        .unwrap_or_else(|| panic!("GET {path} failed:\n{}", proxy.logs()));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

async fn metric(proxy: &Proxy, name: &str, labels: &str) -> Option<f64> {
    let a = proxy.admin;
    let body = blocking(move || admin_get(a, "/metrics")).await?.1;
    metric_value(&body, name, labels)
}

/// The active anomalies of `kind` in `GET /v1/anomalies`.
async fn active(proxy: &Proxy, kind: &str) -> Vec<Value> {
    let v = admin_json(proxy, "/v1/anomalies").await;
    v["active"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["kind"] == kind).cloned().collect())
        .unwrap_or_default()
}

/// Polls `check` every 250 ms until it returns `Some`, at most `limit`.
async fn wait_for<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One inbound listener in front of `upstream`, two tiers (standard, and batch below
/// it), a fixed concurrency limit, short source intervals, and `extra` appended.
fn mesh(
    admin: SocketAddr,
    listen: SocketAddr,
    upstream: SocketAddr,
    limit: u32,
    extra: &str,
) -> String {
    format!(
        "admin:\n  address: {admin}\nprofiler:\n  min_samples: 20\n  refit_interval: 1h\n  anomalies:\n    source: {{ interval: 2s, warmup: 4, sustain: 2 }}\nlisteners:\n  - name: inbound\n    direction: inbound\n    address: {listen}\n    cluster: local\nclusters:\n  - name: local\n    endpoints: [\"{upstream}\"]\npolicies:\n  tiers:\n    default: standard\n    list:\n      - {{ name: standard, priority: 0, share: 0.5, sheddable: false }}\n      - {{ name: batch, priority: 1, share: 0.0 }}\n  admission:\n    latency_objective: 500ms\n    limit: {{ initial: {limit}, floor: {limit}, ceiling: {limit} }}\n{extra}"
    )
}

/// Steady and surging clients. Each source sends `/delay/200` about twice a second;
/// in the surge the surging source opens 8 connections that send back to back: about
/// 40 requests a second, 20× its usual rate.
struct Load {
    t0: Instant,
    /// 0: steady, 1: surge, 2: stop.
    phase: Arc<AtomicU8>,
    surging: Arc<Mutex<Vec<Reply>>>,
    quiet: Arc<Mutex<Vec<Reply>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(listen: SocketAddr) -> Self {
        let mut load = Self {
            t0: Instant::now(),
            phase: Arc::new(AtomicU8::new(0)),
            surging: Arc::default(),
            quiet: Arc::default(),
            tasks: Vec::new(),
        };
        load.steady(SURGING, listen);
        load.steady(QUIET, listen);
        for _ in 0..8 {
            let (phase, out, t0) = (load.phase.clone(), load.surging.clone(), load.t0);
            load.tasks.push(tokio::spawn(async move {
                // Bounded: the test ends within 90 s; a client never outlives it.
                let deadline = t0 + Duration::from_secs(120);
                let mut conn: Option<Sender> = None;
                while Instant::now() < deadline {
                    match phase.load(Ordering::Relaxed) {
                        0 => {
                            conn = None;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        1 => {
                            let s = match &mut conn {
                                Some(s) => s,
                                None => match connect(SURGING, listen).await {
                                    Some(s) => conn.insert(s),
                                    None => return,
                                },
                            };
                            match get(s, "/delay/200", t0).await {
                                Some(r) => {
                                    let refused = r.status != 200;
                                    out.lock().unwrap().push(r);
                                    if refused {
                                        tokio::time::sleep(Duration::from_millis(20)).await;
                                    }
                                }
                                None => conn = None,
                            }
                        }
                        _ => return,
                    }
                }
            }));
        }
        load
    }

    /// A client of `from` sending one request every 500 ms (plus its 200 ms) until stop.
    fn steady(&mut self, from: [u8; 4], listen: SocketAddr) {
        let (phase, t0) = (self.phase.clone(), self.t0);
        let out = if from == QUIET {
            self.quiet.clone()
        } else {
            self.surging.clone()
        };
        self.tasks.push(tokio::spawn(async move {
            let deadline = t0 + Duration::from_secs(120);
            let Some(mut s) = connect(from, listen).await else {
                return;
            };
            while phase.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
                match get(&mut s, "/delay/200", t0).await {
                    Some(r) => out.lock().unwrap().push(r),
                    None => match connect(from, listen).await {
                        Some(c) => s = c,
                        None => return,
                    },
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }));
    }

    fn surge(&self, on: bool) {
        self.phase.store(u8::from(on), Ordering::Relaxed);
    }

    fn since(&self, at: Duration, of: &Mutex<Vec<Reply>>) -> Vec<Reply> {
        of.lock()
            .unwrap()
            .iter()
            .filter(|r| r.at >= at)
            .cloned()
            .collect()
    }

    async fn stop(self) {
        self.phase.store(2, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
    }
}

/// Runs the steady phase, then the surge, until the surging source is flagged;
/// returns the load and when it was flagged. Asserts it took less than a minute and
/// that only the surging source is flagged.
async fn surge_until_flagged(proxy: &Proxy, listen: SocketAddr) -> (Load, Duration, Value) {
    let load = Load::start(listen);
    // Long enough for both sources' baselines (4 intervals of 2 s after the first).
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        active(proxy, "source_rate").await.is_empty(),
        "flagged before any surge:\n{}",
        proxy.logs()
    );
    load.surge(true);
    let surge_at = load.t0.elapsed();
    let flagged = wait_for(Duration::from_secs(60), || async {
        let a = active(proxy, "source_rate").await;
        (!a.is_empty()).then_some(a)
    })
    .await
    .unwrap_or_else(|| {
        let statuses = load.surging.lock().unwrap().iter().fold(
            std::collections::BTreeMap::<u16, usize>::new(),
            |mut m, r| {
                *m.entry(r.status).or_default() += 1;
                m
            },
        );
        panic!(
            "the surge was not flagged within a minute (surging source got {statuses:?}):\n{}",
            proxy.logs()
        )
    });
    let flagged_at = load.t0.elapsed();
    eprintln!(
        "surge flagged {:?} after it began: {flagged:?}",
        flagged_at - surge_at
    );
    // Exactly one source: the surging one (the quiet one sends as it always did).
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    let anomaly = flagged[0].clone();
    let subject = anomaly["subject"].as_str().unwrap_or_default().to_string();
    assert!(
        subject.starts_with("source:") && subject.len() == 23,
        "{anomaly}"
    );
    assert_eq!(anomaly["direction"], "above", "{anomaly}");
    assert!(anomaly["severity"].as_f64().unwrap() > 10.0, "{anomaly}");
    assert!(
        anomaly["evidence"]["rate"].as_f64().unwrap() > 20.0,
        "{anomaly}"
    );
    (load, flagged_at, anomaly)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enforced_surging_source_is_demoted_and_shed_while_the_quiet_one_is_served() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let yaml = mesh(
        admin,
        listen,
        upstream.addr,
        8,
        "anomalies:\n  remediation: { mode: enforce, source_rate: demote, demote_to: batch }\n",
    );
    let proxy = blocking(move || Proxy::start(&yaml, admin)).await;
    // Every kind is exported from the start, at 0.
    for kind in ["rate", "cost_drift", "source_rate", "source_mix"] {
        let labels = format!("kind=\"{kind}\"");
        assert_eq!(
            metric(&proxy, "prescale_anomalies_total", &labels).await,
            Some(0.0)
        );
        assert_eq!(
            metric(&proxy, "prescale_anomalies_active", &labels).await,
            Some(0.0)
        );
    }

    let (load, flagged_at, anomaly) = surge_until_flagged(&proxy, listen).await;
    let subject = anomaly["subject"].as_str().unwrap().to_string();

    // The action is in force in admission: the source is demoted to batch.
    let overrides = wait_for(Duration::from_secs(5), || async {
        let v = admin_json(&proxy, "/v1/tiers").await;
        let o = v["source_overrides"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (!o.is_empty()).then_some(o)
    })
    .await
    .expect("the demotion is in /v1/tiers");
    assert_eq!(overrides.len(), 1, "{overrides:?}");
    assert_eq!(overrides[0]["subject"], subject.as_str());
    assert_eq!(overrides[0]["action"]["demote_to"], "batch");
    let view = admin_json(&proxy, "/v1/anomalies").await;
    assert_eq!(view["actions"][0]["action"], "demote", "{view:#}");
    assert_eq!(view["actions"][0]["mode"], "enforce", "{view:#}");
    assert_eq!(view["actions"][0]["subject"], subject.as_str());

    // Under the load it makes, the surging source is now shed as batch (503, with the
    // reason header), while the quiet source in the same tier is served throughout.
    let demoted_at = flagged_at + Duration::from_secs(2);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let surging = load.since(demoted_at, &load.surging);
    let quiet = load.since(demoted_at, &load.quiet);
    let shed: Vec<&Reply> = surging.iter().filter(|r| r.status == 503).collect();
    eprintln!(
        "after demotion: surging {} replies, {} shed; quiet {} replies",
        surging.len(),
        shed.len(),
        quiet.len()
    );
    assert!(!shed.is_empty(), "the demoted source was never shed");
    for r in &surging {
        assert!(
            r.status == 200
                || (r.status == 503 && r.shed.as_deref() == Some("overload; tier=batch")),
            "{r:?}"
        );
    }
    assert!(quiet.len() >= 5, "quiet sent only {}", quiet.len());
    assert!(
        quiet.iter().all(|r| r.status == 200),
        "the quiet source was affected: {quiet:?}"
    );
    let labels = "kind=\"source_rate\",action=\"demote\",mode=\"enforce\"";
    assert_eq!(
        metric(&proxy, "prescale_anomaly_actions_total", labels).await,
        Some(1.0)
    );
    assert_eq!(
        metric(&proxy, "prescale_anomalies_total", "kind=\"source_rate\"").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&proxy, "prescale_anomalies_active", "kind=\"source_rate\"").await,
        Some(1.0)
    );
    assert!(
        metric(
            &proxy,
            "prescale_admission_decisions_total",
            "tier=\"batch\",decision=\"rejected\",reason=\"overload\""
        )
        .await
        .unwrap_or(0.0)
            >= shed.len() as f64
    );

    // The surge ends: the anomaly clears and the demotion is reversed, both logged.
    load.surge(false);
    wait_for(Duration::from_secs(20), || async {
        let v = admin_json(&proxy, "/v1/tiers").await;
        let none = v["source_overrides"]
            .as_array()
            .is_some_and(|o| o.is_empty());
        (none && active(&proxy, "source_rate").await.is_empty()).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the demotion was not reversed:\n{}", proxy.logs()));
    load.stop().await;
    let logs = proxy.logs();
    for line in [
        "anomaly raised",
        "anomaly remediation: action taken",
        "anomaly cleared",
        "anomaly remediation: action reversed",
    ] {
        assert!(logs.contains(line), "no {line:?} in the log:\n{logs}");
    }
    assert!(logs.contains(&subject), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_shadow_mode_a_surging_source_is_only_counted() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    // A limit high enough that nothing is shed for overload either.
    let yaml = mesh(admin, listen, upstream.addr, 64, "");
    let proxy = blocking(move || Proxy::start(&yaml, admin)).await;

    let (load, flagged_at, anomaly) = surge_until_flagged(&proxy, listen).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = load.since(Duration::ZERO, &load.surging);
    let after = load.since(flagged_at, &load.surging);
    load.stop().await;

    // Nothing was shed, before or after the anomaly; nothing is in force.
    assert!(all.iter().all(|r| r.status == 200), "{all:?}");
    assert!(after.len() > 20, "the surge went on: {}", after.len());
    let v = admin_json(&proxy, "/v1/tiers").await;
    assert_eq!(v["source_overrides"], serde_json::json!([]), "{v:#}");
    // ... but the action enforcement would take is counted and shown.
    let labels = "kind=\"source_rate\",action=\"demote\",mode=\"shadow\"";
    assert_eq!(
        metric(&proxy, "prescale_anomaly_actions_total", labels).await,
        Some(1.0)
    );
    let view = admin_json(&proxy, "/v1/anomalies").await;
    let action = &view["actions"][0];
    assert_eq!(action["mode"], "shadow", "{view:#}");
    assert_eq!(action["subject"], anomaly["subject"], "{view:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_time_that_doubles_at_a_constant_mix_raises_cost_drift() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let yaml = format!(
        "admin:\n  address: {admin}\nprofiler:\n  min_samples: 50\n  refit_interval: 1h\n  anomalies:\n    drift: {{ interval: 2s, warmup: 4, sustain: 2, min_requests: 10 }}\nlisteners:\n  - name: inbound\n    direction: inbound\n    address: {listen}\n    cluster: local\nclusters:\n  - name: local\n    endpoints: [\"{}\"]\n",
        upstream.addr
    );
    let proxy = blocking(move || Proxy::start(&yaml, admin)).await;

    // Two kinds of work in a fixed 1:1 mix from two clients: a 40 ms call and a 4 KB
    // download. After a while the slow call takes 80 ms: same route, same mix.
    let t0 = Instant::now();
    let slow = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for from in [SURGING, QUIET] {
        let (slow, stop) = (slow.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = t0 + Duration::from_secs(100);
            let Some(mut s) = connect(from, listen).await else {
                return;
            };
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let delay = if slow.load(Ordering::Relaxed) { 80 } else { 40 };
                for path in [format!("/delay/{delay}"), "/bytes/4096".to_string()] {
                    if get(&mut s, &path, t0).await.is_none() {
                        match connect(from, listen).await {
                            Some(c) => s = c,
                            None => return,
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    // The first fit, then baselines over 4 snapshots of 2 s.
    let fitted = wait_for(Duration::from_secs(20), || async {
        let v = admin_json(&proxy, "/v1/signatures").await;
        (v["model_version"].as_u64().unwrap_or(0) >= 1).then_some(v)
    })
    .await
    .expect("signatures fitted");
    eprintln!(
        "signatures: {}",
        fitted["signatures"].as_array().map_or(0, Vec::len)
    );
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(
        active(&proxy, "cost_drift").await.is_empty(),
        "cost drift before any change:\n{}",
        proxy.logs()
    );

    slow.store(true, Ordering::Relaxed);
    let changed_at = Instant::now();
    let drift = wait_for(Duration::from_secs(40), || async {
        let a = active(&proxy, "cost_drift").await;
        (!a.is_empty()).then_some(a)
    })
    .await
    .unwrap_or_else(|| panic!("no cost_drift anomaly:\n{}", proxy.logs()));
    eprintln!(
        "cost drift raised {:?} after the change: {drift:?}",
        changed_at.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }

    let a = &drift[0];
    assert!(
        a["subject"].as_str().unwrap().starts_with("signature:"),
        "{a}"
    );
    assert_eq!(a["direction"], "above");
    let ev = &a["evidence"];
    let (now, base) = (
        ev["service_seconds"].as_f64().unwrap(),
        ev["baseline_service_seconds"].as_f64().unwrap(),
    );
    assert!(now > 1.5 * base, "{ev}");
    // The mix held still: that is what makes it drift rather than a shift of work.
    assert!(ev["mix_distance"].as_f64().unwrap() <= 0.1, "{ev}");
    assert!(
        metric(&proxy, "prescale_anomalies_total", "kind=\"cost_drift\"")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(active(&proxy, "share_shift").await.is_empty());
    assert!(proxy.logs().contains("anomaly raised"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_alertmanager_receives_the_alert_and_its_resolution() {
    if !alertmanager_usable("a_real_alertmanager_receives_the_alert_and_its_resolution") {
        return;
    }
    let am = blocking(Alertmanager::start).await;
    // The same alerts also go to a webhook, in Alertmanager's webhook payload.
    let hook = Receiver::start(vec![], support::Reply::Status(200, None)).await;
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let extra = format!(
        "anomalies:\n  alertmanager:\n    url: {}\n    resend_interval: 2s\n    labels: {{ service: checkout }}\n  webhook:\n    url: http://{}/hooks/prescale\n    resend_interval: 2s\n",
        am.url(),
        hook.addr
    );
    let yaml = mesh(admin, listen, upstream.addr, 64, &extra);
    let proxy = blocking(move || Proxy::start(&yaml, admin)).await;

    let (load, _, anomaly) = surge_until_flagged(&proxy, listen).await;
    let am = Arc::new(am);
    let alert = {
        let am = am.clone();
        wait_for(Duration::from_secs(20), move || {
            let am = am.clone();
            async move {
                let alerts = blocking(move || am.alerts()).await;
                alerts
                    .into_iter()
                    .find(|a| a["labels"]["kind"] == "source_rate")
            }
        })
        .await
    }
    .unwrap_or_else(|| {
        panic!(
            "Alertmanager got no alert:\n{}\n{}",
            proxy.logs(),
            am.logs()
        )
    });
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "PrescaleAnomaly", "{alert:#}");
    assert_eq!(labels["subject"], anomaly["subject"], "{alert:#}");
    assert_eq!(labels["service"], "checkout", "{alert:#}");
    assert!(
        labels["severity"] == "critical" || labels["severity"] == "warning",
        "{alert:#}"
    );
    assert_eq!(alert["status"]["state"], "active", "{alert:#}");
    assert!(alert["annotations"]["summary"]
        .as_str()
        .unwrap()
        .contains("source_rate anomaly on source:"));
    let view = admin_json(&proxy, "/v1/anomalies").await;
    assert_eq!(view["alert_deliveries"][0]["ok"], true, "{view:#}");
    assert_eq!(
        metric(
            &proxy,
            "prescale_anomaly_alert_sends_total",
            "outcome=\"failed\""
        )
        .await,
        Some(0.0)
    );

    // The surge ends: the anomaly clears, and Alertmanager is told it is resolved.
    load.surge(false);
    let resolved = {
        let am = am.clone();
        wait_for(Duration::from_secs(25), move || {
            let am = am.clone();
            async move {
                let alerts = blocking(move || am.alerts()).await;
                (!alerts.iter().any(|a| a["labels"]["kind"] == "source_rate")).then_some(())
            }
        })
        .await
    };
    load.stop().await;
    assert!(
        resolved.is_some(),
        "the alert was not resolved:\n{}",
        proxy.logs()
    );
    assert!(active(&proxy, "source_rate").await.is_empty());

    // The webhook got the alert firing, then resolved, at its own path.
    let status_of = |r: &Received| -> Option<(String, String)> {
        let v: Value = serde_json::from_slice(&r.body).ok()?;
        assert_eq!(v["version"], "4", "{v:#}");
        let a = v["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["subject"] == anomaly["subject"])?
            .clone();
        assert_eq!(a["labels"]["alertname"], "PrescaleAnomaly", "{v:#}");
        Some((a["status"].as_str()?.to_string(), r.path.clone()))
    };
    let seen: Vec<(String, String)> = hook.received().iter().filter_map(status_of).collect();
    assert!(
        seen.iter().any(|(s, _)| s == "firing"),
        "webhook: {seen:?}\n{}",
        proxy.logs()
    );
    assert!(
        seen.iter().any(|(s, _)| s == "resolved"),
        "webhook: {seen:?}"
    );
    assert!(seen.iter().all(|(_, p)| p == "/hooks/prescale"), "{seen:?}");
}
