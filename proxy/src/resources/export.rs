//! Resource metrics: the source's health, per-signature costs and resource forecasts.
//!
//! Labels stay bounded: `signature` (≤ 17 ids), `q` (3 levels), `horizon` (the
//! forecast's steps plus `lead`), `source` (2 values).

use super::view::{PointOut, ResourcesView};
use metrics::{describe_counter, describe_gauge, Unit};
use prescale_profiler::resources::{Observation, Recommendation};
use std::collections::BTreeSet;

pub const SAMPLES: &str = "prescale_resources_samples_total";
pub const SAMPLE_ERRORS: &str = "prescale_resources_sample_errors_total";
pub const FIT_SECONDS: &str = "prescale_resources_fit_seconds";
pub const OBSERVED_CPU: &str = "prescale_resources_cpu_cores";
pub const OBSERVED_MEMORY: &str = "prescale_resources_memory_bytes";
pub const SIGNATURE_CPU: &str = "prescale_signature_cpu_seconds_per_request";
pub const SIGNATURE_MEMORY: &str = "prescale_signature_memory_bytes";
pub const FORECAST_CPU: &str = "prescale_forecast_cpu_cores";
pub const FORECAST_MEMORY: &str = "prescale_forecast_memory_bytes";
pub const FORECAST_NETWORK: &str = "prescale_forecast_network_bytes_per_second";

pub fn describe() {
    describe_counter!(SAMPLES, "Successful reads of the resource source.");
    describe_counter!(
        SAMPLE_ERRORS,
        "Failed reads of the resource source (process gone, cgroup unreadable)."
    );
    describe_gauge!(
        FIT_SECONDS,
        Unit::Seconds,
        "Time the last resource sample, cost fit and forecast took (off the data path)."
    );
    describe_gauge!(
        OBSERVED_CPU,
        "CPU cores the service used over the last interval."
    );
    describe_gauge!(
        OBSERVED_MEMORY,
        Unit::Bytes,
        "Memory the service held at the last sample (RSS, or cgroup working set)."
    );
    describe_gauge!(
        SIGNATURE_CPU,
        Unit::Seconds,
        "CPU seconds one request of the signature costs the service; 0 when not identified."
    );
    describe_gauge!(
        SIGNATURE_MEMORY,
        Unit::Bytes,
        "Memory per concurrent request of the signature; 0 when not identified."
    );
    describe_gauge!(
        FORECAST_CPU,
        "Forecast CPU cores (q 0.5 = point, others = interval bounds) per horizon."
    );
    describe_gauge!(FORECAST_MEMORY, Unit::Bytes, "Forecast memory per horizon.");
    describe_gauge!(
        FORECAST_NETWORK,
        "Forecast I/O bytes per second of the service per horizon."
    );
}

/// Publishes the view; `exported` holds the signatures whose gauges were set last
/// time (kept by the sampler thread), to zero those that left.
pub(super) fn export(
    view: &ResourcesView,
    last: Option<&Observation>,
    exported: &mut BTreeSet<u32>,
) {
    if let Some(o) = last {
        if let Some(c) = o.cpu_cores {
            ::metrics::gauge!(OBSERVED_CPU).set(c);
        }
        if let Some(m) = o.memory_bytes {
            ::metrics::gauge!(OBSERVED_MEMORY).set(m);
        }
    }
    let current: BTreeSet<u32> = view.signatures.iter().map(|s| s.id).collect();
    for gone in exported.difference(&current) {
        let id = gone.to_string();
        ::metrics::gauge!(SIGNATURE_CPU, "signature" => id.clone()).set(0.0);
        ::metrics::gauge!(SIGNATURE_MEMORY, "signature" => id).set(0.0);
    }
    *exported = current;
    for s in &view.signatures {
        let id = s.id.to_string();
        ::metrics::gauge!(SIGNATURE_CPU, "signature" => id.clone())
            .set(s.cpu_seconds_per_request.unwrap_or(0.0));
        ::metrics::gauge!(SIGNATURE_MEMORY, "signature" => id)
            .set(s.memory_bytes_per_request.unwrap_or(0.0));
    }
    let f = &view.forecast;
    let round = |q: f64| format!("{}", (q * 1000.0).round() / 1000.0);
    let (lo, hi) = (round((1.0 - f.level) / 2.0), round((1.0 + f.level) / 2.0));
    let r = &view.recommendation;
    for (name, points, rec) in [
        (FORECAST_CPU, &f.cpu_cores, r.cpu_cores.as_ref()),
        (FORECAST_MEMORY, &f.memory_bytes, r.memory_bytes.as_ref()),
        (FORECAST_NETWORK, &f.network_bytes_per_second, None),
    ] {
        series(name, points, rec, &lo, &hi);
    }
}

fn series(
    name: &'static str,
    points: &[PointOut],
    lead: Option<&Recommendation>,
    lo: &str,
    hi: &str,
) {
    for p in points {
        let horizon = format!("{}s", p.horizon_seconds);
        for (q, v) in [("0.5", p.point), (lo, p.lower), (hi, p.upper)] {
            ::metrics::gauge!(name, "q" => q.to_string(), "horizon" => horizon.clone()).set(v);
        }
    }
    // The most the lead window needs, as for demand.
    if let Some(r) = lead {
        for (q, v) in [("0.5", r.target), (lo, r.lower_bound), (hi, r.upper_bound)] {
            ::metrics::gauge!(name, "q" => q.to_string(), "horizon" => "lead").set(v);
        }
    }
}
