//! The control plane's edge: what carries the sidecar's decisions out to the platform
//! (webhook, Kubernetes scale, KEDA, Alertmanager and the anomaly webhook, all on one
//! [`signals::sender::Sender`]) and what reads in: forecast history (Prometheus warm
//! start) and the service's usage for `resources:` (metrics API, cAdvisor series).
//!
//! The data plane (`prescale-proxy`) never depends on this crate: it sees these only
//! through the narrow traits it defines (`DecisionSink`, `AlertSink`, `WarmStart`,
//! `ExternalSource`),
//! and the binary wires them together in one place ([`start`]). So the request path
//! does not build against the Kubernetes, gRPC or Alertmanager clients.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod alertmanager;
pub mod quantity;
pub mod signals;
pub mod usage;
pub mod warm_start;

use prescale_proxy::anomalies::AlertSink;
use prescale_proxy::{ControlPlane, MeshConfig};
use std::sync::Arc;

/// Starts every configured sender (each on a thread of its own) and returns the
/// handles the sidecar publishes to. Fails only on a config a sender cannot use (an
/// unreadable `ca_file` or kubeconfig, a KEDA address in use).
pub fn start(cfg: &MeshConfig) -> std::io::Result<ControlPlane> {
    let signals = signals::Signals::start(&cfg.signals, &cfg.policies.scaling)?;
    let mut alerts: Vec<Arc<dyn AlertSink>> = Vec::new();
    if cfg.profiler.anomalies.enabled {
        if let Some(a) = &cfg.anomalies.alertmanager {
            alerts.push(alertmanager::Alertmanager::spawn(
                a,
                alertmanager::Sink::Alertmanager,
            )?);
        }
        if let Some(w) = &cfg.anomalies.webhook {
            alerts.push(alertmanager::Alertmanager::spawn(
                w,
                alertmanager::Sink::Webhook,
            )?);
        }
    }
    let warm_start = cfg.warm_start.clone().map(|c| {
        Box::new(warm_start::Prometheus(c)) as Box<dyn prescale_proxy::forecasting::WarmStart>
    });
    let resources = usage::reader(cfg)?;
    Ok(ControlPlane {
        signals,
        alerts,
        warm_start,
        resources,
    })
}
