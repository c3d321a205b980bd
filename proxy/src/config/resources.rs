//! The `resources:` section: where the sidecar reads what the local service uses.

use super::signals::{check_dns_name, check_headers, check_url, MAX_HEADERS};
use super::{Invalid, Secret};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where resource usage is read. Without this section nothing is sampled and
/// `GET /v1/resources` answers 404.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    pub source: ResourceSource,
    /// `process`: a file holding the service's pid (read again whenever the process
    /// is gone, so a restarted service is found).
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// `process`: every process whose executable name (`/proc/<pid>/comm`, 15
    /// characters at most) is this; their usage is summed.
    #[serde(default)]
    pub exe_name: Option<String>,
    /// `cgroup`: the service's cgroup v2 directory (`cpu.stat`, `memory.current`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// How much history the cost model regresses on; older intervals are dropped.
    /// At most 7 200 intervals (`profiler.tick` each) are kept whatever the window.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// `kubernetes` / `prometheus`: the pod's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `kubernetes` / `prometheus`: this pod's name; without it `POD_NAME` (the
    /// downward API), then `HOSTNAME`.
    #[serde(default)]
    pub pod: Option<String>,
    /// `kubernetes` / `prometheus`: the app container whose usage is read.
    #[serde(default = "default_container")]
    pub container: String,
    /// `kubernetes`: a kubeconfig file (relative to the config file); without it, the
    /// in-cluster service account.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// `prometheus`: base URL of the Prometheus HTTP API holding the cAdvisor series.
    #[serde(default)]
    pub prometheus_url: Option<String>,
    /// `prometheus`: extra headers (e.g. `Authorization`), secrets as in `warm_start`;
    /// when empty and `warm_start` queries the same Prometheus, its headers are used.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// `prometheus`: the `rate()` window over the CPU counter (at least two scrapes).
    #[serde(default = "default_rate_window", with = "humantime_serde")]
    pub rate_window: Duration,
    /// `kubernetes` / `prometheus`: per read; the sampler waits at most this long.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceSource {
    Process,
    Cgroup,
    /// The metrics API (`metrics.k8s.io`, as metrics-server serves it).
    Kubernetes,
    /// cAdvisor series in Prometheus.
    Prometheus,
}

impl ResourceSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Cgroup => "cgroup",
            Self::Kubernetes => "kubernetes",
            Self::Prometheus => "prometheus",
        }
    }
}

fn default_container() -> String {
    "app".into()
}
fn default_rate_window() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_window() -> Duration {
    Duration::from_secs(3600)
}

// === impl ResourcesConfig ===

impl ResourcesConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.pid_file, &mut self.path, &mut self.kubeconfig]
            .into_iter()
            .flatten()
        {
            *p = base.join(&*p);
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !(Duration::from_secs(10)..=Duration::from_secs(86_400)).contains(&self.window) {
            return Err(Invalid::new("window", "must be between 10s and 24h"));
        }
        let platform = matches!(
            self.source,
            ResourceSource::Kubernetes | ResourceSource::Prometheus
        );
        if !platform && (self.namespace.is_some() || self.pod.is_some()) {
            return Err(Invalid::new(
                "namespace",
                "namespace and pod are for source: kubernetes or prometheus",
            ));
        }
        if self.source != ResourceSource::Kubernetes && self.kubeconfig.is_some() {
            return Err(Invalid::new("kubeconfig", "is for source: kubernetes"));
        }
        if self.source != ResourceSource::Prometheus
            && (self.prometheus_url.is_some() || !self.headers.is_empty())
        {
            return Err(Invalid::new(
                "prometheus_url",
                "prometheus_url and headers are for source: prometheus",
            ));
        }
        if platform {
            return self.validate_platform();
        }
        match self.source {
            ResourceSource::Process => {
                if self.path.is_some() {
                    return Err(Invalid::new("path", "is for source: cgroup"));
                }
                match (&self.pid_file, &self.exe_name) {
                    (Some(_), Some(_)) | (None, None) => Err(Invalid::new(
                        "source",
                        "source: process needs exactly one of pid_file and exe_name",
                    )),
                    (Some(p), None) if !p.is_file() => Err(Invalid::new(
                        "pid_file",
                        format!("{} does not exist or is not a file", p.display()),
                    )),
                    (None, Some(n)) if n.is_empty() || n.len() > 15 || n.contains('/') => {
                        Err(Invalid::new(
                            "exe_name",
                            "must be 1 to 15 characters without '/' (as in /proc/<pid>/comm)",
                        ))
                    }
                    _ => Ok(()),
                }
            }
            ResourceSource::Cgroup => {
                if self.pid_file.is_some() || self.exe_name.is_some() {
                    return Err(Invalid::new(
                        "source",
                        "pid_file and exe_name are for source: process",
                    ));
                }
                let Some(p) = &self.path else {
                    return Err(Invalid::new("source", "source: cgroup needs path"));
                };
                if !p.join("cpu.stat").is_file() {
                    return Err(Invalid::new(
                        "path",
                        format!(
                            "{} is not a cgroup v2 directory (no cpu.stat there)",
                            p.display()
                        ),
                    ));
                }
                Ok(())
            }
            ResourceSource::Kubernetes | ResourceSource::Prometheus => Ok(()),
        }
    }

    /// `kubernetes` and `prometheus`: where the pod is, and how to reach the API.
    fn validate_platform(&self) -> Result<(), Invalid> {
        if self.pid_file.is_some() || self.exe_name.is_some() || self.path.is_some() {
            return Err(Invalid::new(
                "source",
                "pid_file, exe_name and path are for source: process or cgroup",
            ));
        }
        let Some(ns) = &self.namespace else {
            return Err(Invalid::new(
                "source",
                format!("source: {} needs namespace", self.source.name()),
            ));
        };
        check_dns_name("namespace", ns, 63, false)?;
        if let Some(p) = &self.pod {
            check_dns_name("pod", p, 253, true)?;
        }
        check_dns_name("container", &self.container, 63, false)?;
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(10) {
            return Err(Invalid::new(
                "timeout",
                "must be more than 0 and at most 10s (the sampler waits for it)",
            ));
        }
        if self.source == ResourceSource::Prometheus {
            let Some(url) = &self.prometheus_url else {
                return Err(Invalid::new(
                    "source",
                    "source: prometheus needs prometheus_url",
                ));
            };
            check_url("prometheus_url", url, false)?;
            if self.rate_window < Duration::from_secs(2)
                || self.rate_window > Duration::from_secs(3600)
            {
                return Err(Invalid::new("rate_window", "must be between 2s and 1h"));
            }
            if self.headers.len() > MAX_HEADERS {
                return Err(Invalid::new(
                    "headers",
                    format!("at most {MAX_HEADERS} headers"),
                ));
            }
            check_headers(&self.headers)?;
        }
        Ok(())
    }

    /// This pod's name: `pod`, else `POD_NAME`, else `HOSTNAME`.
    pub fn pod_name(&self) -> Option<String> {
        self.pod
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|p| !p.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::MeshConfig;
    use std::path::Path;

    fn parse(resources: &str) -> Result<MeshConfig, String> {
        let text = format!(
            "listeners:\n  - name: in\n    direction: inbound\n    address: 127.0.0.1:1\n    cluster: c\nclusters:\n  - name: c\n    endpoints: [\"127.0.0.1:2\"]\nresources:\n{resources}"
        );
        MeshConfig::parse(&text, Path::new("/etc/prescale/mesh.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_sources_are_startup_errors_with_file_and_line() {
        let e = parse("  source: kubelet\n").unwrap_err();
        assert!(e.starts_with("/etc/prescale/mesh.yaml:10:"), "{e}");
        assert!(e.contains("kubelet") && e.contains("process"), "{e}");

        let e = parse("  source: process\n  pid_file: /nonexistent/app.pid\n").unwrap_err();
        assert!(e.starts_with("/etc/prescale/mesh.yaml:11:"), "{e}");
        assert!(
            e.contains("resources.pid_file") && e.contains("/nonexistent/app.pid"),
            "{e}"
        );

        let e = parse("  source: cgroup\n  path: /nonexistent/cgroup\n").unwrap_err();
        assert!(e.starts_with("/etc/prescale/mesh.yaml:11:"), "{e}");
        assert!(
            e.contains("resources.path") && e.contains("not a cgroup v2"),
            "{e}"
        );

        let e = parse("  source: process\n").unwrap_err();
        assert!(e.contains("exactly one of pid_file and exe_name"), "{e}");
    }

    #[test]
    fn valid_sources_parse() {
        let pid = std::env::temp_dir().join(format!("prescale-config-{}.pid", std::process::id()));
        std::fs::write(&pid, "1\n").unwrap();
        let cfg = parse(&format!(
            "  source: process\n  pid_file: {}\n",
            pid.display()
        ))
        .unwrap();
        assert_eq!(cfg.resources.unwrap().pid_file.unwrap(), pid);
        std::fs::remove_file(&pid).unwrap();
        assert!(parse("  source: process\n  exe_name: python3\n  window: 10m\n").is_ok());
    }
}
