//! The `policies:` section of the mesh config, owned and validated by this crate.

use serde::{Deserialize, Serialize};

/// Settings for tiers, admission and scaling.
///
/// Tiers and admission add their settings here as they land.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoliciesConfig {
    /// Decide and count, but never enforce: lets operators trial a policy safely.
    pub shadow: bool,
    /// How forecast demand becomes desired replicas.
    pub scaling: crate::scale::ScalingConfig,
}

/// A policies setting that is out of its bounds.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("policies.{field}: {reason}")]
pub struct PoliciesConfigError {
    pub field: &'static str,
    pub reason: String,
}

// === impl PoliciesConfig ===

impl PoliciesConfig {
    /// Checks bounds that serde cannot express.
    pub fn validate(&self) -> Result<(), PoliciesConfigError> {
        self.scaling.validate().map_err(|e| PoliciesConfigError {
            field: "scaling",
            reason: e.to_string(),
        })
    }
}
