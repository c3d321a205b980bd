//! Tier policies and scaling decisions: who is admitted, who is shed, how many replicas.
//!
//! Pure code: it never touches the network or the wall clock; `now` is an argument.
#![forbid(unsafe_code)]

mod config;

pub use config::{PoliciesConfig, PoliciesConfigError};
