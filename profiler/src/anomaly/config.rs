//! The `anomaly:` settings: one serde struct per detector with defaults, validated here
//! (the proxy assembles it into its config file like the other sections).

use super::changepoint::ChangePointParams;
use super::drift::DriftParams;
use super::rate::RateParams;
use super::source::SourceParams;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    /// Off: no detector runs and nothing is reported.
    pub enabled: bool,
    /// Active anomalies kept for `GET /v1/anomalies`; beyond it the least severe drop.
    pub max_active: usize,
    pub rate: RateParams,
    pub change_point: ChangePointParams,
    pub drift: DriftParams,
    pub source: SourceParams,
}

/// An anomaly setting out of its bounds.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("anomaly.{field}: {reason}")]
pub struct AnomalyConfigError {
    pub field: &'static str,
    pub reason: String,
}

// === impl AnomalyConfig ===

/// Detection is on by default: it only reports (what to do is the policies' call, and
/// their remediation is shadow by default).
impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_active: 256,
            rate: RateParams::default(),
            change_point: ChangePointParams::default(),
            drift: DriftParams::default(),
            source: SourceParams::default(),
        }
    }
}

impl AnomalyConfig {
    /// Checks bounds serde cannot express.
    pub fn validate(&self) -> Result<(), AnomalyConfigError> {
        let err = |field, reason: &str| {
            Err(AnomalyConfigError {
                field,
                reason: reason.into(),
            })
        };
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        if !(1..=10_000).contains(&self.max_active) {
            return err("max_active", "must be between 1 and 10000");
        }
        let r = &self.rate;
        if !(1..=100).contains(&r.window) || r.min_outside == 0 || r.min_outside > r.window {
            return err("rate.window", "need 1 <= min_outside <= window <= 100");
        }
        if !(1..=100).contains(&r.clear_after) {
            return err("rate.clear_after", "must be between 1 and 100");
        }
        if !(0.0..=100.0).contains(&r.margin) || !unit(r.min_width_ratio) {
            return err(
                "rate.margin",
                "margin must be 0..=100 and min_width_ratio 0..=1",
            );
        }
        if !(r.spike_excess >= 0.0 && r.spike_excess.is_finite()) || r.spike_memory > 100_000 {
            return err(
                "rate.spike_excess",
                "need a finite spike_excess >= 0 and spike_memory <= 100000",
            );
        }
        let c = &self.change_point;
        if !(c.drift >= 0.0 && c.threshold > 0.0 && c.threshold.is_finite()) {
            return err(
                "change_point.threshold",
                "need drift >= 0 and a finite threshold > 0",
            );
        }
        if !(2..=1000).contains(&c.confirm_steps) || c.max_shift_steps == 0 {
            return err(
                "change_point.confirm_steps",
                "need 2 <= confirm_steps <= 1000 and max_shift_steps >= 1",
            );
        }
        let d = &self.drift;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d.interval) {
            return err("drift.interval", "must be between 1s and 1h");
        }
        if !(d.alpha > 0.0 && d.alpha <= 1.0) {
            return err("drift.alpha", "must be in (0, 1]");
        }
        if d.sustain == 0 || d.warmup == 0 || d.accept_after <= d.sustain {
            return err(
                "drift.sustain",
                "need sustain, warmup >= 1 and accept_after > sustain",
            );
        }
        if !(d.new_signature_distance > 0.0
            && unit(d.share_shift)
            && d.cost_rise > 0.0
            && unit(d.mix_tolerance))
        {
            return err(
                "drift.share_shift",
                "need new_signature_distance > 0, cost_rise > 0, share_shift and mix_tolerance in 0..=1",
            );
        }
        let s = &self.source;
        if !(1..=100_000).contains(&s.capacity) {
            return err("source.capacity", "must be between 1 and 100000");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&s.interval) {
            return err("source.interval", "must be between 1s and 1h");
        }
        if !(s.alpha > 0.0 && s.alpha <= 1.0) || s.sustain == 0 {
            return err("source.alpha", "need alpha in (0, 1] and sustain >= 1");
        }
        if !(s.rate_factor > 1.0 && s.min_rate >= 0.0 && unit(s.mix_distance)) {
            return err(
                "source.rate_factor",
                "need rate_factor > 1, min_rate >= 0 and mix_distance in 0..=1",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused_with_their_field() {
        assert_eq!(AnomalyConfig::default().validate(), Ok(()));
        let mut c = AnomalyConfig::default();
        c.rate.min_outside = 9;
        assert_eq!(c.validate().unwrap_err().field, "rate.window");
        let mut c = AnomalyConfig::default();
        c.rate.spike_excess = f64::NAN;
        assert_eq!(c.validate().unwrap_err().field, "rate.spike_excess");
        let mut c = AnomalyConfig::default();
        c.rate.spike_memory = 1_000_000;
        assert_eq!(c.validate().unwrap_err().field, "rate.spike_excess");
        let mut c = AnomalyConfig::default();
        c.source.interval = Duration::from_millis(10);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "anomaly.source.interval: must be between 1s and 1h"
        );
        // A YAML/JSON section with a partial override keeps the other defaults.
        let c: AnomalyConfig = serde_json::from_str(
            r#"{"enabled": true, "max_active": 10, "source": {"interval": "30s"}}"#,
        )
        .unwrap();
        assert_eq!(c.source.interval, Duration::from_secs(30));
        assert_eq!(c.source.capacity, 256);
        assert!(serde_json::from_str::<AnomalyConfig>(r#"{"nope": 1}"#).is_err());
    }
}
