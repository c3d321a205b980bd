//! Tier policies and scaling decisions: who is admitted, who is shed, how many replicas.
//!
//! Pure code: it never touches the network or the wall clock; `now` is an argument.
#![forbid(unsafe_code)]
// No clock here: time is an argument (clippy.toml; allowed for tests in Cargo.toml).
#![cfg_attr(not(test), warn(clippy::disallowed_methods))]
// A panic here takes the service beside us down with it: outside tests, every
// fallible step must be handled (reasoned, local `allow`s where truly unreachable).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod admission;
mod config;
pub mod hpa;
pub mod quantile;
pub mod resize;
pub mod scale;
pub mod sources;
pub mod tiers;

pub use admission::{
    Admission, AdmissionConfig, AdmissionSnapshot, Decision, Outcome, Permit, PreShed,
    PreShedInput, RejectReason, Rejection, Ticket, Topology,
};
pub use config::{PoliciesConfig, PoliciesConfigError};
pub use hpa::{Hpa, HpaDecision, HpaReason, HpaSpec, HpaSpecError, HpaSyncError, MetricSample};
pub use sources::SourcesConfig;
pub use tiers::{Classification, RequestParts, RequestView, TierId, TierTable, TiersConfig};

/// Microseconds on the caller's clock (any fixed epoch: process start, Unix, a trace's
/// first record), the time unit of admission and rate limits.
pub type Micros = u64;
