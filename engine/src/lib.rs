//! The decision engine: one pure type that the sidecar and `prescale replay` both run.
//!
//! Fed observations with explicit time (completed minute buckets of per-signature
//! work, current demand at each decision, the admission's state when there is one),
//! the [`Engine`] owns the step series, one forecaster per series, the scaling rule
//! and the pre-shed model, and returns intents: desired replicas with their reason and
//! planning, the pre-shed level, the forecasts. No thread, clock, network or file:
//! the sidecar's forecaster thread (`prescale_proxy::forecasting`) feeds it on the
//! real clock and carries its intents out (admission, signals, metrics); replay feeds
//! it on trace time (`src/replay/sim.rs`). Same type, same config, same decisions.
//!
//! Why a crate of its own: it needs both the profiler (the forecaster, minute buckets)
//! and the policies (the scaling rule, pre-shedding), and those two do not depend on
//! each other (policies takes plain numbers, see docs/architecture.md). Putting it in
//! either would add that arrow; putting it in `proxy/` would make replay build the
//! data plane's decision code through the effect crate. Here it depends on both, and
//! `proxy/` and the root depend on it.
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

mod decide;
pub mod preshed;
mod reconcile;
mod series;
mod view;

pub use decide::{AdmissionState, Engine, Intent, Observation};
pub use preshed::PreShedding;
pub use reconcile::{
    Errors, Reconciled, Reconciliation, RunScores, RunStepScore, Source, SourceScore,
};
pub use series::{Refit, SeriesKey, StepJudge};
pub use view::{ForecastSummary, ForecastView, PointView, ReconciledView, SeriesForecast};

/// Milliseconds on the caller's clock (Unix time live, trace time in replay).
pub type Millis = u64;

/// How long after a minute ends it is handed to the engine: samples of requests that
/// finished just before the minute's end may still be on their way to the profiler.
/// The sidecar's profiler thread waits this long; replay does the same.
pub const MINUTE_GRACE_MS: Millis = 2_000;
