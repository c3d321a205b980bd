//! The mesh config: one YAML file, parsed strictly, validated once, with errors that
//! name the file, the line and the reason.
//!
//! The whole file is assembled here rather than in the binary because reload (SIGHUP,
//! `POST /reload`) happens in this crate and must parse exactly what startup parsed.
//! Each crate still owns its section: `profiler:` and `policies:` are their types.

mod admin;
mod anomalies;
mod cluster;
mod error;
mod listener;
mod locate;
mod overlap;
mod resize;
mod resources;
mod runtime;
mod signals;
mod source;

pub use self::admin::{AdminConfig, Secret};
pub use self::anomalies::{
    AlertmanagerConfig, AnomaliesConfig, RemediationAction, RemediationConfig, RemediationMode,
};
pub use self::cluster::{ClusterConfig, PassiveHealthConfig, Protocol, Timeouts, UpstreamTls};
pub use self::error::ConfigError;
pub use self::listener::{Direction, ListenerConfig, ListenerTls, RouteConfig};
pub use self::resize::ResizeSignalConfig;
pub use self::resources::{ResourceSource, ResourcesConfig};
pub use self::runtime::{DownstreamLimits, DrainConfig, RuntimeConfig};
pub use self::signals::{
    DemandUnit, KedaConfig, KubernetesConfig, RetryPolicy, SignalsConfig, WarmStartConfig,
    WebhookConfig,
};
pub use self::source::ConfigSource;

use prescale_policies::PoliciesConfig;
use prescale_profiler::ProfilerConfig;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// The whole mesh config file. Unknown keys anywhere are an error, not ignored: a typo
/// in a timeout name must not silently fall back to a default.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub drain: DrainConfig,
    #[serde(default)]
    pub limits: DownstreamLimits,
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    #[serde(default)]
    pub profiler: ProfilerConfig,
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// Where scaling decisions are sent besides `/metrics` (a webhook).
    #[serde(default)]
    pub signals: SignalsConfig,
    /// Seeds the forecast from Prometheus when the embedded store is empty.
    #[serde(default)]
    pub warm_start: Option<WarmStartConfig>,
    /// What is done about anomalies (alerting, remediation); their detection is
    /// `profiler.anomalies`.
    #[serde(default)]
    pub anomalies: AnomaliesConfig,
    /// Where the local service's CPU and memory are read, for per-signature costs.
    #[serde(default)]
    pub resources: Option<ResourcesConfig>,
}

/// A semantic problem found after parsing; its path also finds its line in the file.
#[derive(Debug)]
pub(crate) struct Invalid {
    /// The config path, e.g. `listeners[1].cluster`.
    pub path: String,
    /// Another path the problem involves (the other of two colliding addresses), so
    /// the error can cite its line too.
    pub also: Option<String>,
    pub reason: String,
}

// === impl MeshConfig ===

impl MeshConfig {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` names the file in errors, and relative
    /// paths in the config are relative to its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse_in(text, &path.display().to_string(), base)
    }

    /// Parses and validates config text named `file` in errors, with relative paths
    /// resolved against `base` (an empty `base` leaves them relative to the working
    /// directory).
    pub fn parse_in(text: &str, file: &str, base: &Path) -> Result<Self, ConfigError> {
        let file = file.to_string();
        let mut cfg: MeshConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            ConfigError::Invalid {
                file: file.clone(),
                line,
                column,
                reason: e.to_string(),
            }
        })?;
        cfg.resolve_paths(base);
        cfg.admin
            .load_token()
            .map_err(|e| e.under("admin"))
            .and_then(|()| cfg.validate())
            .map_err(|inv| {
                let (line, column) = locate::find(text, &inv.path).unwrap_or((0, 0));
                let mut reason = format!("{}: {}", inv.path, inv.reason);
                if let Some(also) = &inv.also {
                    let (l, c) = locate::find(text, also).unwrap_or((0, 0));
                    reason.push_str(&format!(" ({also} is at {file}:{l}:{c})"));
                }
                ConfigError::Invalid {
                    file,
                    line,
                    column,
                    reason,
                }
            })?;
        Ok(cfg)
    }

    /// The effective config as JSON, with secrets replaced by `<redacted>`.
    pub fn redacted_json(&self) -> serde_json::Value {
        // Secrets serialize as "<redacted>" (see `Secret`), so plain serialization is safe.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The clusters inbound admission keeps a limit for: the first inbound listener's
    /// cluster, the tiers' clusters and those clusters' overflow clusters.
    fn admission_clusters(&self) -> std::collections::BTreeSet<&str> {
        let inbound = self
            .listeners
            .iter()
            .find(|l| l.direction == Direction::Inbound)
            .and_then(|l| l.cluster.as_deref());
        let tiers: Vec<&str> = self.policies.tiers.clusters().map(|(_, n)| n).collect();
        let overflow = tiers
            .iter()
            .filter_map(|n| self.cluster(n)?.overflow.as_deref());
        inbound
            .into_iter()
            .chain(tiers.iter().copied())
            .chain(overflow)
            .collect()
    }

    /// Every socket the config listens on, admin first, as `run` binds them: listeners
    /// on IPv6 take IPv6 only, the admin API on IPv6 takes IPv4 too.
    pub(crate) fn binds(&self) -> Vec<overlap::Bind> {
        let admin = overlap::Bind {
            path: "admin.address".into(),
            addr: self.admin.address,
            dual_stack: true,
        };
        let listeners = self
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| overlap::Bind {
                path: format!("listeners[{i}].address"),
                addr: l.address,
                dual_stack: false,
            });
        std::iter::once(admin).chain(listeners).collect()
    }

    /// Makes file paths in the config relative to the config file, not the process.
    fn resolve_paths(&mut self, base: &Path) {
        self.admin.resolve_paths(base);
        for l in &mut self.listeners {
            l.resolve_paths(base);
        }
        for c in &mut self.clusters {
            c.resolve_paths(base);
        }
        self.profiler.resolve_paths(base);
        self.signals.resolve_paths(base);
        self.anomalies.resolve_paths(base);
        if let Some(r) = &mut self.resources {
            r.resolve_paths(base);
        }
    }

    fn validate(&self) -> Result<(), Invalid> {
        if self.listeners.is_empty() {
            return Err(Invalid::new(
                "listeners",
                "at least one listener is required",
            ));
        }
        let mut cluster_names = HashSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            if !cluster_names.insert(c.name.as_str()) {
                return Err(Invalid::new(
                    format!("clusters[{i}].name"),
                    format!("duplicate cluster name {:?}", c.name),
                ));
            }
            c.validate()
                .map_err(|e| e.under(format!("clusters[{i}]")))?;
        }
        for (i, c) in self.clusters.iter().enumerate() {
            let Some(to) = &c.overflow else { continue };
            let at = format!("clusters[{i}].overflow");
            match self.cluster(to) {
                None => return Err(Invalid::new(at, format!("unknown cluster {to:?}"))),
                Some(t) if t.overflow.is_some() => {
                    return Err(Invalid::new(
                        at,
                        format!("cluster {to:?} overflows itself; chains are not allowed"),
                    ))
                }
                Some(_) => {}
            }
        }
        let mut names = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let at = format!("listeners[{i}]");
            if !names.insert(l.name.as_str()) {
                return Err(Invalid::new(
                    format!("{at}.name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            l.validate(&cluster_names).map_err(|e| e.under(at))?;
        }
        overlap::check(&self.binds())?;
        self.runtime.validate().map_err(|e| e.under("runtime"))?;
        self.drain.validate().map_err(|e| e.under("drain"))?;
        self.limits.validate().map_err(|e| e.under("limits"))?;
        // Checked first so an error names the exact field, not just `anomalies`.
        self.profiler
            .anomalies
            .validate()
            .map_err(|e| Invalid::new(format!("profiler.anomalies.{}", e.field), e.reason))?;
        self.profiler
            .validate()
            .map_err(|e| Invalid::new(format!("profiler.{}", e.field), e.reason))?;
        self.policies
            .validate()
            .map_err(|e| Invalid::new(format!("policies.{}", e.field), e.reason))?;
        // A tier routed to its own cluster needs that cluster declared.
        for (at, name) in self.policies.tiers.clusters() {
            if !cluster_names.contains(name) {
                return Err(Invalid::new(
                    format!("policies.{at}"),
                    format!("unknown cluster {name:?}"),
                ));
            }
        }
        // A per-cluster limit must name a cluster admission keeps a limit for.
        let limited = self.admission_clusters();
        for name in self.policies.admission.cluster_limits.keys() {
            if !limited.contains(name.as_str()) {
                let known: Vec<_> = limited.iter().collect();
                return Err(Invalid::new(
                    format!("policies.admission.cluster_limits.{name}"),
                    format!(
                        "cluster {name:?} has no admission limit (the inbound listener's \
                         cluster, tier clusters and their overflow clusters do: {known:?})"
                    ),
                ));
            }
        }
        self.signals.validate().map_err(|e| e.under("signals"))?;
        self.anomalies
            .validate(self.policies.tiers.list.iter().map(|t| t.name.as_str()))
            .map_err(|e| e.under("anomalies"))?;
        if let Some(w) = &self.warm_start {
            w.validate().map_err(|e| e.under("warm_start"))?;
        }
        if let Some(r) = &self.resources {
            r.validate().map_err(|e| e.under("resources"))?;
        }
        Ok(())
    }
}

// === impl Invalid ===

impl Invalid {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            also: None,
            reason: reason.into(),
        }
    }

    /// A problem between two paths; the error is placed at `path` and cites `also`.
    pub(crate) fn pair(
        path: impl Into<String>,
        also: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            also: Some(also.into()),
            ..Self::new(path, reason)
        }
    }

    /// Prefixes the path with the enclosing element, e.g. `clusters[2]`.
    pub(crate) fn under(mut self, parent: impl AsRef<str>) -> Self {
        self.path = format!("{}.{}", parent.as_ref(), self.path);
        self
    }
}

#[cfg(test)]
mod tests;
