//! Tiers: which traffic matters most, picked per request by ordered match rules.
//!
//! A request's tier comes, in order, from the tier header (only when the source is
//! trusted; otherwise the header is ignored and flagged for stripping, so a client cannot
//! promote itself), the source identity's configured tier, the first tier in list order
//! whose rules all hold, or the default tier.

mod config;
mod request;
mod rules;
mod source_set;
mod table;

#[cfg(test)]
pub(crate) mod tests;

pub use self::config::{MatchConfig, TierConfig, TiersConfig};
pub use self::request::{RequestParts, RequestView};
pub use self::table::{Classification, ClassifiedBy, Tier, TierId, TierTable, MAX_TIERS};
