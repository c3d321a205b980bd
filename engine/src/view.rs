//! What the engine shows of its forecasts: `GET /v1/forecast`'s body, and the total's
//! lead-window summary sent with each decision.

use crate::reconcile::Reconciliation;
use crate::Millis;
use prescale_profiler::forecast::{Accuracy, ModelKind};
use serde::Serialize;
use std::collections::BTreeMap;

/// `GET /v1/forecast`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForecastView {
    pub step_seconds: u64,
    pub level: f64,
    pub horizon_steps: usize,
    /// Of those, the steps the scaling decision looks at (the lead time in force).
    pub lead_steps: usize,
    /// Unix milliseconds of the last observed step.
    pub origin: Option<Millis>,
    /// `total` and each signature id.
    pub series: BTreeMap<String, SeriesForecast>,
    /// The total planned with: the direct forecast (`series.total`) against the
    /// bottom-up sum of the signatures', scored, and the choice per horizon step.
    /// None before the first forecast (and after a warm start, until a live step).
    pub total: Option<ReconciledView>,
}

/// The reconciled total (`engine/src/reconcile.rs`).
#[derive(Clone, Debug, Serialize)]
pub struct ReconciledView {
    #[serde(flatten)]
    pub choice: Reconciliation,
    /// The forecast the scaling rule plans with.
    pub planned: Vec<PointView>,
    /// The signatures' forecasts and the unclassified remainder's, summed (None:
    /// no signatures, only the direct forecast).
    pub bottom_up: Option<Vec<PointView>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SeriesForecast {
    pub model: ModelKind,
    pub calibrated: bool,
    /// Demand (busy concurrency) observed in the last step.
    pub last: f64,
    pub points: Vec<PointView>,
    pub accuracy: Accuracy,
}

#[derive(Clone, Debug, Serialize)]
pub struct PointView {
    /// Unix milliseconds at the end of the forecast step.
    pub at: Millis,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
}

/// The total-demand forecast behind a decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForecastSummary {
    /// Highest upper bound over [now, now + lead time]: what the scaling rule used.
    pub demand_upper: f64,
    /// Point and interval at the end of the horizon.
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
    pub level: f64,
    pub horizon_seconds: u64,
}
