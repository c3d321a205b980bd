//! The `policies.tiers` config section: the ordered tiers and the rules that pick one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Tiers in match order, the tier header and who may set it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    /// Request header that names a tier. Honoured only from `trusted_sources`; from any
    /// other source it is ignored and must be stripped before forwarding.
    pub header: String,
    /// Who may set the tier header: CIDRs (`10.0.0.0/8`), addresses, or source identities.
    pub trusted_sources: Vec<String>,
    /// The tier of a request that nothing else classifies; must name a tier in `list`.
    pub default: String,
    /// The tiers, in match order: the first whose `match` rules hold wins. At most
    /// [`MAX_TIERS`](super::MAX_TIERS).
    pub list: Vec<TierConfig>,
}

/// One tier: how important it is, what it is guaranteed, and which requests belong to it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Unique name; also the metric label value.
    pub name: String,
    /// Lower is more important (0 is the top). Ties are allowed.
    #[serde(default)]
    pub priority: u8,
    /// Guaranteed share of its cluster's concurrency limit, in [0, 1]; the shares of the
    /// tiers on one cluster sum to at most 1. Unused share may be borrowed.
    #[serde(default)]
    pub share: f64,
    /// Whether admission may shed this tier by priority, cost and pre-shedding. A tier
    /// that is not sheddable is rejected only at the hard limit.
    #[serde(default = "yes")]
    pub sheddable: bool,
    /// Upstream cluster this tier is routed to (e.g. reserved replicas); absent: the
    /// route's own cluster. The proxy checks that the name exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Decide and count for this tier, but never reject (see also `policies.shadow`).
    #[serde(default)]
    pub shadow: bool,
    /// At the limit, wait a short while for a slot (see `policies.admission.queue`)
    /// instead of being refused at once. Waiting requests get freed slots before any
    /// new request of a less important tier.
    #[serde(default)]
    pub queue: bool,
    /// Which requests belong here. Every rule given must hold (and within one rule any
    /// listed value may match); a tier with no rules is reached only through the tier
    /// header, a source identity or `default`.
    #[serde(default, rename = "match")]
    pub rules: MatchConfig,
}

/// Match rules of one tier.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MatchConfig {
    /// Header name → exact value, or `*` for "present with any value". All must hold.
    pub headers: BTreeMap<String, String>,
    /// Path prefixes (plain string prefixes, as Envoy's `prefix`).
    pub path_prefix: Vec<String>,
    /// Route templates as the profiler writes them (`/users/{id}`), compared exactly.
    pub route: Vec<String>,
    /// HTTP methods (`GET`, `POST`, ...), compared case-sensitively after upper-casing.
    pub methods: Vec<String>,
    /// Source identities or CIDRs.
    pub sources: Vec<String>,
}

fn yes() -> bool {
    true
}

// === impl TiersConfig ===

impl Default for TiersConfig {
    /// One tier, `standard`, for everything: admission still limits concurrency.
    fn default() -> Self {
        Self {
            header: "x-prescale-tier".into(),
            trusted_sources: Vec::new(),
            default: "standard".into(),
            list: vec![TierConfig::named("standard")],
        }
    }
}

impl TiersConfig {
    /// The upstream clusters tiers route to, with the config path of each reference, so
    /// the config assembler can check that each one exists.
    pub fn clusters(&self) -> impl Iterator<Item = (String, &str)> {
        self.list.iter().enumerate().filter_map(|(i, t)| {
            t.cluster
                .as_deref()
                .map(|c| (format!("tiers.list[{i}].cluster"), c))
        })
    }
}

// === impl TierConfig ===

impl TierConfig {
    /// A sheddable tier at priority 0 with no share and no rules.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            priority: 0,
            share: 0.0,
            sheddable: true,
            queue: false,
            cluster: None,
            shadow: false,
            rules: MatchConfig::default(),
        }
    }
}
