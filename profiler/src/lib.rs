//! The load-signature profiler: per-request features, signatures, series, forecasts.
//!
//! Pure code: it never touches the network, a runtime or the wall clock. Callers pass
//! `now` in, so the live proxy and `prescale replay` run exactly the same logic.
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

pub mod anomaly;
mod config;
pub mod fanout;
pub mod forecast;
mod profile;
pub mod recorder;
pub mod resources;
pub mod route;
pub mod sample;
pub mod series;
pub mod signature;
mod stats;
pub mod store;
#[cfg(test)]
#[path = "../../tests/support/require.rs"]
mod test_require;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod topk;
pub mod trace;

pub use config::{ForecastConfig, ProfilerConfig, ProfilerConfigError, StoreConfig};
pub use profile::{Profile, ProfileView, RouteView, SignatureView};
pub use stats::CostSummary;
