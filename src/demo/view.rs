//! The admin client and the text views: what the sidecar's admin API says
//! (signatures, forecast, scale, sheds) next to what the load generator sees, as one
//! line a second when piped, or a text screen when the live chart cannot start.
//!
//! The admin answers are read as loose JSON: the view shows what it finds and says
//! "waiting" for what is not there yet, so a field added or renamed elsewhere degrades
//! one line, not the demo.

use super::load::Snapshot;
use super::shape;
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// The admin metric that counts admission decisions per tier (when tiers exist).
const ADMISSION_METRIC: &str = "prescale_admission_decisions_total";
/// Label values that mean "let through"; any other decision counts as a shed.
const ADMITTED: [&str; 5] = ["admit", "admitted", "accept", "accepted", "allow"];

/// A small client for the sidecar's admin API.
#[derive(Clone)]
pub struct AdminClient {
    pub addr: SocketAddr,
    /// The sidecar's time scale: its service times are series time, shown as wall.
    time_scale: f64,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What the admin API said at one refresh.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub signatures: Option<Signatures>,
    pub forecast: Option<TotalForecast>,
    pub scale: Option<Scale>,
    /// Shed counts per tier; None when no tier is configured.
    pub sheds: Option<BTreeMap<String, u64>>,
    /// `prescale_preshed_level` (the share of sheddable demand refused ahead).
    pub preshed_level: Option<f64>,
    /// `prescale_anomalies_total`, summed over kinds.
    pub anomalies: Option<u64>,
    /// Requests refused by pre-shedding, per tier (`reason="pre_shed"`).
    pub preshed_by_tier: Option<BTreeMap<String, u64>>,
    /// The anomalies active now (`GET /v1/anomalies`).
    pub active_anomalies: Vec<SeenAnomaly>,
    /// `GET /v1/resources`: the learnt costs and the CPU forecast.
    pub resources: Option<super::costs::ResourcesSeen>,
    /// Whether the admin API answered at all.
    pub reachable: bool,
}

/// One active anomaly as `GET /v1/anomalies` lists it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SeenAnomaly {
    pub kind: String,
    pub subject: String,
    /// Series time it began (Unix ms).
    pub since: u64,
    pub direction: String,
    pub severity: f64,
    /// For `rate`: the step's demand and the forecast interval's upper bound.
    pub actual: Option<f64>,
    pub upper: Option<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct Signatures {
    pub model_version: u64,
    pub samples: u64,
    pub list: Vec<Signature>,
}

#[derive(Clone, Debug, Default)]
pub struct Signature {
    pub id: u64,
    pub share: f64,
    pub mean_ms: f64,
    pub p99_ms: f64,
    pub fanout: f64,
    pub demand: f64,
    pub top_route: String,
}

#[derive(Clone, Debug, Default)]
pub struct TotalForecast {
    pub step_seconds: u64,
    pub horizon_steps: u64,
    pub model: String,
    /// Demand observed over the last forecast step.
    pub last: f64,
    /// The first step's point forecast, and the highest upper bound over the horizon.
    pub point: f64,
    pub upper: f64,
    /// The last observed step (Unix ms): a new one is a new forecast.
    pub origin: Option<u64>,
    /// The point at the end of the lead window (what the scaling rule plans for).
    pub lead_at: u64,
    pub lead_point: f64,
    pub lead_lower: f64,
    pub lead_upper: f64,
    /// Where the first forecast step ends (Unix ms).
    pub first_at: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Scale {
    /// Series time of the decision (Unix ms).
    pub at: u64,
    pub desired: u64,
    pub predictive: u64,
    pub reactive: u64,
    pub reason: String,
    pub current_demand: f64,
    pub capacity_per_replica: f64,
}

/// Fixed facts shown on every frame.
pub struct Header {
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub duration: Duration,
    pub peak_rate: f64,
    pub sidecar_pid: u32,
    /// The note shown when the store was seeded with earlier days.
    pub seeded: Option<String>,
    /// Series seconds per wall second.
    pub time_scale: u64,
    /// A replica's start-up time (series).
    pub startup: Duration,
}

// === impl AdminClient ===

impl AdminClient {
    pub fn new(addr: SocketAddr, time_scale: f64) -> Self {
        Self {
            addr,
            time_scale: time_scale.max(1.0),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(10))
                .build_http(),
        }
    }

    /// One request with a short timeout; returns (status, body).
    pub async fn request(&self, method: Method, path: &str) -> Result<(u16, String), String> {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header(header::HOST, "admin")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(2), async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
        })
        .await
        .map_err(|_| "timed out".to_string())??;
        Ok(resp)
    }

    async fn json(&self, path: &str) -> Option<Value> {
        match self.request(Method::GET, path).await {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// Reads every view the demo shows.
    pub async fn observe(&self) -> Observed {
        let (sigs, fc, scale, metrics, anomalies, resources) = tokio::join!(
            self.json("/v1/signatures"),
            self.json("/v1/forecast"),
            self.json("/v1/scale"),
            self.request(Method::GET, "/metrics"),
            self.json("/v1/anomalies"),
            self.json("/v1/resources"),
        );
        let reachable = sigs.is_some();
        let forecast = fc.as_ref().and_then(parse_forecast);
        Observed {
            resources: resources
                .as_ref()
                .map(|v| super::costs::parse(v, forecast.as_ref().map(|f| f.first_at))),
            signatures: sigs.as_ref().map(|v| parse_signatures(v, self.time_scale)),
            forecast,
            scale: scale.as_ref().and_then(parse_scale),
            sheds: match &metrics {
                Ok((200, text)) => parse_sheds(text),
                _ => None,
            },
            preshed_level: match &metrics {
                Ok((200, text)) => metric_sum(text, "prescale_preshed_level"),
                _ => None,
            },
            anomalies: match &metrics {
                Ok((200, text)) => metric_sum(text, "prescale_anomalies_total").map(|v| v as u64),
                _ => None,
            },
            preshed_by_tier: match &metrics {
                Ok((200, text)) => parse_preshed(text),
                _ => None,
            },
            active_anomalies: anomalies.as_ref().map(parse_anomalies).unwrap_or_default(),
            reachable,
        }
    }
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Service times are divided by `time_scale` (series time back to wall time).
fn parse_signatures(v: &Value, time_scale: f64) -> Signatures {
    let list = v
        .get("signatures")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| {
                    let cost = s.get("service_time_seconds").unwrap_or(&Value::Null);
                    Signature {
                        id: u(s, "id"),
                        share: f(s, "share"),
                        mean_ms: f(cost, "mean") * 1000.0 / time_scale,
                        p99_ms: f(cost, "p99") * 1000.0 / time_scale,
                        fanout: f(s, "mean_fanout"),
                        demand: f(s, "demand"),
                        top_route: s
                            .get("top_routes")
                            .and_then(Value::as_array)
                            .and_then(|r| r.first())
                            .and_then(|r| r.get("route"))
                            .and_then(Value::as_str)
                            .unwrap_or("-")
                            .to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let mut list: Vec<Signature> = list;
    list.sort_by_key(|g| g.id);
    Signatures {
        model_version: u(v, "model_version"),
        samples: u(v, "samples"),
        list,
    }
}

fn parse_forecast(v: &Value) -> Option<TotalForecast> {
    let total = v.get("series")?.get("total")?;
    let points = total.get("points")?.as_array()?;
    let first = points.first()?;
    let lead_steps = u(v, "lead_steps").max(1) as usize;
    let lead = points.get(lead_steps - 1).or(points.last())?;
    Some(TotalForecast {
        origin: v.get("origin").and_then(Value::as_u64),
        lead_at: u(lead, "at"),
        lead_point: f(lead, "point"),
        lead_lower: f(lead, "lower"),
        lead_upper: f(lead, "upper"),
        first_at: u(first, "at"),
        step_seconds: u(v, "step_seconds"),
        horizon_steps: u(v, "horizon_steps"),
        model: total
            .get("model")
            .map(|m| match m {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default(),
        last: f(total, "last"),
        point: f(first, "point"),
        upper: points.iter().map(|p| f(p, "upper")).fold(0.0, f64::max),
    })
}

fn parse_scale(v: &Value) -> Option<Scale> {
    let d = v.get("decision")?;
    if d.is_null() {
        return None;
    }
    Some(Scale {
        at: u(v, "at"),
        desired: u(d, "desired"),
        predictive: u(d, "predictive"),
        reactive: u(d, "reactive"),
        reason: d
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string(),
        current_demand: f(v, "current_demand"),
        capacity_per_replica: f(v, "capacity_per_replica"),
    })
}

/// The sum of a metric's samples over all label sets; None when absent.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.strip_prefix('{') {
            Some(r) => r.split_once('}').map(|(_, v)| v),
            None if rest.starts_with(' ') => Some(rest),
            None => None,
        };
        if let Some(v) = value.and_then(|v| v.trim().parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

/// The active anomalies of `GET /v1/anomalies`.
fn parse_anomalies(v: &Value) -> Vec<SeenAnomaly> {
    let text = |a: &Value, k: &str| a.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    v.get("active")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|a| {
                    let evidence = a.get("evidence").unwrap_or(&Value::Null);
                    SeenAnomaly {
                        kind: text(a, "kind"),
                        subject: text(a, "subject"),
                        since: u(a, "since"),
                        direction: text(a, "direction"),
                        severity: f(a, "severity"),
                        actual: evidence.get("actual").and_then(Value::as_f64),
                        upper: evidence.get("upper").and_then(Value::as_f64),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Requests refused by pre-shedding per tier (`decision="rejected",
/// reason="pre_shed"`); None when the metric is absent.
pub fn parse_preshed(text: &str) -> Option<BTreeMap<String, u64>> {
    let mut found = None::<BTreeMap<String, u64>>;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(ADMISSION_METRIC) else {
            continue;
        };
        let Some((labels, value)) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let label = |key: &str| {
            labels.split(',').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k.trim() == key).then(|| v.trim_matches('"'))
            })
        };
        let map = found.get_or_insert_with(BTreeMap::new);
        let entry = map
            .entry(label("tier").unwrap_or("-").to_string())
            .or_insert(0);
        if label("decision") == Some("rejected") && label("reason") == Some("pre_shed") {
            *entry += value.max(0.0) as u64;
        }
    }
    found
}

/// Sums shed decisions per tier from the Prometheus text; None when the metric is
/// absent (no tiers configured, or admission not built into this sidecar).
pub fn parse_sheds(text: &str) -> Option<BTreeMap<String, u64>> {
    let mut found = false;
    let mut sheds = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(ADMISSION_METRIC) else {
            continue;
        };
        let Some(labels) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
            continue;
        };
        let (labels, value) = labels;
        let Some(value) = value.trim().parse::<f64>().ok() else {
            continue;
        };
        found = true;
        let mut tier = "-".to_string();
        let mut admitted = false;
        for pair in labels.split(',') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let v = v.trim_matches('"');
            match k.trim() {
                "tier" => tier = v.to_string(),
                "decision" | "outcome" | "result" | "action" => {
                    admitted = ADMITTED.contains(&v);
                }
                _ => {}
            }
        }
        let entry = sheds.entry(tier).or_insert(0u64);
        if !admitted {
            *entry += value.max(0.0) as u64;
        }
    }
    found.then_some(sheds)
}

// === rendering ===

const CLEAR: &str = "\x1b[2J\x1b[H";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// A full-screen frame for a terminal.
pub fn screen(
    h: &Header,
    elapsed: Duration,
    day: f64,
    load: &Snapshot,
    obs: &Observed,
    timeline: &super::record::Timeline,
) -> String {
    let mut s = String::with_capacity(2048);
    let total = h.duration.as_secs_f64();
    let el = elapsed.as_secs_f64().min(total);
    let done = if total > 0.0 { el / total } else { 1.0 };
    let _ = writeln!(s, "{CLEAR}{BOLD}prescale demo{RESET}  {DIM}time scale {}: one wall second is {} s of the day, through the real sidecar{RESET}", h.time_scale, h.time_scale);
    let _ = writeln!(
        s,
        "sidecar pid {}  inbound http://{}  admin http://{}",
        h.sidecar_pid, h.inbound, h.admin
    );
    let _ = writeln!(
        s,
        "{DIM}meanwhile try: curl http://{}/metrics   curl http://{}/v1/signatures{RESET}",
        h.admin, h.admin
    );
    let _ = writeln!(s);
    let bar_width = 40usize;
    let filled = ((done * bar_width as f64).round() as usize).min(bar_width);
    let _ = writeln!(
        s,
        "{BOLD}time{RESET}      {el:>5.1} s / {total:.0} s  [{}{}]  day clock {}",
        "#".repeat(filled),
        ".".repeat(bar_width - filled),
        shape::clock(day)
    );
    let _ = writeln!(
        s,
        "{BOLD}load{RESET}      offered {:>6.1} req/s (peak {:.0})  sent {}  ok {}  failed {}  p50 {}  p99 {}",
        load.offered_rate,
        h.peak_rate,
        load.sent,
        load.ok,
        load.failed,
        ms(load.p50_ms),
        ms(load.p99_ms)
    );
    let _ = writeln!(s);
    match &obs.signatures {
        Some(sigs) if !sigs.list.is_empty() => {
            let _ = writeln!(
                s,
                "{BOLD}signatures{RESET}  model v{}, {} samples profiled",
                sigs.model_version, sigs.samples
            );
            let _ = writeln!(
                s,
                "  {DIM}{:>3}  {:>6}  {:>9}  {:>9}  {:>6}  {:>6}  top route{RESET}",
                "id", "share", "mean", "p99", "fanout", "demand"
            );
            for g in &sigs.list {
                let _ = writeln!(
                    s,
                    "  {:>3}  {:>5.1}%  {:>6.1} ms  {:>6.1} ms  {:>6.2}  {:>6.2}  {}",
                    g.id,
                    g.share * 100.0,
                    g.mean_ms,
                    g.p99_ms,
                    g.fanout,
                    g.demand,
                    g.top_route
                );
            }
        }
        Some(sigs) => {
            let _ = writeln!(
                s,
                "{BOLD}signatures{RESET}  none yet: {} samples profiled, first fit after enough samples",
                sigs.samples
            );
        }
        None => {
            let _ = writeln!(s, "{BOLD}signatures{RESET}  admin API not answering");
        }
    }
    let _ = writeln!(s);
    let demand_now = obs.scale.as_ref().map(|sc| sc.current_demand);
    let _ = writeln!(
        s,
        "{BOLD}demand{RESET}    now {} busy workers (rate × service time, last 10 s)",
        num(demand_now)
    );
    match &obs.forecast {
        Some(fc) => {
            let _ = writeln!(
                s,
                "{BOLD}forecast{RESET}  next {} s: point {:.2}  upper {:.2} ({} model; last step {:.2})",
                fc.step_seconds * fc.horizon_steps.max(1),
                fc.point,
                fc.upper,
                fc.model,
                fc.last
            );
        }
        None => {
            let _ = writeln!(
                s,
                "{BOLD}forecast{RESET}  waiting for the first complete minute of history"
            );
        }
    }
    if let Some(note) = &h.seeded {
        let _ = writeln!(s, "          {DIM}{note}{RESET}");
    }
    match &obs.scale {
        Some(sc) => {
            let _ = writeln!(
                s,
                "{BOLD}replicas{RESET}  desired {}  (predictive {}, reactive {}; reason {}; {:.2} workers per replica; start-up {} min)",
                sc.desired, sc.predictive, sc.reactive, sc.reason, sc.capacity_per_replica, h.startup.as_secs() / 60
            );
        }
        None => {
            let _ = writeln!(s, "{BOLD}replicas{RESET}  waiting for the first decision");
        }
    }
    let _ = writeln!(
        s,
        "{BOLD}sheds{RESET}     {}  (pre-shed level {:.2}; batch shed {})",
        sheds(obs.sheds.as_ref()),
        obs.preshed_level.unwrap_or(0.0),
        load.shed
    );
    let _ = writeln!(s, "{BOLD}anomalies{RESET} {}", obs.anomalies.unwrap_or(0));
    let _ = writeln!(s);
    chart(&mut s, timeline);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{DIM}Ctrl-C ends early (the sidecar is still shut down cleanly){RESET}"
    );
    s
}

/// Sparklines of the last refreshes: demand, the forecast's upper bound at the lead,
/// desired replicas.
fn chart(s: &mut String, timeline: &super::record::Timeline) {
    const WIDTH: usize = 60;
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &timeline.samples[timeline.samples.len().saturating_sub(WIDTH)..];
    let spark = |v: &[f64], max: f64| -> String {
        v.iter()
            .map(|x| {
                let i = ((x / max.max(1e-9)) * 7.0).round().clamp(0.0, 7.0) as usize;
                BARS.get(i).copied().unwrap_or(' ')
            })
            .collect()
    };
    let demand: Vec<f64> = tail.iter().map(|x| x.demand).collect();
    let upper: Vec<f64> = tail
        .iter()
        .map(|x| x.forecast_upper.unwrap_or(0.0))
        .collect();
    let desired: Vec<f64> = tail.iter().map(|x| f64::from(x.desired)).collect();
    let dmax = demand.iter().chain(&upper).copied().fold(0.0, f64::max);
    let rmax = desired.iter().copied().fold(1.0, f64::max);
    let _ = writeln!(s, "{DIM}last {} refreshes, oldest left{RESET}", tail.len());
    let _ = writeln!(s, "  demand          {}", spark(&demand, dmax));
    let _ = writeln!(
        s,
        "  forecast upper  {}  {DIM}(at the lead){RESET}",
        spark(&upper, dmax)
    );
    let _ = writeln!(
        s,
        "  desired         {}  {DIM}(max {rmax:.0}){RESET}",
        spark(&desired, rmax)
    );
}

/// One compact line, for logs and pipes.
pub fn line(h: &Header, elapsed: Duration, day: f64, load: &Snapshot, obs: &Observed) -> String {
    let total = h.duration.as_secs_f64();
    let el = elapsed.as_secs_f64().min(total);
    let sigs = obs.signatures.as_ref().map_or("?".to_string(), |s| {
        let routes: Vec<String> = s
            .list
            .iter()
            .map(|g| format!("{}:{:.0}%/{:.1}ms", g.id, g.share * 100.0, g.mean_ms))
            .collect();
        format!("{} [{}]", s.list.len(), routes.join(" "))
    });
    let fc = obs.forecast.as_ref().map_or("waiting".to_string(), |f| {
        let seeded = if h.seeded.is_some() { " (seeded)" } else { "" };
        format!(
            "{:.2} [{:.2}, {:.2}] at +{} min{seeded}",
            f.lead_point,
            f.lead_lower,
            f.lead_upper,
            h.startup.as_secs() / 60
        )
    });
    let replicas = obs.scale.as_ref().map_or("?".to_string(), |s| {
        format!(
            "{} (predictive {}, reactive {}; {})",
            s.desired, s.predictive, s.reactive, s.reason
        )
    });
    format!(
        "[{el:>4.0}s/{total:.0}s {}] offered {:.0} req/s  ok {} failed {} shed {}  sigs {}  demand {}  forecast {}  replicas {}  pre-shed {:.2}  anomalies {}  sheds {}",
        shape::clock(day),
        load.offered_rate,
        load.ok,
        load.failed,
        load.shed,
        sigs,
        num(obs.scale.as_ref().map(|s| s.current_demand)),
        fc,
        replicas,
        obs.preshed_level.unwrap_or(0.0),
        obs.anomalies.unwrap_or(0),
        sheds(obs.sheds.as_ref()),
    )
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} ms"))
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn sheds(s: Option<&BTreeMap<String, u64>>) -> String {
    match s {
        None => "tiers: not configured".into(),
        Some(m) if m.is_empty() => "none".into(),
        Some(m) => m
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_sum_rejections_per_tier_and_absence_means_no_tiers() {
        assert_eq!(parse_sheds("prescale_requests_total{a=\"b\"} 3\n"), None);
        let text = "\
# TYPE prescale_admission_decisions_total counter
prescale_admission_decisions_total{tier=\"critical\",decision=\"admit\"} 100
prescale_admission_decisions_total{tier=\"batch\",decision=\"shed\",reason=\"overload\"} 7
prescale_admission_decisions_total{tier=\"batch\",decision=\"shed\",reason=\"rate_limit\"} 2
";
        let m = parse_sheds(text).unwrap();
        assert_eq!(m.get("critical"), Some(&0));
        assert_eq!(m.get("batch"), Some(&9));
        let text = "\
prescale_admission_decisions_total{tier=\"critical\",decision=\"admitted\",reason=\"none\"} 100
prescale_admission_decisions_total{tier=\"batch\",decision=\"rejected\",reason=\"overload\"} 7
prescale_admission_decisions_total{tier=\"batch\",decision=\"rejected\",reason=\"pre_shed\"} 4
";
        let m = parse_preshed(text).unwrap();
        assert_eq!((m.get("critical"), m.get("batch")), (Some(&0), Some(&4)));
    }

    #[test]
    fn active_anomalies_are_read_with_their_evidence() {
        let v = serde_json::json!({"active": [{"kind": "rate", "subject": "total",
            "since": 5, "severity": 1.5, "direction": "above",
            "evidence": {"actual": 2.0, "upper": 1.2}}]});
        let a = parse_anomalies(&v);
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].kind.as_str(), a[0].subject.as_str(), a[0].since),
            ("rate", "total", 5)
        );
        assert_eq!((a[0].actual, a[0].upper), (Some(2.0), Some(1.2)));
    }

    #[test]
    fn admin_json_is_read_loosely() {
        let sigs = serde_json::json!({
            "model_version": 2, "samples": 900,
            "signatures": [{"id": 1, "share": 0.6, "mean_fanout": 0.0, "demand": 0.1,
                "service_time_seconds": {"mean": 0.002, "p99": 0.004},
                "top_routes": [{"route": "/api/items/{id}", "requests": 10}]}]
        });
        let s = parse_signatures(&sigs, 1.0);
        assert_eq!(s.list.len(), 1);
        assert_eq!(s.list[0].top_route, "/api/items/{id}");
        assert!((s.list[0].mean_ms - 2.0).abs() < 1e-9);
        assert!(parse_forecast(&serde_json::json!({"series": {}})).is_none());
        assert!(parse_scale(&serde_json::json!({"decision": null})).is_none());
    }
}
