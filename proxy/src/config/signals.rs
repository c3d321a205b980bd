//! The `signals:` and `warm_start:` sections: where scaling decisions are sent, and
//! where forecast history is read from when the embedded store is empty.
//!
//! Both talk to the network, so they are the proxy's sections, not the profiler's
//! (which must stay free of I/O).

use super::runtime::bounded;
use super::{Invalid, Secret};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Extra request headers per endpoint; more is refused at load time.
pub const MAX_HEADERS: usize = 16;

/// Prometheus refuses a range query of more than 11 000 points per series.
pub const MAX_WARM_START_POINTS: u64 = 11_000;

/// Headers prescale sets itself; a config may not override them.
pub(super) const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "idempotency-key",
];

/// Platform signals sent after scaling decisions (Prometheus gauges are always on and
/// need no config).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SignalsConfig {
    pub webhook: Option<WebhookConfig>,
    /// Serve KEDA's external scaler gRPC API.
    pub keda: Option<KedaConfig>,
    /// PATCH the Deployment's scale subresource through the Kubernetes API.
    pub kubernetes: Option<KubernetesConfig>,
    /// Resize this pod's app container in place through the pod `resize` subresource.
    pub resize: Option<super::resize::ResizeSignalConfig>,
}

/// KEDA's external scaler (`externalscaler.proto`) on a gRPC (h2c) port of its own.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KedaConfig {
    /// Where the gRPC server listens, e.g. `0.0.0.0:9091` (KEDA's `scalerAddress`).
    pub address: SocketAddr,
}

/// Sets `spec.replicas` of one Deployment through its `scale` subresource, unless a
/// HorizontalPodAutoscaler owns it; learns the replica start-up time from readiness.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    pub namespace: String,
    pub deployment: String,
    /// A kubeconfig file (relative to the config file); without it, the in-cluster
    /// service account.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Server-side field manager named on every PATCH.
    #[serde(default = "default_field_manager")]
    pub field_manager: String,
    /// PATCH with `dryRun=All`: the API server validates and answers but persists
    /// nothing (and nothing is learned about start-up time).
    #[serde(default)]
    pub dry_run: bool,
    /// Per API request: connect, TLS, request and answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra attempts after the first (transport errors, timeouts, 5xx, 429).
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// At least this long between two deliveries (latest wins meanwhile).
    #[serde(default = "default_min_interval", with = "humantime_serde")]
    pub min_interval: Duration,
    /// How often `status.readyReplicas` is read while a scale-up is becoming ready
    /// (the learned start-up time is this precise).
    #[serde(default = "default_readiness_poll", with = "humantime_serde")]
    pub readiness_poll: Duration,
}

/// POST a JSON scale signal to a URL after scaling decisions.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` (system roots, or `ca_file`).
    pub url: String,
    /// The service name sent in every signal (and hashed into the idempotency key).
    pub service: String,
    /// Per attempt: connect, TLS, request and response body.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra attempts after the first (connect error, timeout, 5xx, 429).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Delay before the first retry; doubles per retry, jittered to [½, 1]× and
    /// capped at `max_backoff`. A `Retry-After` answer overrides it (capped at 60 s).
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// At least this long between two deliveries; a decision made sooner waits, and a
    /// newer one replaces it (latest wins).
    #[serde(default = "default_min_interval", with = "humantime_serde")]
    pub min_interval: Duration,
    /// Send only when desired replicas differ from the last delivered value.
    #[serde(default = "default_true")]
    pub only_on_change: bool,
    /// PEM CA bundle trusted for `https://` instead of the system roots; relative to
    /// the config file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Extra headers (e.g. `Authorization`); values are secrets: never logged, shown
    /// as `<redacted>` in `GET /config`.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

/// Seeds the total-demand forecaster from a Prometheus `query_range` when the
/// embedded store holds no history at start.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WarmStartConfig {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus:9090`.
    pub prometheus_url: String,
    /// PromQL returning this sidecar's demand (one series; several are summed).
    pub query: String,
    /// What the query returns; see [`DemandUnit`].
    pub unit: DemandUnit,
    /// For `requests_per_second`: the mean service time that turns a rate into busy
    /// concurrency (Little's law).
    #[serde(default, with = "humantime_serde")]
    pub mean_service_time: Option<Duration>,
    #[serde(default = "default_lookback", with = "humantime_serde")]
    pub lookback: Duration,
    /// Query resolution; points are averaged into the forecast step.
    #[serde(default = "default_step", with = "humantime_serde")]
    pub step: Duration,
    /// The whole query, connect to last byte. The data plane never waits for it.
    #[serde(default = "default_warm_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra headers (e.g. `Authorization: Bearer ...` for a managed Prometheus);
    /// values are secrets: never logged, shown as `<redacted>` in `GET /config`.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

/// The unit of a warm-start query's values. The forecaster works in busy
/// concurrency (work seconds per second, averaged over a step).
#[derive(Copy, Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DemandUnit {
    /// Already busy concurrency, e.g. `sum(rate(prescale_signature_work_seconds_total[1m]))`
    /// or `avg_over_time(prescale_demand_concurrency[1m])`.
    Concurrency,
    /// Requests per second, e.g. `sum(rate(prescale_requests_total[1m]))`; multiplied
    /// by `mean_service_time`.
    RequestsPerSecond,
}

/// How one endpoint is retried: the same four settings, with the same bounds, in every
/// section that sends (`signals.webhook`, `signals.kubernetes`, `anomalies.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Per attempt: connect, TLS, request and answer.
    pub timeout: Duration,
    /// Extra attempts after the first.
    pub retries: u32,
    /// Delay before the first retry; doubles per retry, jittered, capped at
    /// `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

// === impl RetryPolicy ===

impl RetryPolicy {
    /// The one validation of retry settings; errors name the field in its section.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        bounded("timeout", self.timeout)?;
        if self.retries > 10 {
            return Err(Invalid::new("retries", "must be at most 10"));
        }
        if self.backoff.is_zero() || self.backoff > Duration::from_secs(60) {
            return Err(Invalid::new(
                "backoff",
                "must be more than 0 and at most 60s",
            ));
        }
        if self.max_backoff < self.backoff || self.max_backoff > Duration::from_secs(600) {
            return Err(Invalid::new(
                "max_backoff",
                "must be at least backoff and at most 10m",
            ));
        }
        Ok(())
    }
}

/// The retry settings of a section that has them.
macro_rules! retry_policy {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn retry(&self) -> RetryPolicy {
                RetryPolicy {
                    timeout: self.timeout,
                    retries: self.retries,
                    backoff: self.backoff,
                    max_backoff: self.max_backoff,
                }
            }
        }
    )*};
}
pub(super) use retry_policy;
retry_policy!(WebhookConfig, KubernetesConfig);

pub(super) fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
pub(super) fn default_retries() -> u32 {
    3
}
pub(super) fn default_backoff() -> Duration {
    Duration::from_millis(200)
}
pub(super) fn default_max_backoff() -> Duration {
    Duration::from_secs(5)
}
fn default_min_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_true() -> bool {
    true
}
fn default_field_manager() -> String {
    "prescale".into()
}
fn default_readiness_poll() -> Duration {
    Duration::from_secs(2)
}
fn default_lookback() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_step() -> Duration {
    Duration::from_secs(60)
}
fn default_warm_timeout() -> Duration {
    Duration::from_secs(10)
}

// === impl SignalsConfig ===

impl SignalsConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = self.webhook.as_mut().and_then(|w| w.ca_file.as_mut()) {
            *p = base.join(&*p);
        }
        if let Some(p) = self.kubernetes.as_mut().and_then(|k| k.kubeconfig.as_mut()) {
            *p = base.join(&*p);
        }
        if let Some(r) = self.resize.as_mut() {
            r.resolve_paths(base);
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if let Some(w) = &self.webhook {
            w.validate().map_err(|e| e.under("webhook"))?;
        }
        if let Some(k) = &self.kubernetes {
            k.validate().map_err(|e| e.under("kubernetes"))?;
        }
        if let Some(r) = &self.resize {
            r.validate().map_err(|e| e.under("resize"))?;
        }
        Ok(())
    }
}

// === impl KubernetesConfig ===

impl KubernetesConfig {
    fn validate(&self) -> Result<(), Invalid> {
        // Namespaces are DNS labels, Deployment names DNS subdomains (RFC 1123).
        check_dns_name("namespace", &self.namespace, 63, false)?;
        check_dns_name("deployment", &self.deployment, 253, true)?;
        if self.field_manager.trim().is_empty() || self.field_manager.len() > 128 {
            return Err(Invalid::new("field_manager", "must be 1 to 128 characters"));
        }
        self.retry().validate()?;
        if self.min_interval > Duration::from_secs(3600) {
            return Err(Invalid::new("min_interval", "must be at most 1h"));
        }
        if self.readiness_poll < Duration::from_millis(100)
            || self.readiness_poll > Duration::from_secs(60)
        {
            return Err(Invalid::new(
                "readiness_poll",
                "must be between 100ms and 60s",
            ));
        }
        Ok(())
    }
}

/// A lowercase RFC 1123 name: alphanumerics and `-` (and `.` in a subdomain), starting
/// and ending with an alphanumeric.
pub(super) fn check_dns_name(
    field: &str,
    name: &str,
    max: usize,
    dots: bool,
) -> Result<(), Invalid> {
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty()
        || name.len() > max
        || !name.chars().all(ok_char)
        || !edge(name.chars().next())
        || !edge(name.chars().last())
    {
        return Err(Invalid::new(
            field,
            format!("must be a lowercase RFC 1123 name of at most {max} characters: {name:?}"),
        ));
    }
    Ok(())
}

// === impl WebhookConfig ===

impl WebhookConfig {
    fn validate(&self) -> Result<(), Invalid> {
        check_url("url", &self.url, true)?;
        if self.service.trim().is_empty() || self.service.len() > 253 {
            return Err(Invalid::new("service", "must be 1 to 253 characters"));
        }
        self.retry().validate()?;
        if self.min_interval > Duration::from_secs(3600) {
            return Err(Invalid::new("min_interval", "must be at most 1h"));
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(Invalid::new(
                "headers",
                format!("at most {MAX_HEADERS} headers"),
            ));
        }
        check_headers(&self.headers)
    }
}

// === impl WarmStartConfig ===

impl WarmStartConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        check_url("prometheus_url", &self.prometheus_url, false)?;
        if self.query.trim().is_empty() || self.query.len() > 4096 {
            return Err(Invalid::new("query", "must be 1 to 4096 characters"));
        }
        match (self.unit, self.mean_service_time) {
            (DemandUnit::RequestsPerSecond, None) => {
                return Err(Invalid::new(
                    "mean_service_time",
                    "is required when unit is requests_per_second",
                ))
            }
            (DemandUnit::RequestsPerSecond, Some(d)) => bounded("mean_service_time", d)?,
            (DemandUnit::Concurrency, Some(_)) => {
                return Err(Invalid::new(
                    "mean_service_time",
                    "applies only to unit requests_per_second",
                ))
            }
            (DemandUnit::Concurrency, None) => {}
        }
        if self.step < Duration::from_secs(1) || self.step > Duration::from_secs(3600) {
            return Err(Invalid::new("step", "must be between 1s and 1h"));
        }
        // The forecaster keeps at most 15 days of steps.
        if self.lookback < self.step || self.lookback > Duration::from_secs(15 * 86_400) {
            return Err(Invalid::new("lookback", "must be between step and 15d"));
        }
        let points = self.lookback.as_secs() / self.step.as_secs().max(1);
        if points > MAX_WARM_START_POINTS {
            return Err(Invalid::new(
                "lookback",
                format!(
                    "lookback / step is {points} points; Prometheus answers at most {MAX_WARM_START_POINTS}"
                ),
            ));
        }
        bounded("timeout", self.timeout)?;
        if self.timeout > Duration::from_secs(120) {
            return Err(Invalid::new("timeout", "must be at most 2m"));
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(Invalid::new(
                "headers",
                format!("at most {MAX_HEADERS} headers"),
            ));
        }
        check_headers(&self.headers)
    }
}

/// An absolute `http(s)://host[:port]/...` URL without credentials in it (they would
/// end up in logs; use `headers` instead).
pub(super) fn check_url(field: &str, url: &str, allow_query: bool) -> Result<(), Invalid> {
    let bad = |why: &str| Err(Invalid::new(field, format!("{why}: {url:?}")));
    let Ok(uri) = url.parse::<http::Uri>() else {
        return bad("not a URL");
    };
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return bad("must start with http:// or https://"),
    }
    let Some(authority) = uri.authority() else {
        return bad("has no host");
    };
    if authority.as_str().contains('@') {
        return Err(Invalid::new(
            field,
            "must not carry credentials; put them in headers",
        ));
    }
    if authority.host().is_empty() {
        return bad("has no host");
    }
    if !allow_query && uri.query().is_some() {
        return bad("must not have a query string");
    }
    Ok(())
}

/// Extra request headers of a sender: valid names and values, none prescale sets
/// itself. Values are secrets, so no reason quotes one.
pub(super) fn check_headers(headers: &BTreeMap<String, Secret>) -> Result<(), Invalid> {
    for (name, value) in headers {
        let at = format!("headers.{name}");
        let parsed = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Invalid::new(&at, "not a valid header name"))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) {
            return Err(Invalid::new(
                &at,
                "is set by prescale and cannot be overridden",
            ));
        }
        http::HeaderValue::from_str(value.expose())
            .map_err(|_| Invalid::new(&at, "value is not a valid header value"))?;
    }
    Ok(())
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
    fn a_full_webhook_section_parses_with_defaults_filled_in() {
        let cfg = parse(
            "signals:\n  webhook:\n    url: http://127.0.0.1:9000/scale\n    service: checkout\n    headers:\n      Authorization: Bearer s3cret\n",
        )
        .unwrap();
        let w = cfg.signals.webhook.as_ref().unwrap();
        assert_eq!(w.retries, 3);
        assert_eq!(w.timeout, std::time::Duration::from_secs(2));
        assert!(w.only_on_change);
        // The header value is a secret: redacted in GET /config.
        let json = cfg.redacted_json().to_string();
        assert!(!json.contains("s3cret"), "{json}");
        assert!(json.contains("<redacted>"), "{json}");
    }

    #[test]
    fn bad_values_are_refused_with_their_path_and_line() {
        // Line 11 is the `url:` line, 13 the `timeout:` line.
        let hook = |url: &str, timeout: &str| {
            format!("signals:\n  webhook:\n    url: {url}\n    service: checkout\n    timeout: {timeout}\n")
        };
        let e = parse(&hook("ftp://example/scale", "2s")).unwrap_err();
        assert!(e.starts_with("mesh.yaml:11:"), "{e}");
        assert!(
            e.contains("signals.webhook.url: must start with http://"),
            "{e}"
        );

        let e = parse(&hook("not a url", "2s")).unwrap_err();
        assert!(e.contains("signals.webhook.url"), "{e}");

        let e = parse(&hook("http://user:pw@example/scale", "2s")).unwrap_err();
        assert!(e.contains("must not carry credentials"), "{e}");
        assert!(
            !e.contains("pw@"),
            "a credential leaked into the error: {e}"
        );

        let e = parse(&hook("http://127.0.0.1:9000/scale", "0s")).unwrap_err();
        assert!(e.starts_with("mesh.yaml:13:"), "{e}");
        assert!(
            e.contains("signals.webhook.timeout: must be more than 0"),
            "{e}"
        );

        let e = parse(
            "signals:\n  webhook:\n    url: http://h/\n    service: s\n    headers:\n      Idempotency-Key: x\n",
        )
        .unwrap_err();
        assert!(e.contains("signals.webhook.headers.Idempotency-Key"), "{e}");

        let e = parse("signals:\n  webhook:\n    url: http://h/\n    service: s\n    retrys: 3\n")
            .unwrap_err();
        assert!(e.contains("unknown field `retrys`"), "{e}");
    }

    #[test]
    fn keda_and_kubernetes_sections_parse_with_defaults_and_relative_kubeconfig() {
        let cfg = MeshConfig::parse(
            &format!("{BASE}signals:\n  keda:\n    address: 127.0.0.1:9091\n  kubernetes:\n    namespace: shop\n    deployment: checkout\n    kubeconfig: kube/config\n"),
            Path::new("/etc/prescale/mesh.yaml"),
        )
        .unwrap();
        let keda = cfg.signals.keda.as_ref().unwrap();
        assert_eq!(keda.address.to_string(), "127.0.0.1:9091");
        let k = cfg.signals.kubernetes.as_ref().unwrap();
        assert_eq!(k.field_manager, "prescale");
        assert!(!k.dry_run);
        assert_eq!(k.min_interval, std::time::Duration::from_secs(15));
        assert_eq!(k.readiness_poll, std::time::Duration::from_secs(2));
        assert_eq!(
            k.kubeconfig.as_deref(),
            Some(Path::new("/etc/prescale/kube/config"))
        );
    }

    #[test]
    fn kubernetes_names_and_bounds_are_checked() {
        let kube = |extra: &str| {
            parse(&format!(
                "signals:\n  kubernetes:\n    namespace: shop\n    deployment: checkout\n{extra}"
            ))
        };
        assert!(kube("").is_ok());
        assert!(kube("    dry_run: true\n    field_manager: prescale-canary\n").is_ok());
        let e = parse("signals:\n  kubernetes:\n    namespace: Shop\n    deployment: checkout\n")
            .unwrap_err();
        assert!(
            e.contains("signals.kubernetes.namespace: must be a lowercase RFC 1123 name"),
            "{e}"
        );
        let e = parse("signals:\n  kubernetes:\n    namespace: shop\n    deployment: -checkout\n")
            .unwrap_err();
        assert!(e.contains("signals.kubernetes.deployment"), "{e}");
        assert!(kube("    readiness_poll: 10ms\n")
            .unwrap_err()
            .contains("signals.kubernetes.readiness_poll"));
        assert!(kube("    field_manager: \"\"\n")
            .unwrap_err()
            .contains("signals.kubernetes.field_manager"));
        assert!(kube("    retries: 11\n").unwrap_err().contains("retries"));
        assert!(kube("    replicas: 3\n")
            .unwrap_err()
            .contains("unknown field `replicas`"));
        let e = parse("signals:\n  keda:\n    address: localhost\n").unwrap_err();
        assert!(e.contains("signals.keda"), "{e}");
    }

    #[test]
    fn warm_start_needs_a_unit_and_a_service_time_for_rates() {
        let ok = parse(
            "warm_start:\n  prometheus_url: http://127.0.0.1:9090\n  query: sum(rate(x[1m]))\n  unit: requests_per_second\n  mean_service_time: 50ms\n",
        )
        .unwrap();
        let w = ok.warm_start.unwrap();
        assert_eq!(w.lookback, std::time::Duration::from_secs(7 * 86_400));

        let e = parse(
            "warm_start:\n  prometheus_url: http://127.0.0.1:9090\n  query: q\n  unit: requests_per_second\n",
        )
        .unwrap_err();
        assert!(
            e.contains("warm_start.mean_service_time: is required"),
            "{e}"
        );

        let e = parse(
            "warm_start:\n  prometheus_url: http://127.0.0.1:9090\n  query: q\n  unit: concurrency\n  timeout: 0s\n",
        )
        .unwrap_err();
        assert!(e.starts_with("mesh.yaml:13:"), "{e}");
        assert!(e.contains("warm_start.timeout"), "{e}");

        let e = parse(
            "warm_start:\n  prometheus_url: http://127.0.0.1:9090\n  query: q\n  unit: concurrency\n  lookback: 15d\n  step: 10s\n",
        )
        .unwrap_err();
        assert!(e.contains("Prometheus answers at most 11000"), "{e}");

        let e = parse(
            "warm_start:\n  prometheus_url: 127.0.0.1:9090\n  query: q\n  unit: concurrency\n",
        )
        .unwrap_err();
        assert!(e.contains("warm_start.prometheus_url"), "{e}");
    }

    #[test]
    fn warm_start_headers_are_secrets_checked_like_the_senders() {
        const W: &str = "warm_start:\n  prometheus_url: http://127.0.0.1:9090\n  query: q\n  unit: concurrency\n  headers:\n";
        let ok = parse(&format!("{W}    Authorization: Bearer pr0m-t0ken\n")).unwrap();
        let w = ok.warm_start.as_ref().unwrap();
        assert_eq!(w.headers["Authorization"].expose(), "Bearer pr0m-t0ken");
        assert!(!format!("{w:?}").contains("pr0m-t0ken"));
        assert!(!ok.redacted_json().to_string().contains("pr0m-t0ken"));
        let e = parse(&format!("{W}    Host: evil\n")).unwrap_err();
        assert!(e.contains("warm_start.headers.Host"), "{e}");
        let e = parse(&format!("{W}    \"Bad Name\": x\n")).unwrap_err();
        assert!(e.contains("not a valid header name"), "{e}");
        let e = parse(&format!("{W}    X-Token: \"a\\nb\"\n")).unwrap_err();
        assert!(
            e.contains("not a valid header value") && !e.contains("a\nb"),
            "{e}"
        );
    }
}
