//! The service's usage read from the platform for `resources:`: the metrics API
//! (`source: kubernetes`) or cAdvisor series in Prometheus (`source: prometheus`).
//! Each is an [`ExternalSource`] the sidecar's `resources` thread calls once per
//! tick; every read ends within `resources.timeout`, and a failure is the sampler's
//! to count and log.

pub mod kubernetes;
pub mod prometheus;

use prescale_proxy::config::ResourceSource;
use prescale_proxy::resources::ExternalSource;
use prescale_proxy::MeshConfig;

/// The reader `resources.source` asks for, if it is one of the platform's. Fails only
/// on a config the reader cannot use (a bad kubeconfig, no pod name).
pub fn reader(cfg: &MeshConfig) -> std::io::Result<Option<Box<dyn ExternalSource>>> {
    let Some(r) = &cfg.resources else {
        return Ok(None);
    };
    let pod = || {
        r.pod_name().ok_or_else(|| {
            std::io::Error::other(
                "resources: no pod name (set resources.pod, or POD_NAME from the downward API)",
            )
        })
    };
    Ok(match r.source {
        ResourceSource::Process | ResourceSource::Cgroup => None,
        ResourceSource::Kubernetes => Some(Box::new(kubernetes::MetricsApi::new(r, pod()?)?)),
        ResourceSource::Prometheus => {
            // The same Prometheus as warm start: its auth headers unless set here.
            let inherited = cfg
                .warm_start
                .as_ref()
                .filter(|w| {
                    r.headers.is_empty() && Some(&w.prometheus_url) == r.prometheus_url.as_ref()
                })
                .map(|w| w.headers.clone());
            Some(Box::new(prometheus::Cadvisor::new(r, pod()?, inherited)?))
        }
    })
}
