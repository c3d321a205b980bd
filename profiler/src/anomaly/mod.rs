//! Anomaly detection: demand outside its forecast, level shifts, signature drift and
//! misbehaving sources, each reported as an [`AnomalyEvent`] the caller logs, counts
//! and acts on.
//!
//! Pure like the rest of the profiler: every detector takes `now` from the caller and
//! keeps bounded state. The detectors only say what is wrong; what to do about it
//! (alerting, demoting a source) is decided in `policies/` and done in `proxy/`.
//!
//! - [`rate`]: demand sustained outside the forecast's calibrated interval (or one
//!   step further out than anything the series did lately), with
//!   [`changepoint`] turning a confirmed level shift into one refit request instead of
//!   an alert that never ends.
//! - [`drift`]: a new signature far from all known ones, a share shift, a cost rise at
//!   constant mix (the leak or bad-deploy pattern).
//! - [`source`]: a top-K source whose rate or signature mix departs from its own
//!   baseline.
//! - [`snapshot`]: the drift detector's input, built from finished requests.
//! - [`registry`]: the bounded set of active anomalies behind `GET /v1/anomalies`.
//! - [`monitor`]: all of the above behind one struct, for the live wiring.
//! - [`eval`]: window-level scoring on labelled series (NAB), against a z-score baseline.

pub mod changepoint;
mod config;
mod departure;
pub mod drift;
pub mod eval;
pub mod monitor;
pub mod rate;
pub mod registry;
pub mod snapshot;
pub mod source;

pub use self::config::{AnomalyConfig, AnomalyConfigError};
pub use self::monitor::AnomalyMonitor;
pub use self::registry::{AnomaliesView, Registry};

use crate::sample::Millis;
use crate::signature::SignatureId;
use serde::Serialize;
use std::collections::BTreeMap;

/// What kind of anomaly; a fixed set, so `kind` is a safe metric label.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// Demand sustained outside its forecast interval, or a record spike beyond it.
    Rate,
    /// A confirmed level shift in demand; the forecaster should refit.
    ChangePoint,
    /// A signature far from every signature known before it.
    NewSignature,
    /// A signature's share of traffic moved sharply from its baseline.
    ShareShift,
    /// A signature's service time or response size rose at a constant mix.
    CostDrift,
    /// A source sending many times its own usual rate.
    SourceRate,
    /// A source whose signature mix departs from its own usual mix.
    SourceMix,
}

/// Which way a measure left its expected range.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Above,
    Below,
}

/// The numbers behind an anomaly (e.g. `actual`, `upper`, `baseline`): a handful of
/// fixed keys per kind, so it stays small.
pub type Evidence = BTreeMap<&'static str, f64>;

/// One active anomaly, as `GET /v1/anomalies` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    /// What is anomalous: `total`, `signature:<id>` or `source:<hash>`; bounded by the
    /// helpers below (no raw client identity ever appears).
    pub subject: String,
    /// When the anomaly began (the first step of the evidence, not when it was raised).
    pub since: Millis,
    /// When it was last confirmed.
    pub updated: Millis,
    /// How far out, in the kind's unit (documented per detector); larger is worse.
    pub severity: f64,
    /// None for kinds without a direction (new signature, mix change).
    pub direction: Option<Direction>,
    pub evidence: Evidence,
}

/// What a detector reports at a step.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AnomalyEvent {
    /// A new anomaly: count it, log it, alert on it.
    Raised(Anomaly),
    /// An active anomaly is still there; its severity and evidence are refreshed.
    Updated(Anomaly),
    /// The anomaly `(kind, subject)` that began at `since` ended at `at`.
    Cleared {
        kind: AnomalyKind,
        subject: String,
        since: Millis,
        at: Millis,
    },
    /// A level shift in `subject` was confirmed: the forecaster of that series should
    /// forget the history before `since` and refit, or it keeps forecasting the old
    /// level. The detector has already stopped alerting for this shift.
    RefitRequested {
        subject: String,
        since: Millis,
        at: Millis,
    },
}

/// The subject naming the whole service's demand.
pub const TOTAL: &str = "total";

/// The subject naming one signature's demand or cost.
pub fn signature_subject(id: SignatureId) -> String {
    format!("signature:{id}")
}

/// The subject naming one source, by the hash the data path computed (never the raw
/// client identity).
pub fn source_subject(source: u64) -> String {
    format!("source:{source:016x}")
}

/// The source hash a [`source_subject`] names; `None` for any other subject.
pub fn subject_source(subject: &str) -> Option<u64> {
    let hex = subject.strip_prefix("source:")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The signature a [`signature_subject`] names; `None` for any other subject.
pub fn subject_signature(subject: &str) -> Option<SignatureId> {
    subject.strip_prefix("signature:")?.parse().ok()
}

// === impl AnomalyKind ===

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 7] = [
        Self::Rate,
        Self::ChangePoint,
        Self::NewSignature,
        Self::ShareShift,
        Self::CostDrift,
        Self::SourceRate,
        Self::SourceMix,
    ];

    /// The `kind` label value of `prescale_anomalies_total{kind}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::ChangePoint => "change_point",
            Self::NewSignature => "new_signature",
            Self::ShareShift => "share_shift",
            Self::CostDrift => "cost_drift",
            Self::SourceRate => "source_rate",
            Self::SourceMix => "source_mix",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

// === impl AnomalyEvent ===

impl AnomalyEvent {
    pub fn kind(&self) -> Option<AnomalyKind> {
        match self {
            Self::Raised(a) | Self::Updated(a) => Some(a.kind),
            Self::Cleared { kind, .. } => Some(*kind),
            Self::RefitRequested { .. } => None,
        }
    }

    pub fn subject(&self) -> &str {
        match self {
            Self::Raised(a) | Self::Updated(a) => &a.subject,
            Self::Cleared { subject, .. } | Self::RefitRequested { subject, .. } => subject,
        }
    }

    fn cleared(a: &Anomaly, at: Millis) -> Self {
        Self::Cleared {
            kind: a.kind,
            subject: a.subject.clone(),
            since: a.since,
            at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_a_fixed_label_set_and_events_serialize_for_the_log() {
        let labels: Vec<&str> = AnomalyKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), 7);
        for (i, k) in AnomalyKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
            // The serde name and the label agree, so logs and metrics say the same.
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        let e = AnomalyEvent::RefitRequested {
            subject: TOTAL.into(),
            since: 1,
            at: 2,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "refit_requested");
        assert_eq!(source_subject(0xab), "source:00000000000000ab");
        assert_eq!(signature_subject(3), "signature:3");
        // Subjects parse back to what they name, and nothing else does.
        assert_eq!(subject_source(&source_subject(u64::MAX)), Some(u64::MAX));
        assert_eq!(subject_source("source:ab"), None);
        assert_eq!(subject_source(TOTAL), None);
        assert_eq!(subject_signature(&signature_subject(7)), Some(7));
        assert_eq!(subject_signature("signature:x"), None);
    }
}
