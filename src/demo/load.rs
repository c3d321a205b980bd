//! The built-in load generator: open-loop arrivals that follow the demo day's shape
//! at the sidecar's time scale, a fixed endpoint mix, and traced requests (each carries a `traceparent`).
//!
//! Arrivals are scheduled by integrating the target rate over small ticks, so a slow
//! answer never slows the offered load down. Work is bounded three ways: by time (the
//! run's duration), by count (at most peak rate × duration requests) and by
//! concurrency (a request that finds every in-flight slot taken is counted as failed
//! rather than queued).

use super::shape;
use super::upstream::Jitter;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// Requests in flight at once; beyond it an arrival is dropped and counted as failed.
const MAX_IN_FLIGHT: usize = 512;
/// A request that takes longer than this has failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often arrivals are scheduled.
const TICK: Duration = Duration::from_millis(5);

/// The endpoint mix, with fixed proportions (they sum to 100).
const MIX: [(Endpoint, u32); 5] = [
    (Endpoint::Item, 55),
    (Endpoint::Search, 20),
    (Endpoint::Static, 12),
    (Endpoint::Checkout, 8),
    (Endpoint::Report, 5),
];

const QUERIES: [&str; 8] = [
    "shoes", "lamp", "coffee", "bike", "desk", "kettle", "jacket", "tent",
];

#[derive(Copy, Clone, Debug)]
enum Endpoint {
    Item,
    Search,
    Static,
    Checkout,
    /// The batch tier: what pre-shedding refuses first.
    Report,
}

/// What the generator is told to do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The sidecar's inbound listener.
    pub target: SocketAddr,
    /// Requests per second at the day's peak.
    pub peak_rate: f64,
    /// How long the generator runs (wall time).
    pub duration: Duration,
    /// Series seconds per wall second (the sidecar's `--time-scale`).
    pub time_scale: f64,
    /// Where in the day (0.0 = midnight) the run starts.
    pub day_start: f64,
}

impl Plan {
    /// The point of the day (fraction, may pass 1.0) `elapsed` wall time into the run.
    pub fn day_at(&self, elapsed: Duration) -> f64 {
        self.day_start + elapsed.as_secs_f64() * self.time_scale / 86_400.0
    }
}

/// Live counters, shared with the view.
#[derive(Default)]
pub struct Stats {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    /// Non-2xx answers.
    pub http_errors: AtomicU64,
    /// Connection errors and timeouts.
    pub transport_errors: AtomicU64,
    /// Arrivals dropped because every in-flight slot was taken (counted in `sent`).
    pub dropped: AtomicU64,
    /// Requests the sidecar shed (answered with `x-prescale-shed`): its job, not a
    /// failure.
    pub shed: AtomicU64,
    /// The same per tier (the header's `tier=`).
    shed_by_tier: Mutex<BTreeMap<String, u64>>,
    /// Target rate now, in millirequests per second (an atomic float stand-in).
    offered_milli: AtomicU64,
    /// Latency of completed requests (any status), microseconds.
    latency: Mutex<Option<Histogram<u64>>>,
}

/// A point-in-time copy of [`Stats`].
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub http_errors: u64,
    pub transport_errors: u64,
    pub dropped: u64,
    pub shed: u64,
    pub shed_by_tier: BTreeMap<String, u64>,
    pub offered_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

// === impl Stats ===

impl Stats {
    pub fn new() -> Self {
        Self {
            latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).ok()),
            ..Self::default()
        }
    }

    fn record_shed(&self, tier: &str) {
        self.shed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.shed_by_tier.lock() {
            *m.entry(tier.to_string()).or_insert(0) += 1;
        }
    }

    fn record_latency(&self, took: Duration) {
        if let Ok(mut g) = self.latency.lock() {
            if let Some(h) = g.as_mut() {
                h.saturating_record(took.as_micros().clamp(1, u128::from(u64::MAX)) as u64);
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let http_errors = self.http_errors.load(Ordering::Relaxed);
        let transport_errors = self.transport_errors.load(Ordering::Relaxed);
        let dropped = self.dropped.load(Ordering::Relaxed);
        let (p50_ms, p99_ms) = self
            .latency
            .lock()
            .ok()
            .and_then(|g| {
                g.as_ref().filter(|h| !h.is_empty()).map(|h| {
                    (
                        Some(h.value_at_quantile(0.5) as f64 / 1000.0),
                        Some(h.value_at_quantile(0.99) as f64 / 1000.0),
                    )
                })
            })
            .unwrap_or((None, None));
        Snapshot {
            sent: self.sent.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: http_errors + transport_errors + dropped,
            http_errors,
            transport_errors,
            dropped,
            shed: self.shed.load(Ordering::Relaxed),
            shed_by_tier: self
                .shed_by_tier
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
            offered_rate: self.offered_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            p50_ms,
            p99_ms,
        }
    }
}

impl Snapshot {
    /// Failed requests over requests sent; 0 when nothing was sent.
    pub fn failure_ratio(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.failed as f64 / self.sent as f64
        }
    }
}

/// Runs the plan until its duration passes or `stop` turns true, then waits (bounded)
/// for requests in flight. Returns when the generator is idle.
pub async fn run(plan: Plan, stats: Arc<Stats>, mut stop: watch::Receiver<bool>) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build_http();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let rng = Arc::new(Jitter::new(0x5eed));
    let budget = (plan.peak_rate * plan.duration.as_secs_f64()).ceil() as u64;
    let start = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = start;
    let mut credit = 0.0_f64;
    let mut issued = 0u64;
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(start);
        if elapsed >= plan.duration || issued >= budget {
            break;
        }
        let rate = plan.peak_rate * shape::live_rate(plan.day_at(elapsed));
        stats
            .offered_milli
            .store((rate * 1000.0) as u64, Ordering::Relaxed);
        credit += rate * now.duration_since(last).as_secs_f64();
        last = now;
        while credit >= 1.0 && issued < budget {
            credit -= 1.0;
            issued += 1;
            seq += 1;
            stats.sent.fetch_add(1, Ordering::Relaxed);
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let req = build(plan.target, seq, &rng);
            let client = client.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let began = Instant::now();
                let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
                    let resp = client.request(req).await.map_err(|_| ())?;
                    let status = resp.status();
                    let shed = shed_tier(resp.headers());
                    // The whole body counts: latency ends with the last byte.
                    resp.into_body().collect().await.map_err(|_| ())?;
                    Ok::<_, ()>((status, shed))
                })
                .await;
                match outcome {
                    Ok(Ok((status, shed))) => {
                        stats.record_latency(began.elapsed());
                        if status.is_success() {
                            stats.ok.fetch_add(1, Ordering::Relaxed);
                        } else if let Some(tier) = shed.filter(|_| is_shed(status.as_u16())) {
                            stats.record_shed(&tier);
                        } else {
                            stats.http_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(permit);
            });
        }
    }
    stats.offered_milli.store(0, Ordering::Relaxed);
    // Every request ends within its timeout; wait for all slots to come back.
    let _ = tokio::time::timeout(
        REQUEST_TIMEOUT + Duration::from_secs(1),
        slots.acquire_many(MAX_IN_FLIGHT as u32),
    )
    .await;
}

/// One request of the mix, traced with a fresh W3C `traceparent`.
fn build(target: SocketAddr, seq: u64, rng: &Jitter) -> Request<Full<Bytes>> {
    let endpoint = pick(rng.next_f64());
    let r = rng.next_f64();
    let (method, path, body) = match endpoint {
        Endpoint::Item => (
            Method::GET,
            format!("/api/items/{}", 1 + (r * 5000.0) as u32),
            Bytes::new(),
        ),
        Endpoint::Search => {
            let q = QUERIES
                .get((r * QUERIES.len() as f64) as usize)
                .copied()
                .unwrap_or("demo");
            (
                Method::GET,
                format!("/api/search?q={q}&page=1"),
                Bytes::new(),
            )
        }
        Endpoint::Static => (Method::GET, "/static/app.js".to_string(), Bytes::new()),
        Endpoint::Checkout => {
            let items = 1 + (r * 4.0) as usize;
            let lines: Vec<String> = (0..items)
                .map(|i| format!(r#"{{"sku":"sku-{seq}-{i}","qty":1}}"#))
                .collect();
            let body = format!(r#"{{"cart":[{}],"card":"tok_demo"}}"#, lines.join(","));
            (Method::POST, "/api/checkout".to_string(), Bytes::from(body))
        }
        Endpoint::Report => (
            Method::POST,
            format!("/reports/{}", 1 + (r * 100.0) as u32),
            Bytes::from_static(br#"{"format":"csv"}"#),
        ),
    };
    let trace = format!(
        "00-{:016x}{:016x}-{:016x}-01",
        seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        (rng.next_f64() * u64::MAX as f64) as u64,
        (rng.next_f64() * u64::MAX as f64) as u64 | 1,
    );
    let len = body.len();
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{target}{path}"))
        .header(header::HOST, "shop.demo")
        .header("traceparent", trace)
        .header(header::USER_AGENT, "prescale-demo");
    if len > 0 {
        builder = builder
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, len);
    }
    let req = builder.body(Full::new(body)).unwrap_or_else(|_| {
        // Every part above is well-formed; fall back to a plain request regardless.
        let mut req = Request::new(Full::new(Bytes::new()));
        if let Ok(uri) = format!("http://{target}/api/items/1").parse() {
            *req.uri_mut() = uri;
        }
        req
    });
    req
}

/// The tier of a request the sidecar shed, from `x-prescale-shed: <reason>; tier=<tier>`.
fn shed_tier(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get("x-prescale-shed")?.to_str().ok()?;
    let tier = v.split(';').find_map(|p| p.trim().strip_prefix("tier="));
    Some(tier.unwrap_or("-").to_string())
}

/// The statuses admission sheds with (503 overload and pre-shed, 429 rate limits).
fn is_shed(status: u16) -> bool {
    matches!(status, 429 | 503)
}

/// The endpoint for a uniform draw in [0, 1).
fn pick(u: f64) -> Endpoint {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut x = u * f64::from(total);
    for (e, w) in MIX {
        if x < f64::from(w) {
            return e;
        }
        x -= f64::from(w);
    }
    Endpoint::Item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_follows_its_proportions() {
        let rng = Jitter::new(3);
        let mut counts = [0u32; 5];
        for _ in 0..20_000 {
            let i = match pick(rng.next_f64()) {
                Endpoint::Item => 0,
                Endpoint::Search => 1,
                Endpoint::Static => 2,
                Endpoint::Checkout => 3,
                Endpoint::Report => 4,
            };
            counts[i] += 1;
        }
        for (i, (_, w)) in MIX.iter().enumerate() {
            let share = f64::from(counts[i]) / 20_000.0 * 100.0;
            assert!((share - f64::from(*w)).abs() < 1.5, "{i}: {share}");
        }
    }

    #[test]
    fn sheds_are_told_by_their_header_and_name_the_tier() {
        let mut h = http::HeaderMap::new();
        assert_eq!(shed_tier(&h), None);
        h.insert("x-prescale-shed", "pre_shed; tier=batch".parse().unwrap());
        assert_eq!(shed_tier(&h).as_deref(), Some("batch"));
        assert!(is_shed(503) && is_shed(429) && !is_shed(502));
    }

    #[test]
    fn requests_are_traced_and_well_formed() {
        let rng = Jitter::new(4);
        let target: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for seq in 0..200 {
            let req = build(target, seq, &rng);
            let tp = req.headers()["traceparent"].to_str().unwrap();
            assert_eq!(tp.len(), 55, "{tp}");
            let p = req.uri().path();
            assert!(p.starts_with("/api/") || p.starts_with("/reports/") || p == "/static/app.js");
        }
    }
}
