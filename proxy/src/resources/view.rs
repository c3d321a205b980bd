//! `GET /v1/resources`: the source, what each signature costs, the resource forecast
//! and the request that would cover it.

use crate::forecasting::ForecastView;
use prescale_profiler::resources::{
    forecast, recommend, Costs, DemandForecast, Fit, Observation, Recommendation, ResourcePoint,
};
use prescale_profiler::signature::SignatureId;
use prescale_profiler::ProfileView;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct ResourcesView {
    pub source: &'static str,
    /// Successful and failed reads of the source.
    pub samples: u64,
    pub sample_errors: u64,
    /// Intervals the cost model is fitted on.
    pub intervals: usize,
    /// The last interval measured.
    pub observed: Option<Observed>,
    /// What the service uses with no load.
    pub baseline: Baseline,
    pub signatures: Vec<SignatureCost>,
    pub forecast: ForecastOut,
    pub recommendation: RecommendationOut,
}

#[derive(Clone, Debug, Serialize)]
pub struct Observed {
    pub cpu_cores: Option<f64>,
    pub memory_bytes: Option<f64>,
    /// I/O the source reports (`rchar + wchar`, or `io.stat`), not modelled.
    pub io_bytes_per_second: Option<f64>,
    /// Request plus response body bytes the sidecar carried: what the network
    /// costs and forecast are fitted on.
    pub network_bytes_per_second: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Baseline {
    pub cpu_cores: Option<f64>,
    pub memory_bytes: Option<f64>,
}

/// One signature's costs. A cost the load mix does not identify is `null`, with
/// `identified: false`, not a number that merely fits.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureCost {
    pub id: SignatureId,
    pub top_route: Option<String>,
    pub cpu_seconds_per_request: Option<f64>,
    pub cpu_seconds_per_request_std_error: Option<f64>,
    pub memory_bytes_per_request: Option<f64>,
    pub memory_bytes_per_request_std_error: Option<f64>,
    /// Request plus response body bytes per request, from the sidecar's own counts.
    pub network_bytes_per_request: Option<f64>,
    /// Whether the CPU cost is identified (the one decisions use).
    pub identified: bool,
    pub memory_identified: bool,
    /// Intervals in which the signature had traffic.
    pub intervals: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ForecastOut {
    pub step_seconds: u64,
    pub level: f64,
    pub cpu_cores: Vec<PointOut>,
    pub memory_bytes: Vec<PointOut>,
    pub network_bytes_per_second: Vec<PointOut>,
    /// Signatures with forecast load but no cost yet: the forecast is low by theirs.
    pub uncosted: Vec<SignatureId>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PointOut {
    pub horizon_seconds: u64,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
}

/// VPA-style bounds over the lead window, per resource.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecommendationOut {
    pub lead_seconds: u64,
    pub cpu_cores: Option<Recommendation>,
    pub memory_bytes: Option<Recommendation>,
}

pub(super) struct Inputs<'a> {
    pub source: &'static str,
    pub samples: u64,
    pub errors: u64,
    pub intervals: usize,
    pub last: Option<&'a Observation>,
    /// The source's own I/O over the last interval, bytes/s.
    pub source_io: Option<f64>,
    pub costs: &'a Costs,
    pub profile: &'a ProfileView,
    pub forecast: &'a ForecastView,
    /// `run --time-scale`: the profile's service times are stretched by it, while the
    /// costs are per wall second of CPU.
    pub time_scale: f64,
}

// === impl ResourcesView ===

impl ResourcesView {
    pub fn empty(source: &'static str) -> Self {
        Self {
            source,
            samples: 0,
            sample_errors: 0,
            intervals: 0,
            observed: None,
            baseline: Baseline::default(),
            signatures: Vec::new(),
            forecast: ForecastOut::default(),
            recommendation: RecommendationOut::default(),
        }
    }
}

pub(super) fn build(i: Inputs<'_>) -> ResourcesView {
    let coef = |fit: &Option<Fit>, id: SignatureId| fit.as_ref()?.signatures.get(&id).cloned();
    let signatures = i
        .profile
        .signatures
        .iter()
        .map(|s| {
            let cpu = coef(&i.costs.cpu, s.id);
            let mem = coef(&i.costs.memory, s.id);
            let io = coef(&i.costs.io, s.id);
            let identified = cpu.as_ref().is_some_and(|c| c.identified);
            let memory_identified = mem.as_ref().is_some_and(|c| c.identified);
            SignatureCost {
                id: s.id,
                top_route: s.top_routes.first().map(|r| r.route.clone()),
                cpu_seconds_per_request: cpu.as_ref().filter(|c| c.identified).map(|c| c.value),
                cpu_seconds_per_request_std_error: cpu
                    .as_ref()
                    .filter(|c| c.identified)
                    .and_then(|c| c.std_error),
                memory_bytes_per_request: mem.as_ref().filter(|c| c.identified).map(|c| c.value),
                memory_bytes_per_request_std_error: mem
                    .as_ref()
                    .filter(|c| c.identified)
                    .and_then(|c| c.std_error),
                network_bytes_per_request: io.filter(|c| c.identified).map(|c| c.value),
                identified,
                memory_identified,
                intervals: cpu.map_or(0, |c| c.rows),
            }
        })
        .collect();

    let step = i.forecast.step_seconds;
    let demand: Vec<DemandForecast> = i
        .forecast
        .series
        .iter()
        .filter_map(|(key, f)| {
            let id: SignatureId = key.parse().ok()?;
            let mean = i
                .profile
                .signatures
                .iter()
                .find(|s| s.id == id)
                .map_or(0.0, |s| s.service_time_seconds.mean)
                / i.time_scale.max(1.0);
            Some(DemandForecast {
                id,
                mean_service_seconds: mean,
                points: f
                    .points
                    .iter()
                    .map(|p| (p.point, p.lower, p.upper))
                    .collect(),
            })
        })
        .collect();
    let level = if i.forecast.level > 0.0 && i.forecast.level < 1.0 {
        i.forecast.level
    } else {
        0.9
    };
    let z = prescale_policies::quantile::normal_quantile((1.0 + level) / 2.0);
    let f = forecast(i.costs, &demand, z);
    let out = |pts: &[ResourcePoint]| -> Vec<PointOut> {
        pts.iter()
            .map(|p| PointOut {
                horizon_seconds: p.step as u64 * step,
                point: p.point,
                lower: p.lower,
                upper: p.upper,
            })
            .collect()
    };
    let lead = i.forecast.lead_steps.max(1);
    ResourcesView {
        source: i.source,
        samples: i.samples,
        sample_errors: i.errors,
        intervals: i.intervals,
        observed: i.last.map(|o| Observed {
            cpu_cores: o.cpu_cores,
            memory_bytes: o.memory_bytes,
            io_bytes_per_second: i.source_io,
            network_bytes_per_second: o.io_bytes_per_second,
        }),
        baseline: Baseline {
            cpu_cores: i.costs.cpu.as_ref().map(|f| f.baseline),
            memory_bytes: i.costs.memory.as_ref().map(|f| f.baseline),
        },
        signatures,
        forecast: ForecastOut {
            step_seconds: step,
            level,
            cpu_cores: out(&f.cpu_cores),
            memory_bytes: out(&f.memory_bytes),
            network_bytes_per_second: out(&f.network_bytes_per_second),
            uncosted: f.uncosted,
        },
        recommendation: RecommendationOut {
            lead_seconds: lead as u64 * step,
            cpu_cores: recommend(&f.cpu_cores, lead),
            memory_bytes: recommend(&f.memory_bytes, lead),
        },
    }
}
