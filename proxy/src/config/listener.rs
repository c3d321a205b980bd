//! The `listeners:` section: where the sidecar accepts traffic and where it sends it.

use super::Invalid;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One listening socket.
///
/// `inbound` listeners sit in front of the local service and send everything to one
/// cluster. `outbound` listeners take the local service's calls to other services and
/// pick a cluster by authority (Host / `:authority`), or forward to the connection's
/// original destination when `original_dst` is on (iptables REDIRECT).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Bounded by the file: names become metric label values.
    pub name: String,
    pub direction: Direction,
    pub address: SocketAddr,
    /// Serve TLS (HTTP/1.1 and h2 by ALPN) instead of plain text.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Accept h2c with prior knowledge on the plain-text port, beside HTTP/1.1.
    #[serde(default = "yes")]
    pub h2c: bool,
    /// Inbound: the local service. Outbound: where requests go when no route matches;
    /// with `original_dst`, the connection settings used towards the original destination.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Outbound only: authority → cluster.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Outbound only: forward to SO_ORIGINAL_DST when no route matches.
    #[serde(default)]
    pub original_dst: bool,
}

#[derive(Copy, Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Listener TLS. Paths are relative to the config file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require and verify client certificates signed by this CA (mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// An outbound route: requests whose authority is `authority` go to `cluster`.
/// `authority` is `host` (any port) or `host:port`, matched case-insensitively.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub authority: String,
    pub cluster: String,
}

fn yes() -> bool {
    true
}

// === impl ListenerConfig ===

impl ListenerConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(tls) = &mut self.tls {
            tls.cert = base.join(&tls.cert);
            tls.key = base.join(&tls.key);
            if let Some(ca) = &mut tls.client_ca {
                *ca = base.join(&*ca);
            }
        }
    }

    pub(crate) fn validate(&self, clusters: &HashSet<&str>) -> Result<(), Invalid> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(Invalid::new("name", "must be 1 to 64 characters"));
        }
        let known = |field: &str, c: &str| {
            if clusters.contains(c) {
                Ok(())
            } else {
                Err(Invalid::new(field, format!("unknown cluster {c:?}")))
            }
        };
        match self.direction {
            Direction::Inbound => {
                let Some(c) = &self.cluster else {
                    return Err(Invalid::new(
                        "cluster",
                        "an inbound listener needs the cluster of the local service",
                    ));
                };
                known("cluster", c)?;
                if !self.routes.is_empty() || self.original_dst {
                    return Err(Invalid::new(
                        "routes",
                        "routes and original_dst are for outbound listeners",
                    ));
                }
            }
            Direction::Outbound => {
                if let Some(c) = &self.cluster {
                    known("cluster", c)?;
                }
                let mut seen = HashSet::new();
                for (i, r) in self.routes.iter().enumerate() {
                    known(&format!("routes[{i}].cluster"), &r.cluster)?;
                    let key = r.authority.to_ascii_lowercase();
                    if key.is_empty() || !seen.insert(key) {
                        return Err(Invalid::new(
                            format!("routes[{i}].authority"),
                            format!("empty or duplicate authority {:?}", r.authority),
                        ));
                    }
                }
                if self.cluster.is_none() && self.routes.is_empty() && !self.original_dst {
                    return Err(Invalid::new(
                        "routes",
                        "an outbound listener needs routes, a default cluster, or original_dst",
                    ));
                }
            }
        }
        if let Some(tls) = &self.tls {
            crate::tls::server_config(tls).map_err(|e| Invalid::new("tls", e.to_string()))?;
        }
        Ok(())
    }
}
