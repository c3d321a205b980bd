//! The KEDA external scaler through the real binary with a real gRPC client: the tonic
//! client generated from the same `control/proto/externalscaler.proto`, over a tonic
//! `Channel` (HTTP/2 over loopback TCP), calling what KEDA calls — GetMetricSpec,
//! GetMetrics (cross-checked with `GET /v1/scale`), IsActive, and StreamIsActive, which
//! must push `true` once traffic through the sidecar raises demand.
//!
//! Decisions come every second (`policies.scaling.sync_period: 1s`, its lower bound),
//! and a replica sustains 0.05 busy connections, so any traffic asks for more replicas.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use prescale_control::signals::keda::pb::external_scaler_client::ExternalScalerClient;
use prescale_control::signals::keda::pb::{GetMetricsRequest, ScaledObjectRef};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;
use tonic::transport::Channel;
use tonic::Code;

type Scaler = ExternalScalerClient<Channel>;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// A sidecar in front of `upstream` serving the KEDA scaler on its own port.
async fn sidecar(upstream: SocketAddr) -> (Proxy, SocketAddr, SocketAddr) {
    let admin = addr(free_port());
    let listen = addr(free_port());
    let keda = addr(free_port());
    let yaml = format!(
        "{}policies:\n  scaling:\n    sync_period: 1s\n    capacity_per_replica: 0.05\n    target_utilization: 1.0\nsignals:\n  keda:\n    address: {keda}\n",
        inbound_config(admin, listen, upstream, "")
    );
    let proxy = blocking(move || Proxy::start(&yaml, admin)).await;
    (proxy, listen, keda)
}

async fn connect(keda: SocketAddr) -> Scaler {
    let channel = Channel::from_shared(format!("http://{keda}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the KEDA scaler");
    ExternalScalerClient::new(channel)
}

/// The ScaledObject reference KEDA sends: its trigger metadata, `scalerAddress` included.
fn scaled_object(keda: SocketAddr, metric: Option<&str>) -> ScaledObjectRef {
    let mut meta = HashMap::from([("scalerAddress".to_string(), keda.to_string())]);
    if let Some(m) = metric {
        meta.insert("metric".into(), m.into());
    }
    ScaledObjectRef {
        name: "checkout".into(),
        namespace: "shop".into(),
        scaler_metadata: meta,
    }
}

async fn get_metric(
    client: &mut Scaler,
    keda: SocketAddr,
    metric: Option<&str>,
    name: &str,
) -> Result<(i64, f64), tonic::Status> {
    let resp = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(scaled_object(keda, metric)),
            metric_name: name.into(),
        })
        .await?
        .into_inner();
    assert_eq!(resp.metric_values.len(), 1, "{resp:?}");
    let v = &resp.metric_values[0];
    assert_eq!(v.metric_name, name, "{resp:?}");
    Ok((v.metric_value, v.metric_value_float))
}

async fn desired_in_scale_view(proxy: &Proxy) -> Option<u64> {
    let a = proxy.admin;
    let (status, body) = blocking(move || admin_get(a, "/v1/scale")).await?;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).ok()?;
    v["decision"]["desired"].as_u64()
}

/// GetMetrics agrees with `/v1/scale` (read before and after; retried while a new
/// decision lands in between). Returns the agreed number.
async fn cross_check(proxy: &Proxy, client: &mut Scaler, keda: SocketAddr) -> u64 {
    for _ in 0..20 {
        let before = desired_in_scale_view(proxy).await;
        let (int, float) = get_metric(client, keda, None, "prescale_desired_replicas")
            .await
            .expect("GetMetrics");
        let after = desired_in_scale_view(proxy).await;
        if let (Some(desired), Some(again)) = (before, after) {
            if desired == again {
                assert_eq!(int as u64, desired, "GetMetrics vs /v1/scale");
                assert_eq!(float, desired as f64);
                return desired;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/v1/scale never held still:\n{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_client_reads_the_decision_and_is_told_when_demand_rises() {
    let upstream = Upstream::start().await;
    let (proxy, listen, keda) = sidecar(upstream.addr).await;
    let mut client = connect(keda).await;

    // The metric spec: the HPA's ceil(value / 1) is exactly the desired replicas.
    let spec = client
        .get_metric_spec(scaled_object(keda, None))
        .await
        .expect("GetMetricSpec")
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1, "{spec:?}");
    let s = &spec.metric_specs[0];
    assert_eq!(s.metric_name, "prescale_desired_replicas");
    assert_eq!((s.target_size, s.target_size_float), (1, 1.0));
    // demand_upper: the target is capacity × utilisation (0.05 × 1.0).
    let spec = client
        .get_metric_spec(scaled_object(keda, Some("demand_upper")))
        .await
        .expect("GetMetricSpec demand_upper")
        .into_inner();
    let s = &spec.metric_specs[0];
    assert_eq!(s.metric_name, "prescale_demand_upper");
    assert!((s.target_size_float - 0.05).abs() < 1e-12, "{s:?}");
    assert_eq!(s.target_size, 1);
    let e = client
        .get_metric_spec(scaled_object(keda, Some("cpu")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // The first decision lands within a sync period or two; before it: UNAVAILABLE.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get_metric(&mut client, keda, None, "prescale_desired_replicas").await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                assert!(Instant::now() < deadline, "no decision:\n{}", proxy.logs());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Idle: the minimum, and not active.
    assert_eq!(cross_check(&proxy, &mut client, keda).await, 1);
    let active = client
        .is_active(scaled_object(keda, None))
        .await
        .expect("IsActive")
        .into_inner();
    assert!(!active.result, "idle yet active");
    let e = get_metric(&mut client, keda, None, "s0-cpu")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // The stream answers at once, then only on a change.
    let mut stream = client
        .stream_is_active(scaled_object(keda, None))
        .await
        .expect("StreamIsActive")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the first answer comes at once")
        .expect("stream ok")
        .expect("a message");
    assert!(!first.result);

    // Load arrives through the sidecar: demand rises and the stream says so.
    let http: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let stop = Instant::now() + Duration::from_secs(30);
    let mut load = Vec::new();
    for _ in 0..4 {
        let http = http.clone();
        let uri: http::Uri = format!("http://{listen}/delay/50").parse().unwrap();
        load.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let _ = http.get(uri.clone()).await;
            }
        }));
    }
    let Ok(next) = tokio::time::timeout(Duration::from_secs(25), stream.message()).await else {
        panic!("no StreamIsActive update under load:\n{}", proxy.logs());
    };
    let pushed = next.expect("stream ok").expect("a message");
    assert!(
        pushed.result,
        "the pushed answer must be a change: {pushed:?}"
    );

    // Under load: more replicas, the same number as /v1/scale, active, and a demand.
    let deadline = Instant::now() + Duration::from_secs(10);
    let desired = loop {
        let d = cross_check(&proxy, &mut client, keda).await;
        if d > 1 || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(desired > 1, "desired stayed {desired} under load");
    let active = client
        .is_active(scaled_object(keda, None))
        .await
        .expect("IsActive")
        .into_inner();
    assert!(active.result);
    let (int, float) = get_metric(
        &mut client,
        keda,
        Some("demand_upper"),
        "prescale_demand_upper",
    )
    .await
    .expect("GetMetrics demand_upper");
    assert!(float > 0.0, "no demand under load: {float}");
    assert_eq!(int, float.ceil() as i64);
    for l in &load {
        l.abort();
    }
}

#[tokio::test]
async fn a_taken_keda_port_is_a_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let keda = taken.local_addr().unwrap();
    let upstream = addr(free_port());
    let admin = addr(free_port());
    let listen = addr(free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "{}signals:\n  keda:\n    address: {keda}\n",
            inbound_config(admin, listen, upstream, "")
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("signals.keda: cannot bind {keda}")),
        "{stderr}"
    );
}
