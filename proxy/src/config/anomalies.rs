//! The `anomalies:` section: what the sidecar does about the anomalies that the
//! profiler's detectors (`profiler.anomalies`) report — alert an Alertmanager, and
//! remediate a misbehaving source (shadow by default).
//!
//! Detection is the profiler's section (pure, no I/O); this one sends packets and
//! changes admission, so it is the proxy's.

use super::signals::{check_headers, check_url};
use super::{Invalid, Secret};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Extra alert labels or request headers; more is refused at load time.
pub const MAX_EXTRA: usize = 16;

/// Labels prescale sets on every alert itself.
const OWN_LABELS: [&str; 4] = ["alertname", "kind", "subject", "severity"];

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnomaliesConfig {
    /// Post each anomaly as an alert to an Alertmanager (`/api/v2/alerts`).
    pub alertmanager: Option<AlertmanagerConfig>,
    /// Post the same alerts to a webhook, in the body Alertmanager itself posts to its
    /// webhook receivers (`version: "4"`, `status`, `alerts: [...]`), at `url` as
    /// given. Same settings as `alertmanager`.
    pub webhook: Option<AlertmanagerConfig>,
    /// What happens to a source whose behaviour is anomalous.
    pub remediation: RemediationConfig,
}

/// An Alertmanager-compatible receiver of alerts.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://alertmanager:9093`; alerts go to `<url>/api/v2/alerts`.
    pub url: String,
    /// Per attempt: connect, TLS, request and answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra attempts after the first (connect error, timeout, 5xx, 429).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Delay before the first retry; doubles per retry, jittered, capped at
    /// `max_backoff`.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Firing alerts are sent again this often, each with `endsAt` four intervals
    /// ahead: if the sidecar goes away, Alertmanager resolves them by itself.
    #[serde(default = "default_resend", with = "humantime_serde")]
    pub resend_interval: Duration,
    /// An alert is `severity="critical"` from this normalised severity on (1 is the
    /// detector's own raise threshold), else `warning`. Fixed when it is raised.
    #[serde(default = "default_critical_at")]
    pub critical_at: f64,
    /// Extra labels on every alert (e.g. `service`, `cluster`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra request headers (e.g. `Authorization`); values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// PEM CA bundle trusted for `https://`; relative to the config file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Remediation of source anomalies (`source_rate`, `source_mix`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationConfig {
    /// `shadow`: decide, log and count each action, change nothing. `enforce`: also
    /// apply it to admission until the anomaly clears.
    pub mode: RemediationMode,
    /// For a source sending many times its usual rate.
    pub source_rate: RemediationAction,
    /// For a source whose mix of signatures departs from its own usual mix.
    pub source_mix: RemediationAction,
    /// The tier a demoted source's requests are admitted as (it should be sheddable);
    /// absent: the least important sheddable tier. Never a promotion.
    pub demote_to: Option<String>,
    /// `rate_limit`: requests per second left to the source (a burst of one second's
    /// worth); beyond it, 429 with `x-prescale-shed: anomaly`.
    pub rate_limit_rps: f64,
    /// An action lapses this long after the anomaly was last confirmed (each source
    /// interval while it lasts), so a lost "cleared" never strands a source.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
}

#[derive(Copy, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RemediationMode {
    #[default]
    Shadow,
    Enforce,
}

/// What is done to an anomalous source (a fixed set: a metric label).
#[derive(Copy, Clone, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RemediationAction {
    /// Nothing beyond the alert.
    None,
    /// Admit its requests in a less important (sheddable) tier.
    Demote,
    /// Allow it `rate_limit_rps`.
    RateLimit,
    /// Refuse all its requests.
    Reject,
}

// Delivery defaults are the webhook signal's: one sender behaviour across the sidecar.
use super::signals::{
    default_backoff, default_max_backoff, default_retries, default_timeout, retry_policy,
    RetryPolicy,
};
retry_policy!(AlertmanagerConfig);

fn default_resend() -> Duration {
    Duration::from_secs(60)
}
fn default_critical_at() -> f64 {
    2.0
}

// === impl AnomaliesConfig ===

impl AnomaliesConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for sink in [&mut self.alertmanager, &mut self.webhook] {
            if let Some(p) = sink.as_mut().and_then(|a| a.ca_file.as_mut()) {
                *p = base.join(&*p);
            }
        }
    }

    /// `tiers` are the names in `policies.tiers.list`, which `demote_to` must be one of.
    pub(crate) fn validate<'a>(
        &self,
        mut tiers: impl Iterator<Item = &'a str>,
    ) -> Result<(), Invalid> {
        if let Some(a) = &self.alertmanager {
            a.validate().map_err(|e| e.under("alertmanager"))?;
        }
        if let Some(a) = &self.webhook {
            a.validate().map_err(|e| e.under("webhook"))?;
        }
        let r = &self.remediation;
        let at = |f: &str| format!("remediation.{f}");
        if let Some(t) = &r.demote_to {
            if !tiers.any(|n| n == t) {
                return Err(Invalid::new(
                    at("demote_to"),
                    format!("unknown tier {t:?}; it must be in policies.tiers.list"),
                ));
            }
        }
        if !(r.rate_limit_rps.is_finite() && r.rate_limit_rps > 0.0 && r.rate_limit_rps <= 1e6) {
            return Err(Invalid::new(
                at("rate_limit_rps"),
                "must be more than 0 and at most 1000000",
            ));
        }
        if r.max_duration < Duration::from_secs(10) || r.max_duration > Duration::from_secs(86_400)
        {
            return Err(Invalid::new(
                at("max_duration"),
                "must be between 10s and 24h",
            ));
        }
        Ok(())
    }
}

// === impl AlertmanagerConfig ===

impl AlertmanagerConfig {
    fn validate(&self) -> Result<(), Invalid> {
        check_url("url", &self.url, false)?;
        self.retry().validate()?;
        if self.resend_interval < Duration::from_secs(1)
            || self.resend_interval > Duration::from_secs(3600)
        {
            return Err(Invalid::new("resend_interval", "must be between 1s and 1h"));
        }
        if !(self.critical_at.is_finite() && self.critical_at >= 1.0) {
            return Err(Invalid::new("critical_at", "must be at least 1"));
        }
        if self.labels.len() > MAX_EXTRA || self.headers.len() > MAX_EXTRA {
            return Err(Invalid::new(
                "labels",
                format!("at most {MAX_EXTRA} labels and {MAX_EXTRA} headers"),
            ));
        }
        for (name, value) in &self.labels {
            let at = format!("labels.{name}");
            let mut chars = name.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !first_ok
                || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                || name.starts_with("__")
            {
                return Err(Invalid::new(
                    &at,
                    "not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)",
                ));
            }
            if OWN_LABELS.contains(&name.as_str()) {
                return Err(Invalid::new(&at, "is set by prescale"));
            }
            if value.is_empty() || value.len() > 1024 {
                return Err(Invalid::new(&at, "value must be 1 to 1024 bytes"));
            }
        }
        check_headers(&self.headers)
    }
}

// === impl RemediationConfig ===

impl Default for RemediationConfig {
    fn default() -> Self {
        Self {
            mode: RemediationMode::Shadow,
            source_rate: RemediationAction::Demote,
            source_mix: RemediationAction::None,
            demote_to: None,
            rate_limit_rps: 1.0,
            max_duration: Duration::from_secs(600),
        }
    }
}

// === impl RemediationMode ===

impl RemediationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shadow => "shadow",
            Self::Enforce => "enforce",
        }
    }
}

// === impl RemediationAction ===

impl RemediationAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Demote => "demote",
            Self::RateLimit => "rate_limit",
            Self::Reject => "reject",
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::MeshConfig;
    use std::path::Path;

    const BASE: &str = "listeners:\n  - name: in\n    direction: inbound\n    address: 127.0.0.1:4143\n    cluster: local\nclusters:\n  - name: local\n    endpoints: [\"127.0.0.1:8080\"]\n";

    fn parse(extra: &str) -> Result<MeshConfig, String> {
        MeshConfig::parse(&format!("{BASE}{extra}"), Path::new("mesh.yaml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_shadow_and_a_full_section_parses() {
        let cfg = parse("").unwrap();
        let r = &cfg.anomalies.remediation;
        assert_eq!(r.mode.as_str(), "shadow");
        assert_eq!(r.source_rate.as_str(), "demote");
        assert_eq!(r.source_mix.as_str(), "none");
        assert!(cfg.anomalies.alertmanager.is_none());
        assert!(cfg.profiler.anomalies.enabled);

        let cfg = parse(
            "profiler:\n  anomalies:\n    source: { interval: 2s, warmup: 3 }\n    drift: { interval: 5s }\npolicies:\n  tiers:\n    list:\n      - { name: standard, priority: 0 }\n      - { name: batch, priority: 1 }\nanomalies:\n  alertmanager:\n    url: http://127.0.0.1:9093\n    labels: { service: checkout }\n    headers: { Authorization: Bearer am-s3cret }\n  remediation:\n    mode: enforce\n    source_rate: rate_limit\n    source_mix: reject\n    demote_to: batch\n    rate_limit_rps: 5\n",
        )
        .unwrap();
        let a = cfg.anomalies.alertmanager.as_ref().unwrap();
        assert_eq!(a.resend_interval, std::time::Duration::from_secs(60));
        assert_eq!(a.labels["service"], "checkout");
        assert_eq!(cfg.anomalies.remediation.rate_limit_rps, 5.0);
        assert_eq!(
            cfg.profiler.anomalies.source.interval,
            std::time::Duration::from_secs(2)
        );
        let json = cfg.redacted_json().to_string();
        assert!(!json.contains("am-s3cret"), "{json}");
    }

    #[test]
    fn bad_values_are_refused_with_their_path_and_line() {
        // Line 11 is `demote_to`.
        let e = parse("anomalies:\n  remediation:\n    demote_to: nowhere\n").unwrap_err();
        assert!(e.starts_with("mesh.yaml:11:"), "{e}");
        assert!(
            e.contains("anomalies.remediation.demote_to: unknown tier \"nowhere\""),
            "{e}"
        );
        let e = parse("anomalies:\n  remediation:\n    source_rate: shout\n").unwrap_err();
        assert!(e.contains("unknown variant `shout`"), "{e}");
        let e = parse("anomalies:\n  alertmanager:\n    url: ftp://am\n").unwrap_err();
        assert!(e.contains("anomalies.alertmanager.url"), "{e}");
        let e = parse(
            "anomalies:\n  alertmanager:\n    url: http://am:9093\n    labels: { kind: x }\n",
        )
        .unwrap_err();
        assert!(
            e.contains("anomalies.alertmanager.labels.kind: is set by prescale"),
            "{e}"
        );
        let e =
            parse("anomalies:\n  alertmanager:\n    url: http://am:9093\n    labels: { 9x: y }\n")
                .unwrap_err();
        assert!(e.contains("not a Prometheus label name"), "{e}");
        let e = parse("anomalies:\n  remediation:\n    rate_limit_rps: 0\n").unwrap_err();
        assert!(e.contains("anomalies.remediation.rate_limit_rps"), "{e}");
        // Detection settings are the profiler's, refused with their own path and line.
        let e = parse("profiler:\n  anomalies:\n    source:\n      interval: 10ms\n").unwrap_err();
        assert!(e.starts_with("mesh.yaml:12:"), "{e}");
        assert!(
            e.contains("profiler.anomalies.source.interval: must be between 1s and 1h"),
            "{e}"
        );
    }
}
