//! Warm start: when the embedded store holds no history, read total demand's recent
//! past from Prometheus (`GET /api/v1/query_range`) so the first forecast — and the
//! first pre-scale decision — does not wait days for history to accumulate.
//!
//! Runs once, on the forecaster thread, under the configured timeout: the data plane
//! never waits for it, and a failure only means a cold start (logged and counted).
//!
//! Units: the forecaster works in busy concurrency (work seconds per second) averaged
//! over each forecast step. A `concurrency` query is used as is; a
//! `requests_per_second` query is multiplied by `mean_service_time` (Little's law:
//! concurrency = rate × time in service). A point at time t of a range query
//! describes the query step that ends at t, so it is attributed to the forecast step
//! holding t − query step; points falling in the same forecast step are averaged.

use crate::signals::client::{encode_query_value, secret_headers, Endpoint};
use bytes::Bytes;
use http::Method;
use prescale_profiler::forecast::Forecaster;
use prescale_profiler::sample::Millis;
use prescale_proxy::config::{DemandUnit, WarmStartConfig};
use prescale_proxy::forecasting::WarmStart;
use prescale_proxy::metrics as m;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The largest `query_range` answer read (11 000 points of a few series fit easily).
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// The most recent steps fed with a forecast after each (so the intervals start
/// calibrated); older history is only observed, which is cheap.
const CALIBRATION_STEPS: usize = 180;

/// Warm start from the Prometheus `warm_start:` names.
pub struct Prometheus(pub WarmStartConfig);

impl WarmStart for Prometheus {
    fn seed(
        self: Box<Self>,
        now: Millis,
        step_ms: Millis,
        make: &mut dyn FnMut() -> Forecaster,
    ) -> Option<(Forecaster, Millis, f64)> {
        seed(&self.0, now, step_ms, make)
    }
}

/// History read from Prometheus, one value per forecast step.
#[derive(Debug, PartialEq)]
pub struct History {
    /// Start of the first step, Unix milliseconds.
    pub first_start: Millis,
    /// Demand per step, oldest first; NaN where Prometheus had no point (the
    /// forecaster repeats the previous value over such gaps).
    pub values: Vec<f64>,
    /// Steps that had at least one point.
    pub points: usize,
}

/// Why warm start did not load anything.
#[derive(Debug, thiserror::Error)]
pub enum WarmStartError {
    #[error("{0}")]
    Endpoint(#[from] crate::signals::client::EndpointError),
    #[error("{0}")]
    Exchange(#[from] crate::signals::client::ExchangeError),
    #[error("Prometheus answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("unexpected answer: {0}")]
    Decode(String),
    #[error("cannot start a runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{0}")]
    Headers(#[source] std::io::Error),
}

#[derive(Deserialize)]
struct QueryResponse {
    status: String,
    #[serde(default)]
    data: Option<QueryData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<RangeSeries>,
}

#[derive(Deserialize)]
struct RangeSeries {
    /// `[unix seconds, "value"]` pairs.
    values: Vec<(f64, String)>,
}

/// Loads history for `now` into a fresh forecaster built with `make`; returns it with
/// the start of the last step fed and that step's demand, or None (cold start). Logs
/// and counts every outcome.
pub fn seed(
    cfg: &WarmStartConfig,
    now: Millis,
    step_ms: Millis,
    make: impl FnOnce() -> Forecaster,
) -> Option<(Forecaster, Millis, f64)> {
    let started = prescale_proxy::clock::Stopwatch::start();
    let history = match fetch(cfg, now, step_ms) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, prometheus = %crate::signals::client::redact_url(&cfg.prometheus_url),
                took = ?started.elapsed(), "warm start failed; forecasting starts cold");
            ::metrics::counter!(m::WARM_STARTS, "result" => "failed").increment(1);
            return None;
        }
    };
    ::metrics::gauge!(m::WARM_START_POINTS).set(history.points as f64);
    if history.points == 0 {
        tracing::warn!(query = %cfg.query, "warm start: Prometheus has no history for the query; forecasting starts cold");
        ::metrics::counter!(m::WARM_STARTS, "result" => "empty").increment(1);
        return None;
    }
    let mut f = make();
    feed(&mut f, &history.values);
    let steps = history.values.len() as u64;
    let last_start = history.first_start + (steps.saturating_sub(1)) * step_ms;
    let last = history
        .values
        .iter()
        .rev()
        .find(|v| v.is_finite())
        .copied()
        .unwrap_or(0.0);
    tracing::info!(steps, points = history.points, took = ?started.elapsed(),
        "warm start: forecast seeded from Prometheus");
    ::metrics::counter!(m::WARM_STARTS, "result" => "loaded").increment(1);
    Some((f, last_start, last))
}

/// Feeds history oldest first; the last [`CALIBRATION_STEPS`] are each followed by a
/// forecast, so interval calibration and model choice have errors to work from.
pub fn feed(f: &mut Forecaster, values: &[f64]) {
    let calibrate_from = values.len().saturating_sub(CALIBRATION_STEPS);
    for (i, v) in values.iter().enumerate() {
        f.observe(*v);
        if i >= calibrate_from {
            let _ = f.forecast();
        }
    }
}

/// Queries Prometheus for [now − lookback, now] and resamples to forecast steps.
pub fn fetch(
    cfg: &WarmStartConfig,
    now: Millis,
    step_ms: Millis,
) -> Result<History, WarmStartError> {
    let endpoint = Endpoint::new(&cfg.prometheus_url, None)?;
    let headers = secret_headers(&cfg.headers, "warm_start").map_err(WarmStartError::Headers)?;
    let q_step = (cfg.step.as_millis() as Millis).max(1000);
    let end = now - now % q_step;
    let start = end.saturating_sub(cfg.lookback.as_millis() as Millis);
    let start = start - start % q_step;
    let path = format!(
        "{}/api/v1/query_range?query={}&start={}&end={}&step={}",
        endpoint.path().trim_end_matches('/'),
        encode_query_value(&cfg.query),
        start as f64 / 1000.0,
        end as f64 / 1000.0,
        q_step as f64 / 1000.0,
    );
    // The forecaster thread has no runtime; one exchange does not need more than this.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(WarmStartError::Runtime)?;
    let answer = rt.block_on(endpoint.exchange(
        Method::GET,
        &path,
        &headers,
        Bytes::new(),
        cfg.timeout,
        MAX_ANSWER,
    ))?;
    let factor = match cfg.unit {
        DemandUnit::Concurrency => 1.0,
        DemandUnit::RequestsPerSecond => cfg.mean_service_time.map_or(0.0, |d| d.as_secs_f64()),
    };
    let points = decode(answer.status.as_u16(), &answer.body)?;
    Ok(resample(&points, factor, q_step, step_ms, now))
}

/// The `(unix ms, value)` points of a matrix answer, summed across series.
fn decode(status: u16, body: &[u8]) -> Result<BTreeMap<Millis, f64>, WarmStartError> {
    let resp: QueryResponse = serde_json::from_slice(body).map_err(|e| {
        if status == 200 {
            WarmStartError::Decode(e.to_string())
        } else {
            WarmStartError::Status {
                status,
                message: String::from_utf8_lossy(body.get(..200).unwrap_or(body)).into_owned(),
            }
        }
    })?;
    if status != 200 || resp.status != "success" {
        return Err(WarmStartError::Status {
            status,
            message: resp.error.unwrap_or_else(|| resp.status.clone()),
        });
    }
    let data = resp
        .data
        .ok_or_else(|| WarmStartError::Decode("no data".into()))?;
    if data.result_type != "matrix" {
        return Err(WarmStartError::Decode(format!(
            "resultType {:?}, want matrix",
            data.result_type
        )));
    }
    let mut sum = BTreeMap::new();
    for series in data.result {
        for (ts, v) in series.values {
            // NaN and ±Inf (e.g. a rate over a reset) are not demand: a gap.
            let Some(v) = v.parse::<f64>().ok().filter(|v| v.is_finite()) else {
                continue;
            };
            if ts.is_finite() && ts >= 0.0 {
                *sum.entry((ts * 1000.0).round() as Millis).or_insert(0.0) += v;
            }
        }
    }
    Ok(sum)
}

/// Averages points into forecast steps: complete steps only (before the step holding
/// `now`), from the first with data through the last complete one, NaN in between
/// where there was none.
fn resample(
    points: &BTreeMap<Millis, f64>,
    factor: f64,
    q_step: Millis,
    step_ms: Millis,
    now: Millis,
) -> History {
    let step_ms = step_ms.max(1);
    let current = now - now % step_ms;
    let mut steps: BTreeMap<Millis, (f64, u32)> = BTreeMap::new();
    for (t, v) in points {
        let covered = t.saturating_sub(q_step);
        let start = covered - covered % step_ms;
        if start < current {
            let e = steps.entry(start).or_insert((0.0, 0));
            e.0 += v * factor;
            e.1 += 1;
        }
    }
    let Some(first_start) = steps.keys().next().copied() else {
        return History {
            first_start: 0,
            values: Vec::new(),
            points: 0,
        };
    };
    let n = ((current - first_start) / step_ms) as usize;
    let values = (0..n)
        .map(|i| {
            let start = first_start + i as Millis * step_ms;
            steps
                .get(&start)
                .map_or(f64::NAN, |(sum, count)| sum / f64::from(*count).max(1.0))
        })
        .collect();
    History {
        first_start,
        values,
        points: steps.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    #[test]
    fn a_matrix_is_summed_across_series_and_gaps_are_skipped() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"a":"1"},"values":[[1700000000,"1"],[1700000060,"2"],[1700000120,"NaN"]]},
            {"metric":{"a":"2"},"values":[[1700000060,"0.5"],[1700000120,"+Inf"]]}]}}"#;
        let p = decode(200, body).unwrap();
        assert_eq!(
            p.into_iter().collect::<Vec<_>>(),
            [(1_700_000_000_000, 1.0), (1_700_000_060_000, 2.5)]
        );
    }

    #[test]
    fn prometheus_errors_are_reported_with_their_message() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let e = decode(400, body).unwrap_err().to_string();
        assert!(
            e.contains("400") && e.contains("parse error at char 4"),
            "{e}"
        );
        let e = decode(502, b"<html>bad gateway</html>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("502") && e.contains("bad gateway"), "{e}");
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(decode(200, vector).is_err());
    }

    #[test]
    fn rates_become_demand_per_complete_step_with_gaps_as_nan() {
        let t0 = 1_700_000_040_000 - 1_700_000_040_000 % (5 * MIN); // a 5-min boundary
                                                                    // 1-min points of 10 rps; the point at t0+1m describes [t0, t0+1m).
        let mut pts = BTreeMap::new();
        for i in 1..=5 {
            pts.insert(t0 + i * MIN, 10.0);
        }
        // Nothing for the next 5 minutes, then one more point.
        pts.insert(t0 + 11 * MIN, 20.0);
        // 100 ms in service: 10 rps is 1.0 busy; 5-minute forecast steps.
        let now = t0 + 17 * MIN;
        let h = resample(&pts, 0.1, MIN, 5 * MIN, now);
        assert_eq!(h.first_start, t0);
        assert_eq!(h.points, 2);
        // Steps t0, t0+5m (gap), t0+10m; t0+15m is the current step (incomplete).
        assert_eq!(h.values.len(), 3);
        assert!((h.values[0] - 1.0).abs() < 1e-9, "{:?}", h.values);
        assert!(h.values[1].is_nan());
        assert!((h.values[2] - 2.0).abs() < 1e-9);
        // Points in the current step are left to live data.
        pts.insert(now, 99.0);
        assert_eq!(resample(&pts, 0.1, MIN, 5 * MIN, now).values.len(), 3);
        assert_eq!(resample(&BTreeMap::new(), 1.0, MIN, MIN, now).points, 0);
    }
}
