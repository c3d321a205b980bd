//! The `policies:` section of the mesh config, owned and validated by this crate.

use serde::{Deserialize, Serialize};

/// Settings for tiers, admission and scaling.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoliciesConfig {
    /// Decide and count, but never enforce: lets operators trial a policy safely.
    pub shadow: bool,
    /// How forecast demand becomes desired replicas.
    pub scaling: crate::scale::ScalingConfig,
    /// The tiers and how requests are matched to them.
    pub tiers: crate::tiers::TiersConfig,
    /// Adaptive concurrency limits, shedding and pre-shedding.
    pub admission: crate::admission::AdmissionConfig,
    /// Per-source tiers, weights and rate limits.
    pub sources: crate::sources::SourcesConfig,
}

/// A policies setting that is out of its bounds.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("policies.{field}: {reason}")]
pub struct PoliciesConfigError {
    /// Path below `policies`, e.g. `tiers.list[2].share`.
    pub field: String,
    /// What is wrong, in words.
    pub reason: String,
}

// === impl PoliciesConfig ===

impl PoliciesConfig {
    /// Checks bounds and references that serde cannot express.
    pub fn validate(&self) -> Result<(), PoliciesConfigError> {
        self.scaling
            .validate()
            .map_err(|e| PoliciesConfigError::new(format!("scaling.{}", e.field), e.reason))?;
        self.sources.validate()?;
        self.admission.validate()?;
        // Compiling the table checks tiers, rules and the tiers sources name.
        let table = crate::tiers::TierTable::new(self)?;
        let levels: std::collections::BTreeSet<u8> =
            table.iter().map(|(_, t)| t.priority).collect();
        let deepest = levels.len().saturating_sub(1) as f64;
        if self.admission.priority_headroom * deepest >= 1.0 {
            return Err(PoliciesConfigError::new(
                "admission.priority_headroom",
                format!(
                    "{} priority levels leave the lowest no room: need headroom × {deepest} < 1",
                    levels.len()
                ),
            ));
        }
        Ok(())
    }
}

// === impl PoliciesConfigError ===

impl PoliciesConfigError {
    /// An error at `field` (a path below `policies`).
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
