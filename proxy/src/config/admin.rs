//! The `admin:` section: where the admin API listens and how control calls are guarded.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The admin API. Read endpoints (`/metrics`, `/ready`, `/live`, `/config`, `/v1/...`)
/// answer anyone who can reach the address; control endpoints (`/shutdown`, `/reload`)
/// answer loopback peers only, and also demand the token when one is set.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// Bearer token required by control endpoints, in addition to a loopback peer.
    pub token: Option<Secret>,
}

/// A string that must never reach a log line or `GET /config`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

// === impl AdminConfig ===

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token: None,
        }
    }
}

// === impl Secret ===

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}
