//! The admin API on hyper: metrics, health, config, reload and shutdown.
//!
//! It runs on its own small runtime so that a saturated data plane never delays a
//! readiness probe or a scrape.

use crate::lifecycle::Lifecycle;
use crate::reload::Reloader;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// What the admin handlers need.
pub struct Admin {
    pub metrics: PrometheusHandle,
    pub lifecycle: Arc<Lifecycle>,
    pub reloader: Arc<Reloader>,
    pub profiling: Arc<crate::profiling::Profiling>,
    pub forecasting: Arc<crate::forecasting::Forecasting>,
    pub anomalies: Arc<crate::anomalies::Anomalies>,
    /// None without a `resources:` section.
    pub resources: Option<Arc<crate::resources::Resources>>,
    /// Tier series exported at the last scrape (a reload may remove some).
    pub tier_exports: std::sync::Mutex<crate::tiers::Exported>,
}

type Resp = Response<Full<Bytes>>;

// === impl Admin ===

impl Admin {
    /// Serves until the process exits.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, std::convert::Infallible>(admin.handle(req, peer).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                // A stuck admin client must not hold a task forever.
                let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Resp {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET, "/metrics") => self.metrics(),
            (&Method::GET, "/ready") => {
                if self.lifecycle.is_ready() {
                    text(StatusCode::OK, "ready\n")
                } else if self.lifecycle.is_draining() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                }
            }
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
            (&Method::GET, "/config") => self.config(),
            (&Method::GET, "/v1/signatures") => json(StatusCode::OK, &**self.profiling.view.load()),
            (&Method::GET, "/v1/forecast") => {
                json(StatusCode::OK, &**self.forecasting.forecast.load())
            }
            (&Method::GET, "/v1/scale") => json(StatusCode::OK, &self.forecasting.scale_view()),
            (&Method::GET, "/v1/resources") => match &self.resources {
                Some(r) => json(StatusCode::OK, &**r.view.load()),
                None => text(
                    StatusCode::NOT_FOUND,
                    "no resources: section in the config\n",
                ),
            },
            (&Method::GET, "/v1/anomalies") => json(StatusCode::OK, &self.anomalies.response()),
            (&Method::GET, "/v1/tiers") => match &self.reloader.snapshot().tiers {
                Some(policy) => json(StatusCode::OK, &crate::tiers::tiers_json(policy)),
                None => text(
                    StatusCode::NOT_FOUND,
                    "no inbound listener, so no tier admission\n",
                ),
            },
            (&Method::GET, "/v1/series") => json(
                StatusCode::OK,
                &serde_json::json!({ "step_seconds": 60, "minutes": &**self.profiling.minutes.load() }),
            ),
            (&Method::POST, "/reload") => match self.refuse(&req, peer) {
                Some(resp) => resp,
                None => self.reload().await,
            },
            (&Method::POST, "/shutdown") => match self.refuse(&req, peer) {
                Some(resp) => resp,
                None => {
                    let first = self.lifecycle.begin_drain();
                    let msg = if first {
                        "draining\n"
                    } else {
                        "already draining\n"
                    };
                    text(StatusCode::ACCEPTED, msg)
                }
            },
            (
                _,
                "/metrics" | "/ready" | "/live" | "/config" | "/reload" | "/shutdown"
                | "/v1/signatures" | "/v1/series" | "/v1/forecast" | "/v1/scale" | "/v1/tiers"
                | "/v1/anomalies" | "/v1/resources",
            ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn metrics(&self) -> Resp {
        // Admission counts in atomics of its own; copy them in at each scrape.
        if let Some(policy) = &self.reloader.snapshot().tiers {
            let mut exported = self.tier_exports.lock().unwrap_or_else(|p| p.into_inner());
            crate::tiers::export(policy, &mut exported);
        }
        let body = self.metrics.render();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }

    fn config(&self) -> Resp {
        let body = serde_json::json!({
            "generation": self.reloader.generation(),
            "restart_required": *self.reloader.restart_required(),
            "config": self.reloader.current().redacted_json(),
        });
        json(StatusCode::OK, &body)
    }

    async fn reload(&self) -> Resp {
        let reloader = self.reloader.clone();
        // Reading files and resolving endpoints blocks; keep it off the admin reactor.
        match tokio::task::spawn_blocking(move || reloader.reload()).await {
            Ok(Ok(outcome)) => json(StatusCode::OK, &outcome),
            Ok(Err(e)) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": e.to_string(), "kept_generation": self.reloader.generation() }),
            ),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reload task failed: {e}\n"),
            ),
        }
    }

    /// Control endpoints: loopback peers only, plus the bearer token when configured.
    /// Returns the refusal to send, if any.
    fn refuse(&self, req: &Request<Incoming>, peer: SocketAddr) -> Option<Resp> {
        if !is_loopback(peer.ip()) {
            return Some(text(
                StatusCode::FORBIDDEN,
                "control endpoints answer loopback only\n",
            ));
        }
        if let Some(token) = &self.reloader.current().admin.token {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token);
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.expose().as_bytes())) {
                return Some(text(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong bearer token\n",
                ));
            }
        }
        None
    }
}

/// Sets `prescale_admin_control_exposed` and warns when the admin API listens on more
/// than loopback while `/reload` and `/shutdown` have no token: then the peer-address
/// check is all that guards them, and every process sharing the pod's network
/// namespace (other containers, or traffic that reaches the pod as loopback) passes it.
pub fn report_exposure(cfg: &crate::config::AdminConfig) {
    let exposed = !is_loopback(cfg.address.ip()) && cfg.token.is_none();
    ::metrics::gauge!(crate::metrics::ADMIN_CONTROL_EXPOSED).set(if exposed { 1.0 } else { 0.0 });
    if exposed {
        tracing::warn!(address = %cfg.address,
            "admin API listens beyond loopback and control endpoints (/reload, /shutdown) have no token; set admin.token");
    }
}

/// Loopback, including IPv4 loopback seen through a dual-stack `[::]` socket as
/// `::ffff:127.0.0.1`.
fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The credentials of an `Authorization: Bearer <token>` value; the scheme name is
/// case-insensitive (RFC 9110 §11.1) and may be followed by several spaces.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

/// Compares without an early exit, so response timing does not leak the token prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: &str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Resp {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
