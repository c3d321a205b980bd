//! The `admin:` section: where the admin API listens and how control calls are guarded.

use super::Invalid;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A token longer than this is not a token (and would be read into every request check).
const MAX_TOKEN: usize = 4096;

/// The admin API. Read endpoints (`/metrics`, `/ready`, `/live`, `/config`, `/v1/...`)
/// answer anyone who can reach the address; control endpoints (`/shutdown`, `/reload`)
/// answer loopback peers only, and also demand the token when one is set.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// Bearer token required by control endpoints, in addition to a loopback peer.
    pub token: Option<Secret>,
    /// A file holding the token (e.g. a mounted Kubernetes Secret), relative to the
    /// config file; read at load and at each reload, surrounding whitespace trimmed.
    pub token_file: Option<PathBuf>,
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
            token_file: None,
        }
    }
}

impl AdminConfig {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(f) = &mut self.token_file {
            *f = base.join(&*f);
        }
    }

    /// Reads `token_file` into `token`. The errors never quote the file's content.
    pub(crate) fn load_token(&mut self) -> Result<(), Invalid> {
        let Some(path) = &self.token_file else {
            return check_token(self.token.as_ref(), "token");
        };
        if self.token.is_some() {
            return Err(Invalid::new(
                "token_file",
                "set token or token_file, not both",
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            Invalid::new("token_file", format!("cannot read {}: {e}", path.display()))
        })?;
        let token = Secret(text.trim().to_string());
        check_token(Some(&token), "token_file")?;
        self.token = Some(token);
        Ok(())
    }
}

/// A token is sent in a header: non-empty, bounded, visible ASCII only.
fn check_token(token: Option<&Secret>, field: &str) -> Result<(), Invalid> {
    let Some(t) = token else { return Ok(()) };
    let t = t.expose();
    if t.is_empty() || t.len() > MAX_TOKEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid::new(
            field,
            format!("the token must be 1 to {MAX_TOKEN} visible ASCII characters"),
        ));
    }
    Ok(())
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
