//! The `clusters:` section: upstream endpoints and how to talk to them.

use super::runtime::bounded;
use super::Invalid;
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A named set of upstream endpoints with one protocol and one set of timeouts.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Bounded by the file: names become metric label values.
    pub name: String,
    /// `host:port` entries, resolved when the config is loaded or reloaded. An empty
    /// list is allowed (a service scaled to zero): requests get 503.
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Idle keep-alive connections kept for this cluster.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// Concurrent streams per upstream h2 connection before another is opened.
    #[serde(default = "default_streams")]
    pub max_h2_streams: usize,
    /// Extra connection attempts on other endpoints when connecting fails. Connecting
    /// sent nothing, so this is safe for every method.
    #[serde(default = "default_retries")]
    pub connect_retries: usize,
    /// Eject endpoints that fail in a row for a while (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_health: Option<PassiveHealthConfig>,
    /// The cluster that takes this one's requests while it has no endpoint left (all
    /// ejected, or none), e.g. a tier's reserved replicas overflowing to the shared
    /// ones. It must not overflow further itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<String>,
}

/// Passive health checking: endpoints are judged by the requests they serve.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealthConfig {
    /// Failures in a row (connect errors, upstream timeouts and resets, 502/503/504)
    /// that eject an endpoint.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each ejection in a row doubles it.
    #[serde(with = "humantime_serde")]
    pub ejection: Duration,
    /// The longest ejection.
    #[serde(with = "humantime_serde")]
    pub max_ejection: Duration,
}

#[derive(Copy, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (over TLS when `tls` is set).
    #[default]
    H1,
    /// HTTP/2 with prior knowledge over plain text.
    H2c,
    /// HTTP/2 over TLS, negotiated by ALPN.
    H2,
}

/// Upstream TLS. With no `ca`, the system roots are used.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Server name to send and verify; defaults to the endpoint's host.
    #[serde(default)]
    pub sni: Option<String>,
}

/// Upstream timeouts: how long the proxy waits, never how long a stream may live.
/// Each is bounded; only `stream_idle` may be switched off, and only explicitly.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP (and TLS) connection establishment.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// From the request's head being sent to the response's head arriving (each read
    /// of it); past it the answer is 504. `read` is its former name, still accepted.
    #[serde(alias = "read", with = "humantime_serde")]
    pub response_header: Duration,
    /// Once the response head is in: the longest wait for the next bytes of its body,
    /// trailers or upgraded connection (WebSocket), and for the client's next bytes
    /// of a gRPC or upgraded stream. Never a cap on a stream's total life. `off`: no
    /// bound.
    #[serde(with = "stream_idle")]
    pub stream_idle: Option<Duration>,
    /// Longest wait for any single write to the upstream.
    #[serde(with = "humantime_serde")]
    pub write: Duration,
    /// How long an idle pooled connection is kept.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
}

/// `stream_idle`: a duration, or `off`.
mod stream_idle {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "off" {
            return Ok(None);
        }
        humantime::parse_duration(text.trim())
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e} (a duration such as 1h, or off)")))
    }
}

fn default_pool() -> usize {
    128
}
fn default_streams() -> usize {
    100
}
fn default_retries() -> usize {
    2
}

// === impl ClusterConfig ===

impl ClusterConfig {
    /// A cluster with no endpoints and every default: plain HTTP/1.1, default timeouts.
    pub fn named(name: String) -> Self {
        Self {
            name,
            endpoints: Vec::new(),
            protocol: Protocol::H1,
            tls: None,
            timeouts: Timeouts::default(),
            pool_size: default_pool(),
            max_h2_streams: default_streams(),
            connect_retries: 0,
            passive_health: None,
            overflow: None,
        }
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(UpstreamTls { ca: Some(ca), .. }) = &mut self.tls {
            *ca = base.join(&*ca);
        }
    }

    /// Resolves every endpoint to socket addresses (DNS happens here, never on the data
    /// path). Each `host:port` may yield several addresses.
    pub fn resolve(&self) -> Result<Vec<(String, SocketAddr)>, String> {
        let mut out = Vec::new();
        for ep in &self.endpoints {
            let addrs = ep
                .to_socket_addrs()
                .map_err(|e| format!("endpoint {ep:?}: {e}"))?;
            let host = ep.rsplit_once(':').map_or(ep.as_str(), |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            out.extend(addrs.map(|a| (host.to_string(), a)));
        }
        Ok(out)
    }

    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(Invalid::new("name", "must be 1 to 64 characters"));
        }
        match (self.protocol, &self.tls) {
            (Protocol::H2, None) => {
                return Err(Invalid::new(
                    "protocol",
                    "h2 is HTTP/2 over TLS and needs a tls section; use h2c for plain text",
                ))
            }
            (Protocol::H2c, Some(_)) => {
                return Err(Invalid::new(
                    "protocol",
                    "h2c is plain text; use h2 with a tls section",
                ))
            }
            _ => {}
        }
        if let Err(e) = self.resolve() {
            return Err(Invalid::new("endpoints", e));
        }
        if let Some(UpstreamTls { ca: Some(ca), .. }) = &self.tls {
            crate::tls::ca_certs(ca).map_err(|e| Invalid::new("tls.ca", e.to_string()))?;
        }
        if !(1..=10_000).contains(&self.pool_size) {
            return Err(Invalid::new("pool_size", "must be between 1 and 10000"));
        }
        if !(1..=10_000).contains(&self.max_h2_streams) {
            return Err(Invalid::new(
                "max_h2_streams",
                "must be between 1 and 10000",
            ));
        }
        if self.connect_retries > 10 {
            return Err(Invalid::new("connect_retries", "must be at most 10"));
        }
        if let Some(h) = &self.passive_health {
            if !(1..=1000).contains(&h.consecutive_failures) {
                return Err(Invalid::new(
                    "passive_health.consecutive_failures",
                    "must be between 1 and 1000",
                ));
            }
            bounded("ejection", h.ejection)
                .and_then(|_| bounded("max_ejection", h.max_ejection))
                .map_err(|e| e.under("passive_health"))?;
            if h.max_ejection < h.ejection {
                return Err(Invalid::new(
                    "passive_health.max_ejection",
                    "must be at least ejection",
                ));
            }
        }
        if self.overflow.as_deref() == Some(self.name.as_str()) {
            return Err(Invalid::new(
                "overflow",
                "a cluster cannot overflow to itself",
            ));
        }
        let t = &self.timeouts;
        bounded("connect", t.connect)
            .and_then(|_| bounded("response_header", t.response_header))
            .and_then(|_| match t.stream_idle {
                Some(d) if d.is_zero() => Err(Invalid::new(
                    "stream_idle",
                    "must be more than 0 (`off` turns it off)",
                )),
                _ => Ok(()),
            })
            .and_then(|_| bounded("write", t.write))
            .and_then(|_| bounded("idle", t.idle))
            .map_err(|e| e.under("timeouts"))
    }
}

// === impl PassiveHealthConfig ===

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
        }
    }
}

// === impl Timeouts ===

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            // Above the kernel's first SYN retransmit (1 s): one dropped SYN must not
            // become a 504.
            connect: Duration::from_secs(3),
            // Above common long-poll waits (60-90 s); gRPC calls bring their own
            // (`grpc-timeout`).
            response_header: Duration::from_secs(120),
            // As Envoy's stream_idle_timeout: streams live as long as bytes move.
            stream_idle: Some(Duration::from_secs(3600)),
            write: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}
