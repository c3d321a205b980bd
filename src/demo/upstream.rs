//! The embedded sample services: a shop (`app`) whose endpoints differ in cost, size and
//! fanout, and the `payments` service its checkout calls through the sidecar.
//!
//! Shop endpoints (the sidecar's inbound listener forwards to them), each burning a
//! known amount of CPU ([`CPU_COST`]) and then waiting out the rest of its service time:
//! - `GET /api/items/{id}`: cheap, ~2 ms (0.2 ms of CPU), a small JSON document;
//! - `GET /api/search?q=…`: medium, ~20 ms (2 ms of CPU), a ~24 KiB JSON answer;
//! - `POST /api/checkout`: expensive, ~60 ms (8 ms of CPU), makes 2–3 calls to
//!   `payments.internal` through the sidecar's outbound listener, propagating
//!   `traceparent`;
//! - `GET /static/app.js`: fast, a 192 KiB body (no CPU burnt on purpose);
//! - `POST /reports/{id}`: a batch export, ~15 ms (4 ms of CPU; the example config's
//!   `batch` tier).
//!
//! The shop runs in a process of its own (`prescale demo-app`, see `app`), so the
//! sidecar's `resources.source: process` reads its CPU and nothing else; payments
//! (`/v1/authorize`, `/v1/capture`, `/v1/risk`: ~8 ms each, no CPU burnt) runs inside
//! the demo.

use super::DemoError;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The authority the checkout uses for payments; the sidecar routes it by name.
pub const PAYMENTS_AUTHORITY: &str = "payments.internal";

/// CPU each shop endpoint burns per request (ms of thread CPU time), by the route the
/// profiler names it with: what the cost model should learn.
pub const CPU_COST: [(&str, f64); 5] = [
    ("/api/items/{id}", 0.2),
    ("/api/search", 2.0),
    ("/api/checkout", 8.0),
    ("/static/app.js", 0.0),
    ("/reports/{id}", 4.0),
];

/// The CPU burnt per request by the endpoint behind `route`, ms (None: not a shop route).
pub fn cpu_cost_ms(route: &str) -> Option<f64> {
    let base = |r: &str| r.split(['{', '?']).next().unwrap_or(r).to_string();
    CPU_COST
        .iter()
        .find(|(r, _)| route.starts_with(&base(r)) || base(route) == base(r))
        .map(|(_, ms)| *ms)
}

fn cost_of(route: &str) -> Duration {
    Duration::from_secs_f64(cpu_cost_ms(route).unwrap_or(0.0) / 1000.0)
}

type Resp = Response<Full<Bytes>>;
type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A sample service running until dropped.
pub struct Service {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

/// What the shop needs to serve a request.
struct App {
    /// The sidecar's outbound listener: every call to another service goes through it.
    outbound: SocketAddr,
    client: HttpClient,
    static_js: Bytes,
    rng: Jitter,
}

async fn bind(what: &'static str) -> Result<(TcpListener, SocketAddr), DemoError> {
    let l = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| DemoError::io(format!("binding the {what} service"), e))?;
    let addr = l
        .local_addr()
        .map_err(|e| DemoError::io(format!("{what} service address"), e))?;
    Ok((l, addr))
}

// === impl Service ===

impl Service {
    /// Binds the shop on loopback and starts serving. `outbound` is where it sends its
    /// payments calls (the sidecar's outbound listener).
    pub async fn shop(outbound: SocketAddr) -> Result<Self, DemoError> {
        let (listener, addr) = bind("sample").await?;
        let shop = Arc::new(App {
            outbound,
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http(),
            static_js: Bytes::from(static_js(192 * 1024)),
            rng: Jitter::new(1),
        });
        let task = tokio::spawn(serve(listener, move |req| {
            let shop = shop.clone();
            async move { shop.handle(req).await }
        }));
        Ok(Self { addr, task })
    }

    /// Binds the payments service on loopback and starts serving.
    pub async fn payments() -> Result<Self, DemoError> {
        let (listener, addr) = bind("payments").await?;
        let rng = Arc::new(Jitter::new(2));
        let task = tokio::spawn(serve(listener, move |req| {
            let rng = rng.clone();
            async move { payments_handle(req, &rng).await }
        }));
        Ok(Self { addr, task })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// This thread's time on CPU by the scheduler's count (`/proc/thread-self/schedstat`,
/// ns), None where the kernel does not give it.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = s.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Spins until this thread has spent `cpu` on a CPU (real CPU time, not wall time: on
/// a busy machine the spin is descheduled and runs longer), bounded by 20 times `cpu`
/// of wall time. Without the scheduler's count it spins `cpu` of wall time.
pub fn burn(cpu: Duration) {
    if cpu.is_zero() {
        return;
    }
    let started = Instant::now();
    let limit = cpu * 20;
    let Some(before) = thread_cpu() else {
        while started.elapsed() < cpu {
            std::hint::spin_loop();
        }
        return;
    };
    let mut x = 0u64;
    loop {
        // About 50 µs of work between two reads of the counter.
        let chunk = Instant::now();
        while chunk.elapsed() < Duration::from_micros(50) {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        let spent = thread_cpu().map_or(cpu, |now| now.saturating_sub(before));
        if spent >= cpu || started.elapsed() >= limit {
            return;
        }
    }
}

/// Burns `route`'s CPU on a blocking thread (not on the runtime's workers).
async fn burn_for(route: &str) {
    let cpu = cost_of(route);
    if !cpu.is_zero() {
        let _ = tokio::task::spawn_blocking(move || burn(cpu)).await;
    }
}

/// Accepts connections (HTTP/1.1 and h2c prior knowledge) until aborted.
async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

// === impl App ===

impl App {
    async fn handle(&self, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET, p) if p.starts_with("/api/items/") => {
                let id = p.trim_start_matches("/api/items/");
                burn_for("/api/items/{id}").await;
                self.rng.sleep_around(2).await;
                json(
                    StatusCode::OK,
                    format!(
                        r#"{{"id":"{id}","name":"item {id}","price_cents":1999,"stock":12,"tags":["demo","sample"],"description":"{}"}}"#,
                        "a".repeat(256)
                    ),
                )
            }
            (&Method::GET, "/api/search") => {
                let q = req
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("q=")))
                    .unwrap_or("")
                    .to_string();
                burn_for("/api/search").await;
                self.rng.sleep_around(18).await;
                let hits: Vec<String> = (0..120)
                    .map(|i| {
                        format!(r#"{{"id":{i},"title":"{q} result {i}","score":0.{i:03},"snippet":"{}"}}"#, "s".repeat(120))
                    })
                    .collect();
                json(
                    StatusCode::OK,
                    format!(r#"{{"q":"{q}","hits":[{}]}}"#, hits.join(",")),
                )
            }
            (&Method::POST, "/api/checkout") => self.checkout(req).await,
            // The batch tier (the example config's `POST /reports/{id}`): an export job.
            (&Method::POST, p) if p.starts_with("/reports/") => {
                let _ = req.into_body().collect().await;
                burn_for("/reports/{id}").await;
                self.rng.sleep_around(11).await;
                json(StatusCode::ACCEPTED, r#"{"report":"queued"}"#.into())
            }
            (&Method::GET, "/static/app.js") => {
                let mut resp = Response::new(Full::new(self.static_js.clone()));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/javascript"),
                );
                resp
            }
            _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into()),
        }
    }

    /// Reads the order, then authorises and captures the payment (and sometimes runs a
    /// risk check) on the payments service, through the sidecar, in sequence.
    async fn checkout(&self, req: Request<Incoming>) -> Resp {
        let traceparent = req.headers().get("traceparent").cloned();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return json(StatusCode::BAD_REQUEST, r#"{"error":"body"}"#.into()),
        };
        // Our own work: pricing, stock (CPU), the order row (a wait).
        burn_for("/api/checkout").await;
        self.rng.sleep_around(22).await;
        let mut calls = vec!["/v1/authorize", "/v1/capture"];
        if body.len() % 3 == 0 {
            calls.insert(0, "/v1/risk");
        }
        for call in calls {
            if let Err(status) = self.call_payments(call, traceparent.as_ref()).await {
                return json(
                    StatusCode::BAD_GATEWAY,
                    format!(r#"{{"error":"payments {call} answered {status}"}}"#),
                );
            }
        }
        json(
            StatusCode::OK,
            r#"{"order":"ok","status":"paid","eta_days":2}"#.into(),
        )
    }

    async fn call_payments(
        &self,
        path: &str,
        traceparent: Option<&HeaderValue>,
    ) -> Result<(), String> {
        let mut builder = Request::post(format!("http://{}{path}", self.outbound))
            .header(header::HOST, PAYMENTS_AUTHORITY)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(tp) = traceparent {
            builder = builder.header("traceparent", tp);
        }
        let req = builder
            .body(Full::new(Bytes::from_static(br#"{"amount_cents":1999}"#)))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(5), self.client.request(req))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the answer so the connection goes back to the pool.
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(status.to_string())
        }
    }
}

async fn payments_handle(req: Request<Incoming>, rng: &Jitter) -> Resp {
    let path = req.uri().path().to_string();
    let _ = req.into_body().collect().await;
    match path.as_str() {
        "/v1/authorize" | "/v1/capture" | "/v1/risk" => {
            rng.sleep_around(8).await;
            json(StatusCode::OK, r#"{"ok":true}"#.into())
        }
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into()),
    }
}

fn json(status: StatusCode, body: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A bundle-like body of `len` bytes.
fn static_js(len: usize) -> Vec<u8> {
    let line = b"function demo(){return 'prescale sample bundle';}\n";
    line.iter().copied().cycle().take(len).collect()
}

/// Service-time jitter without a dependency: splitmix64 over a shared counter.
pub struct Jitter(AtomicU64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// A uniform value in [0, 1).
    pub fn next_f64(&self) -> f64 {
        let x = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Sleeps `ms` ± 25 %.
    async fn sleep_around(&self, ms: u64) {
        let factor = 0.75 + 0.5 * self.next_f64();
        tokio::time::sleep(Duration::from_secs_f64(ms as f64 * factor / 1000.0)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_uniform_enough() {
        let j = Jitter::new(7);
        let xs: Vec<f64> = (0..10_000).map(|_| j.next_f64()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
