//! What each load signature costs the service in CPU, memory and I/O, and the
//! resource forecasts that follow from the demand forecasts.
//!
//! Pure code like the rest of the crate: observations and forecasts come in, fits and
//! projections go out; sampling the service lives in the proxy.

mod forecast;
mod linalg;
mod model;

pub use forecast::{
    forecast, recommend, DemandForecast, Recommendation, ResourceForecast, ResourcePoint,
};
pub use model::{
    Coef, CostModel, Costs, Fit, Load, Observation, MAX_RELATIVE_ERROR, MIN_INDEPENDENT_SHARE,
    MIN_ROWS,
};
