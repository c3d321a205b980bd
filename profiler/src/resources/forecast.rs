//! Resource forecasts: per-signature demand forecasts times per-signature costs, plus
//! the baseline, with intervals; and the request a container would need to cover them.
//!
//! Demand forecasts are busy concurrency; a signature's request rate is its
//! concurrency over its mean service time (Little's law). The interval bounds add the
//! signatures' bounds (they rise together under a load surge, so this is the
//! conservative sum) and widen them by the cost model's own uncertainty: the
//! coefficients' standard errors and the residual spread, at the forecast's level.

use super::model::{Costs, Fit};
use crate::signature::SignatureId;
use serde::Serialize;

/// One signature's demand forecast, as the forecaster gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct DemandForecast {
    pub id: SignatureId,
    /// Mean service time in seconds, to turn concurrency into a request rate.
    pub mean_service_seconds: f64,
    /// Concurrency per horizon step: (point, lower, upper).
    pub points: Vec<(f64, f64, f64)>,
}

/// A resource forecast at one horizon step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResourcePoint {
    /// 1-based horizon step.
    pub step: usize,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
}

/// Forecasts for every resource the cost model has a fit for.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResourceForecast {
    pub cpu_cores: Vec<ResourcePoint>,
    pub memory_bytes: Vec<ResourcePoint>,
    pub network_bytes_per_second: Vec<ResourcePoint>,
    /// Signatures forecast to have load but without a cost (not yet in the model):
    /// the forecast leaves them out, so it is low by what they cost.
    pub uncosted: Vec<SignatureId>,
}

/// A VPA-style recommendation: the most the lead window needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    pub target: f64,
    pub lower_bound: f64,
    pub upper_bound: f64,
}

/// Which load a resource is proportional to.
#[derive(Copy, Clone)]
enum Driver {
    Rate,
    Concurrency,
}

/// Forecasts CPU, memory and I/O from `demand` and `costs`; `z` is the standard
/// normal quantile of the forecast's interval level (1.645 for 90 %).
pub fn forecast(costs: &Costs, demand: &[DemandForecast], z: f64) -> ResourceForecast {
    let mut uncosted = Vec::new();
    if let Some(cpu) = &costs.cpu {
        for d in demand {
            let loaded = d.points.iter().any(|p| p.2 > 0.0);
            if loaded && !cpu.signatures.contains_key(&d.id) {
                uncosted.push(d.id);
            }
        }
    }
    ResourceForecast {
        cpu_cores: costs
            .cpu
            .as_ref()
            .map_or_else(Vec::new, |f| project(f, demand, z, Driver::Rate)),
        memory_bytes: costs
            .memory
            .as_ref()
            .map_or_else(Vec::new, |f| project(f, demand, z, Driver::Concurrency)),
        network_bytes_per_second: costs
            .io
            .as_ref()
            .map_or_else(Vec::new, |f| project(f, demand, z, Driver::Rate)),
        uncosted,
    }
}

fn project(fit: &Fit, demand: &[DemandForecast], z: f64, driver: Driver) -> Vec<ResourcePoint> {
    let steps = demand.iter().map(|d| d.points.len()).max().unwrap_or(0);
    (0..steps)
        .map(|h| {
            let (mut point, mut lower, mut upper) = (fit.baseline, fit.baseline, fit.baseline);
            let (mut var_lo, mut var_hi) = (fit.residual_sd.powi(2), fit.residual_sd.powi(2));
            for d in demand {
                let (Some(c), Some(&(p, lo, hi))) = (fit.signatures.get(&d.id), d.points.get(h))
                else {
                    continue;
                };
                let to_x = |conc: f64| match driver {
                    Driver::Concurrency => conc.max(0.0),
                    Driver::Rate if d.mean_service_seconds > 0.0 => {
                        conc.max(0.0) / d.mean_service_seconds
                    }
                    Driver::Rate => 0.0,
                };
                let (xp, xl, xh) = (to_x(p), to_x(lo), to_x(hi));
                point += c.value * xp;
                lower += c.value * xl;
                upper += c.value * xh;
                // An unidentified cost has no usable standard error: count its whole
                // contribution as uncertain.
                let se = c.std_error.unwrap_or(c.value).max(0.0);
                var_lo += (xl * se).powi(2);
                var_hi += (xh * se).powi(2);
            }
            ResourcePoint {
                step: h + 1,
                point,
                lower: (lower - z * var_lo.sqrt()).max(0.0),
                upper: upper + z * var_hi.sqrt(),
            }
        })
        .collect()
}

/// The recommendation over the first `lead` steps: the largest point and bounds.
pub fn recommend(points: &[ResourcePoint], lead: usize) -> Option<Recommendation> {
    let window = points.get(..lead.clamp(1, points.len().max(1)))?;
    if window.is_empty() {
        return None;
    }
    let max = |f: fn(&ResourcePoint) -> f64| window.iter().map(f).fold(0.0, f64::max);
    Some(Recommendation {
        target: max(|p| p.point),
        lower_bound: max(|p| p.lower),
        upper_bound: max(|p| p.upper),
    })
}

#[cfg(test)]
mod tests {
    use super::super::model::Coef;
    use super::*;
    use std::collections::BTreeMap;

    fn coef(value: f64, se: f64) -> Coef {
        Coef {
            value,
            std_error: Some(se),
            identified: true,
            rows: 10,
        }
    }

    #[test]
    fn cpu_forecast_is_rate_times_cost_plus_baseline_with_wider_bounds() {
        let costs = Costs {
            cpu: Some(Fit {
                baseline: 0.1,
                residual_sd: 0.0,
                rows: 100,
                signatures: BTreeMap::from([(1, coef(0.02, 0.0)), (2, coef(0.002, 0.0))]),
            }),
            memory: None,
            io: None,
        };
        // Signature 1: 0.5 busy at 50 ms each = 10 req/s → 0.2 cores. Signature 2:
        // 0.1 busy at 5 ms = 20 req/s → 0.04 cores.
        let demand = [
            DemandForecast {
                id: 1,
                mean_service_seconds: 0.05,
                points: vec![(0.5, 0.4, 0.6), (1.0, 0.8, 1.2)],
            },
            DemandForecast {
                id: 2,
                mean_service_seconds: 0.005,
                points: vec![(0.1, 0.1, 0.1), (0.1, 0.1, 0.1)],
            },
            DemandForecast {
                id: 9,
                mean_service_seconds: 0.01,
                points: vec![(0.1, 0.1, 0.1)],
            },
        ];
        let f = forecast(&costs, &demand, 1.645);
        assert_eq!(f.cpu_cores.len(), 2);
        let p = &f.cpu_cores[0];
        assert!((p.point - 0.34).abs() < 1e-9, "{p:?}");
        assert!((p.lower - (0.1 + 0.16 + 0.04)).abs() < 1e-9, "{p:?}");
        assert!((p.upper - (0.1 + 0.24 + 0.04)).abs() < 1e-9, "{p:?}");
        assert!(f.memory_bytes.is_empty());
        assert_eq!(f.uncosted, vec![9]);
        let r = recommend(&f.cpu_cores, 2).unwrap();
        assert!((r.target - (0.1 + 0.4 + 0.04)).abs() < 1e-9, "{r:?}");
        assert!(r.lower_bound <= r.target && r.target <= r.upper_bound);
    }

    #[test]
    fn cost_uncertainty_widens_the_interval() {
        let fit = |se: f64| Costs {
            cpu: Some(Fit {
                baseline: 0.0,
                residual_sd: 0.01,
                rows: 100,
                signatures: BTreeMap::from([(1, coef(0.02, se))]),
            }),
            memory: None,
            io: None,
        };
        let demand = [DemandForecast {
            id: 1,
            mean_service_seconds: 0.05,
            points: vec![(0.5, 0.5, 0.5)],
        }];
        let sure = forecast(&fit(0.0), &demand, 1.645).cpu_cores[0].clone();
        let unsure = forecast(&fit(0.005), &demand, 1.645).cpu_cores[0].clone();
        assert!(
            (sure.upper - sure.point - 1.645 * 0.01).abs() < 1e-9,
            "{sure:?}"
        );
        assert!(unsure.upper > sure.upper && unsure.lower < sure.lower);
    }
}
