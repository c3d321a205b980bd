//! Upstream faults through the real binary: an upstream that resets before or in the
//! middle of a response, half-closes, answers bytes that are not HTTP, drips past the
//! read timeout, and endpoints that flap up and down. Each fault gets the right local
//! answer (`x-prescale-error`), over HTTP/1.1 and h2 downstream, and a burst of them
//! leaves no connection, fd or thread behind in the proxy.
//!
//! Covered in tests/errors.rs and not repeated: refused connections (502), an empty
//! cluster (503), a slow upstream (504), a FIN mid-body or mid-head.

#[path = "support/procfs.rs"]
mod procfs;
mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The tests take turns: each measures latencies and counts fds, which another's load
/// on the same two cores would skew.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn start(yaml: String, admin: SocketAddr) -> Proxy {
    tokio::task::spawn_blocking(move || Proxy::start(&yaml, admin))
        .await
        .unwrap()
}

/// Reads one request head; returns its path (None if the peer went away first).
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    Some(head.split(' ').nth(1).unwrap_or("/").to_string())
}

/// Closes with RST instead of FIN (SO_LINGER 0).
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

/// A hand-written HTTP/1.1 upstream with one fault per path:
/// - `/ok`: a proper keep-alive answer;
/// - `/rst-before`: reads the request, then resets the connection;
/// - `/half-close`: reads the request, then shuts its write side (FIN) and waits;
/// - `/garbage`: answers bytes that are not HTTP;
/// - `/rst-mid`: a head promising 100 000 bytes, 1000 of them, then a reset;
/// - `/drip-head`: half a status line, then silence longer than the read timeout;
/// - `/drip-body`: a head and one body byte, then silence longer than the read timeout.
async fn faulty_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                while let Some(path) = read_head(&mut s).await {
                    match path.as_str() {
                        "/ok" => {
                            let r = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                            if r.is_err() {
                                return;
                            }
                            continue;
                        }
                        "/rst-before" => reset(s),
                        "/half-close" => {
                            let _ = s.shutdown().await;
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        "/garbage" => {
                            let _ = s
                                .write_all(b"\x16\x03\x01\x02\x00garbage, not HTTP\r\n\r\n\x00\xff")
                                .await;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        "/rst-mid" => {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
                                .await;
                            let _ = s.write_all(&[b'x'; 1000]).await;
                            let _ = s.flush().await;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            reset(s);
                        }
                        "/drip-head" => {
                            let _ = s.write_all(b"HTTP/1.1 200").await;
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                        }
                        "/drip-body" => {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nx")
                                .await;
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                        }
                        _ => {}
                    }
                    return;
                }
            });
        }
    });
    (addr, task)
}

/// How one request through the proxy ended.
#[derive(Debug, Clone)]
struct Outcome {
    status: u16,
    reason: Option<String>,
    /// Body bytes received and whether the body completed.
    body: usize,
    complete: bool,
    error: Option<String>,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn clients() -> [(&'static str, HttpClient); 2] {
    [
        ("h1", Client::builder(TokioExecutor::new()).build_http()),
        (
            "h2",
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        ),
    ]
}

async fn get(c: &HttpClient, url: String) -> Outcome {
    let fut = async {
        let req = http::Request::get(&url).body(Empty::new()).unwrap();
        let resp = match c.request(req).await {
            Ok(r) => r,
            Err(e) => {
                return Outcome {
                    status: 0,
                    reason: None,
                    body: 0,
                    complete: false,
                    error: Some(format!("{e:?}")),
                }
            }
        };
        let status = resp.status().as_u16();
        let reason = resp
            .headers()
            .get("x-prescale-error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = resp.into_body();
        let mut n = 0;
        loop {
            match body.frame().await {
                None => {
                    return Outcome {
                        status,
                        reason,
                        body: n,
                        complete: true,
                        error: None,
                    }
                }
                Some(Ok(f)) => n += f.data_ref().map_or(0, |d| d.len()),
                Some(Err(e)) => {
                    return Outcome {
                        status,
                        reason,
                        body: n,
                        complete: false,
                        error: Some(e.to_string()),
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no end within 10 s"))
}

/// What each fault must look like to the client.
fn check(path: &str, proto: &str, o: &Outcome) {
    let reason = o.reason.as_deref().unwrap_or("");
    let ok = match path {
        "/ok" => o.status == 200 && o.complete && o.body == 2,
        "/rst-before" => {
            o.status == 502 && ["upstream_reset", "upstream_protocol"].contains(&reason)
        }
        "/half-close" => o.status == 502 && reason == "upstream_reset",
        "/garbage" => o.status == 502 && reason == "upstream_protocol",
        "/drip-head" => o.status == 504 && reason == "upstream_timeout",
        // Too late for an error status: the client must see the truncation.
        "/rst-mid" => o.status == 200 && o.error.is_some() && o.body < 100_000,
        "/drip-body" => o.status == 200 && o.error.is_some() && o.body < 10,
        _ => false,
    };
    assert!(ok, "{proto} {path}: {o:?}");
}

const FAULTS: [&str; 6] = [
    "/rst-before",
    "/half-close",
    "/garbage",
    "/rst-mid",
    "/drip-head",
    "/drip-body",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_fault_gets_its_answer_and_a_burst_leaks_nothing() {
    let _turn = TURN.lock().await;
    let (up, task) = faulty_upstream().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: faulty}}\nclusters:\n  - {{name: faulty, endpoints: [\"{up}\"], connect_retries: 0, timeouts: {{read: 500ms}}}}\n"
    );
    let mut proxy = start(cfg, admin).await;
    let pid = proxy.child.id();
    let url = |p: &str| format!("http://{listen}{p}");

    // Each fault once per protocol, checked one by one.
    for (proto, c) in clients() {
        for path in std::iter::once("/ok").chain(FAULTS) {
            let o = get(&c, url(path)).await;
            check(path, proto, &o);
            eprintln!("{proto} {path}: {o:?}");
        }
    }

    // Warm up so the baseline has the runtime's steady state, then a burst of 300
    // faulty requests, 60 at a time, both protocols.
    for (_, c) in clients() {
        for _ in 0..20 {
            check("/ok", "warm", &get(&c, url("/ok")).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds_before, threads_before, rss_before) =
        (procfs::fds(pid), procfs::threads(pid), procfs::rss_kib(pid));
    let t = Instant::now();
    let mut by_path: BTreeMap<&str, usize> = BTreeMap::new();
    for _round in 0..5 {
        let mut batch = Vec::new();
        for path in FAULTS {
            for _ in 0..5 {
                for (proto, c) in clients() {
                    let u = url(path);
                    batch.push((path, proto, tokio::spawn(async move { get(&c, u).await })));
                }
            }
        }
        for (path, proto, h) in batch {
            let o = h.await.unwrap();
            check(path, proto, &o);
            *by_path.entry(path).or_default() += 1;
        }
    }
    let burst = t.elapsed();
    let fds = procfs::settle(Duration::from_secs(5), fds_before + 4, || procfs::fds(pid)).await;
    let threads = procfs::threads(pid);
    let rss = procfs::rss_kib(pid);
    eprintln!(
        "300 faulty requests in {burst:?} ({by_path:?}); fds {fds_before} -> {fds}, threads \
         {threads_before} -> {threads}, RSS {rss_before} -> {rss} KiB"
    );
    assert_eq!(by_path.values().sum::<usize>(), 300);
    assert!(
        fds <= fds_before + 4,
        "fds {fds_before} before, {fds} after"
    );
    assert!(
        threads <= threads_before + 2,
        "threads {threads_before} -> {threads}"
    );
    assert!(
        rss < rss_before + 32 * 1024,
        "RSS {rss_before} -> {rss} KiB"
    );
    assert_eq!(
        proxy.metric("prescale_requests_in_flight", "listener=\"inbound\""),
        Some(0.0)
    );
    // Still healthy, both protocols.
    for (proto, c) in clients() {
        check("/ok", proto, &get(&c, url("/ok")).await);
    }
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "{}",
        proxy.logs()
    );
    task.abort();
}

// === flapping endpoints ===========================================================================

/// An endpoint on a fixed port that is up (answering `/x` with 200, keep-alive) for
/// `up`, then down (listener closed, open connections reset) for `down`, until stopped.
struct Flapper {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Flapper {
    async fn start(up: Duration, down: Duration) -> Self {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut flips = 0;
            // Bounded by `stop` and by 200 flips.
            while !s.load(Ordering::Relaxed) && flips < 200 {
                let Ok(listener) = TcpListener::bind(addr).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let mut conns = tokio::task::JoinSet::new();
                let until = tokio::time::Instant::now() + up;
                loop {
                    tokio::select! {
                        a = listener.accept() => {
                            let Ok((mut c, _)) = a else { continue };
                            let h = h.clone();
                            conns.spawn(async move {
                                while let Some(path) = read_head(&mut c).await {
                                    h.fetch_add(1, Ordering::SeqCst);
                                    let body = format!("flapper {path}");
                                    let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                                    if c.write_all(resp.as_bytes()).await.is_err() {
                                        return;
                                    }
                                }
                            });
                        }
                        _ = tokio::time::sleep_until(until) => break,
                    }
                }
                drop(listener);
                conns.abort_all();
                flips += 1;
                tokio::time::sleep(down).await;
            }
            flips
        });
        Self {
            addr,
            hits,
            stop,
            task,
        }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flapping_endpoints_are_ejected_and_clients_barely_notice() {
    let _turn = TURN.lock().await;
    let good = Upstream::start().await;
    let flap = Flapper::start(Duration::from_millis(700), Duration::from_millis(700)).await;
    let alone = Flapper::start(Duration::from_millis(500), Duration::from_millis(500)).await;
    let (admin, both, single) = (addr(free_port()), addr(free_port()), addr(free_port()));
    let health = "passive_health: {consecutive_failures: 2, ejection: 500ms, max_ejection: 2s}";
    let cfg = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: both, direction: inbound, address: \"{both}\", cluster: pair}}\n  - {{name: single, direction: inbound, address: \"{single}\", cluster: alone}}\nclusters:\n  - {{name: pair, endpoints: [\"{}\", \"{}\"], {health}, timeouts: {{connect: 500ms, read: 2s}}}}\n  - {{name: alone, endpoints: [\"{}\"], connect_retries: 0, {health}, timeouts: {{connect: 500ms, read: 2s}}}}\n",
        good.addr, flap.addr, alone.addr
    );
    let proxy = start(cfg, admin).await;
    let pid = proxy.child.id();
    let fds_before = procfs::fds(pid);

    // 6 s of traffic, 4 clients per listener, both protocols.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (listener, target) in [("both", both), ("single", single)] {
        for (i, (_, c)) in clients().into_iter().chain(clients()).enumerate() {
            tasks.push((
                listener,
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    let mut n = 0;
                    while t.elapsed() < Duration::from_secs(6) && n < 5000 {
                        let s = Instant::now();
                        let o = get(&c, format!("http://{target}/x/{i}/{n}")).await;
                        out.push((o, s.elapsed()));
                        n += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    out
                }),
            ));
        }
    }
    let mut results: BTreeMap<&str, Vec<(Outcome, Duration)>> = BTreeMap::new();
    for (listener, h) in tasks {
        results
            .entry(listener)
            .or_default()
            .extend(h.await.unwrap());
    }
    let flap_hits = flap.hits.load(Ordering::SeqCst);
    let (flips, alone_flips) = (flap.finish().await, alone.finish().await);

    // Two endpoints, one flapping: connect failures go to the other endpoint, and the
    // flapper is ejected, so it serves less than the good one.
    let pair = &results["both"];
    let failed: Vec<_> = pair.iter().filter(|(o, _)| o.status != 200).collect();
    let slowest = pair.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let ejections = proxy
        .metric("prescale_upstream_ejections_total", "cluster=\"pair\"")
        .unwrap_or(0.0);
    let good_hits = good.hits();
    eprintln!(
        "pair: {} requests, {} not 200, slowest {slowest:?}; good served {good_hits}, flapper \
         {flap_hits} over {flips} flips; ejections {ejections}",
        pair.len(),
        failed.len()
    );
    assert!(pair.len() >= 100, "only {} requests", pair.len());
    // A request already sent on a connection the flapper then reset is not retried
    // (it may not be idempotent): allow a few of those, nothing else.
    assert!(
        failed.len() * 50 <= pair.len(),
        "more than 2% failed: {failed:?}"
    );
    for (o, _) in &failed {
        assert!(
            o.status == 502 && o.reason.as_deref() == Some("upstream_reset"),
            "{o:?}"
        );
    }
    assert!(ejections >= 1.0, "the flapping endpoint was never ejected");
    assert!(
        flap_hits < good_hits,
        "good {good_hits}, flapper {flap_hits}"
    );
    assert!(slowest < Duration::from_secs(3), "slowest {slowest:?}");

    // One flapping endpoint alone: while it is down the answer is a quick 502
    // upstream_connect (no retry configured), while up a 200; never a hang.
    let single = &results["single"];
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (o, d) in single {
        let kind = format!("{} {}", o.status, o.reason.as_deref().unwrap_or("-"));
        assert!(
            matches!(
                kind.as_str(),
                "200 -" | "502 upstream_connect" | "502 upstream_reset"
            ),
            "{o:?}"
        );
        assert!(*d < Duration::from_secs(3), "{o:?} took {d:?}");
        *kinds.entry(kind).or_default() += 1;
    }
    eprintln!("single: {kinds:?} over {alone_flips} flips");
    assert!(kinds.get("200 -").copied().unwrap_or(0) > 0, "{kinds:?}");
    assert!(
        kinds.get("502 upstream_connect").copied().unwrap_or(0) > 0,
        "{kinds:?}"
    );

    // Nothing left behind: pooled connections to the flappers died with them.
    let bound = fds_before + 16;
    let fds = procfs::settle(Duration::from_secs(5), bound, || procfs::fds(pid)).await;
    assert!(fds <= bound, "fds {fds_before} before, {fds} after");
}
