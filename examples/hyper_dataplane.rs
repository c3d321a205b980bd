//! PROTOTYPE, not shipped: prescale's inbound request path on hyper 1.x + hyper-util +
//! tower, built only to measure (issue 19, `benches/dataplane.sh` with `HYPER=…`)
//! whether the data plane should move off pingora.
//!
//! ```text
//! cargo build --release --example hyper_dataplane
//! target/release/examples/hyper_dataplane --config deploy/examples/sidecar.yaml
//! ```
//!
//! What it is: the first inbound listener of a prescale config (HTTP/1.1 keep-alive and
//! h2c prior knowledge on the same port, hyper-util's auto server), on one
//! current-thread tokio runtime per worker thread (no work stealing; `--threads`,
//! default 1; `--reuseport` gives each its own listening socket; `--runtime multi` one
//! work-stealing runtime instead), forwarding to the first endpoint of that listener's
//! cluster over a per-thread keep-alive pool of hyper's own HTTP/1.1 connections
//! (`--upstream pool`, the default; `--upstream legacy`: hyper-util's legacy client, as
//! the first measurement had it), with the
//! project's own code on the path, not a re-implementation: tier classification and
//! admission (`TierPolicy::admit_parts`, i.e. `prescale-policies`' classify and
//! try_acquire, queueing tiers waiting for their ticket, the permit released with its
//! latency and outcome when the response ends), the profiler hooks
//! (`Profiling::arrive`, `complete` and `shed`, with the real profiler thread draining
//! the bounded queue, fitting signatures and feeding the forecaster), and
//! `x-forwarded-for` / `x-forwarded-proto`. Refusals are answered as prescale answers
//! them (503 or 429, `retry-after`, `x-prescale-shed`).
//!
//! What it is not: a data plane. It has no TLS or mTLS, no outbound listener or
//! original destination, one endpoint (no load balancing, retries, passive health or
//! overflow), no request limits (header size, body size, timeouts other than hyper's
//! header read timeout), no slowloris or h2 flood defences beyond hyper's defaults, no
//! metrics, admin API, drain or reload, and it answers an upstream failure with a bare
//! 502. `tests/hyper_prototype.rs` keeps it building and forwarding.
#![forbid(unsafe_code)]

use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderName, HeaderValue, HOST};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prescale_policies::{Permit, RejectReason};
use prescale_profiler::sample::Completion;
use prescale_proxy::anomalies::Anomalies;
use prescale_proxy::clock::Clock;
use prescale_proxy::config::Direction;
use prescale_proxy::forecasting::Forecasting;
use prescale_proxy::metrics::LocalReason;
use prescale_proxy::profiling::{Profiling, RequestProfile};
use prescale_proxy::routes::Snapshot;
use prescale_proxy::tiers::{self, TierPolicy, Verdict};
use prescale_proxy::MeshConfig;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// With `--features mimalloc`, mimalloc instead of glibc's malloc, as `src/main.rs`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// A prescale config: its first inbound listener, that listener's cluster (first
    /// endpoint), `policies` and `profiler` are used; the rest is ignored.
    #[arg(long)]
    config: PathBuf,
    /// Worker threads: current-thread runtimes (or the multi-thread runtime's workers).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// `current`: one current-thread runtime per worker thread, each with its own
    /// connections and upstream pool (no work stealing); `multi`: one multi-thread
    /// (work-stealing) runtime with `--threads` workers and one shared pool.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Current)]
    runtime: RuntimeKind,
    /// Each current-thread worker listens on its own `SO_REUSEPORT` socket (the kernel
    /// spreads connections) instead of all accepting on one shared socket.
    #[arg(long)]
    reuseport: bool,
    /// `pool`: a per-thread pool of hyper's own HTTP/1.1 connections (`SendRequest`),
    /// a connection back in the pool when its response body ends; `legacy`:
    /// hyper-util's legacy `Client`.
    #[arg(long, value_enum, default_value_t = UpstreamKind::Pool)]
    upstream: UpstreamKind,
    /// h2 server: initial stream and connection window, bytes (hyper's default 1 MiB).
    #[arg(long)]
    h2_window: Option<u32>,
    /// h2 server: SETTINGS_MAX_CONCURRENT_STREAMS (hyper's default 200).
    #[arg(long)]
    h2_max_streams: Option<u32>,
    /// h2 server: SETTINGS_MAX_FRAME_SIZE, bytes (hyper's default 16 KiB).
    #[arg(long)]
    h2_max_frame: Option<u32>,
    /// h2 server: the most bytes buffered per stream for sending (hyper's default 400 KiB).
    #[arg(long)]
    h2_send_buf: Option<usize>,
    /// h2 server: BDP-based adaptive flow-control windows (hyper's default: off).
    #[arg(long)]
    h2_adaptive: bool,
    /// HTTP/1.1, both sides: vectored writes (`true`, hyper's default with a socket) or
    /// head and body flattened into one buffer (`false`).
    #[arg(long)]
    writev: Option<bool>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RuntimeKind {
    Current,
    Multi,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum UpstreamKind {
    Pool,
    Legacy,
}

/// What every request needs, shared by the threads. Leaked once at start: it lives as
/// long as the process, and a `&'static` costs no reference count per request.
struct Shared {
    /// `http://host:port` of the upstream, prefixed to each request's path (legacy client).
    upstream: String,
    /// `host:port` of the upstream, what the pool connects to.
    endpoint: String,
    pool_size: usize,
    tiers: Option<Arc<TierPolicy>>,
    profiling: Arc<Profiling>,
    clock: Clock,
    args: Args,
}

/// The tower service of one downstream connection; cloned per request by
/// `TowerToHyperService`, so it holds only references and a copy of the peer.
#[derive(Clone)]
struct Proxy {
    shared: &'static Shared,
    upstream: Upstream,
    peer: IpAddr,
}

/// How requests reach the upstream.
#[derive(Clone)]
enum Upstream {
    Pool(&'static H1Pool),
    Legacy(&'static Client<HttpConnector, Incoming>),
}

/// Idle HTTP/1.1 connections to the upstream of one worker (one runtime). The lock is
/// uncontended with current-thread workers; it is there so the service stays `Send`.
/// Unlike the legacy client it never retries: a request sent on a pooled connection
/// the upstream closes at that moment is answered 502 (a data plane would retry it).
struct H1Pool {
    endpoint: &'static str,
    max_idle: usize,
    builder: http1::Builder,
    idle: Mutex<Vec<http1::SendRequest<Incoming>>>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Tracked>, Infallible>> + Send>>;

/// The response body: the upstream's, or a local answer; when it is dropped (written
/// out, or the client left) the admission permit is released and the profiler gets
/// its sample, as pingora's `logging` hook does.
struct Tracked {
    inner: Inner,
    sent: u64,
    done: Option<Done>,
    /// The pooled upstream connection the body comes from: back to its pool when the
    /// body has been read to its end, closed otherwise.
    conn: Option<(&'static H1Pool, http1::SendRequest<Incoming>)>,
}

enum Inner {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

/// What ends with the response.
struct Done {
    shared: &'static Shared,
    start: Instant,
    status: u16,
    permit: Option<(Permit, Instant, Duration)>,
    profile: Option<RequestProfile>,
    /// Answered 502 because the upstream could not be reached or failed.
    upstream_failed: bool,
    ended: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // Logs as the prescale binary has them (stderr, `RUST_LOG`, default warn). A
    // subscriber also matters for cost: without one, the `log` feature of `tracing`
    // (turned on by kube-client) makes every span h2 opens per frame go to `Span::log`.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cfg = MeshConfig::load(&args.config)?;
    let inbound = cfg
        .listeners
        .iter()
        .find(|l| l.direction == Direction::Inbound)
        .ok_or("the config has no inbound listener")?;
    let cluster = inbound
        .cluster
        .as_deref()
        .and_then(|c| cfg.cluster(c))
        .ok_or("the inbound listener has no cluster")?;
    let endpoint = cluster
        .endpoints
        .first()
        .ok_or("the inbound cluster has no endpoint")?;

    let clock = Clock::system();
    let snapshot = Snapshot::build(&cfg, 1, &clock)?;
    let anomalies = Anomalies::start(&cfg.profiler.anomalies, &cfg.anomalies, Vec::new(), None);
    let forecasting =
        Forecasting::spawn(cfg.profiler.forecast.clone(), cfg.policies.scaling.clone())?;
    let profiling = Profiling::new(&cfg.profiler, clock.clone());
    profiling.spawn(cfg.profiler.clone(), forecasting, anomalies)?;
    let threads = args.threads.max(1);
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        upstream: format!("http://{endpoint}"),
        endpoint: endpoint.clone(),
        pool_size: cluster.pool_size,
        tiers: snapshot.tiers.clone(),
        profiling,
        clock,
        args,
    }));
    let address = inbound.address;
    let listener = if shared.args.reuseport {
        None
    } else {
        let l = std::net::TcpListener::bind(address)?;
        l.set_nonblocking(true)?;
        Some(l)
    };
    eprintln!(
        "hyper_dataplane: listening on {address} -> {}, {threads} thread(s), tiers {}",
        shared.upstream,
        if shared.tiers.is_some() { "on" } else { "off" }
    );
    if let RuntimeKind::Multi = shared.args.runtime {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let listener = bind(address, listener, false)?;
            serve(listener, shared).await
        })?;
        return Ok(());
    }
    let mut workers = Vec::new();
    for i in 0..threads {
        let listener = listener.as_ref().map(|l| l.try_clone()).transpose()?;
        workers.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker(address, listener, shared))?,
        );
    }
    for w in workers {
        if let Ok(Err(e)) = w.join() {
            eprintln!("hyper_dataplane: worker failed: {e}");
        }
    }
    Ok(())
}

/// One worker: a current-thread runtime, its own upstream pool, its own connections.
fn worker(
    address: std::net::SocketAddr,
    listener: Option<std::net::TcpListener>,
    shared: &'static Shared,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = bind(address, listener, true)?;
        serve(listener, shared).await
    })
}

/// The shared listening socket, or (`--reuseport`, none shared) this worker's own.
fn bind(
    address: std::net::SocketAddr,
    shared: Option<std::net::TcpListener>,
    reuseport: bool,
) -> std::io::Result<tokio::net::TcpListener> {
    match shared {
        Some(l) => tokio::net::TcpListener::from_std(l),
        None => {
            let socket = if address.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(reuseport)?;
            socket.bind(address)?;
            socket.listen(4096)
        }
    }
}

/// Accepts and serves connections on the current runtime, with one upstream pool.
async fn serve(listener: tokio::net::TcpListener, shared: &'static Shared) -> std::io::Result<()> {
    let args = &shared.args;
    let upstream = match args.upstream {
        UpstreamKind::Legacy => {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            // Lives as long as its worker, which is as long as the process.
            Upstream::Legacy(Box::leak(Box::new(
                Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(shared.pool_size)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_timer(TokioTimer::new())
                    .build(connector),
            )))
        }
        UpstreamKind::Pool => {
            let mut builder = http1::Builder::new();
            if let Some(v) = args.writev {
                builder.writev(v);
            }
            // Lives as long as its worker, which is as long as the process.
            Upstream::Pool(Box::leak(Box::new(H1Pool {
                endpoint: &shared.endpoint,
                max_idle: shared.pool_size,
                builder,
                idle: Mutex::new(Vec::with_capacity(shared.pool_size)),
            })))
        }
    };
    let mut server = auto::Builder::new(TokioExecutor::new());
    {
        let mut h1 = server.http1();
        h1.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(60));
        if let Some(v) = args.writev {
            h1.writev(v);
        }
    }
    {
        let mut h2 = server.http2();
        h2.timer(TokioTimer::new())
            .adaptive_window(args.h2_adaptive);
        if let Some(w) = args.h2_window {
            h2.initial_stream_window_size(w)
                .initial_connection_window_size(w);
        }
        if let Some(n) = args.h2_max_streams {
            h2.max_concurrent_streams(n);
        }
        if let Some(n) = args.h2_max_frame {
            h2.max_frame_size(n);
        }
        if let Some(n) = args.h2_send_buf {
            h2.max_send_buf_size(n);
        }
    }
    let server = Arc::new(server);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors and the like: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(Proxy {
            shared,
            upstream: upstream.clone(),
            peer: peer.ip(),
        });
        let server = server.clone();
        tokio::spawn(async move {
            let _ = server.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// The upstream could not be reached or failed before its response head: a 502.
struct UpstreamFailed;

// === impl H1Pool ===

impl H1Pool {
    /// An idle connection ready for a request, or a new one.
    async fn checkout(&'static self) -> Result<http1::SendRequest<Incoming>, UpstreamFailed> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(mut conn) = idle else { break };
            // Its last response has been read, but the connection's task may not have
            // seen that yet; an error here is a connection the upstream closed.
            if !conn.is_closed() && conn.ready().await.is_ok() {
                return Ok(conn);
            }
        }
        self.connect().await
    }

    async fn connect(&'static self) -> Result<http1::SendRequest<Incoming>, UpstreamFailed> {
        let tcp = tokio::net::TcpStream::connect(self.endpoint)
            .await
            .map_err(|_| UpstreamFailed)?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = self
            .builder
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|_| UpstreamFailed)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Back to the pool after its response has been read to the end.
    fn put(&self, conn: http1::SendRequest<Incoming>) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}

// === impl Proxy ===

impl tower::Service<Request<Incoming>> for Proxy {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> BoxFuture {
        let me = self.clone();
        Box::pin(async move { Ok(me.forward(req).await) })
    }
}

impl Proxy {
    async fn forward(self, req: Request<Incoming>) -> Response<Tracked> {
        let start = Instant::now();
        let shared = self.shared;
        let (mut parts, body) = req.into_parts();
        let mut done = Done {
            shared,
            start,
            status: 0,
            permit: None,
            profile: shared.profiling.arrive(&parts),
            upstream_failed: false,
            ended: false,
        };
        if let Some(policy) = &shared.tiers {
            let cost = done
                .profile
                .as_ref()
                .and_then(RequestProfile::guess)
                .and_then(|sig| shared.profiling.expected_service_time(sig));
            let (mut verdict, source) = policy.admit_parts(&mut parts, None, Some(self.peer), cost);
            if let Some(p) = &mut done.profile {
                p.set_source(source);
            }
            loop {
                match verdict {
                    Verdict::Wait(ticket) => verdict = policy.wait(ticket).await,
                    Verdict::Admit { tier, permit, .. } => {
                        if let Some(p) = &mut done.profile {
                            p.set_tier(u8::try_from(tier.index()).unwrap_or(u8::MAX));
                        }
                        done.permit = Some((permit, Instant::now(), Duration::ZERO));
                        break;
                    }
                    Verdict::Reject(r) => {
                        if let Some(p) = done.profile.take() {
                            let demand =
                                matches!(r.reason, RejectReason::Overload | RejectReason::PreShed);
                            shared.profiling.shed(p, demand);
                        }
                        let status = r.status();
                        let reason = r.reason.as_str();
                        let tier = policy.tier_name(r.tier);
                        let body = Bytes::from(format!("{status} {reason}: tier {tier}\n"));
                        let mut resp = local(status, body, done);
                        let h = resp.headers_mut();
                        h.insert("retry-after", HeaderValue::from(r.retry_after_secs));
                        let error = if status == 429 {
                            "rate_limited"
                        } else {
                            "shed"
                        };
                        h.insert("x-prescale-error", HeaderValue::from_static(error));
                        if let Ok(v) = HeaderValue::try_from(format!("{reason}; tier={tier}")) {
                            h.insert("x-prescale-shed", v);
                        }
                        return resp;
                    }
                }
            }
        }
        // h2c requests carry their authority in the URI, not in a Host header.
        if !parts.headers.contains_key(HOST) {
            if let Some(v) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(HOST, v);
            }
        }
        forwarded(&mut parts.headers, self.peer);
        parts.version = Version::HTTP_11;
        let (upstream, conn) = match &self.upstream {
            Upstream::Pool(pool) => {
                // Route: the request's own path and query, in origin form (an h2c
                // request's URI is absolute); the connection decides the upstream.
                parts.uri = parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .map_or_else(|| Uri::from_static("/"), Uri::from);
                match pool.checkout().await {
                    Ok(mut conn) => {
                        let sent = conn.send_request(Request::from_parts(parts, body)).await;
                        (sent.map_err(|_| UpstreamFailed), Some((*pool, conn)))
                    }
                    Err(e) => (Err(e), None),
                }
            }
            Upstream::Legacy(client) => {
                // Route: the upstream's address before the request's own path and query.
                let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let Ok(uri) = Uri::try_from(format!("{}{target}", shared.upstream)) else {
                    return local(400, Bytes::from_static(b"400 bad request target\n"), done);
                };
                parts.uri = uri;
                let sent = client.request(Request::from_parts(parts, body)).await;
                (sent.map_err(|_| UpstreamFailed), None)
            }
        };
        match upstream {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                done.status = parts.status.as_u16();
                if let Some((_, admitted, latency)) = &mut done.permit {
                    *latency = admitted.elapsed();
                }
                Response::from_parts(
                    parts,
                    Tracked {
                        inner: Inner::Upstream(body),
                        sent: 0,
                        done: Some(done),
                        conn,
                    },
                )
            }
            Err(UpstreamFailed) => {
                done.upstream_failed = true;
                local(502, Bytes::from_static(b"502 upstream failed\n"), done)
            }
        }
    }
}

/// A local answer, plain text.
fn local(status: u16, body: Bytes, mut done: Done) -> Response<Tracked> {
    done.status = status;
    if let Some((_, admitted, latency)) = &mut done.permit {
        *latency = admitted.elapsed();
    }
    let len = body.len();
    let mut resp = Response::new(Tracked {
        inner: Inner::Local(Some(body)),
        sent: 0,
        done: Some(done),
        conn: None,
    });
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("content-length", HeaderValue::from(len));
    resp
}

/// Appends the client address to `x-forwarded-for` (written from a stack buffer, as
/// `proxy/src/service/forwarded.rs` does) and sets `x-forwarded-proto: http`.
fn forwarded(headers: &mut http::HeaderMap, ip: IpAddr) {
    const FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    let mut buf = [0u8; 45];
    let mut cursor = std::io::Cursor::new(buf.as_mut_slice());
    if write!(cursor, "{}", ip.to_canonical()).is_ok() {
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        let ip = buf.get(..len).unwrap_or_default();
        let value = match headers.get(&FOR) {
            None => HeaderValue::from_bytes(ip).ok(),
            Some(old) => {
                let mut v = old.as_bytes().to_vec();
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip);
                HeaderValue::from_bytes(&v).ok()
            }
        };
        if let Some(v) = value {
            headers.insert(FOR, v);
        }
    }
    headers.insert(PROTO, HeaderValue::from_static("http"));
}

// === impl Tracked ===

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = match &mut self.inner {
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
            Inner::Local(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(d) = &mut self.done {
                    d.ended = true;
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Local(body) => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Local(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Local(None) => SizeHint::with_exact(0),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let complete = self.is_end_stream() || self.done.as_ref().is_some_and(|d| d.ended);
        if let Some((pool, conn)) = self.conn.take() {
            if complete {
                pool.put(conn);
            }
        }
        let Some(done) = self.done.take() else { return };
        let shared = done.shared;
        let client_gone = !complete;
        if let Some((permit, _, latency)) = done.permit {
            let local = done.upstream_failed.then_some(LocalReason::UpstreamConnect);
            let outcome = tiers::outcome(done.status, local, client_gone);
            permit.release(latency, outcome, shared.clock.now_micros());
        }
        if let Some(p) = done.profile {
            let completion = Completion {
                request_bytes: 0,
                response_bytes: self.sent,
                service_time_us: u64::try_from(
                    shared.clock.series(done.start.elapsed()).as_micros(),
                )
                .unwrap_or(u64::MAX),
                status: done.status,
                fanout: 0,
            };
            shared.profiling.complete(p, completion);
        }
    }
}
