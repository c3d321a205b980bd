//! The KEDA external scaler: KEDA's `externalscaler.proto` gRPC API (IsActive,
//! StreamIsActive, GetMetricSpec, GetMetrics) served from the latest scaling decision,
//! on a plain-text HTTP/2 port of its own (KEDA's `scalerAddress`).
//!
//! KEDA turns the metric into an HPA `External` metric of type `AverageValue`, for
//! which the HPA wants `ceil(value / target)` replicas. So:
//! - `prescale_desired_replicas` (the default): value = desired replicas, target = 1,
//!   and the HPA asks for exactly prescale's number (within its 10 % tolerance and the
//!   ScaledObject's min/max);
//! - `prescale_demand_upper` (trigger metadata `metric: demand_upper`): value = the
//!   forecast's highest upper bound of demand over the lead time (busy concurrency;
//!   current demand before the first forecast), target = `capacity_per_replica ×
//!   target_utilization`: the HPA divides itself, without prescale's reactive floor,
//!   step limit and stabilisation.
//!
//! IsActive is true when desired replicas exceed `min_replicas`, or there is demand now,
//! or the forecast point is above zero. Before the first decision every call answers
//! `UNAVAILABLE`. Decisions land in a lock-free snapshot ([`ArcSwapOption`]) the RPCs
//! read; a `watch` channel wakes StreamIsActive streams, which send the current answer
//! at once and then each change. Connections, streams and message sizes are bounded.

use super::Decision;
use arc_swap::ArcSwapOption;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prescale_policies::scale::ScalingConfig;
use prescale_proxy::config::KedaConfig;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::codegen::tokio_stream::Stream;
use tonic::codegen::Service;
use tonic::{Request as GrpcRequest, Response, Status};

/// The code generated from `proto/externalscaler.proto` (messages, server, and a
/// client generic over any HTTP/2 channel, used by the tests).
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]
pub mod pb {
    tonic::include_proto!("externalscaler");
}

use pb::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use pb::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// The metric names served (KEDA prefixes them with `sN-` in the HPA).
pub const DESIRED_REPLICAS: &str = "prescale_desired_replicas";
pub const DEMAND_UPPER: &str = "prescale_demand_upper";
/// The trigger metadata key choosing the metric.
pub const METRIC_KEY: &str = "metric";

/// KEDA keeps one connection per scaler address; a few more allow for restarts.
const MAX_CONNECTIONS: usize = 16;
/// Concurrent StreamIsActive streams over all connections (one per ScaledObject).
const MAX_STREAMS: usize = 64;
/// Concurrent HTTP/2 streams on one connection.
const MAX_H2_STREAMS: u32 = 32;
/// Requests are a name, a namespace and a small metadata map.
const MAX_MESSAGE: usize = 64 * 1024;
/// A forecast point below this busy concurrency is no demand.
const ACTIVE_EPSILON: f64 = 1e-3;

/// Why a call is refused; each maps to a gRPC status at the edge.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ScalerError {
    #[error("prescale has made no scaling decision yet")]
    NoDecision,
    #[error("scalerMetadata.metric: {0:?} is neither desired_replicas nor demand_upper")]
    UnknownMetadata(String),
    #[error("unknown metric {0:?}; served: {DESIRED_REPLICAS}, {DEMAND_UPPER}")]
    UnknownMetric(String),
    #[error("too many StreamIsActive streams (at most {MAX_STREAMS})")]
    TooManyStreams,
}

/// The metric a ScaledObject asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Metric {
    DesiredReplicas,
    DemandUpper,
}

/// The latest decision as KEDA sees it, shared by the forecaster (which offers) and
/// the gRPC server (which reads).
pub struct Keda {
    latest: ArcSwapOption<Decision>,
    /// Bumped on every decision; wakes the streams.
    changed: watch::Sender<u64>,
    min_replicas: u32,
    /// Busy concurrency one replica is planned for.
    target_per_replica: f64,
    streams: Arc<Semaphore>,
}

/// The gRPC service: a handle on the shared state.
#[derive(Clone)]
struct Scaler(Arc<Keda>);

// === impl Keda ===

impl Keda {
    /// Binds `cfg.address` (a startup error if taken) and serves on a thread and
    /// runtime of its own.
    pub fn spawn(cfg: &KedaConfig, scaling: &ScalingConfig) -> std::io::Result<Arc<Self>> {
        let listener = std::net::TcpListener::bind(cfg.address).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("signals.keda: cannot bind {}: {e}", cfg.address),
            )
        })?;
        listener.set_nonblocking(true)?;
        let me = Arc::new(Self::new(scaling));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let server = me.clone();
        let addr = cfg.address;
        std::thread::Builder::new()
            .name("signal-keda".into())
            .spawn(move || {
                rt.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => serve(server, l).await,
                        Err(e) => {
                            tracing::error!(signal = "keda", %addr, error = %e, "KEDA scaler listener failed");
                        }
                    }
                });
            })?;
        tracing::info!(signal = "keda", %addr, metrics = ?[DESIRED_REPLICAS, DEMAND_UPPER],
            "KEDA external scaler listening (gRPC, plain text)");
        Ok(me)
    }

    fn new(scaling: &ScalingConfig) -> Self {
        Self {
            latest: ArcSwapOption::empty(),
            changed: watch::Sender::new(0),
            min_replicas: scaling.min_replicas,
            target_per_replica: scaling.capacity_per_replica * scaling.target_utilization,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        }
    }

    /// Takes the newest decision; never blocks.
    pub fn offer(&self, d: &Decision) {
        self.latest.store(Some(Arc::new(d.clone())));
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn decision(&self) -> Result<Arc<Decision>, ScalerError> {
        self.latest.load_full().ok_or(ScalerError::NoDecision)
    }

    /// The spec for `metric`.
    pub fn spec(&self, metric: Metric) -> MetricSpec {
        let target = match metric {
            Metric::DesiredReplicas => 1.0,
            Metric::DemandUpper => self.target_per_replica,
        };
        MetricSpec {
            metric_name: metric.name().into(),
            // KEDA reads the float when above 0; the integer is for older releases.
            target_size: (target.ceil() as i64).max(1),
            target_size_float: target,
        }
    }

    /// The value of `metric` in decision `d`.
    pub fn value(metric: Metric, d: &Decision) -> MetricValue {
        let v = match metric {
            Metric::DesiredReplicas => f64::from(d.desired),
            Metric::DemandUpper => d
                .forecast
                .as_ref()
                .map_or(d.current_demand, |f| f.demand_upper),
        };
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        MetricValue {
            metric_name: metric.name().into(),
            metric_value: v.ceil() as i64,
            metric_value_float: v,
        }
    }

    /// Whether the workload should be above its idle size.
    pub fn active(&self, d: &Decision) -> bool {
        d.desired > self.min_replicas
            || d.current_demand > 0.0
            || d.forecast
                .as_ref()
                .is_some_and(|f| f.point > ACTIVE_EPSILON)
    }
}

// === impl Metric ===

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Self::DesiredReplicas => DESIRED_REPLICAS,
            Self::DemandUpper => DEMAND_UPPER,
        }
    }

    /// From the trigger metadata: `metric: desired_replicas` (the default) or
    /// `metric: demand_upper`.
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<Self, ScalerError> {
        match meta.get(METRIC_KEY).map(|s| s.trim()) {
            None | Some("" | "desired_replicas" | DESIRED_REPLICAS) => Ok(Self::DesiredReplicas),
            Some("demand_upper" | DEMAND_UPPER) => Ok(Self::DemandUpper),
            Some(other) => Err(ScalerError::UnknownMetadata(other.into())),
        }
    }

    /// From a GetMetrics request: its metric name when given, else the metadata.
    fn from_request(req: &GetMetricsRequest) -> Result<Self, ScalerError> {
        match req.metric_name.as_str() {
            "" => Self::from_metadata(&metadata(req.scaled_object_ref.as_ref())),
            DESIRED_REPLICAS => Ok(Self::DesiredReplicas),
            DEMAND_UPPER => Ok(Self::DemandUpper),
            other => Err(ScalerError::UnknownMetric(other.into())),
        }
    }
}

// === impl ScalerError ===

impl From<ScalerError> for Status {
    fn from(e: ScalerError) -> Self {
        let msg = e.to_string();
        match e {
            ScalerError::NoDecision => Status::unavailable(msg),
            ScalerError::UnknownMetadata(_) => Status::invalid_argument(msg),
            ScalerError::UnknownMetric(_) => Status::not_found(msg),
            ScalerError::TooManyStreams => Status::resource_exhausted(msg),
        }
    }
}

fn metadata(r: Option<&ScaledObjectRef>) -> HashMap<String, String> {
    r.map(|r| r.scaler_metadata.clone()).unwrap_or_default()
}

// === impl Scaler ===

type ActiveStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for Scaler {
    async fn is_active(
        &self,
        req: GrpcRequest<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        Metric::from_metadata(&req.get_ref().scaler_metadata)?;
        let d = self.0.decision()?;
        Ok(Response::new(IsActiveResponse {
            result: self.0.active(&d),
        }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        req: GrpcRequest<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        Metric::from_metadata(&req.get_ref().scaler_metadata)?;
        let permit = self
            .0
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| ScalerError::TooManyStreams)?;
        let state = StreamState {
            keda: self.0.clone(),
            changes: self.0.changed.subscribe(),
            last: None,
            _permit: permit,
        };
        let stream = futures_util::stream::unfold(state, |mut st| async move {
            let active = st.next().await?;
            Some((Ok(IsActiveResponse { result: active }), st))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        req: GrpcRequest<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let metric = Metric::from_metadata(&req.get_ref().scaler_metadata)?;
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![self.0.spec(metric)],
        }))
    }

    async fn get_metrics(
        &self,
        req: GrpcRequest<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let metric = Metric::from_request(req.get_ref())?;
        let d = self.0.decision()?;
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![Keda::value(metric, &d)],
        }))
    }
}

/// One StreamIsActive stream: the last answer sent, and its slot.
struct StreamState {
    keda: Arc<Keda>,
    changes: watch::Receiver<u64>,
    last: Option<bool>,
    _permit: OwnedSemaphorePermit,
}

impl StreamState {
    /// The next answer that differs from the last one sent (the first one at once,
    /// once there is a decision). None when the server shuts down.
    async fn next(&mut self) -> Option<bool> {
        loop {
            // Mark the current version seen before reading, so no decision is missed.
            self.changes.borrow_and_update();
            if let Some(d) = self.keda.latest.load_full() {
                let active = self.keda.active(&d);
                if self.last != Some(active) {
                    self.last = Some(active);
                    return Some(active);
                }
            }
            self.changes.changed().await.ok()?;
        }
    }
}

/// Accepts connections (at most [`MAX_CONNECTIONS`] at once) and serves gRPC over
/// HTTP/2 on each; pings find peers that went away.
async fn serve(keda: Arc<Keda>, listener: tokio::net::TcpListener) {
    let svc = ExternalScalerServer::new(Scaler(keda))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(signal = "keda", error = %e, "KEDA scaler accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(signal = "keda", %peer, "KEDA scaler connection refused: {MAX_CONNECTIONS} already open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, svc).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    svc: ExternalScalerServer<Scaler>,
) {
    let handler = service_fn(move |req: Request<Incoming>| {
        let mut svc = svc.clone();
        async move { svc.call(req).await }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), handler)
        .await
    {
        tracing::debug!(signal = "keda", %peer, error = %e, "KEDA scaler connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::ForecastSummary;
    use prescale_policies::scale::ScaleReason;

    fn scaling() -> ScalingConfig {
        ScalingConfig {
            capacity_per_replica: 4.0,
            target_utilization: 0.5,
            min_replicas: 2,
            ..ScalingConfig::default()
        }
    }

    fn decision(desired: u32, demand: f64, forecast: Option<(f64, f64)>) -> Decision {
        Decision {
            desired,
            previous: None,
            reason: ScaleReason::Forecast,
            lead_time_seconds: 135.0,
            forecast: forecast.map(|(point, upper)| ForecastSummary {
                demand_upper: upper,
                point,
                lower: 0.0,
                upper,
                level: 0.9,
                horizon_seconds: 180,
            }),
            current_demand: demand,
            at: 1_700_000_000_000,
            resources: Default::default(),
        }
    }

    #[test]
    fn the_hpa_division_gives_back_the_desired_replicas() {
        let k = Keda::new(&scaling());
        let spec = k.spec(Metric::DesiredReplicas);
        assert_eq!(spec.metric_name, "prescale_desired_replicas");
        assert_eq!((spec.target_size, spec.target_size_float), (1, 1.0));
        for desired in [1u32, 2, 7, 100] {
            let v = Keda::value(Metric::DesiredReplicas, &decision(desired, 1.0, None));
            // The HPA's AverageValue rule: ceil(value / target).
            assert_eq!(
                (v.metric_value_float / spec.target_size_float).ceil(),
                f64::from(desired)
            );
            assert_eq!(v.metric_value, i64::from(desired));
        }
        // demand_upper: the HPA divides by capacity × utilisation itself.
        let spec = k.spec(Metric::DemandUpper);
        assert_eq!(spec.target_size_float, 2.0);
        let v = Keda::value(Metric::DemandUpper, &decision(3, 1.0, Some((3.0, 5.5))));
        assert_eq!((v.metric_value_float, v.metric_value), (5.5, 6));
        // Without a forecast, current demand stands in; nonsense becomes 0.
        let v = Keda::value(Metric::DemandUpper, &decision(3, 1.25, None));
        assert_eq!(v.metric_value_float, 1.25);
        let v = Keda::value(Metric::DemandUpper, &decision(3, f64::NAN, None));
        assert_eq!(v.metric_value_float, 0.0);
    }

    #[test]
    fn activity_follows_replicas_demand_and_forecast() {
        let k = Keda::new(&scaling());
        assert!(!k.active(&decision(2, 0.0, None)));
        assert!(!k.active(&decision(2, 0.0, Some((0.0, 0.4)))));
        assert!(k.active(&decision(3, 0.0, None)));
        assert!(k.active(&decision(2, 0.2, None)));
        assert!(k.active(&decision(2, 0.0, Some((0.5, 0.9)))));
    }

    #[test]
    fn the_metric_comes_from_metadata_or_the_request() {
        let meta = |v: &str| HashMap::from([(METRIC_KEY.to_string(), v.to_string())]);
        assert_eq!(
            Metric::from_metadata(&HashMap::new()).unwrap(),
            Metric::DesiredReplicas
        );
        assert_eq!(
            Metric::from_metadata(&meta("demand_upper")).unwrap(),
            Metric::DemandUpper
        );
        let e = Metric::from_metadata(&meta("cpu")).unwrap_err();
        assert_eq!(Status::from(e).code(), tonic::Code::InvalidArgument);
        let req = |name: &str, m: &str| GetMetricsRequest {
            scaled_object_ref: Some(ScaledObjectRef {
                name: "so".into(),
                namespace: "ns".into(),
                scaler_metadata: meta(m),
            }),
            metric_name: name.into(),
        };
        assert_eq!(
            Metric::from_request(&req("", "demand_upper")).unwrap(),
            Metric::DemandUpper
        );
        assert_eq!(
            Metric::from_request(&req(DESIRED_REPLICAS, "demand_upper")).unwrap(),
            Metric::DesiredReplicas
        );
        let e = Metric::from_request(&req("s0-other", "")).unwrap_err();
        assert_eq!(e, ScalerError::UnknownMetric("s0-other".into()));
        assert_eq!(Status::from(e).code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn streams_send_the_first_answer_then_only_changes() {
        let k = Arc::new(Keda::new(&scaling()));
        let permit = k.streams.clone().try_acquire_owned().unwrap();
        let mut st = StreamState {
            keda: k.clone(),
            changes: k.changed.subscribe(),
            last: None,
            _permit: permit,
        };
        // No decision yet: the stream waits.
        let wait = tokio::time::timeout(Duration::from_millis(50), st.next()).await;
        assert!(wait.is_err());
        k.offer(&decision(2, 0.0, None));
        assert_eq!(st.next().await, Some(false));
        // An unchanged answer is not sent again.
        k.offer(&decision(2, 0.0, None));
        let wait = tokio::time::timeout(Duration::from_millis(50), st.next()).await;
        assert!(wait.is_err());
        k.offer(&decision(4, 1.0, None));
        assert_eq!(st.next().await, Some(true));
        // The stream's slot is returned when it ends.
        assert_eq!(k.streams.available_permits(), MAX_STREAMS - 1);
        drop(st);
        assert_eq!(k.streams.available_permits(), MAX_STREAMS);
    }
}
