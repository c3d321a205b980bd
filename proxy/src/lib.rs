//! The prescale data plane: pingora listeners, the admin API, metrics, reload and drain.
//!
//! `run` turns a validated [`MeshConfig`] into a running sidecar. The platform clients
//! (webhook, Kubernetes, KEDA, Alertmanager, Prometheus warm start) live in
//! `prescale-control` and reach this crate only through [`ControlPlane`]'s traits;
//! decisions live in `prescale-policies` and `prescale-profiler`.
#![forbid(unsafe_code)]
// A panic here takes the service beside us down with it: outside tests, every
// fallible step must be handled (reasoned, local `allow`s where truly unreachable).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod admin;
pub mod anomalies;
#[allow(
    clippy::disallowed_methods,
    reason = "bind-deadline polling on the monotonic clock: a bounded wait at start, not time read for a decision"
)]
pub mod bound;
pub mod clock;
pub mod config;
pub mod forecasting;
pub mod guard;
pub mod health;
#[allow(
    clippy::disallowed_methods,
    reason = "drain and bind waits on the monotonic clock: bounded waits, not time read for a decision"
)]
pub mod lifecycle;
pub mod listeners;
pub mod metrics;
pub mod peer_identity;
pub mod profiling;
pub mod reload;
#[allow(
    clippy::disallowed_methods,
    reason = "CPU and memory sampling divides by the monotonic time between two reads of /proc; the samples are timestamped with the Clock"
)]
pub mod resources;
pub mod routes;
#[allow(
    clippy::disallowed_methods,
    reason = "the data path measures request latency on the monotonic clock directly (no shared handle per request); admission and health time come from the Clock"
)]
pub mod service;
pub mod signals;
pub mod tiers;
pub mod tls;

pub use config::{ConfigError, ConfigSource, MeshConfig};

use arc_swap::ArcSwap;
use forecasting::Forecasting;
use lifecycle::{DrainSignal, Lifecycle};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pingora::apps::HttpServerOptions;
use pingora::listeners::TcpSocketOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use profiling::Profiling;
use reload::Reloader;
use routes::Snapshot;
use service::Sidecar;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot bind {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Build(#[from] routes::BuildError),
    #[error("listener {0}: {1}")]
    Tls(String, tls::TlsError),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("admin runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A signal or alert sender that cannot start (e.g. an unreadable `ca_file`).
    #[error("{0}")]
    Control(#[source] std::io::Error),
}

/// The control plane's edge, built by the binary from `prescale-control`: where
/// decisions and alerts go, and where forecast history is read from at start. The
/// data plane knows these only by their traits.
pub struct ControlPlane {
    pub signals: Arc<dyn signals::DecisionSink>,
    pub alerts: Vec<Arc<dyn anomalies::AlertSink>>,
    pub warm_start: Option<Box<dyn forecasting::WarmStart>>,
    /// The reader for `resources.source: kubernetes | prometheus`.
    pub resources: Option<Box<dyn resources::ExternalSource>>,
}

/// Latency buckets for request durations, from 0.5 ms (a local hop) to 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How long listeners get to come up before the process gives up.
const BIND_DEADLINE: Duration = Duration::from_secs(10);

/// Runs the sidecar until it is drained or stopped. Returns only on a startup error;
/// otherwise the process exits from the drain path. `control` starts the control
/// plane's senders once metrics are installed (their counters register then).
pub fn run(
    source: impl Into<ConfigSource>,
    cfg: MeshConfig,
    // The one clock everything reads time from (`Clock::system()` but in a demo).
    clock: clock::Clock,
    control: impl FnOnce(&MeshConfig) -> std::io::Result<ControlPlane>,
) -> Result<(), RunError> {
    pingora::tls::install_default_crypto_provider();
    let metrics = install_metrics()?;
    let admin_socket = precheck_binds(&cfg)?;
    admin::report_exposure(&cfg.admin);

    let lifecycle = Arc::new(Lifecycle::default());
    let ControlPlane {
        signals,
        alerts,
        warm_start,
        resources: external_resources,
    } = control(&cfg).map_err(RunError::Control)?;
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::build(&cfg, 1, &clock)?));
    // Remediation and pre-shedding act on the live tier admission, handed over here.
    let live_tiers = || Some(tiers::LiveTiers::new(snapshot.clone()));
    let anomalies = anomalies::Anomalies::start(
        &cfg.profiler.anomalies,
        &cfg.anomalies,
        alerts,
        live_tiers(),
    );
    let forecasting = Forecasting::spawn_with(
        cfg.profiler.forecast.clone(),
        cfg.policies.scaling.clone(),
        signals,
        warm_start,
        anomalies.clone(),
        clock.clone(),
        live_tiers(),
    )
    .map_err(RunError::Runtime)?;
    let profiling = Profiling::new(&cfg.profiler, clock.clone());
    profiling
        .spawn(cfg.profiler.clone(), forecasting.clone(), anomalies.clone())
        .map_err(RunError::Runtime)?;
    let resources = cfg
        .resources
        .as_ref()
        .map(|r| {
            let tick = cfg.profiler.tick;
            resources::Resources::spawn(
                r,
                tick,
                &profiling,
                forecasting.clone(),
                external_resources,
            )
        })
        .transpose()
        .map_err(RunError::Runtime)?;
    let reloader = Arc::new(Reloader::new(source.into(), cfg.clone(), snapshot.clone()));

    let threads = cfg.runtime.threads();
    let mut conf = ServerConf {
        threads,
        // Each thread runs its own connections (tokio current-thread runtimes): no
        // cross-thread wakeups or task stealing per request (docs/performance.md).
        work_stealing: false,
        grace_period_seconds: Some(cfg.drain.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: cfg
            .clusters
            .iter()
            .map(|c| c.pool_size)
            .sum::<usize>()
            .max(1),
        ..ServerConf::default()
    };
    conf.max_retries = 11;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // One thread set for every listener (pingora would give each its own runtime).
    let mut listeners = listeners::Listeners::new(threads);
    for l in &cfg.listeners {
        let sidecar = Sidecar::new(
            l.name.clone(),
            l.direction,
            l.tls.is_some(),
            snapshot.clone(),
            lifecycle.clone(),
            profiling.clone(),
            clock.clone(),
        );
        let mut proxy = pingora::proxy::http_proxy(&server.configuration, sidecar);
        let mut opts = HttpServerOptions::default();
        opts.h2c = l.h2c && l.tls.is_none();
        // An h2 connection with no stream open is idle like an HTTP/1.1 keep-alive one
        // (pingora keeps it forever by default). Read at start: a reload does not move it.
        opts.h2_idle_timeout = Some(cfg.limits.keepalive_timeout);
        proxy.server_options = Some(opts);
        let guarded = guard::Guarded::new(proxy, l.name.clone(), snapshot.clone());
        let mut svc = pingora::services::listening::Service::new(l.name.clone(), guarded);
        let addr = l.address.to_string();
        // An IPv6 listener takes IPv6 only, so `[::]:P` can sit next to `0.0.0.0:P`
        // (IPv6 interception), and every connection on it has an IPv6 original
        // destination: a dual-stack socket would see IPv4 clients as mapped addresses,
        // whose SO_ORIGINAL_DST the IPv6 lookup cannot find.
        let sock_opt = l.address.is_ipv6().then(|| {
            let mut opt = TcpSocketOptions::default();
            opt.ipv6_only = Some(true);
            opt
        });
        match (&l.tls, sock_opt) {
            (Some(t), sock_opt) => {
                let settings = tls::server_config(t)
                    .and_then(|s| s.settings())
                    .map_err(|e| RunError::Tls(l.name.clone(), e))?;
                svc.add_tls_with_settings(&addr, sock_opt, settings);
            }
            (None, Some(opt)) => svc.add_tcp_with_settings(&addr, opt),
            (None, None) => svc.add_tcp(&addr),
        }
        listeners.add(svc);
    }
    server.add_service(listeners);

    spawn_admin(
        &cfg,
        admin_socket,
        metrics,
        lifecycle.clone(),
        reloader,
        profiling.clone(),
        forecasting,
        anomalies,
        resources,
    )?;

    let addrs: Vec<SocketAddr> = cfg.listeners.iter().map(|l| l.address).collect();
    let ready = lifecycle.clone();
    std::thread::spawn(move || match ready.await_bound(&addrs, BIND_DEADLINE) {
        Ok(()) => tracing::info!(listeners = ?addrs, "ready"),
        Err(addr) => {
            tracing::error!(%addr, deadline = ?BIND_DEADLINE,
                    "listener not bound by this process within the deadline; exiting");
            #[allow(
                clippy::disallowed_methods,
                reason = "pingora's Server::run has no way to stop it with an error; not yet a service with a shutdown signal"
            )]
            std::process::exit(1);
        }
    });

    let drain = lifecycle.clone();
    let exit_profiling = profiling.clone();
    let grace = cfg.drain.grace_period;
    std::thread::spawn(move || {
        drain.await_drained(grace);
        exit_profiling.flush_before_exit(Duration::from_secs(2));
        // pingora would sleep out the whole grace period; once nothing is in flight
        // there is nothing left to wait for.
        #[allow(
            clippy::disallowed_methods,
            reason = "pingora's graceful path sleeps out the whole grace period; not yet a service with a shutdown signal"
        )]
        std::process::exit(0);
    });

    server.run(RunArgs {
        shutdown_signal: Box::new(DrainSignal(lifecycle)),
    });
    Ok(())
}

fn install_metrics() -> Result<PrometheusHandle, RunError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(metrics::REQUEST_DURATION.into()),
            DURATION_BUCKETS,
        )
        .and_then(|b| b.install_recorder())
        .map_err(|e| RunError::Metrics(e.to_string()))?;
    metrics::describe();
    guard::describe();
    resources::describe();
    ::metrics::gauge!(metrics::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    ::metrics::gauge!(metrics::START_TIME).set(reload::unix_now());
    ::metrics::gauge!(metrics::READY).set(0.0);
    ::metrics::gauge!(metrics::DRAINING).set(0.0);
    Ok(handle)
}

/// pingora panics inside a service task when a bind fails (after retrying for half a
/// minute), leaving a process that looks alive; binding every socket here first, all
/// held at once and set up as they will be served, turns a taken port or two
/// colliding addresses into a clear startup error. Returns the admin socket, which is
/// served as is; the listeners' are closed for pingora to bind.
fn precheck_binds(cfg: &MeshConfig) -> Result<std::net::TcpListener, RunError> {
    let admin = bind_socket(cfg.admin.address, false).map_err(|source| RunError::Bind {
        addr: cfg.admin.address,
        what: "admin".into(),
        source,
    })?;
    let mut held = Vec::with_capacity(cfg.listeners.len());
    for l in &cfg.listeners {
        let socket = bind_socket(l.address, true).map_err(|source| RunError::Bind {
            addr: l.address,
            what: format!("listener {}", l.name),
            source,
        })?;
        held.push(socket);
    }
    Ok(admin)
}

/// A listening socket as pingora makes one (`SO_REUSEADDR`), IPv6-only when asked.
fn bind_socket(addr: SocketAddr, v6_only: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(v6_only)?;
    }
    socket.bind(&addr.into())?;
    // Two sockets with SO_REUSEADDR may both bind `127.0.0.1:P` and `0.0.0.0:P`;
    // only the second listen() fails.
    socket.listen(1024)?;
    Ok(socket.into())
}

// One argument per shared handle the admin API reads; a struct for them would only
// be this list again.
#[allow(clippy::too_many_arguments)]
fn spawn_admin(
    cfg: &MeshConfig,
    std_listener: std::net::TcpListener,
    metrics: PrometheusHandle,
    lifecycle: Arc<Lifecycle>,
    reloader: Arc<Reloader>,
    profiling: Arc<Profiling>,
    forecasting: Arc<Forecasting>,
    anomalies: Arc<anomalies::Anomalies>,
    resources: Option<Arc<resources::Resources>>,
) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("admin")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let addr = cfg.admin.address;
    std_listener
        .set_nonblocking(true)
        .map_err(RunError::Runtime)?;
    let admin = Arc::new(admin::Admin {
        metrics,
        lifecycle,
        reloader: reloader.clone(),
        profiling,
        forecasting,
        anomalies,
        resources,
        tier_exports: std::sync::Mutex::default(),
    });
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "admin listener failed");
                        return;
                    }
                };
                tokio::spawn(reload_on_sighup(reloader));
                tokio::spawn(upkeep(admin.metrics.clone()));
                tracing::info!(%addr, "admin API listening");
                admin.serve(listener).await;
            })
        })
        .map_err(RunError::Runtime)?;
    Ok(())
}

async fn reload_on_sighup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; reload with POST /reload");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading config");
        let r = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || r.reload()).await;
    }
}

/// Histograms keep raw samples until rendered; drain them periodically so memory stays
/// bounded even when nothing scrapes.
async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}
