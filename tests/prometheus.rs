//! A real Prometheus (the Debian `prometheus` package) with the real binary: it scrapes
//! the sidecar and answers PromQL over its HTTP API, and it serves the history the
//! sidecar warm-starts its forecast from.
//!
//! History comes from Prometheus' own backfill (`promtool tsdb create-blocks-from
//! openmetrics`): hours of a request counter written as TSDB blocks before Prometheus
//! starts, so a test gets a forecast — and a pre-scale decision — in seconds rather
//! than after hours of live traffic. Tests skip with a message when `prometheus` is
//! not installed, and fail under `CI=true`.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn admin_json(proxy: &Proxy, path: &'static str) -> Value {
    let a = proxy.admin;
    let (status, body) = blocking(move || admin_get(a, path))
        .await
        .unwrap_or_else(|| panic!("GET {path} failed:\n{}", proxy.logs()));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

async fn metrics_body(proxy: &Proxy) -> String {
    let a = proxy.admin;
    blocking(move || admin_get(a, "/metrics"))
        .await
        .expect("GET /metrics")
        .1
}

/// Polls `f` every 200 ms until it returns `Some` or `limit` passes.
async fn poll<T>(limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Three hours of a counter at 10 requests per second, in a new Prometheus data dir
/// under `dir`. With `ahead`, the samples run ten minutes past now, so every rate
/// window is fully covered (see `backfill_counter`); but then Prometheus refuses
/// scraped samples older than its newest block, so a test that scrapes passes false.
fn history(dir: &std::path::Path, ahead: bool) -> std::path::PathBuf {
    let data = dir.join("data");
    backfill_counter(
        &data,
        "demo_requests",
        10.0,
        Duration::from_secs(3 * 3600),
        Duration::from_secs(if ahead { 600 } else { 0 }),
        Duration::from_secs(10),
    );
    data
}

/// The warm-start section: 10 rps at 100 ms each is 1.0 busy connection.
fn warm_start(prometheus: &str, timeout: &str) -> String {
    format!(
        "warm_start:\n  prometheus_url: {prometheus}\n  query: sum(rate(demo_requests_total[1m]))\n  unit: requests_per_second\n  mean_service_time: 100ms\n  lookback: 3h\n  step: 1m\n  timeout: {timeout}\n"
    )
}

/// Decides every second; one replica sustains 0.1 busy connections.
const SCALING: &str =
    "policies:\n  scaling:\n    sync_period: 1s\n    capacity_per_replica: 0.1\n    target_utilization: 1.0\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_start_seeds_the_forecast_from_prometheus_history() {
    if !prometheus_usable("warm_start_seeds_the_forecast_from_prometheus_history") {
        return;
    }
    let upstream = Upstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = history(tmp.path(), true);
    let prom = blocking(move || Prometheus::start(&[], Some(&data))).await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let yaml = format!(
        "{}{SCALING}{}",
        inbound_config(admin, listen, upstream.addr, ""),
        warm_start(&prom.url(), "10s")
    );
    let proxy = blocking(move || Proxy::start(&yaml, admin)).await;

    // Without a single live request, the total series has a forecast...
    let forecast = poll(Duration::from_secs(20), async || {
        let v = admin_json(&proxy, "/v1/forecast").await;
        v["series"].get("total").is_some().then_some(v)
    })
    .await
    .unwrap_or_else(|| panic!("no forecast after warm start:\n{}", proxy.logs()));
    let total = &forecast["series"]["total"];
    // ...in the forecaster's unit: 10 rps × 100 ms = 1.0 busy connection.
    let last = total["last"].as_f64().unwrap();
    assert!((last - 1.0).abs() < 0.05, "last step {last}: {forecast}");
    for p in total["points"].as_array().unwrap() {
        let point = p["point"].as_f64().unwrap();
        assert!((point - 1.0).abs() < 0.2, "{forecast}");
        assert!(p["lower"].as_f64().unwrap() <= point && point <= p["upper"].as_f64().unwrap());
    }
    // Three hours of one-minute steps, less the last partial ones.
    let body = metrics_body(&proxy).await;
    let points = metric_value(&body, "prescale_forecast_warm_start_points", "").unwrap_or(0.0);
    assert!((170.0..=181.0).contains(&points), "loaded {points} points");
    assert_eq!(
        metric_value(
            &body,
            "prescale_forecast_warm_starts_total",
            "result=\"loaded\""
        ),
        Some(1.0)
    );

    // And the first decisions are already predictive: the forecast asks for at least
    // 1.0 / 0.1 = 10 replicas while current demand asks for the minimum.
    let scale = poll(Duration::from_secs(10), async || {
        let v = admin_json(&proxy, "/v1/scale").await;
        (v["decision"]["reason"] == "forecast").then_some(v)
    })
    .await
    .unwrap_or_else(|| panic!("no predictive decision:\n{}", proxy.logs()));
    let d = &scale["decision"];
    assert!(d["predictive"].as_u64().unwrap() >= 10, "{scale}");
    assert!(d["desired"].as_u64().unwrap() >= 10, "{scale}");
    assert!(proxy
        .logs()
        .contains("warm start: forecast seeded from Prometheus"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_the_sidecar_and_promql_returns_its_metrics() {
    if !prometheus_usable("prometheus_scrapes_the_sidecar_and_promql_returns_its_metrics") {
        return;
    }
    let upstream = Upstream::start().await;
    let receiver = Receiver::start(vec![], Reply::Status(200, None)).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = history(tmp.path(), false);
    // Prometheus starts first and scrapes the admin address the sidecar will take.
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let prom = blocking(move || Prometheus::start(&[admin], Some(&data))).await;
    let yaml = format!(
        "{}{SCALING}{}signals:\n  webhook:\n    url: http://{}/scale\n    service: checkout\n    min_interval: 1s\n",
        inbound_config(admin, listen, upstream.addr, ""),
        warm_start(&prom.url(), "10s"),
        receiver.addr,
    );
    let proxy = blocking(move || Proxy::start(&yaml, admin)).await;

    // Traffic through the sidecar.
    let (code, _) = blocking(move || {
        let url = format!("http://{listen}/hello");
        let mut last = (0, String::new());
        for _ in 0..50 {
            last = curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]);
        }
        last
    })
    .await;
    assert_eq!(code, 0);

    // PromQL through Prometheus' HTTP API sees what the sidecar exports.
    let prom = std::sync::Arc::new(prom);
    let value = |r: &Value| -> f64 { r["value"][1].as_str().unwrap().parse().unwrap() };
    let queries = [
        "prescale_requests_total{listener=\"inbound\",code_class=\"2xx\"}",
        "prescale_desired_replicas",
        "prescale_forecast_demand{signature=\"total\",horizon=\"lead\"}",
        "prescale_forecast_warm_start_points",
        "prescale_signal_sends_total{signal=\"webhook\",outcome=\"ok\"}",
    ];
    for q in queries {
        let p = prom.clone();
        let found = poll(Duration::from_secs(20), async || {
            let p = p.clone();
            let r = blocking(move || p.query(q)).await;
            // A scrape may predate the last requests: the request count is waited for
            // until it has them all, which the assertion below then checks.
            let floor = if q.starts_with("prescale_requests_total") {
                50.0
            } else {
                0.0
            };
            (!r.is_empty() && r.iter().all(|s| value(s) > 0.0 && value(s) >= floor)).then_some(r)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "PromQL {q} returned nothing (or zero)\nprometheus:\n{}\nprescale:\n{}",
                prom.logs(),
                proxy.logs()
            )
        });
        if q.starts_with("prescale_requests_total") {
            assert!(value(&found[0]) >= 50.0, "{found:?}");
        }
        if q.starts_with("prescale_forecast_demand") {
            // The point and both interval bounds.
            assert_eq!(found.len(), 3, "{found:?}");
        }
        if q == "prescale_desired_replicas" {
            // History ends at the test's start, so the last minute may be partial:
            // the forecast asks for fewer than the exact 10, but more than 1.
            assert!(
                value(&found[0]) > 1.0,
                "the forecast asks for more: {found:?}"
            );
        }
    }
    // The target is healthy in Prometheus' own view.
    let up = prom.query("up{job=\"prescale\"}");
    assert_eq!(up.first().map(value), Some(1.0), "{up:?}");

    promtool_check(&metrics_body(&proxy).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_prometheus_delays_nothing_and_the_forecast_starts_cold() {
    // Needs no Prometheus: a socket that accepts connections and never answers.
    let upstream = Upstream::start().await;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let yaml = format!(
        "{}{SCALING}{}",
        inbound_config(admin, listen, upstream.addr, ""),
        warm_start(&format!("http://{silent_addr}"), "3s")
    );
    let started = Instant::now();
    let proxy = blocking(move || Proxy::start(&yaml, admin)).await;

    // The data plane is ready and proxying while warm start still waits.
    let (code, status) = blocking(move || {
        curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{listen}/hello"),
        ])
    })
    .await;
    assert_eq!((code, status.as_str()), (0, "200"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let body = metrics_body(&proxy).await;
    assert_eq!(
        metric_value(
            &body,
            "prescale_forecast_warm_starts_total",
            "result=\"failed\""
        ),
        None,
        "warm start gave up before its timeout"
    );

    // After the timeout: counted, logged, and forecasting carries on cold.
    let failed = poll(Duration::from_secs(10), async || {
        let body = metrics_body(&proxy).await;
        metric_value(
            &body,
            "prescale_forecast_warm_starts_total",
            "result=\"failed\"",
        )
    })
    .await;
    assert_eq!(failed, Some(1.0), "{}", proxy.logs());
    assert!(
        proxy
            .logs()
            .contains("warm start failed; forecasting starts cold"),
        "{}",
        proxy.logs()
    );
    assert!(
        proxy.logs().contains("no answer within 3s"),
        "{}",
        proxy.logs()
    );
    // Nothing was loaded (a total series appears only once a live minute completes).
    let body = metrics_body(&proxy).await;
    assert_eq!(
        metric_value(&body, "prescale_forecast_warm_start_points", ""),
        None
    );
    // Decisions went on (on current demand) once the forecaster was free again.
    let scale = poll(Duration::from_secs(5), async || {
        let v = admin_json(&proxy, "/v1/scale").await;
        (!v["decision"].is_null()).then_some(v)
    })
    .await;
    assert!(scale.is_some(), "{}", proxy.logs());
    drop(silent);
}

/// An authenticating gateway in front of `upstream` (a real Prometheus), as managed
/// Prometheus services are: 401 without `Authorization: Bearer <token>`, otherwise
/// the request is forwarded and Prometheus' answer returned. Records each
/// Authorization header it was sent.
async fn auth_gateway(
    upstream: SocketAddr,
    token: &'static str,
) -> (
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
) {
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        record.lock().unwrap().push(auth.clone());
                        if auth.as_deref() != Some(&format!("Bearer {token}")) {
                            let mut r = hyper::Response::new(Full::new(bytes::Bytes::from(
                                "{\"status\":\"error\",\"error\":\"unauthorized\"}",
                            )));
                            *r.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                            return Ok::<_, hyper::Error>(r);
                        }
                        let tcp = tokio::net::TcpStream::connect(upstream).await.unwrap();
                        let (mut send, conn) =
                            hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                                .await
                                .unwrap();
                        tokio::spawn(conn);
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let fwd = hyper::Request::from_parts(parts, Full::new(body));
                        let resp = send.send_request(fwd).await?;
                        let (parts, body) = resp.into_parts();
                        let body = body.collect().await?.to_bytes();
                        Ok(hyper::Response::from_parts(parts, Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// `warm_start.headers` authenticate to a Prometheus behind a gateway that demands a
/// bearer token; the token is sent, never logged, and shown redacted in `/config`.
/// Without the header the same gateway answers 401 and the forecast starts cold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_start_headers_authenticate_to_a_guarded_prometheus() {
    if !prometheus_usable("warm_start_headers_authenticate_to_a_guarded_prometheus") {
        return;
    }
    const TOKEN: &str = "w4rm-st4rt-t0ken";
    let upstream = Upstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = history(tmp.path(), true);
    let prom = blocking(move || Prometheus::start(&[], Some(&data))).await;
    let (gateway, seen) = auth_gateway(prom.addr, TOKEN).await;
    let url = format!("http://{gateway}");

    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let yaml = format!(
        "{}{SCALING}{}  headers:\n    Authorization: Bearer {TOKEN}\n",
        inbound_config(admin, listen, upstream.addr, ""),
        warm_start(&url, "10s")
    );
    let proxy = blocking(move || Proxy::start(&yaml, admin)).await;
    let loaded = poll(Duration::from_secs(20), async || {
        let body = metrics_body(&proxy).await;
        metric_value(
            &body,
            "prescale_forecast_warm_starts_total",
            "result=\"loaded\"",
        )
        .filter(|v| *v >= 1.0)
    })
    .await;
    assert_eq!(loaded, Some(1.0), "not loaded:\n{}", proxy.logs());
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [Some(format!("Bearer {TOKEN}"))],
        "one query, with the header"
    );
    let config = admin_json(&proxy, "/config").await;
    assert_eq!(
        config["config"]["warm_start"]["headers"]["Authorization"],
        "<redacted>"
    );
    assert!(!config.to_string().contains(TOKEN));
    assert!(!proxy.logs().contains(TOKEN), "{}", proxy.logs());

    // The same Prometheus without the header: refused, and a cold start.
    seen.lock().unwrap().clear();
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let yaml = format!(
        "{}{SCALING}{}",
        inbound_config(admin, listen, upstream.addr, ""),
        warm_start(&url, "10s")
    );
    let cold = blocking(move || Proxy::start(&yaml, admin)).await;
    let failed = poll(Duration::from_secs(20), async || {
        let body = metrics_body(&cold).await;
        metric_value(
            &body,
            "prescale_forecast_warm_starts_total",
            "result=\"failed\"",
        )
        .filter(|v| *v >= 1.0)
    })
    .await;
    assert_eq!(failed, Some(1.0), "{}", cold.logs());
    assert!(cold.logs().contains("401"), "{}", cold.logs());
    assert_eq!(seen.lock().unwrap().as_slice(), [None]);
}
