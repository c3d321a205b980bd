//! Tier policies through the real binary: spoof-proof classification, priority
//! shedding under overload, per-source rate limits, shadow mode, tier routing, the
//! `/v1/tiers` view, metrics, and hot reload.
//!
//! Clients are hyper HTTP/1.1 connections bound to a chosen loopback source address
//! (127.0.0.1 is untrusted in these configs, 127.0.0.2 trusted); the upstream is the
//! hyper test service from `support` (`/delay/MS` is the slow endpoint; any other path
//! echoes the request's headers as JSON). Load loops are bounded in count and time.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use support::*;

const UNTRUSTED: [u8; 4] = [127, 0, 0, 1];
const TRUSTED: [u8; 4] = [127, 0, 0, 2];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn start(yaml: String, admin: SocketAddr) -> Proxy {
    blocking(move || Proxy::start(&yaml, admin)).await
}

/// One inbound listener in front of `upstream` (cluster `local`), more clusters as
/// YAML list items, and the `policies:` section as given (indented by the caller).
fn mesh(
    admin: SocketAddr,
    listen: SocketAddr,
    upstream: SocketAddr,
    clusters: &str,
    policies: &str,
) -> String {
    format!(
        "admin:\n  address: {admin}\nprofiler:\n  source_header: x-source\nlisteners:\n  - name: inbound\n    direction: inbound\n    address: {listen}\n    cluster: local\nclusters:\n  - name: local\n    endpoints: [\"{upstream}\"]\n{clusters}{policies}"
    )
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A keep-alive HTTP/1.1 connection to `to` from the loopback address `from`.
async fn connect(from: [u8; 4], to: SocketAddr) -> Sender {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((IpAddr::from(from), 0)))
        .unwrap();
    let stream = socket.connect(to).await.expect("connect to the proxy");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// What a client saw.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
    took: Duration,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The request headers the echo endpoint saw.
    fn echoed(&self) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("echo body is JSON ({e}): {self:?}"));
        v["headers"].clone()
    }
}

/// Sends `GET path` with `headers` on `sender` (10 s bound).
async fn get(sender: &mut Sender, path: &str, headers: &[(&str, &str)]) -> Reply {
    sender.ready().await.expect("connection ready");
    let mut req = http::Request::get(path).header("host", "inbound");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let started = Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_request(req.body(Empty::new()).unwrap()),
    )
    .await
    .expect("response within 10 s")
    .expect("response");
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        took,
    }
}

/// One request on a fresh connection from `from`.
async fn get_once(from: [u8; 4], to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = connect(from, to).await;
    get(&mut s, path, headers).await
}

/// `GET /v1/tiers` as JSON.
async fn tiers(proxy: &Proxy) -> serde_json::Value {
    let admin = proxy.admin;
    let (status, body) = blocking(move || admin_get(admin, "/v1/tiers"))
        .await
        .expect("admin answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("GET /v1/tiers is JSON")
}

/// One tier's entry in `/v1/tiers`.
fn tier<'a>(view: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    view["tiers"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no tier {name} in {view:#}"))
}

/// The value of `name{labels}` in `/metrics`, each `(key, value)` label required.
async fn metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let admin = proxy.admin;
    let (_, body) = blocking(move || admin_get(admin, "/metrics")).await?;
    body.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Requests and work (µs) in every minute of `GET /v1/series`: what the forecasts read.
async fn series_total(proxy: &Proxy) -> (u64, u64) {
    let admin = proxy.admin;
    let (_, body) = blocking(move || admin_get(admin, "/v1/series"))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sum = |k: &str| -> u64 {
        v["minutes"].as_array().map_or(0, |ms| {
            ms.iter().filter_map(|m| m["total"][k].as_u64()).sum()
        })
    };
    (sum("requests"), sum("work_us"))
}

/// A `POST /echo` (batch, in the overflow tests) on a keep-alive connection; must be 200.
async fn post_echo(s: &mut Sender) {
    s.ready().await.unwrap();
    let req = http::Request::post("/echo")
        .header("host", "inbound")
        .body(Empty::new())
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
}

async fn decisions(proxy: &Proxy, tier: &str, decision: &str, reason: &str) -> f64 {
    let labels = [("tier", tier), ("decision", decision), ("reason", reason)];
    metric(proxy, "prescale_admission_decisions_total", &labels)
        .await
        .unwrap_or(0.0)
}

// === spoof-proof classification ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_tier_header_is_ignored_and_stripped_unless_the_peer_is_trusted() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let policies = "policies:\n  tiers:\n    trusted_sources: [\"127.0.0.2\"]\n    default: standard\n    list:\n      - { name: critical, priority: 0, share: 0.5, sheddable: false, match: { path_prefix: [\"/checkout\"] } }\n      - { name: standard, priority: 1 }\n  sources:\n    identities:\n      app-a: { tier: critical }\n";
    let proxy = start(mesh(admin, listen, upstream.addr, "", policies), admin).await;
    let claim = [("x-prescale-tier", "critical")];

    // An untrusted client claims `critical` on an ordinary path: it is `standard`, and
    // the service behind us never sees the claim.
    let r = get_once(UNTRUSTED, listen, "/search", &claim).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.echoed().get("x-prescale-tier").is_none(), "{r:?}");
    let view = tiers(&proxy).await;
    assert_eq!(tier(&view, "standard")["admitted"], 1, "{view:#}");
    assert_eq!(tier(&view, "critical")["admitted"], 0, "{view:#}");

    // The rules still apply to it: /checkout is critical, and the header is still gone.
    let r = get_once(UNTRUSTED, listen, "/checkout/42", &claim).await;
    assert!(r.echoed().get("x-prescale-tier").is_none(), "{r:?}");
    assert_eq!(tier(&tiers(&proxy).await, "critical")["admitted"], 1);

    // The same claim from the trusted peer is honoured and forwarded as it came.
    let r = get_once(TRUSTED, listen, "/search", &claim).await;
    assert_eq!(r.echoed()["x-prescale-tier"], "critical", "{r:?}");
    let view = tiers(&proxy).await;
    assert_eq!(tier(&view, "critical")["admitted"], 2, "{view:#}");
    assert_eq!(tier(&view, "standard")["admitted"], 1, "{view:#}");

    // A source identity header is a claim too: `app-a` is critical only when a trusted
    // peer vouches for it.
    let app = [("x-source", "app-a")];
    get_once(UNTRUSTED, listen, "/search", &app).await;
    assert_eq!(tier(&tiers(&proxy).await, "standard")["admitted"], 2);
    get_once(TRUSTED, listen, "/search", &app).await;
    assert_eq!(tier(&tiers(&proxy).await, "critical")["admitted"], 3);
}

// === priority shedding under overload ===

/// Critical (two clients, guaranteed half of a limit of 4) and batch (six clients)
/// against a 100 ms upstream; returns (critical replies, batch replies).
async fn overload(listen: SocketAddr) -> (Vec<Reply>, Vec<Reply>) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let critical = i < 2;
        tasks.push(tokio::spawn(async move {
            let mut s = connect(UNTRUSTED, listen).await;
            let mut out = Vec::new();
            let headers: &[(&str, &str)] = if critical {
                &[("x-test-tier", "critical")]
            } else {
                &[]
            };
            // At most 40 requests or 3 s per client.
            while out.len() < 40 && Instant::now() < deadline {
                let r = get(&mut s, "/delay/100", headers).await;
                if r.status != 200 {
                    // Honour Retry-After in spirit without stalling the test.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                out.push(r);
            }
            (critical, out)
        }));
    }
    let (mut crit, mut batch) = (Vec::new(), Vec::new());
    for t in tasks {
        let (critical, replies) = t.await.expect("client task");
        if critical {
            crit.extend(replies);
        } else {
            batch.extend(replies);
        }
    }
    (crit, batch)
}

fn overload_policies(shadow: bool) -> String {
    format!("policies:\n  shadow: {shadow}\n  tiers:\n    default: batch\n    list:\n      - {{ name: critical, priority: 0, share: 0.5, sheddable: false, match: {{ headers: {{ x-test-tier: critical }} }} }}\n      - {{ name: batch, priority: 1, share: 0.0 }}\n  admission:\n    latency_objective: 500ms\n    limit: {{ initial: 4, floor: 4, ceiling: 4 }}\n    retry_after: 2s\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_overload_batch_is_shed_with_retry_after_while_critical_is_served() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let yaml = mesh(admin, listen, upstream.addr, "", &overload_policies(false));
    let proxy = start(yaml, admin).await;

    let (crit, batch) = overload(listen).await;
    let ok = |rs: &[Reply]| rs.iter().filter(|r| r.status == 200).count();
    let shed: Vec<&Reply> = batch.iter().filter(|r| r.status == 503).collect();
    eprintln!(
        "critical {}/{} ok, batch {}/{} ok, {} shed",
        ok(&crit),
        crit.len(),
        ok(&batch),
        batch.len(),
        shed.len()
    );

    // Critical keeps (well over) 95 % success: its guarantee is never lent out.
    assert!(crit.len() >= 20, "critical sent only {}", crit.len());
    assert!(
        ok(&crit) * 100 >= crit.len() * 95,
        "critical {}/{} ok",
        ok(&crit),
        crit.len()
    );
    // Batch is shed: 503 with Retry-After and a header naming reason and tier, answered
    // at once rather than after a queue wait.
    assert!(!shed.is_empty(), "batch was never shed");
    assert_eq!(ok(&batch) + shed.len(), batch.len(), "only 200 or 503");
    for r in &shed {
        assert_eq!(r.header("retry-after"), Some("2"), "{r:?}");
        assert_eq!(
            r.header("x-prescale-shed"),
            Some("overload; tier=batch"),
            "{r:?}"
        );
        assert_eq!(r.header("x-prescale-error"), Some("shed"), "{r:?}");
    }
    let mut took: Vec<Duration> = shed.iter().map(|r| r.took).collect();
    took.sort();
    let p50 = took[took.len() / 2];
    assert!(p50 < Duration::from_millis(50), "rejection p50 {p50:?}");

    // The counters agree with what the clients saw, exactly.
    assert_eq!(
        decisions(&proxy, "batch", "rejected", "overload").await,
        shed.len() as f64
    );
    assert_eq!(
        decisions(&proxy, "batch", "admitted", "none").await,
        ok(&batch) as f64
    );
    assert_eq!(
        decisions(&proxy, "critical", "admitted", "none").await,
        ok(&crit) as f64
    );
    assert_eq!(
        decisions(&proxy, "critical", "rejected", "overload").await,
        0.0
    );
    assert_eq!(
        metric(&proxy, "prescale_admission_limit", &[("cluster", "local")]).await,
        Some(4.0)
    );
    assert_eq!(
        metric(
            &proxy,
            "prescale_local_responses_total",
            &[("listener", "inbound"), ("reason", "shed")]
        )
        .await,
        Some(shed.len() as f64)
    );
    // Everything has been released: nothing is left holding a slot.
    let view = tiers(&proxy).await;
    assert_eq!(view["clusters"][0]["inflight"], 0, "{view:#}");
    assert_eq!(tier(&view, "batch")["rejected"]["overload"], shed.len());

    // Refused requests are demand the service was offered: the series the forecasts
    // read count them, at the mean served cost (no signature is fitted this early), so
    // they hold at least served + refused requests of ≥ 100 ms each.
    let served = ok(&crit) + ok(&batch);
    let offered = (served + shed.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (requests, work_us) = loop {
        let got = series_total(&proxy).await;
        if got.0 >= offered || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        requests,
        offered,
        "served {served} + refused {}",
        shed.len()
    );
    assert!(
        work_us >= offered * 100_000,
        "work {work_us} µs for {offered} requests of >= 100 ms"
    );
    assert_eq!(
        metric(&proxy, "prescale_profiler_refused_requests_total", &[]).await,
        Some(shed.len() as f64)
    );

    // The exposition stays valid with the admission series in it.
    let admin = proxy.admin;
    let (_, body) = blocking(move || admin_get(admin, "/metrics"))
        .await
        .unwrap();
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok()
    {
        promtool_check(&body);
    }
}

// === shadow mode ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_mode_changes_nothing_on_the_wire_but_counts_the_decisions() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let yaml = mesh(admin, listen, upstream.addr, "", &overload_policies(true));
    let proxy = start(yaml, admin).await;

    let (crit, batch) = overload(listen).await;
    // Every request was served.
    for r in crit.iter().chain(&batch) {
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.header("x-prescale-shed").is_none(), "{r:?}");
    }
    // ... but the refusals enforcement would have made were counted.
    let shadow = decisions(&proxy, "batch", "shadow_rejected", "overload").await;
    assert!(shadow > 0.0, "no shadow decisions counted");
    assert_eq!(
        decisions(&proxy, "batch", "rejected", "overload").await,
        0.0
    );
    assert_eq!(
        shadow + decisions(&proxy, "batch", "admitted", "none").await,
        batch.len() as f64
    );
    let view = tiers(&proxy).await;
    assert_eq!(view["shadow"], true);
    assert_eq!(
        tier(&view, "batch")["shadow_rejected"]["overload"],
        shadow as u64
    );
}

// === per-source rate limits ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_its_rate_limit_gets_429_with_retry_after() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let policies = "policies:\n  sources:\n    rate_limit: { rps: 0.5, burst: 2 }\n";
    let proxy = start(mesh(admin, listen, upstream.addr, "", policies), admin).await;

    // A burst of two, then one every two seconds: five at once leaves three refused.
    let mut s = connect(UNTRUSTED, listen).await;
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(get(&mut s, "/echo", &[]).await);
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 429, 429, 429], "{replies:?}");
    for r in &replies[2..] {
        let wait: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((1..=2).contains(&wait), "{r:?}");
        assert_eq!(
            r.header("x-prescale-shed"),
            Some("rate_limited; tier=standard"),
            "{r:?}"
        );
        assert_eq!(r.header("x-prescale-error"), Some("rate_limited"), "{r:?}");
    }
    // Another source has its own bucket.
    assert_eq!(get_once(TRUSTED, listen, "/echo", &[]).await.status, 200);
    assert_eq!(
        decisions(&proxy, "standard", "rejected", "rate_limited").await,
        3.0
    );
    assert_eq!(decisions(&proxy, "standard", "admitted", "none").await, 3.0);
    // Refused by a rate limit, not for want of capacity: not demand to scale for. The
    // three served ones are in the series by the time it shows them; the refused never.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (requests, _) = series_total(&proxy).await;
        assert!(
            requests <= 3,
            "{requests} in the series: rate-limited ones counted"
        );
        if requests == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "served requests never in the series"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&proxy, "prescale_profiler_refused_requests_total", &[]).await,
        Some(0.0)
    );
}

// === tier routing and the /v1/tiers view ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_with_its_own_cluster_reaches_its_own_upstream() {
    let (main, reserved) = (Upstream::start().await, Upstream::start().await);
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let clusters = format!(
        "  - name: reserved\n    endpoints: [\"{}\"]\n",
        reserved.addr
    );
    let policies = "policies:\n  tiers:\n    list:\n      - { name: critical, priority: 0, share: 0.4, sheddable: false, cluster: reserved, match: { headers: { x-test-tier: critical } } }\n      - { name: standard, priority: 1, share: 0.2 }\n";
    let proxy = start(mesh(admin, listen, main.addr, &clusters, policies), admin).await;

    for _ in 0..3 {
        let r = get_once(UNTRUSTED, listen, "/echo", &[("x-test-tier", "critical")]).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!((reserved.hits(), main.hits()), (3, 0));
    let r = get_once(UNTRUSTED, listen, "/echo", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((reserved.hits(), main.hits()), (3, 1));

    // The view: settings and counts per tier, limit and occupancy per cluster.
    let view = tiers(&proxy).await;
    assert_eq!(view["route_cluster"], "local");
    assert_eq!(view["enforcing"], true);
    assert_eq!(view["enabled"], true);
    assert_eq!(view["shadow"], false);
    assert_eq!(view["header"], "x-prescale-tier");
    assert_eq!(view["preshed_level"], 0.0);
    let critical = tier(&view, "critical");
    assert_eq!(critical["cluster"], "reserved");
    assert_eq!(critical["priority"], 0);
    assert_eq!(critical["share"], 0.4);
    assert_eq!(critical["sheddable"], false);
    assert_eq!(critical["admitted"], 3);
    assert_eq!(critical["inflight"], 0);
    for key in ["overload", "rate_limited", "pre_shed"] {
        assert_eq!(critical["rejected"][key], 0, "{view:#}");
        assert_eq!(critical["shadow_rejected"][key], 0, "{view:#}");
    }
    let standard = tier(&view, "standard");
    assert!(standard["cluster"].is_null(), "{view:#}");
    assert_eq!(standard["admitted"], 1);
    let clusters = view["clusters"].as_array().expect("clusters");
    assert_eq!(clusters.len(), 2, "{view:#}");
    assert!(clusters[0]["cluster"].is_null());
    assert_eq!(clusters[1]["cluster"], "reserved");
    for c in clusters {
        for key in [
            "limit",
            "estimate",
            "inflight",
            "shadow_inflight",
            "min_rtt_ms",
        ] {
            assert!(c[key].is_number(), "{key} in {c}");
        }
    }
    assert_eq!(view["sources"]["rate_limit"], false);
    assert_eq!(
        metric(
            &proxy,
            "prescale_admission_limit",
            &[("cluster", "reserved")]
        )
        .await,
        Some(20.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_policy_the_proxy_only_counts_and_never_sheds() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let proxy = start(mesh(admin, listen, upstream.addr, "", ""), admin).await;

    // 60 at once is three times the default initial limit: all are served.
    let mut tasks = Vec::new();
    for _ in 0..60 {
        tasks.push(tokio::spawn(async move {
            get_once(UNTRUSTED, listen, "/delay/200", &[]).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let view = tiers(&proxy).await;
    assert_eq!(view["enforcing"], false, "{view:#}");
    assert_eq!(view["enabled"], false, "{view:#}");
    assert_eq!(tier(&view, "standard")["admitted"], 60);
}

// === pre-shedding ===

/// Pre-shedding refuses a share of sheddable *arrivals*: it must refuse at one request
/// in flight, under a limit of 100, where narrowing the room at the limit refused none.
/// The level is set by `preshed.min_level` (a standing level; the forecast's comes on
/// top of it), then reloaded away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preshed_level_refuses_that_share_of_batch_at_low_concurrency_and_no_critical() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let policies = |min: f64| {
        format!("policies:\n  tiers:\n    default: batch\n    list:\n      - {{ name: critical, priority: 0, share: 0.5, sheddable: false, match: {{ path_prefix: [\"/checkout\"] }} }}\n      - {{ name: batch, priority: 2 }}\n  admission:\n    limit: {{ initial: 100, floor: 100, ceiling: 100 }}\n    preshed: {{ enabled: true, min_level: {min} }}\n")
    };
    let proxy = start(
        mesh(admin, listen, upstream.addr, "", &policies(0.25)),
        admin,
    )
    .await;
    let mut conn = connect(UNTRUSTED, listen).await;

    // One request at a time, alternating: 100 batch and 100 critical.
    let (mut shed, mut critical_ok) = (Vec::new(), 0);
    for i in 0..100 {
        let r = get(&mut conn, &format!("/reports/{i}"), &[]).await;
        match r.status {
            200 => {}
            503 => shed.push(r),
            s => panic!("batch answered {s}: {r:?}"),
        }
        let r = get(&mut conn, "/checkout/cart", &[]).await;
        assert_eq!(r.status, 200, "critical is never pre-shed: {r:?}");
        critical_ok += 1;
    }
    // The level is the share of sheddable demand refused, all of it batch's here:
    // evenly spaced, so 25 of 100 (one either way if the share was re-set mid-run).
    assert!(
        (24..=26).contains(&shed.len()),
        "{} batch refused",
        shed.len()
    );
    assert_eq!(critical_ok, 100);
    for r in &shed {
        assert_eq!(
            r.header("x-prescale-shed"),
            Some("pre_shed; tier=batch"),
            "{r:?}"
        );
        assert!(r.header("retry-after").is_some(), "{r:?}");
    }
    // Refused requests never reached the upstream.
    assert_eq!(upstream.hits(), 200 - shed.len());
    let n = shed.len() as f64;
    assert_eq!(decisions(&proxy, "batch", "rejected", "pre_shed").await, n);
    assert_eq!(
        decisions(&proxy, "critical", "rejected", "pre_shed").await,
        0.0
    );
    assert_eq!(
        metric(&proxy, "prescale_preshed_level", &[]).await,
        Some(0.25)
    );
    let view = tiers(&proxy).await;
    assert_eq!(view["preshed_level"], 0.25, "{view:#}");
    assert_eq!(tier(&view, "batch")["preshed_share"], 0.25, "{view:#}");
    assert_eq!(tier(&view, "critical")["preshed_share"], 0.0, "{view:#}");

    // Reloaded without the standing level (and no forecast yet): nothing is refused.
    proxy.rewrite_config(&mesh(admin, listen, upstream.addr, "", &policies(0.0)));
    let (status, body) = blocking(move || admin_request(admin, "POST", "/reload"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let mut conn = connect(UNTRUSTED, listen).await;
    for i in 0..20 {
        let r = get(&mut conn, &format!("/reports/{i}"), &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(tiers(&proxy).await["preshed_level"], 0.0);
}

// === hot reload ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_shares_and_limits_without_a_restart() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let policies = |share: &str, limit: u32, cluster: &str| {
        format!("policies:\n  tiers:\n    list:\n      - {{ name: standard, priority: 0, share: {share}{cluster} }}\n      - {{ name: batch, priority: 1, match: {{ methods: [POST] }} }}\n  admission:\n    latency_objective: 500ms\n    limit: {{ initial: {limit}, floor: {limit}, ceiling: {limit} }}\n")
    };
    let proxy = start(
        mesh(admin, listen, upstream.addr, "", &policies("0.5", 4, "")),
        admin,
    )
    .await;
    let pid = proxy.child.id();
    assert_eq!(get_once(UNTRUSTED, listen, "/echo", &[]).await.status, 200);
    let view = tiers(&proxy).await;
    assert_eq!(tier(&view, "standard")["share"], 0.5);
    assert_eq!(view["clusters"][0]["limit"], 4);

    // New share and limit: applied on reload, counters kept.
    proxy.rewrite_config(&mesh(
        admin,
        listen,
        upstream.addr,
        "",
        &policies("0.8", 8, ""),
    ));
    let (status, body) = blocking(move || admin_request(admin, "POST", "/reload"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let view = tiers(&proxy).await;
    assert_eq!(tier(&view, "standard")["share"], 0.8, "{view:#}");
    assert_eq!(view["clusters"][0]["limit"], 8, "{view:#}");
    assert_eq!(
        tier(&view, "standard")["admitted"],
        1,
        "counters carried over"
    );
    assert_eq!(
        metric(&proxy, "prescale_admission_limit", &[("cluster", "local")]).await,
        Some(8.0)
    );
    assert_eq!(get_once(UNTRUSTED, listen, "/echo", &[]).await.status, 200);
    assert_eq!(tier(&tiers(&proxy).await, "standard")["admitted"], 2);

    // A tier routed to a cluster that does not exist: refused with its line, and the
    // running policy stays.
    let bad = mesh(
        admin,
        listen,
        upstream.addr,
        "",
        &policies("0.2", 2, ", cluster: nowhere"),
    );
    let line = bad.lines().position(|l| l.contains("nowhere")).unwrap() + 1;
    proxy.rewrite_config(&bad);
    let (status, body) = blocking(move || admin_request(admin, "POST", "/reload"))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("policies.tiers.list[0].cluster"), "{body}");
    assert!(body.contains(&format!(":{line}:")), "line {line}: {body}");
    let view = tiers(&proxy).await;
    assert_eq!(tier(&view, "standard")["share"], 0.8, "{view:#}");
    assert_eq!(view["clusters"][0]["limit"], 8);
    // Same process all along.
    assert_eq!(proxy.child.id(), pid);
    assert_eq!(get_once(UNTRUSTED, listen, "/echo", &[]).await.status, 200);
}

// === overflow and passive health ===

/// A loopback address that refuses connections: bound but never listening, so no other
/// test can take it while this one runs.
fn dead_endpoint() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(addr(0)).unwrap();
    (socket.local_addr().unwrap(), socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_cluster_that_fails_is_ejected_and_overflows_to_the_shared_one() {
    let main = Upstream::start().await;
    let (dead, _hold) = dead_endpoint();
    let half_dead = Upstream::start().await;
    let (dead2, _hold2) = dead_endpoint();
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    // `reserved` (critical's own cluster) is down and overflows to `local`; `pool`
    // (batch's) has one dead endpoint among two.
    let clusters = format!(
        "  - name: reserved\n    endpoints: [\"{dead}\"]\n    passive_health: {{ consecutive_failures: 1, ejection: 30s }}\n    overflow: local\n  - name: pool\n    endpoints: [\"{dead2}\", \"{}\"]\n    passive_health: {{ consecutive_failures: 1, ejection: 30s }}\n",
        half_dead.addr
    );
    let policies = "policies:\n  tiers:\n    list:\n      - { name: critical, priority: 0, share: 0.5, sheddable: false, cluster: reserved, match: { headers: { x-test-tier: critical } } }\n      - { name: batch, priority: 2, cluster: pool, match: { methods: [POST] } }\n      - { name: standard, priority: 1 }\n";
    let proxy = start(mesh(admin, listen, main.addr, &clusters, policies), admin).await;

    // Every critical request is served: the first finds `reserved` refusing, ejects its
    // only endpoint and is retried on `local`; the rest go to `local` directly.
    for _ in 0..5 {
        let r = get_once(UNTRUSTED, listen, "/echo", &[("x-test-tier", "critical")]).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(main.hits(), 5);
    let connect_errors = |cluster: &'static str| {
        let proxy = &proxy;
        async move {
            metric(
                proxy,
                "prescale_upstream_connect_errors_total",
                &[("cluster", cluster), ("kind", "refused")],
            )
            .await
        }
    };
    assert_eq!(connect_errors("reserved").await, Some(1.0));
    let ejections = |cluster: &'static str| {
        let proxy = &proxy;
        async move {
            metric(
                proxy,
                "prescale_upstream_ejections_total",
                &[("cluster", cluster)],
            )
            .await
        }
    };
    assert_eq!(ejections("reserved").await, Some(1.0));
    assert_eq!(
        metric(
            &proxy,
            "prescale_upstream_overflow_requests_total",
            &[("cluster", "reserved")]
        )
        .await,
        Some(5.0)
    );
    // The first was admitted on `reserved` before it failed; once it was known down,
    // the other four took their slots on `local`, where they went.
    let view = tiers(&proxy).await;
    assert_eq!(tier(&view, "critical")["overflowed"], 4, "{view:#}");

    // Batch round-robins over `pool`: the dead endpoint is tried once, then skipped.
    let mut s = connect(UNTRUSTED, listen).await;
    for _ in 0..6 {
        post_echo(&mut s).await;
    }
    assert_eq!(half_dead.hits(), 6);
    assert_eq!(connect_errors("pool").await, Some(1.0));
    assert_eq!(ejections("pool").await, Some(1.0));
    let view = tiers(&proxy).await;
    assert_eq!(tier(&view, "batch")["admitted"], 6, "{view:#}");
    assert_eq!(tier(&view, "critical")["admitted"], 5, "{view:#}");

    // A reload (here: a new drain grace) keeps the ejections: critical goes straight to
    // `local` and batch skips the dead endpoint, with no new failed connect to either.
    let yaml = mesh(admin, listen, main.addr, &clusters, policies).replacen(
        "admin:\n",
        "drain:\n  grace_period: 7s\nadmin:\n",
        1,
    );
    proxy.rewrite_config(&yaml);
    let (status, body) = blocking(move || admin_request(admin, "POST", "/reload"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let r = get_once(UNTRUSTED, listen, "/echo", &[("x-test-tier", "critical")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut s = connect(UNTRUSTED, listen).await;
    for _ in 0..2 {
        post_echo(&mut s).await;
    }
    assert_eq!((main.hits(), half_dead.hits()), (6, 8));
    assert_eq!(
        connect_errors("reserved").await,
        Some(1.0),
        "reserved tried again"
    );
    assert_eq!(
        connect_errors("pool").await,
        Some(1.0),
        "dead endpoint tried again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_tier_cluster_overflows_to_the_shared_one() {
    let (main, reserved) = (Upstream::start().await, Upstream::start().await);
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    // `reserved` is healthy but has room for two requests (a pinned limit of its own,
    // so the test does not depend on what the limiter learns); it overflows to `local`,
    // which keeps the shared settings.
    let clusters = format!(
        "  - name: reserved\n    endpoints: [\"{}\"]\n    overflow: local\n",
        reserved.addr
    );
    let policies = "policies:\n  tiers:\n    list:\n      - { name: critical, priority: 0, share: 1.0, sheddable: false, cluster: reserved, match: { headers: { x-test-tier: critical } } }\n      - { name: standard, priority: 1 }\n  admission:\n    latency_objective: 500ms\n    cluster_limits:\n      reserved: { initial: 2, floor: 2, ceiling: 2 }\n";
    let proxy = start(mesh(admin, listen, main.addr, &clusters, policies), admin).await;
    let view = tiers(&proxy).await;
    // `null` is the listener's own cluster, `local`.
    let limit_of = |name: serde_json::Value| {
        view["clusters"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["cluster"] == name))
            .map(|c| c["limit"].clone())
            .unwrap_or_else(|| panic!("no cluster {name}: {view:#}"))
    };
    assert_eq!(limit_of("reserved".into()), 2, "{view:#}");
    assert_eq!(
        limit_of(serde_json::Value::Null),
        20,
        "the shared default: {view:#}"
    );

    // Two slow critical requests hold both of reserved's slots.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                get_once(
                    UNTRUSTED,
                    listen,
                    "/delay/1500",
                    &[("x-test-tier", "critical")],
                )
                .await
            })
        })
        .collect();
    // Admitted (in flight) comes a moment before the upstream has the request: wait
    // for both, or the third request can race the second one's connect.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tier(&tiers(&proxy).await, "critical")["inflight"] != 2 || reserved.hits() != 2 {
        assert!(
            Instant::now() < deadline,
            "slow requests never both in flight at reserved ({} hits)",
            reserved.hits()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A third critical request finds reserved full: served by the shared cluster,
    // not refused.
    let r = get_once(UNTRUSTED, listen, "/echo", &[("x-test-tier", "critical")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(main.hits(), 1);
    let view = tiers(&proxy).await;
    let critical = tier(&view, "critical");
    assert_eq!(critical["overflowed"], 1, "{view:#}");
    assert_eq!(critical["rejected"]["overload"], 0, "{view:#}");
    assert_eq!(
        metric(
            &proxy,
            "prescale_admission_overflowed_total",
            &[("tier", "critical")]
        )
        .await,
        Some(1.0)
    );

    for s in slow {
        assert_eq!(s.await.unwrap().status, 200);
    }
    assert_eq!(reserved.hits(), 2);
    // Room again at home: the next one stays on reserved.
    let r = get_once(UNTRUSTED, listen, "/echo", &[("x-test-tier", "critical")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((reserved.hits(), main.hits()), (3, 1));
}
