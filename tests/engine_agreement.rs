//! The sidecar and `prescale replay` run one decision engine: the same minute series
//! through the sidecar's forecaster driver (`prescale_proxy::forecasting::Driver`, the
//! code its forecaster thread runs, here fed in-process on a manual schedule instead of
//! the real clock) and through the real `prescale replay --config` binary produce the
//! same forecasts and the same decisions, every one, exactly: for a count series (the
//! total only) and for a request log (each signature's minutes, and the
//! reconciliation of the total between direct and bottom-up).

use prescale_profiler::series::{Bucket, Cell, MINUTE_MS};
use prescale_proxy::forecasting::{Forecasting, Update};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

/// Minute-aligned start of the series (Unix seconds).
const START: u64 = 1_700_000_040;
const MINUTES: u64 = 6 * 60;

const CONFIG: &str = "\
listeners: [{name: in, direction: inbound, address: \"127.0.0.1:1\", cluster: local}]
clusters: [{name: local, endpoints: [\"127.0.0.1:2\"]}]
profiler:
  forecast: { step: 1m, level: 0.9, refit_interval: 30m }
policies:
  scaling:
    capacity_per_replica: 5
    target_utilization: 0.7
    startup_time: 120s
    sync_period: 15s
    min_replicas: 1
    max_replicas: 60
    scale_down_stabilization: 300s
";

/// Requests per minute: a 40-minute ramp cycle over a slow rise, with a surge, so the
/// decisions move up and down and the forecast (not only current demand) decides.
fn series() -> Vec<u64> {
    (0..MINUTES)
        .map(|m| {
            let cycle = (m % 40) as f64 / 40.0;
            let base = 600.0 + 3.0 * m as f64 + 1800.0 * cycle;
            let surge = if (200..215).contains(&m) { 3000.0 } else { 0.0 };
            (base + surge + ((m * 7919) % 97) as f64).round() as u64
        })
        .collect()
}

/// A `decisions.csv` row: at_ms and every compared field as text.
struct Row {
    at: u64,
    demand: f64,
    /// The span of arrivals the demand reading averages (Unix ms).
    measured: std::ops::Range<u64>,
    fields: Vec<String>,
}

fn replay_decisions(dir: &Path, counts: &[u64]) -> (Vec<Row>, Value) {
    let input = dir.join("series.csv");
    let mut csv = String::from("timestamp,value\n");
    for (m, n) in counts.iter().enumerate() {
        let t = UNIX_EPOCH + Duration::from_secs(START + 60 * m as u64);
        csv.push_str(&format!("{},{n}\n", humantime::format_rfc3339_seconds(t)));
    }
    std::fs::write(&input, csv).unwrap();
    replay_log(dir, &input, CONFIG)
}

/// Runs the real `prescale replay --config` on `input`; its decisions and summary.
fn replay_log(dir: &Path, input: &Path, config_text: &str) -> (Vec<Row>, Value) {
    let config = dir.join("mesh.yaml");
    std::fs::write(&config, config_text).unwrap();
    let out = dir.join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["replay", "--quiet", "--input"])
        .arg(input)
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run prescale replay");
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let text = std::fs::read_to_string(out.join("decisions.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (at, demand) = (col("at_ms"), col("demand"));
    let (from, to) = (col("measured_from_ms"), col("measured_to_ms"));
    let compared = [
        "forecast_point",
        "forecast_upper",
        "calibrated",
        "desired",
        "predictive",
        "reactive",
        "reason",
    ]
    .map(col);
    let rows = lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            Row {
                at: c[at].parse().unwrap(),
                demand: c[demand].parse().unwrap(),
                measured: c[from].parse().unwrap()..c[to].parse().unwrap(),
                fields: compared.iter().map(|i| c[*i].to_string()).collect(),
            }
        })
        .collect();
    (rows, summary)
}

/// What the live driver did on replay's decision instants.
struct Agreement {
    driver: prescale_proxy::forecasting::Driver,
    forecast_driven: usize,
    ups: usize,
    downs: usize,
    /// At each decision: its time and the origin `/v1/forecast` showed then.
    origins: Vec<(u64, Option<u64>)>,
}

impl Agreement {
    /// The comparison covered more than `forecast_led` decisions the forecast led and
    /// at least `moves` moves each way.
    fn assert_exercised(&self, forecast_led: usize, moves: usize) {
        assert!(
            self.forecast_driven > forecast_led,
            "{} forecast-led",
            self.forecast_driven
        );
        assert!(
            self.ups >= moves && self.downs >= moves,
            "{} up, {} down",
            self.ups,
            self.downs
        );
    }
}

/// Feeds the sidecar's driver `minutes` (each handed over once it has ended, after the
/// grace) and replay's demand readings, and requires every decision to equal replay's.
fn drive_live(config: &str, replayed: &[Row], minutes: &[Bucket]) -> Agreement {
    let cfg = prescale_proxy::MeshConfig::parse(config, Path::new("mesh.yaml")).unwrap();
    let (shared, mut driver) =
        Forecasting::manual(cfg.profiler.forecast.clone(), cfg.policies.scaling.clone());
    // The profiler has no bucket for a minute without requests: it never sends one.
    let minutes: Vec<&Bucket> = minutes.iter().filter(|b| b.total.requests > 0).collect();
    let mut origins = Vec::new();
    let mut fed = 0usize;
    let (mut forecast_driven, mut ups, mut downs) = (0, 0, 0);
    let mut last: Option<String> = None;
    for row in replayed {
        // The profiler sends each minute once it has ended, after the grace it
        // gives late samples (proxy/src/profiling.rs).
        while let Some(b) = minutes
            .get(fed)
            .filter(|b| b.start + MINUTE_MS + prescale_engine::MINUTE_GRACE_MS <= row.at)
        {
            driver.update(Update::Minute((*b).clone()));
            fed += 1;
        }
        // The reading spans at least the last complete 10 s (wider when replay's
        // demand is averaged over coarser windows); the sidecar is given the same
        // span, as its profiler sends its 10 s bucket's.
        let window_end = row.at / 10_000 * 10_000;
        assert!(
            row.measured.start <= window_end - 10_000 && window_end <= row.measured.end,
            "{:?} at {}",
            row.measured,
            row.at
        );
        driver.update(Update::Now {
            at: row.at,
            measured: row.measured.clone(),
            demand: row.demand,
        });
        origins.push((row.at, shared.forecast.load().origin));
        let intent = driver.sync().expect("a decision after a demand report");
        let d = intent.decision;
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        let reason = serde_json::to_value(d.reason).unwrap();
        let live = vec![
            opt(intent.forecast.map(|f| f.point)),
            opt(intent.forecast.map(|f| f.upper)),
            intent.forecast.is_some_and(|f| f.calibrated).to_string(),
            d.desired.to_string(),
            d.predictive.to_string(),
            d.reactive.to_string(),
            reason.as_str().unwrap().to_string(),
        ];
        assert_eq!(live, row.fields, "decision at {} ms differs", row.at);
        forecast_driven += usize::from(d.predictive > d.reactive);
        if let Some(prev) = &last {
            let prev: u32 = prev.parse().unwrap();
            ups += usize::from(d.desired > prev);
            downs += usize::from(d.desired < prev);
        }
        last = Some(d.desired.to_string());
    }
    Agreement {
        driver,
        forecast_driven,
        ups,
        downs,
        origins,
    }
}

/// The forecasters end in the same state: same model, same scored accuracy.
fn assert_same_total_forecast(driver: &prescale_proxy::forecasting::Driver, replayed: &Value) {
    let view = driver.engine().view();
    let total = &view.series["total"];
    let live_forecast = serde_json::json!({
        "model": total.model,
        "calibrated": total.calibrated,
        "coverage_recent": total.accuracy.coverage,
        "relative_mae_by_step": total.accuracy.relative_mae,
    });
    for key in [
        "model",
        "calibrated",
        "coverage_recent",
        "relative_mae_by_step",
    ] {
        assert_eq!(live_forecast[key], replayed[key], "{key}");
    }
    assert!(total.accuracy.coverage.is_some(), "{live_forecast}");
}

/// A count series' minutes as the sidecar's profiler hands them over: one second of
/// work per request, no signatures.
fn count_minutes(counts: &[u64]) -> Vec<Bucket> {
    counts
        .iter()
        .enumerate()
        .map(|(m, n)| Bucket {
            start: START * 1000 + m as u64 * MINUTE_MS,
            total: Cell {
                requests: *n,
                work_us: n * 1_000_000,
            },
            by_signature: BTreeMap::new(),
        })
        .collect()
}

#[test]
fn the_sidecar_driver_and_replay_make_the_same_forecasts_and_decisions() {
    let counts = series();
    let dir = tempfile::tempdir().unwrap();
    let (replayed, summary) = replay_decisions(dir.path(), &counts);
    // A decision every sync period from the first complete 10 s on.
    assert!(
        replayed.len() as u64 >= MINUTES * 4 - 4,
        "{} decisions",
        replayed.len()
    );
    for row in &replayed {
        // Replay's current demand is the rate over the last complete 10 s: here the
        // rate of the minute holding that window.
        let minute = ((row.at / 1000 - 10 - START) / 60) as usize;
        let rate = counts[minute] as f64 / 60.0;
        assert!((row.demand - rate).abs() < 1e-9, "{} vs {rate}", row.demand);
    }
    let minutes = count_minutes(&counts);
    let live = drive_live(CONFIG, &replayed, &minutes);
    assert_same_total_forecast(&live.driver, &summary["forecast"]["engine"]);
    // A count series has no signatures: the total is forecast directly only.
    let reconciliation = &summary["forecast"]["reconciliation"];
    assert_eq!(reconciliation["signature_series"], 0, "{reconciliation}");
    // The comparison covered forecast-led decisions and moves both ways.
    live.assert_exercised(50, 5);
}

/// Inside the idle minutes `idle` (from their third on), the origin `/v1/forecast`
/// showed at each decision (the start of the last step fed) was never more than two
/// steps and the grace behind: idle steps were closed on the clock.
fn assert_origin_keeps_up(live: &Agreement, idle: std::ops::Range<u64>) {
    let (from, to) = (
        (START + 60 * idle.start) * 1000,
        (START + 60 * idle.end) * 1000,
    );
    let grace = prescale_engine::MINUTE_GRACE_MS;
    let mut checked = 0;
    for (at, origin) in &live.origins {
        if (from + 2 * MINUTE_MS..to).contains(at) {
            let origin = origin.unwrap_or_else(|| panic!("no forecast at {at}"));
            assert!(
                at - origin <= 2 * MINUTE_MS + grace,
                "at {at} the forecast is from {origin}: {} s behind",
                (at - origin) / 1000
            );
            checked += 1;
        }
    }
    let expected = (idle.end - idle.start).saturating_sub(2) * 4;
    assert!(
        checked + 1 >= expected,
        "{checked} decisions inside the idle time"
    );
}

/// Minutes of the idle stretch in `with_idle`: no request at all.
const IDLE: std::ops::Range<u64> = 240..270;

/// `series()` over four hours, with half an hour of no traffic at all from 4:00.
fn with_idle() -> Vec<u64> {
    let mut counts = series();
    counts.truncate(5 * 60);
    for m in IDLE {
        counts[m as usize] = 0;
    }
    counts
}

#[test]
fn the_sidecar_driver_and_replay_agree_through_idle_time_and_forecast_it() {
    // Idle minutes are not reported (the sidecar has no bucket for them, replay
    // sends none): both close those steps on the clock, as zeros, at the same time.
    let counts = with_idle();
    let dir = tempfile::tempdir().unwrap();
    let (replayed, summary) = replay_decisions(dir.path(), &counts);
    let minutes = count_minutes(&counts);
    let live = drive_live(CONFIG, &replayed, &minutes);
    assert_same_total_forecast(&live.driver, &summary["forecast"]["engine"]);
    // Through the idle half hour `/v1/forecast` kept up with the clock, and the
    // forecast the decisions planned with fell towards zero.
    assert_origin_keeps_up(&live, IDLE);
    let (idle_from, idle_to) = (
        (START + 60 * IDLE.start) * 1000,
        (START + 60 * IDLE.end) * 1000,
    );
    let busy_before: f64 = replayed
        .iter()
        .filter(|r| (idle_from - 10 * MINUTE_MS..idle_from).contains(&r.at))
        .map(|r| r.fields[0].parse::<f64>().unwrap())
        .fold(f64::INFINITY, f64::min);
    let late_idle: Vec<f64> = replayed
        .iter()
        .filter(|r| (idle_to - 5 * MINUTE_MS..idle_to).contains(&r.at))
        .map(|r| {
            r.fields[0]
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("no forecast planned at {}", r.at))
        })
        .collect();
    assert!(!late_idle.is_empty());
    for point in &late_idle {
        assert!(
            *point < 0.25 * busy_before,
            "after 25 idle minutes the forecast is {point} (busy: {busy_before})"
        );
    }
}

/// Requests per minute of two kinds of traffic with different shapes: API calls on
/// the 40-minute cycle, image downloads on a 90-minute wave with a surge.
fn two_kinds(m: u64) -> (u64, u64) {
    let cycle = (m % 40) as f64 / 40.0;
    let api = 30.0 + 60.0 * cycle + ((m * 7919) % 13) as f64;
    let wave = (m as f64 * std::f64::consts::TAU / 90.0).sin();
    let surge = if (200..215).contains(&m) { 60.0 } else { 0.0 };
    let images = 25.0 + 20.0 * wave + surge + ((m * 104_729) % 11) as f64;
    (api.round() as u64, images.round() as u64)
}

/// Unix seconds as a Common Log Format time (`14/Nov/2023:22:14:00 +0000`).
fn clf_time(t: u64) -> String {
    let iso = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string();
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month: usize = iso[5..7].parse().unwrap();
    format!(
        "{}/{}/{}:{} +0000",
        &iso[8..10],
        MONTHS[month - 1],
        &iso[0..4],
        &iso[11..19]
    )
}

/// `two_kinds`, but nothing at all in the minutes `idle`.
fn two_kinds_but(m: u64, idle: &std::ops::Range<u64>) -> (u64, u64) {
    match idle.contains(&m) {
        true => (0, 0),
        false => two_kinds(m),
    }
}

/// A Common Log Format log of `two_kinds` traffic from START (none in `idle`),
/// requests spread evenly over each minute.
fn two_kinds_log(minutes: u64, idle: &std::ops::Range<u64>) -> String {
    let mut log = String::new();
    for m in 0..minutes {
        let (api, images) = two_kinds_but(m, idle);
        let n = api + images;
        for i in 0..n {
            let t = START + 60 * m + i * 60 / n;
            let (path, bytes) = if i < api {
                (format!("/api/items/{}", i % 50), 300 + (i * 37) % 500)
            } else {
                (
                    format!("/images/{}.png", i % 40),
                    150_000 + (i * 7_919) % 100_000,
                )
            };
            log.push_str(&format!(
                "10.0.{}.{} - - [{}] \"GET {path} HTTP/1.1\" 200 {bytes}\n",
                i % 7,
                i % 200,
                clf_time(t)
            ));
        }
    }
    log
}

/// Minutes of the request log.
const LOG_MINUTES: u64 = 5 * 60;

#[test]
fn the_sidecar_driver_and_replay_agree_on_a_request_log_forecast_per_signature() {
    // A request log: replay feeds the engine each signature's minutes, as the
    // profiler hands them to the live driver, so the reconciliation runs too.
    let live = agree_on_log(0..0);
    live.assert_exercised(20, 3);
}

#[test]
fn the_sidecar_driver_and_replay_agree_on_a_request_log_with_idle_minutes() {
    // Eight minutes without a request (too short for replay to call the silence a
    // gap): every signature's steps and the total's close on the clock as zeros,
    // reconciled, the same way live and in replay.
    const IDLE: std::ops::Range<u64> = 200..208;
    let live = agree_on_log(IDLE);
    assert_origin_keeps_up(&live, IDLE);
}

/// Replays a request log of `two_kinds` traffic (none in `idle`) and drives the live
/// driver with the same minutes: every decision, the total's forecast and the
/// reconciliation's scores must agree.
fn agree_on_log(idle: std::ops::Range<u64>) -> Agreement {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("access.log");
    std::fs::write(&input, two_kinds_log(LOG_MINUTES, &idle)).unwrap();
    let config = CONFIG.replace("capacity_per_replica: 5", "capacity_per_replica: 0.1");
    let (replayed, summary) = replay_log(dir.path(), &input, &config);
    assert!(
        replayed.len() as u64 >= LOG_MINUTES * 4 - 8,
        "{}",
        replayed.len()
    );
    // The buckets replay fed: its per-minute split by signature.
    let text = std::fs::read_to_string(dir.path().join("out/signature_minutes.csv")).unwrap();
    let mut split: BTreeMap<u64, BTreeMap<u32, Cell>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        let requests: u64 = c[2].parse().unwrap();
        split.entry(c[0].parse().unwrap()).or_default().insert(
            c[1].parse().unwrap(),
            Cell {
                requests,
                work_us: requests * 1_000_000,
            },
        );
    }
    let minutes: Vec<Bucket> = (0..LOG_MINUTES)
        .map(|m| {
            let start = (START + 60 * m) * 1000;
            let (api, images) = two_kinds_but(m, &idle);
            let by_signature = split.remove(&start).unwrap_or_default();
            // Every request of the minute is in the profiler's bucket of it.
            let n: u64 = by_signature.values().map(|c| c.requests).sum();
            assert_eq!(n, api + images, "minute {m}");
            Bucket {
                start,
                total: Cell {
                    requests: n,
                    work_us: n * 1_000_000,
                },
                by_signature,
            }
        })
        .collect();
    let live = drive_live(&config, &replayed, &minutes);
    assert_same_total_forecast(&live.driver, &summary["forecast"]["engine"]);
    // Signatures were forecast and reconciled, the same way on both sides.
    let reconciliation = &summary["forecast"]["reconciliation"];
    let signatures = reconciliation["signature_series"].as_u64().unwrap();
    assert!(signatures >= 2, "{reconciliation}");
    let view = live.driver.engine().view();
    assert_eq!(view.series.len() as u64, signatures + 1);
    let total = view.total.expect("a reconciled total");
    assert_eq!(
        serde_json::to_value(&total.choice.chosen).unwrap(),
        reconciliation["planned_with_at_end"]
    );
    let scores = live.driver.engine().reconcile_scores();
    for (live_step, replayed_step) in scores
        .steps
        .iter()
        .zip(reconciliation["steps"].as_array().unwrap())
    {
        for (live_mae, source) in [
            (live_step.mae_direct, "direct"),
            (live_step.mae_bottom_up, "bottom_up"),
            (live_step.mae_combined, "combined"),
        ] {
            let mae = live_mae.expect("scored");
            assert!(mae.is_finite() && mae > 0.0, "{live_step:?}");
            // JSON parsing may round the last bit (serde_json without float_roundtrip).
            let replayed = replayed_step["mae"][source].as_f64().unwrap();
            assert!(
                (mae - replayed).abs() <= 1e-12 * mae,
                "{source}: {mae} vs {replayed}"
            );
        }
    }
    live
}

#[test]
fn replay_refuses_a_bad_config_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("series.csv");
    std::fs::write(
        &input,
        "timestamp,value\n2023-11-14T22:14:00Z,5\n2023-11-14T22:15:00Z,6\n",
    )
    .unwrap();
    let config = dir.path().join("mesh.yaml");
    let bad = CONFIG.replace("sync_period: 15s", "sync_period: soon");
    std::fs::write(&config, bad).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["replay", "--quiet", "--input"])
        .arg(&input)
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .expect("run prescale replay");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("mesh.yaml:"), "{stderr}");
    assert!(!dir.path().join("out").exists(), "nothing written");
}
