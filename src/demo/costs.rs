//! What the sidecar learns the shop's requests cost in CPU (`GET /v1/resources`), and
//! its CPU forecast set against the shop's CPU as the demo itself reads it from
//! `/proc/<pid>/stat`.
//!
//! The shop burns a known CPU time per endpoint (`upstream::CPU_COST`), so the learnt
//! cost per request can be read next to what it should be.

use super::upstream;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;

type Millis = u64;

/// One signature's learnt CPU cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SignatureCost {
    pub id: u64,
    pub top_route: String,
    /// CPU ms per request; None when not identified.
    pub cpu_ms: Option<f64>,
    pub cpu_ms_std_error: Option<f64>,
    pub identified: bool,
    /// What the shop burns for that route, ms.
    pub burns_ms: Option<f64>,
}

impl SignatureCost {
    /// "learnt ms ± error", the number right-aligned to `width`, or `missing` when the
    /// fit did not identify it (the summary's and the report's cell).
    pub fn learnt_cpu(&self, width: usize, missing: &str) -> String {
        match (self.cpu_ms, self.cpu_ms_std_error) {
            (Some(v), Some(e)) => format!("{v:>width$.2} ms ± {e:.2}"),
            (Some(v), None) => format!("{v:>width$.2} ms"),
            _ => missing.to_string(),
        }
    }
}

/// The first step of the CPU forecast.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CpuForecast {
    /// Series time (Unix ms) the forecast step ends.
    pub step_end: Millis,
    pub step_seconds: u64,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
}

/// `GET /v1/resources` as the demo reads it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ResourcesSeen {
    pub source: String,
    pub intervals: u64,
    /// Most expensive first; unidentified ones last.
    pub signatures: Vec<SignatureCost>,
    pub forecast: Option<CpuForecast>,
}

/// Reads `/v1/resources`; `first_step_end` is where the demand forecast's first step
/// ends (`/v1/forecast`), which the resource forecast's first point covers.
pub fn parse(v: &Value, first_step_end: Option<Millis>) -> ResourcesSeen {
    let mut signatures: Vec<SignatureCost> = v
        .get("signatures")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| {
                    let route = s
                        .get("top_route")
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .to_string();
                    let ms = |k: &str| s.get(k).and_then(Value::as_f64).map(|x| x * 1000.0);
                    SignatureCost {
                        id: s.get("id").and_then(Value::as_u64).unwrap_or(0),
                        burns_ms: upstream::cpu_cost_ms(&route),
                        top_route: route,
                        cpu_ms: ms("cpu_seconds_per_request"),
                        cpu_ms_std_error: ms("cpu_seconds_per_request_std_error"),
                        identified: s
                            .get("identified")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    signatures.sort_by(|a, b| {
        b.cpu_ms
            .unwrap_or(-1.0)
            .total_cmp(&a.cpu_ms.unwrap_or(-1.0))
    });
    let fc = v.get("forecast");
    let step_seconds = fc
        .and_then(|f| f.get("step_seconds"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let first = fc
        .and_then(|f| f.get("cpu_cores"))
        .and_then(Value::as_array)
        .and_then(|a| a.first());
    let forecast = match (first, first_step_end) {
        (Some(p), Some(end)) if step_seconds > 0 => Some(CpuForecast {
            step_end: end,
            step_seconds,
            point: p.get("point").and_then(Value::as_f64).unwrap_or(0.0),
            lower: p.get("lower").and_then(Value::as_f64).unwrap_or(0.0),
            upper: p.get("upper").and_then(Value::as_f64).unwrap_or(0.0),
        }),
        _ => None,
    };
    ResourcesSeen {
        source: v
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string(),
        intervals: v.get("intervals").and_then(Value::as_u64).unwrap_or(0),
        signatures,
        forecast,
    }
}

/// At one refresh: the shop's CPU so far (the demo's own `/proc` reading) and the
/// sidecar's CPU forecast for its next step.
#[derive(Clone, Copy, Debug, Serialize)]
struct Reading {
    /// Series time (Unix ms).
    at: Millis,
    cpu_seconds: Option<f64>,
    forecast: Option<CpuForecast>,
}

/// One forecast step: the CPU forecast for it (made before it began) and the CPU the
/// shop used over it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct StepCompared {
    pub step_end: Millis,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
    pub measured: f64,
}

/// The comparison over the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuComparison {
    pub steps: Vec<StepCompared>,
    pub mean_forecast: f64,
    pub mean_measured: f64,
    pub mean_abs_error: f64,
    /// Share of steps whose measured CPU lies within the forecast's interval.
    pub inside: f64,
}

/// The readings of the run (bounded: one per refresh).
#[derive(Default)]
pub struct CpuTrack {
    readings: Vec<Reading>,
}

impl CpuTrack {
    const MAX: usize = 100_000;

    pub fn push(&mut self, at: Millis, cpu_seconds: Option<f64>, forecast: Option<CpuForecast>) {
        if self.readings.len() < Self::MAX && self.readings.last().is_none_or(|r| r.at < at) {
            self.readings.push(Reading {
                at,
                cpu_seconds,
                forecast,
            });
        }
    }

    /// For every step: the CPU forecast first seen for it (made from the steps before
    /// it, while it was in progress) against the CPU the shop used over the step (cores of wall time: CPU seconds over the
    /// step's wall length, `step / time_scale`).
    pub fn compare(&self, time_scale: f64) -> CpuComparison {
        let mut steps: Vec<StepCompared> = Vec::new();
        for r in &self.readings {
            let Some(f) = r.forecast else { continue };
            let start = f.step_end.saturating_sub(f.step_seconds * 1000);
            // The first forecast step is the one in progress, forecast from the steps
            // closed before it: the first forecast seen for a step is compared.
            if r.at >= f.step_end || steps.iter().any(|s| s.step_end == f.step_end) {
                continue;
            }
            let (Some(c0), Some(c1)) = (self.cpu_at(start), self.cpu_at(f.step_end)) else {
                continue;
            };
            let wall = f.step_seconds as f64 / time_scale.max(1.0);
            let s = StepCompared {
                step_end: f.step_end,
                point: f.point,
                lower: f.lower,
                upper: f.upper,
                measured: (c1 - c0).max(0.0) / wall,
            };
            steps.push(s);
        }
        let n = steps.len().max(1) as f64;
        CpuComparison {
            mean_forecast: steps.iter().map(|s| s.point).sum::<f64>() / n,
            mean_measured: steps.iter().map(|s| s.measured).sum::<f64>() / n,
            mean_abs_error: steps
                .iter()
                .map(|s| (s.point - s.measured).abs())
                .sum::<f64>()
                / n,
            inside: steps
                .iter()
                .filter(|s| (s.lower..=s.upper).contains(&s.measured))
                .count() as f64
                / n,
            steps,
        }
    }

    /// The CPU used up to series time `t`, interpolated between the readings around it.
    fn cpu_at(&self, t: Millis) -> Option<f64> {
        let i = self.readings.partition_point(|r| r.at < t);
        let after = self.readings.get(i)?;
        let before = self.readings.get(i.checked_sub(1)?)?;
        let (c0, c1) = (before.cpu_seconds?, after.cpu_seconds?);
        let span = after.at.saturating_sub(before.at).max(1) as f64;
        Some(c0 + (c1 - c0) * (t - before.at) as f64 / span)
    }
}

/// The summary's lines: the learnt costs, most expensive first, and the forecast
/// against the measured CPU.
pub fn summary(s: &mut String, seen: Option<&ResourcesSeen>, cmp: &CpuComparison) {
    let Some(seen) = seen else {
        let _ = writeln!(
            s,
            "  costs       unknown (GET /v1/resources did not answer)"
        );
        return;
    };
    let _ = writeln!(
        s,
        "  costs       CPU per request learnt by the sidecar (resources.source: {}, the shop's own process; {} intervals), against what the shop burns:",
        seen.source, seen.intervals
    );
    for g in &seen.signatures {
        let learnt = g.learnt_cpu(6, "     - (not identified)");
        let _ = writeln!(
            s,
            "    #{:<2} {:<18} {learnt}  burns {}  identified {}",
            g.id,
            g.top_route,
            g.burns_ms.map_or("-".to_string(), |b| format!("{b:.1} ms")),
            g.identified
        );
    }
    if cmp.steps.is_empty() {
        let _ = writeln!(
            s,
            "  cpu         no CPU forecast to compare yet (it needs costs and a demand forecast)"
        );
        return;
    }
    let _ = writeln!(
        s,
        "  cpu         forecast one step ahead vs the shop's CPU from /proc over {} steps: mean {:.3} vs {:.3} cores, mean abs error {:.3}, {:.0} % inside the band",
        cmp.steps.len(),
        cmp.mean_forecast,
        cmp.mean_measured,
        cmp.mean_abs_error,
        cmp.inside * 100.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learnt_cell_shows_the_error_when_known_and_says_when_not_identified() {
        let mut g = SignatureCost {
            cpu_ms: Some(8.123),
            cpu_ms_std_error: Some(0.4),
            ..SignatureCost::default()
        };
        assert_eq!(g.learnt_cpu(6, "-"), "  8.12 ms ± 0.40");
        assert_eq!(g.learnt_cpu(0, "-"), "8.12 ms ± 0.40");
        g.cpu_ms_std_error = None;
        assert_eq!(g.learnt_cpu(0, "-"), "8.12 ms");
        g.cpu_ms = None;
        assert_eq!(g.learnt_cpu(6, "not identified"), "not identified");
    }

    fn fc(end: Millis, point: f64) -> Option<CpuForecast> {
        Some(CpuForecast {
            step_end: end,
            step_seconds: 300,
            point,
            lower: point * 0.5,
            upper: point * 1.5,
        })
    }

    #[test]
    fn a_forecast_is_set_against_the_cpu_used_over_its_step() {
        // ×600: a 300 s step lasts 0.5 s of wall time; the shop burns 0.2 cores.
        let mut t = CpuTrack::default();
        for i in 0..=40u64 {
            let at = i * 60_000;
            let cpu = 0.2 * (at as f64 / 1000.0 / 600.0);
            // Forecasts for the step ending at 600 s, made up to 240 s: the first counts.
            let f = if at < 300_000 {
                fc(600_000, 0.1 + at as f64 / 600_000.0)
            } else {
                None
            };
            t.push(at, Some(cpu), f);
        }
        let c = t.compare(600.0);
        assert_eq!(c.steps.len(), 1, "{c:?}");
        let s = c.steps[0];
        assert!((s.measured - 0.2).abs() < 1e-9, "{s:?}");
        // The first forecast seen for the step is the one compared.
        assert!((s.point - 0.1).abs() < 1e-9, "{s:?}");
        assert_eq!(c.inside, 0.0);
    }

    #[test]
    fn costs_are_read_most_expensive_first() {
        let v: Value = serde_json::from_str(
            r#"{"source":"process","intervals":40,"signatures":[
                {"id":1,"top_route":"/api/items/{id}","cpu_seconds_per_request":null,"identified":false},
                {"id":2,"top_route":"/api/checkout","cpu_seconds_per_request":0.012,"identified":true},
                {"id":3,"top_route":"/api/search","cpu_seconds_per_request":0.003,"identified":true}],
               "forecast":{"step_seconds":300,"cpu_cores":[{"point":0.2,"lower":0.1,"upper":0.3}]}}"#,
        )
        .unwrap();
        let seen = parse(&v, Some(900_000));
        let ids: Vec<u64> = seen.signatures.iter().map(|s| s.id).collect();
        assert_eq!(ids, [2, 3, 1]);
        assert_eq!(seen.signatures[0].burns_ms, Some(8.0));
        assert_eq!(seen.signatures[2].burns_ms, Some(0.2));
        assert_eq!(seen.forecast.unwrap().step_end, 900_000);
    }
}
