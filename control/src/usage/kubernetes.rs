//! `resources.source: kubernetes`: this pod's app container usage from the metrics
//! API (`GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{pod}`, a `PodMetrics`
//! as metrics-server serves it) through the `kube` client.
//!
//! metrics-server reports a CPU *rate* averaged over `[timestamp − window,
//! timestamp]` (a window of 15 s to 1 min) and the memory working set. The rate times
//! the window is the CPU seconds of that window, which the sampler pairs with the
//! requests of the same window (`Usage::window`): pairing it with the sidecar's last
//! tick instead attributed part of each phase's CPU to its neighbours. A body without
//! a usable `timestamp` and `window` falls back to the rate times the time between
//! reads.

use crate::quantity::{bytes, cpu_cores};
use ::kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use ::kube::Api;
use prescale_proxy::config::ResourcesConfig;
use prescale_proxy::resources::{ExternalSource, RateToUsage, SampleError, Usage};
use serde_json::Value;
use std::time::Duration;

/// The metrics API reader, on a runtime of its own (the sampler thread has none).
pub struct MetricsApi {
    rt: tokio::runtime::Runtime,
    api: Api<DynamicObject>,
    pod: String,
    container: String,
    timeout: Duration,
    rate: RateToUsage,
}

// === impl MetricsApi ===

impl MetricsApi {
    /// Builds the client now, so a bad kubeconfig is a startup error.
    pub fn new(cfg: &ResourcesConfig, pod: String) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt
            .block_on(crate::signals::kube::client(
                cfg.kubeconfig.as_deref(),
                cfg.timeout,
            ))
            .map_err(|e| std::io::Error::other(format!("resources: {e}")))?;
        let gvk = GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "pods");
        let ns = cfg.namespace.clone().unwrap_or_default();
        tracing::info!(source = "kubernetes", namespace = %ns, pod = %pod,
            container = %cfg.container, "resource usage read from the metrics API");
        Ok(Self {
            api: Api::namespaced_with(client, &ns, &resource),
            rt,
            pod,
            container: cfg.container.clone(),
            timeout: cfg.timeout,
            rate: RateToUsage::default(),
        })
    }
}

impl ExternalSource for MetricsApi {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn read(&mut self) -> Result<Usage, SampleError> {
        let got = self.rt.block_on(crate::signals::kube::call(
            self.timeout,
            self.api.get(&self.pod),
        ));
        let read = got
            .map_err(|e| format!("metrics API, pod {}: {e}", self.pod))
            .and_then(|m| {
                let (cpu, memory) = container_usage(&m.data, &self.container)?;
                Ok((cpu, memory, window(&m.data)))
            });
        match read {
            Ok((cpu, memory, Some((from, to)))) => {
                self.rate.reset();
                Ok(Usage {
                    cpu_seconds: Some(cpu * (to - from) as f64 / 1000.0),
                    memory_bytes: memory,
                    io_bytes: None,
                    window: Some((from, to)),
                })
            }
            Ok((cpu, memory, None)) => Ok(self.rate.usage(Some(cpu), memory)),
            Err(e) => {
                self.rate.reset();
                Err(SampleError::External(e))
            }
        }
    }
}

/// The window a `PodMetrics` body's usage is over, `[timestamp − window, timestamp]`
/// in Unix ms; None when either is missing or unusable.
pub fn window(data: &Value) -> Option<(u64, u64)> {
    let ts: k8s_openapi::jiff::Timestamp = data.get("timestamp")?.as_str()?.parse().ok()?;
    // A Go duration as metav1.Duration writes it: "15.009s", "1m0s".
    let w: k8s_openapi::jiff::SignedDuration = data.get("window")?.as_str()?.parse().ok()?;
    let to = u64::try_from(ts.as_millisecond()).ok()?;
    let len = u64::try_from(w.as_millis()).ok().filter(|l| *l > 0)?;
    Some((to.checked_sub(len)?, to))
}

/// The container's CPU (cores) and memory (bytes) from a `PodMetrics` body.
pub fn container_usage(data: &Value, container: &str) -> Result<(f64, Option<f64>), String> {
    let c = data
        .get("containers")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
        })
        .ok_or_else(|| format!("PodMetrics has no container {container}"))?;
    let usage = |name: &str, parse: fn(&str) -> Option<f64>| {
        c.pointer(&format!("/usage/{name}"))
            .and_then(Value::as_str)
            .and_then(parse)
    };
    let cpu = usage("cpu", cpu_cores).ok_or("PodMetrics: no usable usage.cpu")?;
    Ok((cpu, usage("memory", bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_metrics_are_read_as_metrics_server_writes_them() {
        let m: DynamicObject = serde_json::from_str(
            r#"{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1beta1",
                "metadata":{"name":"checkout-1","namespace":"shop","creationTimestamp":"2025-01-01T00:00:00Z"},
                "timestamp":"2025-01-01T00:00:00Z","window":"15.009s",
                "containers":[{"name":"prescale","usage":{"cpu":"1954061n","memory":"10412Ki"}},
                              {"name":"app","usage":{"cpu":"250000000n","memory":"65536Ki"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            container_usage(&m.data, "app").unwrap(),
            (0.25, Some(67_108_864.0))
        );
        assert!(container_usage(&m.data, "web").is_err());
        // [timestamp − window, timestamp], Unix ms.
        assert_eq!(
            window(&m.data),
            Some((1_735_689_600_000 - 15_009, 1_735_689_600_000))
        );
        let mut longer = m.data.clone();
        longer["window"] = "1m0s".into();
        assert_eq!(
            window(&longer),
            Some((1_735_689_600_000 - 60_000, 1_735_689_600_000))
        );
        longer["window"] = "soon".into();
        assert_eq!(window(&longer), None);
    }
}
