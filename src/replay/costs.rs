//! Resource costs on a replayed request log: the sidecar's per-signature cost model
//! (`prescale_profiler::resources`: non-negative least squares with a baseline,
//! standard errors, `identified`) fitted on what the log implies the service used,
//! and the resource forecast (the engine's per-signature forecasts times those costs)
//! scored against it.
//!
//! Per minute of the log, the observed resources are the ones a log can show: CPU as
//! the logged service time (the `duration` column: Σ durations / 60 s is the mean
//! cores busy, a proxy that counts waiting as CPU) when the log has one, and network
//! as request plus response body bytes / 60 s, what the sidecar counts. The load is
//! the profiler's minute buckets (`Trace::minutes`): per signature, requests per
//! second. Minutes are rows as the sidecar's ticks are (idle minutes too, which pin
//! the baseline); a new signature restarts the window, as live. The forecast at each
//! engine step is `prescale_profiler::resources::forecast` of the engine's latest
//! per-signature forecasts with the costs fitted on the minutes before it, and each
//! horizon step is scored on the mean usage of the step it predicted.

use super::engine::EngineSetup;
use super::trace::{MinuteUse, Trace};
use prescale_engine::SeriesKey;
use prescale_profiler::resources::{
    forecast, recommend, CostModel, Costs, DemandForecast, Load, Observation, ResourcePoint,
};
use prescale_profiler::sample::Millis;
use prescale_profiler::series::{Bucket, MINUTE_MS};
use prescale_profiler::signature::SignatureId;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Minutes the cost window keeps: the sidecar's interval cap
/// (`prescale_proxy::resources::MAX_INTERVALS`), here five days of minutes.
const WINDOW: usize = prescale_proxy::resources::MAX_INTERVALS;
/// Minutes between refits of the costs (a refit is O(rows · signatures²)).
const REFIT_EVERY: u64 = 60;
/// A log's service times stand for CPU only when nearly every request has one.
const MIN_TIMED_SHARE: f64 = 0.9;

/// A resource the log implies.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Cores: Σ logged service time / interval.
    Cpu,
    /// Request plus response body bytes per second.
    Network,
}

/// The resource forecasts issued at one engine step.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Start of the last step fed (Unix ms): step h predicts origin + h steps.
    pub origin: Millis,
    /// Unix ms at which it was issued (the minute that closed the step was fed).
    pub due: Millis,
    pub cpu: Vec<ResourcePoint>,
    pub network: Vec<ResourcePoint>,
}

/// One horizon step's score of a resource forecast against what the log implies.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct StepScore {
    pub step: usize,
    pub seconds_ahead: u64,
    pub scored: usize,
    pub mean_observed: f64,
    pub mean_forecast: f64,
    pub mae: f64,
    /// Share of steps whose observed usage lay inside the forecast's interval.
    pub coverage: f64,
}

/// One signature's fitted costs.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureCost {
    pub id: SignatureId,
    pub top_route: Option<String>,
    /// Requests in the log's minutes.
    pub requests: u64,
    pub cpu_seconds_per_request: Option<f64>,
    pub cpu_std_error: Option<f64>,
    pub cpu_identified: Option<bool>,
    pub network_bytes_per_request: Option<f64>,
    pub network_std_error: Option<f64>,
    pub network_identified: Option<bool>,
    /// What the log itself shows for the signature's requests (bytes per request,
    /// logged seconds per request): what an identified cost should be near.
    pub logged_bytes_per_request: f64,
    pub logged_seconds_per_request: Option<f64>,
}

/// Everything `summary.json`'s `costs` holds.
#[derive(Clone, Debug, Serialize)]
pub struct CostReport {
    /// Resources the log implies (CPU only with a duration column).
    pub observed: Vec<Resource>,
    pub rows: usize,
    pub step_seconds: u64,
    pub level: f64,
    pub cpu_baseline: Option<f64>,
    pub network_baseline: Option<f64>,
    pub signatures: Vec<SignatureCost>,
    pub cpu_forecast: Vec<StepScore>,
    pub network_forecast: Vec<StepScore>,
    /// Mean CPU seconds per logged request over the whole log.
    pub cpu_seconds_per_request: Option<f64>,
    /// What the resize bridge would have covered (CPU observed only).
    pub bridge: Option<super::bridge::BridgeReport>,
    #[serde(skip)]
    pub issued: Vec<Issued>,
}

/// Per-signature logged totals: requests, bytes, timed requests, timed seconds.
type Logged = BTreeMap<SignatureId, (u64, f64)>;

/// Fits the costs and scores the resource forecasts; None for a count series.
pub fn evaluate(setup: &EngineSetup, trace: &Trace) -> Option<CostReport> {
    let profile = trace.profile.as_ref()?;
    let first = *trace.usage.keys().next()?;
    let last = *trace.usage.keys().next_back()?;
    let timed = trace.timed_requests as f64 >= MIN_TIMED_SHARE * trace.requests as f64;
    let mut observed = vec![Resource::Network];
    if timed {
        observed.insert(0, Resource::Cpu);
    }
    let buckets: BTreeMap<Millis, &Bucket> = trace.minutes.iter().map(|b| (b.start, b)).collect();
    let fed = setup.minutes();
    let unknown: HashSet<Millis> = fed
        .iter()
        .filter(|(_, _, b)| b.is_none())
        .map(|(_, start, _)| *start)
        .collect();
    let mut engine = setup.engine(1.0);
    let step_ms = engine.step_ms();
    let level = engine.level();
    let z = prescale_policies::quantile::normal_quantile((1.0 + level) / 2.0);
    let grid = (setup.start_unix + 30) / 60 * 60_000 % step_ms;
    let step_of = |m: Millis| m - (m + step_ms - grid) % step_ms;

    let mut model = CostModel::new(WINDOW);
    let mut costs = Costs::default();
    let mut seen: BTreeSet<SignatureId> = BTreeSet::new();
    let mut since_fit = 0u64;
    let mut restarted = false;
    let mut issued = Vec::new();
    // Per step start: Σ cores and Σ bytes/s over its minutes, minutes, any unknown.
    let mut per_step: BTreeMap<Millis, (f64, f64, u64, bool)> = BTreeMap::new();
    let mut logged: Logged = BTreeMap::new();
    let mut fed_iter = fed.into_iter().peekable();
    let mut m = first;
    while m <= last {
        // The engine gets each minute as the predictive run feeds it.
        while let Some((_, start, bucket)) = fed_iter.next_if(|(_, start, _)| *start <= m) {
            let updated = match bucket {
                Some(b) => engine.add_minute(&b, &mut ()),
                None => engine.add_unknown_minute(start),
            };
            if updated && costs.io.is_some() {
                issued.push(issue(&engine, &costs, z, start));
            }
        }
        // And the clock when minute `m` is due, as the predictive run advances it: a
        // step that ended without a minute closes as zero demand.
        if engine.advance(m + MINUTE_MS + prescale_engine::MINUTE_GRACE_MS, &mut ())
            && costs.io.is_some()
        {
            issued.push(issue(&engine, &costs, z, m));
        }
        let step = per_step.entry(step_of(m)).or_default();
        if unknown.contains(&m) {
            step.3 = true;
        } else {
            let used = trace.usage.get(&m).copied().unwrap_or_default();
            let bucket = buckets.get(&m).copied();
            let obs = observation(m, &used, bucket, timed);
            step.0 += obs.cpu_cores.unwrap_or(0.0);
            step.1 += obs.io_bytes_per_second.unwrap_or(0.0);
            step.2 += 1;
            if let Some(b) = bucket {
                attribute(&mut logged, b);
            }
            // A signature the window has not seen: older rows split the same
            // requests between other columns (the sidecar restarts its window too).
            let new = obs.load.keys().any(|id| !seen.contains(id));
            if new && !seen.is_empty() {
                model.clear();
                restarted = true;
            }
            seen.extend(obs.load.keys().copied());
            model.observe(obs);
            since_fit += 1;
            if restarted || since_fit >= REFIT_EVERY || costs.io.is_none() {
                costs = model.fit();
                since_fit = 0;
                restarted = false;
            }
        }
        m += MINUTE_MS;
    }
    let costs = model.fit();
    let score = |resource: Resource| {
        let observed_mean = |start: Millis| {
            let (cpu, net, n, unknown) = per_step.get(&start).copied()?;
            let full = n * MINUTE_MS >= step_ms;
            (full && !unknown).then(|| match resource {
                Resource::Cpu => cpu / n as f64,
                Resource::Network => net / n as f64,
            })
        };
        score(&issued, resource, step_ms, observed_mean)
    };
    let signatures = signature_costs(&costs, profile, &logged, trace);
    let total_timed: f64 = trace.usage.values().map(|u| u.timed_seconds).sum();
    Some(CostReport {
        rows: model.len(),
        step_seconds: step_ms / 1000,
        level,
        cpu_baseline: costs.cpu.as_ref().filter(|_| timed).map(|f| f.baseline),
        network_baseline: costs.io.as_ref().map(|f| f.baseline),
        signatures,
        cpu_forecast: if timed {
            score(Resource::Cpu)
        } else {
            Vec::new()
        },
        network_forecast: score(Resource::Network),
        cpu_seconds_per_request: timed.then(|| total_timed / trace.timed_requests.max(1) as f64),
        observed,
        bridge: None,
        issued: if timed { issued } else { Vec::new() },
    })
}

/// One minute as a cost-model row: the load per signature and what the log implies.
fn observation(
    start: Millis,
    used: &MinuteUse,
    bucket: Option<&Bucket>,
    timed: bool,
) -> Observation {
    let minute = MINUTE_MS as f64 / 1000.0;
    let load = bucket.map_or_else(BTreeMap::new, |b| {
        b.by_signature
            .iter()
            .map(|(id, c)| {
                let load = Load {
                    rate: c.requests as f64 / minute,
                    concurrency: c.work_us as f64 / 1e6 / minute,
                };
                (*id, load)
            })
            .collect()
    });
    Observation {
        at: start + MINUTE_MS,
        cpu_cores: timed.then(|| used.timed_seconds / minute),
        memory_bytes: None,
        io_bytes_per_second: Some(used.bytes / minute),
        load,
    }
}

/// Adds a bucket's per-signature requests and service seconds to the logged totals.
fn attribute(logged: &mut Logged, b: &Bucket) {
    for (id, c) in &b.by_signature {
        let e = logged.entry(*id).or_default();
        e.0 += c.requests;
        e.1 += c.work_us as f64 / 1e6;
    }
}

/// The resource forecast from the engine's latest per-signature forecasts. Replay's
/// demand unit is one second of work per request, so a signature's forecast is its
/// request rate: a mean "service time" of one second turns it into that rate.
fn issue(engine: &prescale_engine::Engine, costs: &Costs, z: f64, due_minute: Millis) -> Issued {
    let demand: Vec<DemandForecast> = engine
        .latest()
        .filter_map(|(key, fc, _, _)| match key {
            SeriesKey::Signature(id) => Some(DemandForecast {
                id,
                mean_service_seconds: 1.0,
                points: fc
                    .points
                    .iter()
                    .map(|p| (p.point, p.lower, p.upper))
                    .collect(),
            }),
            SeriesKey::Total => None,
        })
        .collect();
    let f = forecast(costs, &demand, z);
    Issued {
        origin: engine.last_fed().unwrap_or(0),
        due: due_minute + MINUTE_MS + prescale_engine::MINUTE_GRACE_MS,
        cpu: f.cpu_cores,
        network: f.network_bytes_per_second,
    }
}

/// Scores each horizon step over every issue whose target step is known.
fn score(
    issued: &[Issued],
    resource: Resource,
    step_ms: Millis,
    observed: impl Fn(Millis) -> Option<f64>,
) -> Vec<StepScore> {
    let horizon = issued
        .iter()
        .map(|i| match resource {
            Resource::Cpu => i.cpu.len(),
            Resource::Network => i.network.len(),
        })
        .max()
        .unwrap_or(0);
    (1..=horizon)
        .map(|h| {
            let mut s = StepScore {
                step: h,
                seconds_ahead: h as u64 * step_ms / 1000,
                ..StepScore::default()
            };
            let (mut obs_sum, mut fc_sum, mut err, mut inside) = (0.0, 0.0, 0.0, 0usize);
            for i in issued {
                let points = match resource {
                    Resource::Cpu => &i.cpu,
                    Resource::Network => &i.network,
                };
                let (Some(p), Some(y)) = (
                    points.get(h - 1),
                    observed(i.origin + h as Millis * step_ms),
                ) else {
                    continue;
                };
                s.scored += 1;
                obs_sum += y;
                fc_sum += p.point;
                err += (y - p.point).abs();
                inside += usize::from(p.lower <= y && y <= p.upper);
            }
            let n = s.scored.max(1) as f64;
            s.mean_observed = obs_sum / n;
            s.mean_forecast = fc_sum / n;
            s.mae = err / n;
            s.coverage = inside as f64 / n;
            s
        })
        .collect()
}

fn signature_costs(
    costs: &Costs,
    profile: &super::trace::Profiled,
    logged: &Logged,
    trace: &Trace,
) -> Vec<SignatureCost> {
    let ids: BTreeSet<SignatureId> = logged.keys().copied().collect();
    let timed = trace.timed_requests > 0;
    ids.into_iter()
        .map(|id| {
            let view = profile.view.signatures.iter().find(|s| s.id == id);
            let (requests, seconds) = logged.get(&id).copied().unwrap_or_default();
            let cpu = costs.cpu.as_ref().and_then(|f| f.signatures.get(&id));
            let net = costs.io.as_ref().and_then(|f| f.signatures.get(&id));
            SignatureCost {
                id,
                top_route: view.and_then(|s| s.top_routes.first().map(|r| r.route.clone())),
                requests,
                cpu_seconds_per_request: cpu.filter(|c| c.identified && timed).map(|c| c.value),
                cpu_std_error: cpu.filter(|_| timed).and_then(|c| c.std_error),
                cpu_identified: cpu.filter(|_| timed).map(|c| c.identified),
                network_bytes_per_request: net.filter(|c| c.identified).map(|c| c.value),
                network_std_error: net.and_then(|c| c.std_error),
                network_identified: net.map(|c| c.identified),
                logged_bytes_per_request: trace
                    .signature_bytes
                    .get(&id)
                    .map_or(0.0, |(n, b)| b / (*n).max(1) as f64),
                logged_seconds_per_request: (timed && requests > 0)
                    .then(|| seconds / requests as f64),
            }
        })
        .collect()
}

/// The CPU cores need over the lead window as the sidecar hands it to the bridge:
/// the upper bound of the last resource forecast issued by `at` (Unix ms).
pub fn cpu_need_at(issued: &[Issued], at: Millis, lead_steps: usize) -> Option<f64> {
    let i = issued.partition_point(|i| i.due <= at).checked_sub(1)?;
    let latest = issued.get(i)?;
    recommend(&latest.cpu, lead_steps).map(|r| r.upper_bound)
}

/// A text summary: each signature's costs, then the forecasts' scores.
pub fn table(c: &CostReport) -> String {
    use std::fmt::Write as _;
    let opt = |v: Option<f64>, unit: &str| match v {
        Some(v) => format!("{v:.4} {unit}"),
        None => "not identified".to_string(),
    };
    let mut out = String::from(
        "resource costs per signature (the sidecar's cost model on what the log implies):\n",
    );
    for s in &c.signatures {
        let cpu = match (s.cpu_identified, c.observed.contains(&Resource::Cpu)) {
            (Some(_), _) => opt(s.cpu_seconds_per_request, "CPU s/request"),
            // Only before the window restarted (the unclassified requests of the
            // first minutes): no column in the last fit.
            (None, true) => "not in the last fit".to_string(),
            (None, false) => "no CPU in the log".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:>3} {:<32} {:>7} requests  {:<26} {:<28} (log: {:.0} B/request)",
            s.id,
            s.top_route
                .as_deref()
                .unwrap_or(if s.id == 0 { "(unclassified)" } else { "-" }),
            s.requests,
            cpu,
            opt(s.network_bytes_per_request, "B/request"),
            s.logged_bytes_per_request,
        );
    }
    for (name, scores) in [
        ("CPU cores", &c.cpu_forecast),
        ("network B/s", &c.network_forecast),
    ] {
        for st in scores.iter() {
            let _ = writeln!(
                out,
                "  {name} {}s ahead: observed mean {:.4}, forecast mean {:.4}, MAE {:.4}, coverage@{:.0}% {:.3} ({} steps)",
                st.seconds_ahead,
                st.mean_observed,
                st.mean_forecast,
                st.mae,
                c.level * 100.0,
                st.coverage,
                st.scored
            );
        }
    }
    if let Some(b) = &c.bridge {
        let _ = writeln!(
            out,
            "  bridge: {} s pending, CPU raised {} s (mean +{:.4} cores), shortfall {:.1} -> {:.1} request-seconds{}",
            b.pending_seconds,
            b.bridged_seconds,
            b.mean_extra_cores,
            b.shortfall_without,
            b.shortfall_with,
            b.covered_share.map_or(String::new(), |s| format!(" ({:.0} % covered)", s * 100.0)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(step: usize, point: f64, lower: f64, upper: f64) -> ResourcePoint {
        ResourcePoint {
            step,
            point,
            lower,
            upper,
        }
    }

    #[test]
    fn each_horizon_step_is_scored_on_the_step_it_predicted() {
        let step = 60_000;
        let issued = vec![
            Issued {
                origin: 0,
                due: 62_000,
                cpu: vec![point(1, 1.0, 0.5, 1.5), point(2, 2.0, 1.0, 3.0)],
                network: Vec::new(),
            },
            Issued {
                origin: step,
                due: 122_000,
                cpu: vec![point(1, 3.0, 2.5, 3.5), point(2, 1.0, 0.0, 1.2)],
                network: Vec::new(),
            },
        ];
        // Observed 1.2 in step 1, 2.0 in step 2, unknown in step 3.
        let observed = |start: Millis| match start / step {
            1 => Some(1.2),
            2 => Some(2.0),
            _ => None,
        };
        let s = score(&issued, Resource::Cpu, step, observed);
        assert_eq!(s.len(), 2);
        // Step 1: (1.0 vs 1.2, inside) and (3.0 vs 2.0, outside).
        assert_eq!(s[0].scored, 2);
        assert!((s[0].mae - 0.6).abs() < 1e-12, "{:?}", s[0]);
        assert!((s[0].coverage - 0.5).abs() < 1e-12);
        assert!((s[0].mean_observed - 1.6).abs() < 1e-12);
        // Step 2: only the first issue's target (step 2) is known.
        assert_eq!(s[1].scored, 1);
        assert!((s[1].mae - 0.0).abs() < 1e-12 && s[1].coverage == 1.0);
        assert!(score(&issued, Resource::Network, step, observed).is_empty());
    }

    #[test]
    fn a_minute_implies_cores_from_logged_time_and_bytes_per_second() {
        let used = MinuteUse {
            requests: 120,
            bytes: 6_000_000.0,
            timed_requests: 120,
            timed_seconds: 30.0,
        };
        let o = observation(0, &used, None, true);
        assert_eq!(o.cpu_cores, Some(0.5));
        assert_eq!(o.io_bytes_per_second, Some(100_000.0));
        assert_eq!(o.at, MINUTE_MS);
        assert!(observation(0, &used, None, false).cpu_cores.is_none());
    }

    #[test]
    fn the_bridge_reads_the_last_forecast_issued_by_then() {
        let issue = |due, upper| Issued {
            origin: 0,
            due,
            cpu: vec![point(1, 1.0, 0.5, upper), point(2, 1.0, 0.5, upper + 1.0)],
            network: Vec::new(),
        };
        let issued = vec![issue(1_000, 2.0), issue(5_000, 4.0)];
        assert_eq!(cpu_need_at(&issued, 500, 1), None);
        assert_eq!(cpu_need_at(&issued, 1_000, 1), Some(2.0));
        assert_eq!(cpu_need_at(&issued, 4_999, 2), Some(3.0));
        assert_eq!(cpu_need_at(&issued, 9_000, 1), Some(4.0));
    }
}
