//! The `policies.sources` config section: per-source tiers, weights and rate limits.

use crate::PoliciesConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest `top_k` accepted: the table is allocated up front.
pub const MAX_TOP_K: usize = 1 << 20;

/// Settings for individual sources (callers, by identity or address).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Sources tracked one by one for rate limiting (rounded up to a multiple of 8);
    /// past it, the heaviest stay tracked and the rest count as `other`, unlimited.
    pub top_k: usize,
    /// Known sources: their tier and weight.
    pub identities: BTreeMap<String, IdentityConfig>,
    /// Per-source token bucket; absent: no per-source limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
}

/// One known source.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Every request of this source is of this tier (unless a trusted tier header says
    /// otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Scales the source's rate limit, and divides its requests' cost pressure when
    /// admission is cost-weighted (below 1: its requests count as more expensive).
    #[serde(default = "one")]
    pub weight: f64,
}

/// A token bucket per source: `rps` sustained, `burst` at once (both times the weight).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub rps: f64,
    /// Default: one second's worth (`rps`), at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
}

fn one() -> f64 {
    1.0
}

// === impl SourcesConfig ===

impl Default for SourcesConfig {
    fn default() -> Self {
        Self {
            top_k: 1024,
            identities: BTreeMap::new(),
            rate_limit: None,
        }
    }
}

impl SourcesConfig {
    /// Checks bounds serde cannot express (tier names are checked with the tiers).
    pub fn validate(&self) -> Result<(), PoliciesConfigError> {
        if self.top_k == 0 || self.top_k > MAX_TOP_K {
            return Err(PoliciesConfigError::new(
                "sources.top_k",
                format!("must be in [1, {MAX_TOP_K}]"),
            ));
        }
        for (id, s) in &self.identities {
            if !(s.weight.is_finite() && s.weight > 0.0) {
                return Err(PoliciesConfigError::new(
                    format!("sources.identities.{id}.weight"),
                    "must be a positive number",
                ));
            }
        }
        if let Some(r) = &self.rate_limit {
            if !(r.rps.is_finite() && r.rps > 0.0) {
                return Err(PoliciesConfigError::new(
                    "sources.rate_limit.rps",
                    "must be a positive number",
                ));
            }
            if r.burst.is_some_and(|b| !(b.is_finite() && b >= 1.0)) {
                return Err(PoliciesConfigError::new(
                    "sources.rate_limit.burst",
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

// === impl RateLimitConfig ===

impl RateLimitConfig {
    /// The burst in effect.
    pub fn burst(&self) -> f64 {
        self.burst.unwrap_or(self.rps).max(1.0)
    }
}
