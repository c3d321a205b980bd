//! The load-signature profiler: per-request features, signatures, series, forecasts.
//!
//! Pure code: it never touches the network, a runtime or the wall clock. Callers pass
//! `now` in, so the live proxy and `prescale replay` run exactly the same logic.
#![forbid(unsafe_code)]

mod config;

pub use config::{ProfilerConfig, ProfilerConfigError};
