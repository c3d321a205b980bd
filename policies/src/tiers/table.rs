//! The compiled, immutable tier table and the per-request classification it makes.

use super::request::RequestView;
use super::rules::{header_name, Rules};
use super::source_set::SourceSet;
use crate::{PoliciesConfig, PoliciesConfigError};
use std::collections::{HashMap, HashSet};

/// Most tiers a config may declare: keeps per-tier counters fixed arrays and metric
/// label values few.
pub const MAX_TIERS: usize = 16;

/// Names a tier of one [`TierTable`]: its position in `tiers.list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TierId(u8);

/// One compiled tier.
#[derive(Clone, Debug)]
pub struct Tier {
    /// Unique name, the metric label value.
    pub name: String,
    /// Lower is more important.
    pub priority: u8,
    /// Guaranteed share of its cluster's limit.
    pub share: f64,
    /// Whether admission may shed it by priority, cost and pre-shedding.
    pub sheddable: bool,
    /// Shadow mode for this tier alone.
    pub shadow: bool,
    /// Waits for a slot at the limit instead of being refused at once.
    pub queue: bool,
    /// Upstream cluster to route to; `None`: the route's own.
    pub cluster: Option<String>,
    rules: Rules,
}

/// All tiers, ready to classify requests; build once per config, share behind an `Arc`.
#[derive(Clone, Debug)]
pub struct TierTable {
    tiers: Vec<Tier>,
    default: TierId,
    header: String,
    trusted: SourceSet,
    /// Source identity → tier, from `policies.sources.identities`.
    identity_tiers: HashMap<String, TierId>,
}

/// The tier of one request and what the proxy must do about the tier header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    /// The request's tier.
    pub tier: TierId,
    /// Which step picked it.
    pub by: ClassifiedBy,
    /// The tier header came from an untrusted source: it was ignored, and the proxy MUST
    /// remove it before forwarding so no service behind us trusts it either.
    pub strip_header: bool,
}

/// Which step picked the tier (a fixed set: usable as a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassifiedBy {
    /// The tier header, from a trusted source.
    Header,
    /// The source identity's configured tier.
    Identity,
    /// A tier's match rules.
    Rule,
    /// Nothing matched.
    Default,
}

// === impl TierId ===

impl TierId {
    /// Position in the table, for indexing per-tier arrays.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The id at `index`, if a table may have it (below [`MAX_TIERS`]).
    pub(crate) fn from_index(index: usize) -> Option<Self> {
        u8::try_from(index)
            .ok()
            .filter(|_| index < MAX_TIERS)
            .map(Self)
    }
}

// === impl TierTable ===

impl TierTable {
    /// Compiles and validates `cfg.tiers` (and the tiers named in `cfg.sources`).
    pub fn new(cfg: &PoliciesConfig) -> Result<Self, PoliciesConfigError> {
        let t = &cfg.tiers;
        let err = |f: String, r: String| Err(PoliciesConfigError::new(f, r));
        if t.list.is_empty() || t.list.len() > MAX_TIERS {
            return err(
                "tiers.list".into(),
                format!("need 1 to {MAX_TIERS} tiers, got {}", t.list.len()),
            );
        }
        let header =
            header_name(&t.header).map_err(|r| PoliciesConfigError::new("tiers.header", r))?;
        let trusted = SourceSet::parse(&t.trusted_sources)
            .map_err(|(i, r)| PoliciesConfigError::new(format!("tiers.trusted_sources[{i}]"), r))?;

        let mut names = HashSet::new();
        let mut tiers = Vec::with_capacity(t.list.len());
        let mut share_per_cluster: HashMap<Option<&str>, f64> = HashMap::new();
        for (i, tc) in t.list.iter().enumerate() {
            let at = format!("tiers.list[{i}]");
            if tc.name.is_empty() || !tc.name.bytes().all(|b| b.is_ascii_graphic()) {
                return err(format!("{at}.name"), format!("{:?} is not a name", tc.name));
            }
            if !names.insert(tc.name.as_str()) {
                return err(
                    format!("{at}.name"),
                    format!("duplicate tier {:?}", tc.name),
                );
            }
            if !(0.0..=1.0).contains(&tc.share) {
                return err(format!("{at}.share"), "must be in [0, 1]".into());
            }
            if tc.cluster.as_deref() == Some("") {
                return err(format!("{at}.cluster"), "must not be empty".into());
            }
            let sum = share_per_cluster.entry(tc.cluster.as_deref()).or_default();
            *sum += tc.share;
            if *sum > 1.0 + 1e-9 {
                let on = tc.cluster.as_deref().unwrap_or("the route's cluster");
                return err(
                    format!("{at}.share"),
                    format!("shares of the tiers on {on} sum to {sum:.3}, more than 1"),
                );
            }
            tiers.push(Tier {
                name: tc.name.clone(),
                priority: tc.priority,
                share: tc.share,
                sheddable: tc.sheddable,
                queue: tc.queue,
                shadow: tc.shadow,
                cluster: tc.cluster.clone(),
                rules: Rules::compile(&tc.rules, &format!("{at}.match"))?,
            });
        }

        let mut table = Self {
            default: TierId(0),
            tiers,
            header,
            trusted,
            identity_tiers: HashMap::new(),
        };
        table.default = table.by_name(&t.default).ok_or_else(|| {
            PoliciesConfigError::new("tiers.default", format!("unknown tier {:?}", t.default))
        })?;
        for (id, s) in &cfg.sources.identities {
            if let Some(name) = &s.tier {
                let tier = table.by_name(name).ok_or_else(|| {
                    PoliciesConfigError::new(
                        format!("sources.identities.{id}.tier"),
                        format!("unknown tier {name:?}"),
                    )
                })?;
                table.identity_tiers.insert(id.clone(), tier);
            }
        }
        Ok(table)
    }

    /// The tier of `req`: the tier header if the source is trusted and it names a tier,
    /// else the source identity's tier, else the first tier whose rules match, else the
    /// default. O(tiers × rules), no allocation.
    pub fn classify<R: RequestView + ?Sized>(&self, req: &R) -> Classification {
        let mut strip_header = false;
        if let Some(value) = req.header(&self.header) {
            if self.trusted.contains(req.source(), req.client_ip()) {
                // A trusted value naming no tier is ignored (and forwarded as it came).
                if let Some(tier) = self.by_name_bytes(value) {
                    return Classification {
                        tier,
                        by: ClassifiedBy::Header,
                        strip_header: false,
                    };
                }
            } else {
                // A client must not promote itself: ignore, and have the proxy drop it.
                strip_header = true;
            }
        }
        let found = req
            .source()
            .filter(|_| !self.identity_tiers.is_empty())
            .and_then(|s| self.identity_tiers.get(s))
            .map(|t| (*t, ClassifiedBy::Identity))
            .or_else(|| {
                self.tiers
                    .iter()
                    .position(|t| t.rules.matches(req))
                    .map(|i| (TierId(i as u8), ClassifiedBy::Rule))
            });
        let (tier, by) = found.unwrap_or((self.default, ClassifiedBy::Default));
        Classification {
            tier,
            by,
            strip_header,
        }
    }

    /// The tier named `name`.
    pub fn by_name(&self, name: &str) -> Option<TierId> {
        self.by_name_bytes(name.as_bytes())
    }

    fn by_name_bytes(&self, name: &[u8]) -> Option<TierId> {
        self.tiers
            .iter()
            .position(|t| t.name.as_bytes() == name)
            .map(|i| TierId(i as u8))
    }

    /// The tier `id` names, if it is of this table.
    pub fn get(&self, id: TierId) -> Option<&Tier> {
        self.tiers.get(id.index())
    }

    /// The tier of unclassified requests.
    pub fn default_tier(&self) -> TierId {
        self.default
    }

    /// The tier header's name, lower-case.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// Whether `identity` or `ip` is in `tiers.trusted_sources`: the proxy honours other
    /// client-supplied claims (a source identity header) only from these peers too.
    pub fn trusts(&self, identity: Option<&str>, ip: Option<std::net::IpAddr>) -> bool {
        self.trusted.contains(identity, ip)
    }

    /// Number of tiers (at most [`MAX_TIERS`]).
    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    /// Always false: a table has at least one tier.
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// Tiers in list order with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (TierId, &Tier)> {
        self.tiers
            .iter()
            .enumerate()
            .map(|(i, t)| (TierId(i as u8), t))
    }
}
