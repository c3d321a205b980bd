//! The `resources:` section: where the sidecar reads what the local service uses.

use super::Invalid;
use serde::{Deserialize, Serialize};
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
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceSource {
    Process,
    Cgroup,
}

fn default_window() -> Duration {
    Duration::from_secs(3600)
}

// === impl ResourcesConfig ===

impl ResourcesConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.pid_file, &mut self.path].into_iter().flatten() {
            *p = base.join(&*p);
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !(Duration::from_secs(10)..=Duration::from_secs(86_400)).contains(&self.window) {
            return Err(Invalid::new("window", "must be between 10s and 24h"));
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
        }
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
