//! The overload scenario of tests/overload.rs and examples/overload.rs (the benchmark
//! driver includes this file with `#[path]`): an upstream with a fixed concurrency
//! capacity, and an open-loop, three-tier load generator.
//!
//! **Upstream.** `slots` requests are served at once, each for `service` (a timer, so
//! a little more on a busy machine); the rest wait in the service's own FIFO queue,
//! so past capacity its latency rises by `service / slots` per queued request. It
//! measures its own service times, so capacity (`slots / mean service time`) and
//! utilisation (busy slot-time over `slots ×` wall time) come from what it did.
//!
//! **Load.** Arrivals are scheduled in advance: a seeded Poisson process, each arrival
//! given a tier by a seeded draw, independent of responses (a slow answer never delays
//! the next request: no coordinated omission). A pacer thread sleeps until each
//! scheduled start (std's nanosleep, finer than tokio's 1 ms timer) and hands it to
//! the runtime, which sends it on a keep-alive pool with a per-request timeout.
//! Latency is measured from the scheduled start (generator lag counts against the
//! target); `service` from the actual send, which is what rejection latency uses.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tiers, in priority order, as path prefixes: `/critical/…`, `/standard/…`,
/// `/batch/…`.
pub const TIERS: [&str; 3] = ["critical", "standard", "batch"];

// === the upstream ===

/// What the upstream has done so far (monotonic counters).
#[derive(Default)]
pub struct UpstreamStats {
    /// Requests served to the end of their service time.
    pub completed: AtomicU64,
    /// Sum of their service times, µs.
    pub served_us: AtomicU64,
    /// Slot-held time, µs, including requests cut short because the caller left.
    pub busy_us: AtomicU64,
    /// Requests that were waiting for a slot or being served, now and at most.
    pub waiting: AtomicU64,
    pub max_waiting: AtomicU64,
}

/// A snapshot of [`UpstreamStats`] at one instant.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamSnapshot {
    pub at: Instant,
    pub completed: u64,
    pub served_us: u64,
    pub busy_us: u64,
    pub max_waiting: u64,
}

/// An HTTP/1.1 service with `slots` concurrent slots of `service` each.
pub struct CapacityUpstream {
    pub addr: SocketAddr,
    pub slots: usize,
    pub service: Duration,
    pub stats: Arc<UpstreamStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CapacityUpstream {
    /// Binds `addr` (port 0: any) and serves on its own runtime thread, so the load
    /// generator's work does not delay its timers.
    pub fn start(addr: SocketAddr, slots: usize, service: Duration) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let stats = Arc::new(UpstreamStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("capacity-upstream".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                // Without a runtime nothing is served, and the caller sees no answers.
                if let Ok(rt) = rt {
                    rt.block_on(serve(std_listener, slots, service, st, stopped));
                }
            })?;
        Ok(Self {
            addr,
            slots,
            service,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn snapshot(&self) -> UpstreamSnapshot {
        self.stats.snapshot()
    }
}

impl UpstreamStats {
    pub fn snapshot(&self) -> UpstreamSnapshot {
        UpstreamSnapshot {
            at: Instant::now(),
            completed: self.completed.load(Relaxed),
            served_us: self.served_us.load(Relaxed),
            busy_us: self.busy_us.load(Relaxed),
            max_waiting: self.max_waiting.load(Relaxed),
        }
    }
}

impl Drop for CapacityUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Capacity and utilisation of the upstream between two snapshots.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    /// Requests per second the upstream can serve with every slot busy, from its own
    /// mean service time over the interval.
    pub rps: f64,
    /// Slot-held time over `slots ×` the interval.
    pub utilisation: f64,
    /// Mean service time, ms.
    pub service_ms: f64,
    /// Most requests waiting or in service at once, since the upstream started.
    pub max_waiting: u64,
}

pub fn capacity(slots: usize, a: &UpstreamSnapshot, b: &UpstreamSnapshot) -> Capacity {
    let n = b.completed.saturating_sub(a.completed).max(1) as f64;
    let served = b.served_us.saturating_sub(a.served_us) as f64;
    let busy = b.busy_us.saturating_sub(a.busy_us) as f64;
    let service_s = served / n / 1e6;
    let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    Capacity {
        rps: slots as f64 / service_s.max(1e-9),
        utilisation: busy / 1e6 / (slots as f64 * wall),
        service_ms: service_s * 1e3,
        max_waiting: b.max_waiting,
    }
}

async fn serve(
    listener: std::net::TcpListener,
    slots: usize,
    service: Duration,
    stats: Arc<UpstreamStats>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    // tokio's semaphore is fair: waiters are served first come, first served.
    let sem = Arc::new(tokio::sync::Semaphore::new(slots));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stopped => return,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors (e.g. thousands of queued requests whose callers left,
            // as a real service keeps them): back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (sem, stats) = (sem.clone(), stats.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let (sem, stats) = (sem.clone(), stats.clone());
                async move {
                    let path = req.uri().path().to_string();
                    if path == "/__stats" {
                        let body = format!(
                            "{{\"slots\":{slots},\"completed\":{},\"served_us\":{},\"busy_us\":{},\"max_waiting\":{}}}",
                            stats.completed.load(Relaxed),
                            stats.served_us.load(Relaxed),
                            stats.busy_us.load(Relaxed),
                            stats.max_waiting.load(Relaxed)
                        );
                        return Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )));
                    }
                    let now = stats.waiting.fetch_add(1, Relaxed) + 1;
                    stats.max_waiting.fetch_max(now, Relaxed);
                    // If the caller gives up while queued, the future is dropped: the
                    // place in the queue (or the slot) is released.
                    let _left = Leave(&stats.waiting);
                    let _slot = sem.acquire().await;
                    let held = Held(Instant::now(), &stats.busy_us);
                    tokio::time::sleep(service).await;
                    let took = u64::try_from(held.0.elapsed().as_micros()).unwrap_or(u64::MAX);
                    stats.served_us.fetch_add(took, Relaxed);
                    stats.completed.fetch_add(1, Relaxed);
                    Ok(hyper::Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Adds the time a slot was held to the counter when dropped (served or cut short).
struct Held<'a>(Instant, &'a AtomicU64);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let us = u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.1.fetch_add(us, Relaxed);
    }
}

struct Leave<'a>(&'a AtomicU64);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The upstream's stats over plain HTTP (`GET /__stats`), for a driver in another
/// process.
pub async fn remote_stats(upstream: SocketAddr) -> Option<UpstreamSnapshot> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{upstream}/__stats").parse().ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .ok()?
        .ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    let field = |k: &str| -> Option<u64> {
        let rest = text.split(&format!("\"{k}\":")).nth(1)?;
        rest.split([',', '}']).next()?.trim().parse().ok()
    };
    Some(UpstreamSnapshot {
        at: Instant::now(),
        completed: field("completed")?,
        served_us: field("served_us")?,
        busy_us: field("busy_us")?,
        max_waiting: field("max_waiting")?,
    })
}

// === the load ===

/// One phase of open-loop load.
#[derive(Clone, Debug)]
pub struct Phase {
    /// Mean arrivals per second (Poisson).
    pub rate: f64,
    pub duration: Duration,
    /// Share of arrivals per tier ([`TIERS`] order); need not sum to 1 (normalised).
    pub mix: [f64; 3],
    /// Arrivals before this offset into the phase are sent but not recorded.
    pub warmup: Duration,
}

/// What one request saw.
#[derive(Clone, Debug)]
pub struct Sample {
    pub tier: usize,
    /// Scheduled start, from the start of the phase.
    pub offset: Duration,
    /// 0: no answer within the timeout, or a connection error.
    pub status: u16,
    /// Scheduled start to end of body.
    pub latency: Duration,
    /// Actual send to end of body.
    pub service: Duration,
    /// Actual send minus scheduled start: the generator's own lateness.
    pub lag: Duration,
    pub retry_after: bool,
    /// The proxy's `x-prescale-shed` header (`<reason>; tier=<tier>`), if any.
    pub shed: Option<String>,
}

/// Runs `phase` against `base` (e.g. `http://127.0.0.1:8080`): arrivals are drawn
/// from `seed`, scheduled from now, and sent whatever the answers. Returns the
/// recorded samples (those scheduled after the warm-up).
pub async fn run_phase(base: &str, phase: &Phase, seed: u64, timeout: Duration) -> Vec<Sample> {
    let schedule = schedule(phase, seed);
    let warm = phase.warmup;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let start = Instant::now() + Duration::from_millis(20);
    let offsets: Vec<Duration> = schedule.iter().map(|(at, _)| *at).collect();
    let pacer = std::thread::spawn(move || {
        for (i, off) in offsets.into_iter().enumerate() {
            let at = start + off;
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send((i, at)).is_err() {
                return;
            }
        }
    });

    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(30))
        .build::<_, Empty<Bytes>>(http);
    let samples = Arc::new(Mutex::new(Vec::with_capacity(schedule.len())));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some((i, at)) = rx.recv().await {
        let Some(&(off, tier)) = schedule.get(i) else {
            continue;
        };
        let Some(name) = TIERS.get(tier) else {
            continue;
        };
        let Ok(uri) = format!("{base}/{name}/{i}").parse::<hyper::Uri>() else {
            continue;
        };
        let (client, samples) = (client.clone(), samples.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let res = tokio::time::timeout(timeout, async {
                let resp = client.get(uri).await?;
                let status = resp.status().as_u16();
                let retry_after = resp.headers().contains_key("retry-after");
                let shed = resp
                    .headers()
                    .get("x-prescale-shed")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                resp.into_body().collect().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, retry_after, shed))
            })
            .await;
            let done = Instant::now();
            if off < warm {
                return;
            }
            let (status, retry_after, shed) = match res {
                Ok(Ok(r)) => r,
                _ => (0, false, None),
            };
            let sample = Sample {
                tier,
                offset: off,
                status,
                latency: done.saturating_duration_since(at),
                service: done.saturating_duration_since(sent),
                lag: sent.saturating_duration_since(at),
                retry_after,
                shed,
            };
            if let Ok(mut s) = samples.lock() {
                s.push(sample);
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let _ = pacer.join();
    let out = samples.lock().map(|s| s.clone()).unwrap_or_default();
    out
}

/// Arrival offsets and tiers for `phase`, from `seed` (xorshift64*, no dependency).
pub fn schedule(phase: &Phase, seed: u64) -> Vec<(Duration, usize)> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let total: f64 = phase.mix.iter().sum::<f64>().max(1e-9);
    let mut out = Vec::new();
    let mut t = 0.0;
    let end = phase.duration.as_secs_f64();
    loop {
        t += -(1.0 - uniform()).ln() / phase.rate.max(1e-9);
        if t >= end {
            return out;
        }
        let u = uniform() * total;
        let mut acc = 0.0;
        let mut tier = TIERS.len() - 1;
        for (i, share) in phase.mix.iter().enumerate() {
            acc += share;
            if u < acc {
                tier = i;
                break;
            }
        }
        out.push((Duration::from_secs_f64(t), tier));
    }
}

// === summaries ===

/// Nearest-rank percentile of `xs` (sorted here); zero when empty.
pub fn pct(xs: &[Duration], p: f64) -> Duration {
    let mut v = xs.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// One tier's outcome in a phase.
#[derive(Clone, Debug, Default)]
pub struct TierSummary {
    pub sent: usize,
    pub ok: usize,
    /// 503 or 429 answers.
    pub rejected: usize,
    /// No answer within the timeout, connection errors, any other status.
    pub failed: usize,
    /// Latency (from the scheduled start) of successful requests.
    pub ok_latency: Vec<Duration>,
    /// Send-to-answer time of rejections.
    pub reject_service: Vec<Duration>,
    /// Rejections without `Retry-After`.
    pub reject_without_retry_after: usize,
    /// Rejections by status and `x-prescale-shed` value.
    pub reasons: std::collections::BTreeMap<String, usize>,
}

impl TierSummary {
    pub fn success(&self) -> f64 {
        self.ok as f64 / self.sent.max(1) as f64
    }
}

pub fn summarise(samples: &[Sample]) -> [TierSummary; 3] {
    let mut out: [TierSummary; 3] = Default::default();
    for s in samples {
        let Some(t) = out.get_mut(s.tier) else {
            continue;
        };
        t.sent += 1;
        match s.status {
            200..=299 => {
                t.ok += 1;
                t.ok_latency.push(s.latency);
            }
            503 | 429 => {
                t.rejected += 1;
                t.reject_service.push(s.service);
                if !s.retry_after {
                    t.reject_without_retry_after += 1;
                }
                let why = format!("{} {}", s.status, s.shed.as_deref().unwrap_or("-"));
                *t.reasons.entry(why).or_default() += 1;
            }
            _ => t.failed += 1,
        }
    }
    out
}

/// The success rate strict priority would give each tier when `capacity` req/s are
/// shared by `offered` req/s per tier: higher tiers are served in full first.
pub fn strict_priority_ideal(capacity: f64, offered: [f64; 3]) -> [f64; 3] {
    let mut left = capacity;
    let mut out = [0.0; 3];
    for (o, x) in out.iter_mut().zip(offered) {
        let served = x.min(left).max(0.0);
        *o = if x > 0.0 { served / x } else { 1.0 };
        left -= served;
    }
    out
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
