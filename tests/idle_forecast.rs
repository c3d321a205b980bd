//! Forecasting through idle time, through the real binary: the real `prescale run`
//! (with `--time-scale 60`, one wall second a series minute, so a forecast step is a
//! wall second), a real upstream (`support::Upstream`) and a real HTTP client over
//! loopback. After traffic stops the profiler has no minute to send, yet
//! `GET /v1/forecast` must keep moving: each idle step is closed on the clock as zero
//! demand, its origin advances and the point forecast falls.

mod support;

use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{admin_get, free_port, Proxy, Upstream};

/// Series seconds per wall second.
const SCALE: u64 = 60;
/// Wall seconds of traffic (series minutes), then of idle time.
const BUSY: Duration = Duration::from_secs(20);
const IDLE: Duration = Duration::from_secs(12);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `/v1/forecast`'s origin and the total's point forecast one step ahead.
fn forecast(admin: SocketAddr) -> Option<(u64, f64)> {
    let (status, body) = admin_get(admin, "/v1/forecast")?;
    let v: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
    let origin = v["origin"].as_u64()?;
    let point = v["series"]["total"]["points"][0]["point"].as_f64()?;
    Some((origin, point))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forecast_keeps_moving_through_idle_time() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let yaml = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: local}}\nclusters:\n  - {{name: local, endpoints: [\"{}\"]}}\nprofiler: {{tick: 100ms}}\n",
        upstream.addr
    );
    let options = ["--time-scale", &SCALE.to_string()].map(String::from);
    let sidecar = tokio::task::spawn_blocking(move || {
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        Proxy::start_with(tempfile::tempdir().unwrap(), &yaml, admin, &options)
    })
    .await
    .unwrap();

    // Traffic: four clients in a loop, each request held 20 ms by the upstream
    // (1.2 s of series time), bounded in time and count.
    let client: Client<HttpConnector, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let stop = Instant::now() + BUSY;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move {
                let mut ok = 0u32;
                for _ in 0..5_000 {
                    if Instant::now() >= stop {
                        break;
                    }
                    let req = Request::get(format!("http://{listen}/delay/20"))
                        .body(Empty::new())
                        .unwrap();
                    let call = async {
                        let resp = c.request(req).await.ok()?;
                        let status = resp.status();
                        resp.into_body().collect().await.ok()?;
                        Some(status)
                    };
                    let status = tokio::time::timeout(Duration::from_secs(10), call).await;
                    assert_eq!(status.ok().flatten().map(|s| s.as_u16()), Some(200));
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    // The forecast made on the traffic: the last one read while it flows.
    let mut busy = None;
    while workers.iter().any(|w| !w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let a = admin;
        if let Some(f) = tokio::task::spawn_blocking(move || forecast(a))
            .await
            .unwrap()
        {
            busy = Some(f);
        }
    }
    let mut sent = 0;
    for w in workers {
        sent += w.await.unwrap();
    }
    assert!(sent > 200, "{sent} requests");
    let busy = busy.unwrap_or_else(|| panic!("no forecast during traffic:\n{}", sidecar.logs()));
    // Four clients each holding a request most of the time: about 3 busy.
    assert!(busy.1 > 0.5, "busy point forecast {busy:?}");

    // Idle: nothing reaches the sidecar. Read the forecast every 200 ms.
    let mut seen = Vec::new();
    let until = Instant::now() + IDLE;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let a = admin;
        if let Some(f) = tokio::task::spawn_blocking(move || forecast(a))
            .await
            .unwrap()
        {
            seen.push(f);
        }
    }
    let (origin, point) = *seen.last().expect("forecasts during the idle time");
    let steps = (origin - busy.0) / 60_000;
    println!(
        "busy: origin {} point {}; idle: origin +{steps} steps, point {point}",
        busy.0, busy.1
    );
    // Twelve wall seconds are twelve series minutes: most of them closed as zeros
    // (bounds leave room for a slow, shared machine).
    assert!(
        steps >= 6,
        "the origin moved {steps} steps in {IDLE:?} of idle time: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[1].0 >= w[0].0),
        "origin went back: {seen:?}"
    );
    assert!(
        point < 0.5 * busy.1,
        "point forecast {point} after {steps} idle steps, {} when busy",
        busy.1
    );
}
