//! The profiler through the real binary: signatures and fanout from real traffic, the
//! embedded store across `kill -9` and corruption, and bounded memory and labels under
//! hostile path cardinality.
//!
//! The local service is a hyper "app" written here (its `/fan` endpoint calls another
//! service through the sidecar's outbound listener, propagating `traceparent`); the
//! other services are `support::Upstream`. Clients are hyper, curl and h2load.

mod support;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;
use tokio::net::TcpListener;

const LIGHT_BYTES: usize = 100;
const HEAVY_BYTES: usize = 200_000;
const HEAVY_SLEEP: Duration = Duration::from_millis(30);
const FAN_BYTES: usize = 1_000;
/// Calls `/fan` makes to the downstream service for each request it serves.
const FAN_CALLS: usize = 3;

/// The two load-heavy tests take turns: on two shared cores, one's load would skew the
/// other's service times (and so its signatures).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn start(yaml: String, admin: SocketAddr) -> Proxy {
    blocking(move || Proxy::start(&yaml, admin)).await
}

async fn admin_json(proxy: &Proxy, path: &'static str) -> Value {
    let a = proxy.admin;
    let (status, body) = blocking(move || admin_get(a, path))
        .await
        .unwrap_or_else(|| panic!("GET {path} failed:\n{}", proxy.logs()));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
}

async fn metrics_body(proxy: &Proxy) -> String {
    let a = proxy.admin;
    let (status, body) = blocking(move || admin_get(a, "/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200);
    body
}

/// Polls `f` every 100 ms until it returns `Some` or `limit` passes.
async fn poll<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Total requests over the minute buckets of `GET /v1/series`.
async fn series_total(proxy: &Proxy) -> u64 {
    let v = admin_json(proxy, "/v1/series").await;
    v["minutes"]
        .as_array()
        .expect("minutes is an array")
        .iter()
        .map(|b| b["total"]["requests"].as_u64().expect("total.requests"))
        .sum()
}

/// The distinct `signature="..."` label values over all `prescale_signature_*` series.
fn signature_labels(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("prescale_signature_"))
        .filter_map(|l| {
            let rest = l.split_once("signature=\"")?.1;
            Some(rest.split_once('"')?.0.to_string())
        })
        .collect()
}

/// Σ of a metric over all its series (any labels).
fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A unique, valid W3C `traceparent`: per-process seed plus a counter, never all zeros.
fn traceparent() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let seed = now_ms() ^ (u64::from(std::process::id()) << 40);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("00-{seed:016x}{n:016x}-{n:016x}-01")
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(16)
        .build_http()
}

/// One GET; returns (status, body length). Bounded at 10 s.
async fn get(c: &HttpClient, url: &str, host: Option<&str>, tp: &str) -> (u16, usize) {
    let mut req = Request::get(url).header("traceparent", tp);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let req = req.body(Empty::new()).unwrap();
    let fut = async {
        let resp = c.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body.len()))
    };
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("GET {url}: {e}"),
        Err(_) => panic!("GET {url}: timed out"),
    }
}

// --- the app: the local service behind the inbound listener ---------------------------------

struct App {
    addr: SocketAddr,
    /// Requests served, by path.
    served: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `/light` answers 100 B at once; `/heavy` sleeps 30 ms and answers 200 KB; `/fan`
/// makes exactly three sequential calls to `downstream.test` through `outbound`,
/// propagating the `traceparent` it received, then answers 1 KB.
async fn start_app(outbound: SocketAddr) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served: Arc<std::sync::Mutex<BTreeMap<String, usize>>> = Arc::default();
    let counts = served.clone();
    let c = client();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (counts, c) = (counts.clone(), c.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (counts, c) = (counts.clone(), c.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        *counts.lock().unwrap().entry(path.clone()).or_default() += 1;
                        let (status, len) = match path.as_str() {
                            "/light" => (StatusCode::OK, LIGHT_BYTES),
                            "/heavy" => {
                                tokio::time::sleep(HEAVY_SLEEP).await;
                                (StatusCode::OK, HEAVY_BYTES)
                            }
                            "/fan" => {
                                let tp = req
                                    .headers()
                                    .get("traceparent")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string();
                                let mut ok = !tp.is_empty();
                                for i in 0..FAN_CALLS {
                                    let url = format!("http://{outbound}/down/{i}");
                                    let (s, _) = get(&c, &url, Some("downstream.test"), &tp).await;
                                    ok &= s == 200;
                                }
                                if ok {
                                    (StatusCode::OK, FAN_BYTES)
                                } else {
                                    (StatusCode::BAD_GATEWAY, 0)
                                }
                            }
                            _ => (StatusCode::NOT_FOUND, 0),
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(vec![b'a'; len])));
                        *resp.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    App { addr, served, task }
}

impl App {
    fn served(&self, path: &str) -> usize {
        self.served.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// Sends `per_endpoint` requests to each of `/light`, `/heavy` and `/fan` through the
/// inbound listener, interleaved, 6 at a time, each with its own traceparent; every
/// one must answer 200 with its full body.
async fn drive(inbound: SocketAddr, per_endpoint: usize) {
    let c = client();
    let plan: Vec<(&str, usize)> = (0..per_endpoint)
        .flat_map(|_| {
            [
                ("/light", LIGHT_BYTES),
                ("/heavy", HEAVY_BYTES),
                ("/fan", FAN_BYTES),
            ]
        })
        .collect();
    futures_util::stream::iter(plan)
        .map(|(path, len)| {
            let c = c.clone();
            async move {
                let url = format!("http://{inbound}{path}");
                let (status, got) = get(&c, &url, None, &traceparent()).await;
                assert_eq!((status, got), (200, len), "GET {path}");
            }
        })
        .buffer_unordered(6)
        .collect::<Vec<()>>()
        .await;
}

const PROFILER_FAST: &str =
    "profiler: {refit_interval: 5s, min_samples: 100, tick: 200ms, store: {path: series.redb, flush_interval: 1s}}";

// === 1. signatures and fanout =============================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_separate_endpoints_and_count_fanout_exactly() {
    let _turn = HEAVY.lock().await;
    let downstream = Upstream::start().await;
    let (admin, inbound, outbound) = (addr(free_port()), addr(free_port()), addr(free_port()));
    let app = start_app(outbound).await;
    let cfg = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{inbound}\", cluster: app}}\n  - {{name: outbound, direction: outbound, address: \"{outbound}\", routes: [{{authority: downstream.test, cluster: downstream}}]}}\nclusters:\n  - {{name: app, endpoints: [\"{}\"]}}\n  - {{name: downstream, endpoints: [\"{}\"]}}\n{PROFILER_FAST}\n",
        app.addr, downstream.addr
    );
    let proxy = start(cfg, admin).await;

    // Round 1: enough samples for a fit.
    let t = Instant::now();
    drive(inbound, 200).await;
    let round1 = t.elapsed();
    poll(Duration::from_secs(20), || async {
        let v = admin_json(&proxy, "/v1/signatures").await;
        v["refits"].as_u64().filter(|r| *r >= 1)
    })
    .await
    .unwrap_or_else(|| panic!("no refit within 20 s:\n{}", proxy.logs()));
    // The first fit saw only the first ~100 requests. Round 2 goes right after the refit
    // that follows a fit on all of round 1, so the stats window (this refit interval and
    // the one before) holds all of round 2, classified by a model fitted on round 1.
    let settled = poll(Duration::from_secs(15), || async {
        let v = admin_json(&proxy, "/v1/signatures").await;
        v["refits"].as_u64().filter(|r| *r >= 2)
    })
    .await
    .expect("refits continue every refit_interval");
    poll(Duration::from_secs(15), || async {
        let v = admin_json(&proxy, "/v1/signatures").await;
        v["refits"].as_u64().filter(|r| *r > settled)
    })
    .await
    .expect("refits continue every refit_interval");
    let t = Instant::now();
    drive(inbound, 100).await;
    let round2 = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = admin_json(&proxy, "/v1/signatures").await;
    let sigs = view["signatures"].as_array().expect("signatures").clone();
    assert!(sigs.len() >= 3, "want >= 3 signatures: {view:#}");

    // Every signature's routes are one endpoint: no signature mixes kinds of work.
    let mut by_route: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for s in &sigs {
        let routes: Vec<&str> = s["top_routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["route"].as_str().unwrap())
            .collect();
        if let Some(top) = routes.first() {
            assert!(
                routes.iter().all(|r| r == top),
                "signature {} mixes routes {routes:?}: {view:#}",
                s["id"]
            );
            by_route.entry(top.to_string()).or_default().push(s);
        }
    }
    let requests = |route: &str| -> u64 {
        by_route
            .get(route)
            .unwrap_or_else(|| panic!("no signature whose top route is {route}: {view:#}"))
            .iter()
            .map(|s| s["requests"].as_u64().unwrap())
            .sum()
    };
    for route in ["/light", "/heavy", "/fan"] {
        // At least round 2's 100 requests of each endpoint are in the window.
        assert!(requests(route) >= 100, "{route}: {view:#}");
    }
    let f = |s: &Value, k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{k}: {s}"));
    for s in &by_route["/fan"] {
        let fanout = f(s, "mean_fanout");
        assert!(
            (fanout - 3.0).abs() <= 0.01,
            "/fan mean_fanout {fanout}: {s:#}"
        );
    }
    for route in ["/light", "/heavy"] {
        for s in &by_route[route] {
            assert_eq!(f(s, "mean_fanout"), 0.0, "{route}: {s:#}");
        }
    }
    let (light, heavy, fan) = (
        by_route["/light"][0],
        by_route["/heavy"][0],
        by_route["/fan"][0],
    );
    let (light_bytes, heavy_bytes) = (
        f(light, "mean_response_bytes"),
        f(heavy, "mean_response_bytes"),
    );
    assert!(
        heavy_bytes >= 10.0 * light_bytes && heavy_bytes >= HEAVY_BYTES as f64,
        "heavy {heavy_bytes} B vs light {light_bytes} B"
    );
    let p50 = |s: &Value| s["service_time_seconds"]["p50"].as_f64().unwrap();
    assert!(
        p50(heavy) > p50(light) && p50(heavy) >= HEAVY_SLEEP.as_secs_f64(),
        "p50 heavy {} vs light {}",
        p50(heavy),
        p50(light)
    );

    // The downstream saw exactly the calls /fan made, and only those.
    let fans = app.served("/fan");
    assert_eq!(fans, 300);
    assert_eq!(downstream.hits(), FAN_CALLS * fans);

    // Metrics: every inbound request counted under some signature, none dropped,
    // label values bounded, and the exposition is valid.
    let sent = 900.0;
    let metrics = poll(Duration::from_secs(5), || async {
        let m = metrics_body(&proxy).await;
        (metric_sum(&m, "prescale_signature_requests_total") == sent).then_some(m)
    })
    .await
    .unwrap_or_else(|| panic!("prescale_signature_requests_total never summed to {sent}"));
    assert!(metric_sum(&metrics, "prescale_signature_refits_total") >= 1.0);
    assert_eq!(
        metric_value(&metrics, "prescale_profiler_dropped_samples_total", ""),
        Some(0.0)
    );
    let labels = signature_labels(&metrics);
    assert!(!labels.is_empty() && labels.len() <= 17, "{labels:?}");
    promtool_check(&metrics);

    eprintln!(
        "signatures: {} (refits {}), round 1 {round1:?}, round 2 {round2:?}; fanout {}; \
         bytes light {light_bytes:.0} heavy {heavy_bytes:.0} fan {:.0}; p50 light {:.4}s \
         heavy {:.4}s fan {:.4}s; requests light {} heavy {} fan {}; labels {labels:?}",
        sigs.len(),
        view["refits"],
        f(fan, "mean_fanout"),
        f(fan, "mean_response_bytes"),
        p50(light),
        p50(heavy),
        p50(fan),
        requests("/light"),
        requests("/heavy"),
        requests("/fan"),
    );
}

// === 2 and 3. the store ======================================================================

/// One inbound listener in front of `upstream`; the store at an absolute path so a
/// restarted process (in a fresh config dir) finds the same file.
fn store_config(
    admin: SocketAddr,
    listen: SocketAddr,
    upstream: SocketAddr,
    store: &Path,
) -> String {
    format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: local}}\nclusters:\n  - {{name: local, endpoints: [\"{upstream}\"]}}\nprofiler: {{refit_interval: 5s, min_samples: 100, tick: 200ms, store: {{path: \"{}\", flush_interval: 1s}}}}\n",
        store.display()
    )
}

/// `n` sequential GETs through `listen`, each must answer 200.
async fn send(listen: SocketAddr, n: usize) {
    let c = client();
    for i in 0..n {
        let url = format!("http://{listen}/hello/{i}");
        let (status, _) = get(&c, &url, None, &traceparent()).await;
        assert_eq!(status, 200, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_kill_9_up_to_the_last_flush() {
    const N: u64 = 300;
    let upstream = Upstream::start().await;
    let keep = tempfile::tempdir().unwrap();
    let store = keep.path().join("series.redb");
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let mut proxy = start(store_config(admin, listen, upstream.addr, &store), admin).await;

    send(listen, N as usize).await;
    poll(Duration::from_secs(10), || async {
        (series_total(&proxy).await == N).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("/v1/series never showed {N} requests"));
    // More than two flush intervals with no traffic: the last flush holds everything.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(store.exists());

    proxy.child.kill().expect("SIGKILL");
    let status = proxy.child.wait().unwrap();
    assert_eq!(
        status.code(),
        None,
        "killed by a signal, not exited: {status}"
    );
    drop(proxy);

    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let proxy = start(store_config(admin, listen, upstream.addr, &store), admin).await;
    // No traffic since the restart: whatever /v1/series shows came from the store.
    let restored = poll(Duration::from_secs(5), || async {
        let total = series_total(&proxy).await;
        (total > 0).then_some(total)
    })
    .await
    .unwrap_or_else(|| panic!("no history restored:\n{}", proxy.logs()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(restored, N);
    assert_eq!(series_total(&proxy).await, N);
    assert!(proxy.logs().contains("store opened"), "{}", proxy.logs());
    // A crash is not corruption: the store was repaired in place, nothing set aside.
    let names: Vec<String> = std::fs::read_dir(keep.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["series.redb"], "{}", proxy.logs());
    let metrics = metrics_body(&proxy).await;
    assert_eq!(
        metric_value(&metrics, "prescale_store_set_aside_total", ""),
        None
    );
    // And it keeps counting on top of the history.
    send(listen, 10).await;
    poll(Duration::from_secs(5), || async {
        (series_total(&proxy).await == N + 10).then_some(())
    })
    .await
    .expect("new traffic adds to restored history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_store_is_set_aside_with_a_clear_error() {
    let upstream = Upstream::start().await;
    let keep = tempfile::tempdir().unwrap();
    let store = keep.path().join("series.redb");
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let mut proxy = start(store_config(admin, listen, upstream.addr, &store), admin).await;
    send(listen, 50).await;
    poll(Duration::from_secs(10), || async {
        (series_total(&proxy).await == 50).then_some(())
    })
    .await
    .expect("traffic in /v1/series");
    proxy.signal("TERM");
    let code = blocking(move || {
        let code = proxy.wait_exit(Duration::from_secs(15));
        (code, proxy)
    })
    .await;
    assert_eq!(code.0, Some(0), "{}", code.1.logs());
    drop(code);

    // Cut the store in half.
    let len = std::fs::metadata(&store).unwrap().len();
    assert!(len > 0);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&store)
        .unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let truncated = std::fs::read(&store).unwrap();

    let before = now_ms();
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let proxy = start(store_config(admin, listen, upstream.addr, &store), admin).await;
    // History starts empty: nothing of the broken file leaks in (a few ticks to be sure).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(series_total(&proxy).await, 0);
    let (code, out) = blocking(move || curl(&["-f", &format!("http://{listen}/after")])).await;
    assert_eq!(code, 0, "serves traffic with a broken store: {out}");

    // The unreadable file was moved aside, byte for byte, under a timestamped name.
    let aside: Vec<PathBuf> = std::fs::read_dir(keep.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("series.redb.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let aside = &aside[0];
    let stamp: u64 = aside
        .to_string_lossy()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .expect("corrupt-<millis>");
    assert!(
        (before..=now_ms()).contains(&stamp),
        "{stamp} not in [{before}, now]"
    );
    let got = std::fs::read(aside).unwrap();
    let diff = got.iter().zip(&truncated).position(|(a, b)| a != b);
    let ndiff = got.iter().zip(&truncated).filter(|(a, b)| a != b).count();
    assert!(got == truncated, "set-aside bytes differ: len {} vs truncated {} (original {len}); first diff at {diff:?}, {ndiff} bytes differ", got.len(), truncated.len());
    assert!(store.exists(), "a fresh store was started");

    let logs = proxy.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("corrupt-"))
        .unwrap_or_else(|| panic!("no set-aside warning:\n{logs}"));
    assert!(
        warning.contains("WARN")
            && warning.contains(&store.display().to_string())
            && warning.contains(&aside.display().to_string()),
        "warning must name the store and where it went: {warning}"
    );

    eprintln!(
        "store {len} B cut to {} B; warning: {warning}",
        truncated.len()
    );
    let metrics = metrics_body(&proxy).await;
    assert_eq!(
        metric_value(&metrics, "prescale_store_set_aside_total", ""),
        Some(1.0)
    );
    // It counts new traffic (the curl above included) from zero.
    send(listen, 20).await;
    poll(Duration::from_secs(5), || async {
        (series_total(&proxy).await == 21).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("series should count 21 new requests"));
}

// === 4. bounded memory and labels ===========================================================

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// A path segment of letters only (never mistaken for an id): each `i` its own route.
fn word(mut i: usize) -> String {
    let mut s = String::from("page");
    loop {
        s.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return s;
        }
    }
}

/// Runs h2load (h2c, one connection, 10 streams) over every URI in `uris` once;
/// returns the number of 2xx responses from its summary.
fn h2load(dir: &Path, name: &str, listen: SocketAddr, uris: std::ops::Range<usize>) -> u64 {
    let file = dir.join(name);
    let n = uris.len();
    let text: String = uris
        .map(|i| format!("http://{listen}/catalog/{}/detail\n", word(i)))
        .collect();
    std::fs::write(&file, text).unwrap();
    let out = Command::new("timeout")
        .args(["120", "h2load", "-c", "1", "-m", "10", "-n"])
        .arg(n.to_string())
        .arg("-i")
        .arg(&file)
        .args([
            "-H",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ])
        .output()
        .expect("h2load is installed (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "h2load: {text}");
    let done = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("h2load summary: {text}"));
    assert!(
        done.contains(&format!("{n} succeeded, 0 failed, 0 errored")),
        "{done}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("status codes: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("h2load status codes: {text}"))
}

/// Two h2load runs at once, each over its own half of `uris` (h2load replays one URI
/// list per connection, so distinct paths need one list per connection).
async fn h2load_parallel(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    uris: std::ops::Range<usize>,
) -> u64 {
    let mid = uris.start + uris.len() / 2;
    let (a, b) = (dir.to_path_buf(), dir.to_path_buf());
    let (na, nb) = (format!("{name}-a.txt"), format!("{name}-b.txt"));
    let (lo, hi) = (uris.start..mid, mid..uris.end);
    let (x, y) = tokio::join!(
        blocking(move || h2load(&a, &na, listen, lo)),
        blocking(move || h2load(&b, &nb, listen, hi)),
    );
    x + y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_labels_stay_bounded_under_distinct_paths() {
    let _turn = HEAVY.lock().await;
    // 100 000 distinct paths took 52-87 s in debug builds on 2 shared cores (1 100-1 900
    // req/s), over the ~60 s budget: 50 000 by default, `PRESCALE_TEST_PATHS` to change.
    let paths: usize = std::env::var("PRESCALE_TEST_PATHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let half = paths / 2;
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: local}}\nclusters:\n  - {{name: local, endpoints: [\"{}\"]}}\n{PROFILER_FAST}\n",
        upstream.addr
    );
    let proxy = start(cfg, admin).await;
    let pid = proxy.child.id();
    let dir = proxy.dir.path().to_path_buf();
    let start_rss = vm_rss_kib(pid);

    let t = Instant::now();
    let ok1 = h2load_parallel(&dir, "first", listen, 0..half).await;
    let first = t.elapsed();
    let mid_rss = vm_rss_kib(pid);
    let ok2 = h2load_parallel(&dir, "second", listen, half..2 * half).await;
    let total = t.elapsed();
    assert_eq!(ok1 + ok2, 2 * half as u64, "every request got a 2xx");
    assert_eq!(upstream.hits(), 2 * half);

    // Every request reached the profiler (recorded, or dropped and counted).
    let n = (2 * half) as f64;
    let metrics = poll(Duration::from_secs(10), || async {
        let m = metrics_body(&proxy).await;
        let recorded = metric_value(&m, "prescale_profiler_samples_total", "").unwrap_or(0.0);
        let dropped =
            metric_value(&m, "prescale_profiler_dropped_samples_total", "").unwrap_or(0.0);
        let classified = metric_sum(&m, "prescale_signature_requests_total");
        (recorded + dropped == n && classified == recorded).then_some(m)
    })
    .await
    .unwrap_or_else(|| panic!("profiler did not account for {n} requests"));
    let end_rss = vm_rss_kib(pid);

    assert!(
        end_rss < 128 * 1024,
        "RSS {end_rss} KiB after {n} distinct paths"
    );
    assert!(
        end_rss <= mid_rss + 32 * 1024,
        "RSS grew from {mid_rss} KiB to {end_rss} KiB over the second half"
    );
    let view = admin_json(&proxy, "/v1/signatures").await;
    let sigs = view["signatures"].as_array().unwrap();
    assert!(sigs.len() <= 8, "max_signatures is 8: {view:#}");
    let labels = signature_labels(&metrics);
    assert!(labels.len() <= 17, "{labels:?}");
    // Gauges of signatures that left the model read 0, not their last value.
    let view = admin_json(&proxy, "/v1/signatures").await;
    let current: BTreeSet<String> = view["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].to_string())
        .collect();
    let stale: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("prescale_signature_") && !l.contains("_total{"))
        .filter(|l| {
            let id = l
                .split_once("signature=\"")
                .and_then(|(_, r)| r.split_once('"'));
            id.is_some_and(|(id, _)| id != "0" && !current.contains(id))
        })
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert!(
        stale.is_empty(),
        "stale gauges of retired signatures: {stale:#?}"
    );

    eprintln!(
        "RSS start {start_rss} KiB, mid {mid_rss} KiB, end {end_rss} KiB; first half {first:?}, \
         all {total:?}; signatures {}, refits {}, labels {labels:?}",
        sigs.len(),
        view["refits"]
    );
}

/// Days of history the store holds before the sidecar starts. A daily season needs two
/// whole days in the forecaster; the profile keeps only one in memory, so this checks
/// that the forecaster is fed the store's whole retention, not the in-memory day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forecaster_learns_from_the_stores_whole_history() {
    use prescale_profiler::series::{Bucket, Cell, MINUTE_MS, UNCLASSIFIED};
    use prescale_profiler::store::Store;
    const DAYS: u64 = 3;
    let upstream = Upstream::start().await;
    let keep = tempfile::tempdir().unwrap();
    let store = keep.path().join("series.redb");
    let now = now_ms();
    let current = now - now % MINUTE_MS;
    // A strong daily cycle (busy concurrency 2..=10), the same every day.
    let minutes: Vec<Bucket> = (1..=DAYS * 1440)
        .rev()
        .map(|back| {
            let start = current - back * MINUTE_MS;
            let phase = (start % 86_400_000) as f64 / 86_400_000.0 * std::f64::consts::TAU;
            let demand = 6.0 + 4.0 * phase.sin();
            let cell = Cell {
                requests: (demand * 600.0) as u64,
                work_us: (demand * 60e6) as u64,
            };
            Bucket {
                start,
                total: cell,
                by_signature: std::collections::BTreeMap::from([(UNCLASSIFIED, cell)]),
            }
        })
        .collect();
    {
        let opened = Store::open(&store, now).unwrap();
        let refs: Vec<&Bucket> = minutes.iter().collect();
        opened.store.write(&refs, 0).unwrap();
    }
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let proxy = start(store_config(admin, listen, upstream.addr, &store), admin).await;
    let forecast = poll(Duration::from_secs(60), || async {
        let v = admin_json(&proxy, "/v1/forecast").await;
        v["series"]["total"].is_object().then_some(v)
    })
    .await
    .unwrap_or_else(|| panic!("no forecast from restored history:\n{}", proxy.logs()));
    let total = &forecast["series"]["total"];
    // One day of history cannot support a daily season; three can.
    let model = total["model"].as_str().unwrap();
    assert!(
        matches!(model, "seasonal_naive" | "seasonal_ets"),
        "model {model} from {DAYS} days of daily cycles: {total}"
    );
    // And it follows the cycle: the forecast is near the curve one step ahead.
    let at = total["points"][0]["at"].as_u64().unwrap();
    let phase = (at % 86_400_000) as f64 / 86_400_000.0 * std::f64::consts::TAU;
    let expected = 6.0 + 4.0 * phase.sin();
    let point = total["points"][0]["point"].as_f64().unwrap();
    assert!(
        (point - expected).abs() < 1.0,
        "forecast {point} vs the cycle's {expected}: {total}"
    );
}
