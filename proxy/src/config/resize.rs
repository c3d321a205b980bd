//! The `signals.resize:` section: this pod's app container resized in place ahead of
//! forecast load, through the pod `resize` subresource.

use super::signals::{
    check_dns_name, default_backoff, default_max_backoff, default_retries, default_timeout,
    retry_policy, RetryPolicy,
};
use super::Invalid;
use prescale_policies::resize::ResizeConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where and how the plan of [`prescale_policies::resize::Resizer`] is applied: the
/// pod, its container, the workload a VerticalPodAutoscaler might target, the bounds.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResizeSignalConfig {
    pub namespace: String,
    /// This pod's name; without it, the `POD_NAME` environment variable (the downward
    /// API), then `HOSTNAME` (a pod's hostname is its name).
    #[serde(default)]
    pub pod: Option<String>,
    /// The container resized (never the sidecar itself).
    #[serde(default = "default_container")]
    pub container: String,
    /// The Deployment the pod belongs to: a VerticalPodAutoscaler targeting it makes
    /// the signal refuse; its template holds the requests handed back to; its replicas
    /// tell whether a scale-up is pending (the bridge).
    pub deployment: String,
    /// A kubeconfig file (relative to the config file); without it, the in-cluster
    /// service account.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    #[serde(default = "default_field_manager")]
    pub field_manager: String,
    /// PATCH with `dryRun=All`: validated by the API server, nothing persisted.
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// At least this long between two resizes (latest wins meanwhile).
    #[serde(default = "default_min_interval", with = "humantime_serde")]
    pub min_interval: Duration,
    /// How often the pod and the Deployment are read (requests, resize status, ready
    /// replicas) between decisions.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll: Duration,
    /// A size the kubelet called `Infeasible` is not asked for again for this long.
    #[serde(default = "default_infeasible_retry", with = "humantime_serde")]
    pub infeasible_retry: Duration,
    /// Read the node's allocatable and the requests of the pods on it, and never ask
    /// for more than is left (needs `get` on nodes and `list` on pods, cluster-wide).
    #[serde(default = "default_true")]
    pub node_capacity: bool,
    /// How long one read of the node and its pods is used before the next.
    #[serde(default = "default_node_refresh", with = "humantime_serde")]
    pub node_refresh: Duration,
    /// Follow the forecast at any time (else only while bridging a scale-up).
    #[serde(default)]
    pub vertical: bool,
    /// Raise the running pod while new replicas start, and hand it back after.
    #[serde(default = "default_true")]
    pub bridge: bool,
    /// Share of the request the forecast need may use.
    #[serde(default = "default_target_utilization")]
    pub target_utilization: f64,
    /// Bounds of the CPU request, in cores.
    #[serde(default = "default_min_cpu")]
    pub min_cpu: f64,
    #[serde(default = "default_max_cpu")]
    pub max_cpu: f64,
    /// Bounds of the memory request, in bytes; memory is resized only with both set,
    /// only upwards, and only where the container's `resizePolicy` needs no restart.
    #[serde(default)]
    pub min_memory: Option<f64>,
    #[serde(default)]
    pub max_memory: Option<f64>,
    /// Smallest change worth a resize, as a share of the current request.
    #[serde(default = "default_min_change")]
    pub min_change: f64,
    /// A decrease waits this long after the last change.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
}

retry_policy!(ResizeSignalConfig);

fn default_container() -> String {
    "app".into()
}
fn default_field_manager() -> String {
    "prescale".into()
}
fn default_min_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_poll() -> Duration {
    Duration::from_secs(10)
}
fn default_infeasible_retry() -> Duration {
    Duration::from_secs(600)
}
fn default_node_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_true() -> bool {
    true
}
fn default_target_utilization() -> f64 {
    ResizeConfig::default().target_utilization
}
fn default_min_cpu() -> f64 {
    ResizeConfig::default().min_cpu
}
fn default_max_cpu() -> f64 {
    ResizeConfig::default().max_cpu
}
fn default_min_change() -> f64 {
    ResizeConfig::default().min_change
}
fn default_cooldown() -> Duration {
    ResizeConfig::default().cooldown
}

// === impl ResizeSignalConfig ===

impl ResizeSignalConfig {
    /// The planner's settings.
    pub fn plan(&self) -> ResizeConfig {
        ResizeConfig {
            vertical: self.vertical,
            bridge: self.bridge,
            target_utilization: self.target_utilization,
            min_cpu: self.min_cpu,
            max_cpu: self.max_cpu,
            min_memory: self.min_memory,
            max_memory: self.max_memory,
            min_change: self.min_change,
            cooldown: self.cooldown,
        }
    }

    /// The pod resized: `pod`, else `POD_NAME`, else `HOSTNAME`.
    pub fn pod_name(&self) -> Option<String> {
        self.pod
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|p| !p.is_empty())
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = self.kubeconfig.as_mut() {
            *p = base.join(&*p);
        }
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        check_dns_name("namespace", &self.namespace, 63, false)?;
        check_dns_name("deployment", &self.deployment, 253, true)?;
        if let Some(p) = &self.pod {
            check_dns_name("pod", p, 253, true)?;
        }
        // Container names are DNS labels.
        check_dns_name("container", &self.container, 63, false)?;
        if self.field_manager.trim().is_empty() || self.field_manager.len() > 128 {
            return Err(Invalid::new("field_manager", "must be 1 to 128 characters"));
        }
        self.retry().validate()?;
        if self.min_interval > Duration::from_secs(3600) {
            return Err(Invalid::new("min_interval", "must be at most 1h"));
        }
        if self.poll < Duration::from_millis(100) || self.poll > Duration::from_secs(300) {
            return Err(Invalid::new("poll", "must be between 100ms and 5m"));
        }
        if self.infeasible_retry < Duration::from_secs(1)
            || self.infeasible_retry > Duration::from_secs(86_400)
        {
            return Err(Invalid::new(
                "infeasible_retry",
                "must be between 1s and 24h",
            ));
        }
        if self.node_refresh < Duration::from_secs(1)
            || self.node_refresh > Duration::from_secs(600)
        {
            return Err(Invalid::new("node_refresh", "must be between 1s and 10m"));
        }
        self.plan()
            .validate()
            .map_err(|e| Invalid::new(e.field, e.reason))
    }
}
