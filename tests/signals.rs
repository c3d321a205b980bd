//! The webhook signal through the real binary: a real HTTP receiver on loopback (hyper,
//! plain and TLS) that fails on purpose, and the sidecar's retries, idempotency keys,
//! rate limit, metrics, `/v1/scale` and secret handling as a platform would see them.
//!
//! Decisions come fast because `policies.scaling.sync_period` is 1 s (its lower bound):
//! the scaler decides on current demand every sync even before any forecast exists.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;

const SECRET: &str = "Bearer webhook-secret-4711";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// A sidecar in front of `upstream` deciding every second, with `webhook` as the
/// body of its `signals.webhook` section and `scaling` added to `policies.scaling`.
async fn sidecar(upstream: SocketAddr, webhook: String, scaling: &str) -> (Proxy, SocketAddr) {
    let admin = addr(free_port());
    let listen = addr(free_port());
    let yaml = format!(
        "{}policies:\n  scaling:\n    sync_period: 1s\n{scaling}signals:\n  webhook:\n{webhook}",
        inbound_config(admin, listen, upstream, "")
    );
    let proxy = blocking(move || Proxy::start(&yaml, admin)).await;
    (proxy, listen)
}

async fn admin_json(proxy: &Proxy, path: &'static str) -> Value {
    let a = proxy.admin;
    let (status, body) = blocking(move || admin_get(a, path))
        .await
        .unwrap_or_else(|| panic!("GET {path} failed:\n{}", proxy.logs()));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

async fn metric(proxy: &Proxy, name: &str, labels: &str) -> Option<f64> {
    let a = proxy.admin;
    let body = blocking(move || admin_get(a, "/metrics")).await?.1;
    metric_value(&body, name, labels)
}

async fn sends(proxy: &Proxy, outcome: &str) -> f64 {
    let labels = format!("signal=\"webhook\",outcome=\"{outcome}\"");
    metric(proxy, "prescale_signal_sends_total", &labels)
        .await
        .unwrap_or(-1.0)
}

fn json(r: &Received) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {r:?}"))
}

fn key(r: &Received) -> String {
    r.headers
        .get("idempotency-key")
        .cloned()
        .unwrap_or_else(|| panic!("no Idempotency-Key: {r:?}"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_post_is_retried_with_the_same_key_and_then_only_changes_are_sent() {
    let upstream = Upstream::start().await;
    // The receiver fails the first POST and accepts everything after.
    let receiver = Receiver::start(vec![Reply::Status(500, None)], Reply::Status(200, None)).await;
    let webhook = format!(
        "    url: http://{}/scale\n    service: checkout\n    timeout: 2s\n    retries: 3\n    backoff: 200ms\n    min_interval: 1s\n    only_on_change: true\n    headers:\n      Authorization: \"{SECRET}\"\n",
        receiver.addr
    );
    // A replica sustains 0.05 busy connections: any traffic asks for more replicas.
    let scaling = "    capacity_per_replica: 0.05\n    target_utilization: 1.0\n";
    let (proxy, listen) = sidecar(upstream.addr, webhook, scaling).await;

    // The first decision (1 replica, no traffic yet) is refused once, then accepted.
    let got = receiver.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(
        got.len(),
        2,
        "expected a failed POST and its retry:\n{}",
        proxy.logs()
    );
    let (first, retry) = (&got[0], &got[1]);
    for r in [first, retry] {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/scale");
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some(SECRET)
        );
    }
    // The retry is the same decision: same key, same body.
    assert_eq!(key(first), key(retry));
    assert_eq!(first.body, retry.body);
    // It waited the jittered backoff: 200 ms × [½, 1].
    let gap = retry.at - first.at;
    assert!(gap >= Duration::from_millis(90), "retried after {gap:?}");

    let body = json(first);
    assert_eq!(body["service"], "checkout");
    assert_eq!(body["desired_replicas"], 1);
    assert_eq!(
        body["previous"],
        Value::Null,
        "the first decision has no previous"
    );
    assert_eq!(body["reason"], "at_minimum");
    // Lead time = startup_time (120 s default) + sync_period (1 s).
    assert_eq!(body["lead_time_seconds"], 121.0);
    assert!(body["current_demand"].is_number(), "{body}");
    assert!(body.get("forecast").is_some(), "{body}");
    assert_eq!(body["idempotency_key"].as_str(), Some(key(first).as_str()));
    let at = body["at"].as_str().unwrap();
    assert!(
        at.ends_with('Z') && at.len() == "2024-01-01T00:00:00.000Z".len(),
        "{at}"
    );

    // One retry, one delivery; the success time is now.
    assert_eq!(sends(&proxy, "retry").await, 1.0);
    assert_eq!(sends(&proxy, "ok").await, 1.0);
    assert_eq!(sends(&proxy, "failed").await, 0.0);
    let last = metric(
        &proxy,
        "prescale_signal_last_success_timestamp_seconds",
        "signal=\"webhook\"",
    )
    .await
    .expect("last success gauge");
    assert!((unix_now() - last).abs() < 30.0, "last success at {last}");
    let scale = admin_json(&proxy, "/v1/scale").await;
    let sent = &scale["last_signals"][0];
    assert_eq!(sent["signal"], "webhook", "{scale}");
    assert_eq!(sent["outcome"], "ok");
    assert_eq!(sent["attempts"], 2);
    assert_eq!(sent["status"], 200);
    assert_eq!(sent["desired_replicas"], 1);
    assert_eq!(sent["idempotency_key"].as_str(), Some(key(first).as_str()));

    // Several more decisions for the same number: nothing more is sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.received().len(),
        2,
        "only_on_change sent an unchanged decision"
    );

    // Load arrives: demand rises, desired replicas change, and that is sent.
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let stop = Instant::now() + Duration::from_secs(25);
    let mut load = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        let uri: http::Uri = format!("http://{listen}/delay/50").parse().unwrap();
        load.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let _ = client.get(uri.clone()).await;
            }
        }));
    }
    let got = receiver.wait_for(3, Duration::from_secs(25)).await;
    for l in &load {
        l.abort();
    }
    assert!(
        got.len() >= 3,
        "no signal for the changed decision:\n{}",
        proxy.logs()
    );
    let change = json(&got[2]);
    assert_eq!(change["previous"], 1, "{change}");
    assert!(change["desired_replicas"].as_u64().unwrap() > 1, "{change}");
    assert!(change["current_demand"].as_f64().unwrap() > 0.0, "{change}");
    assert_ne!(key(&got[2]), key(first), "a new decision has a new key");

    // The secret header never reaches the log or GET /config.
    let config = admin_json(&proxy, "/config").await.to_string();
    assert!(!config.contains("webhook-secret"), "{config}");
    assert!(config.contains("<redacted>"), "{config}");
    assert!(
        !proxy.logs().contains("webhook-secret"),
        "secret in log:\n{}",
        proxy.logs()
    );
    assert!(
        proxy.logs().contains("scale signal delivered"),
        "{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_post_is_not_retried_and_sends_respect_min_interval() {
    let upstream = Upstream::start().await;
    let receiver = Receiver::start(vec![], Reply::Status(400, None)).await;
    let webhook = format!(
        "    url: http://{}/scale\n    service: checkout\n    retries: 3\n    backoff: 50ms\n    min_interval: 2s\n",
        receiver.addr
    );
    let (proxy, _) = sidecar(upstream.addr, webhook, "").await;

    // A 400 means "this body will never be accepted": one attempt per decision. The
    // platform still lacks the number, so a later decision is sent — after min_interval.
    let got = receiver.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2, "{}", proxy.logs());
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "sent again after {gap:?}"
    );
    assert_ne!(key(&got[0]), key(&got[1]), "two decisions, two keys");
    // The receiver has both bodies before the proxy has read the second 400 and
    // counted it: wait for the count, do not race it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut failed = sends(&proxy, "failed").await;
    while failed < 2.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        failed = sends(&proxy, "failed").await;
    }
    assert!(failed >= 2.0, "failed sends {failed}");
    assert_eq!(sends(&proxy, "retry").await, 0.0);
    assert_eq!(sends(&proxy, "ok").await, 0.0);
    assert_eq!(
        metric(&proxy, "prescale_signal_last_success_timestamp_seconds", "").await,
        Some(0.0),
        "nothing was accepted: the time stays 0"
    );
    let scale = admin_json(&proxy, "/v1/scale").await;
    let sent = &scale["last_signals"][0];
    assert_eq!(sent["outcome"], "failed", "{scale}");
    assert_eq!(sent["attempts"], 1);
    assert_eq!(sent["status"], 400);
    assert!(sent["error"].as_str().unwrap().contains("400"), "{scale}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_and_timeouts_are_honoured_over_https() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path(), "receiver");
    // 429 asking for 1 s, then a stall past the timeout, then acceptance.
    let receiver = Receiver::start_tls(
        vec![
            Reply::Status(429, Some("1")),
            Reply::Stall(Duration::from_secs(3)),
        ],
        Reply::Status(200, None),
        &cert,
    )
    .await;
    let webhook = format!(
        "    url: https://localhost:{}/hooks/scale\n    service: checkout\n    timeout: 500ms\n    retries: 2\n    backoff: 50ms\n    min_interval: 1h\n    ca_file: {}\n",
        receiver.addr.port(),
        cert.cert.display()
    );
    let (proxy, _) = sidecar(upstream.addr, webhook, "").await;

    let got = receiver.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 3, "{}", proxy.logs());
    assert_eq!(got[0].path, "/hooks/scale");
    // The second attempt waited for Retry-After (1 s), not the 50 ms backoff.
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After ignored: {waited:?}"
    );
    // The stalled attempt was abandoned after the 500 ms timeout and retried.
    let stalled = got[2].at - got[1].at;
    assert!(stalled >= Duration::from_millis(500), "{stalled:?}");
    assert!(
        stalled < Duration::from_millis(2500),
        "timeout not enforced: {stalled:?}"
    );
    assert!(
        got.iter().all(|r| key(r) == key(&got[0])),
        "one decision, one key"
    );

    // Wait for the sender to record the delivery.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sends(&proxy, "ok").await < 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sends(&proxy, "ok").await, 1.0, "{}", proxy.logs());
    assert_eq!(sends(&proxy, "retry").await, 2.0);
    let scale = admin_json(&proxy, "/v1/scale").await;
    assert_eq!(scale["last_signals"][0]["attempts"], 3, "{scale}");
    assert!(
        proxy.logs().contains("no answer within 500ms"),
        "{}",
        proxy.logs()
    );
}
