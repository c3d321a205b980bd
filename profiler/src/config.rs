//! The `profiler:` section of the mesh config, owned and validated by this crate.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings for the inline profiler.
///
/// Only the switch and the recording cadence exist so far; signatures, series and the
/// store add their settings here as they land, each with a default and a bound.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilerConfig {
    /// Whether requests are profiled at all. Off means the data path records nothing.
    pub enabled: bool,
    /// How often the profiler drains recorded samples, off the data path.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
}

/// A profiler setting that is out of its bounds.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("profiler.{field}: {reason}")]
pub struct ProfilerConfigError {
    pub field: &'static str,
    pub reason: String,
}

// === impl ProfilerConfig ===

impl Default for ProfilerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick: Duration::from_secs(1),
        }
    }
}

impl ProfilerConfig {
    /// Checks bounds that serde cannot express.
    pub fn validate(&self) -> Result<(), ProfilerConfigError> {
        // A tick under 100 ms would spend the sidecar's CPU on bookkeeping; over a minute
        // would make the 10 s series buckets meaningless.
        if self.tick < Duration::from_millis(100) || self.tick > Duration::from_secs(60) {
            return Err(ProfilerConfigError {
                field: "tick",
                reason: format!("must be between 100ms and 60s, got {:?}", self.tick),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_out_of_range_tick_is_refused() {
        assert_eq!(ProfilerConfig::default().validate(), Ok(()));
        let cfg = ProfilerConfig {
            tick: Duration::from_millis(10),
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.field, "tick");
    }
}
