//! The sidecar and `prescale replay` run one decision engine: the same minute series
//! through the sidecar's forecaster driver (`prescale_proxy::forecasting::Driver`, the
//! code its forecaster thread runs, here fed in-process on a manual schedule instead of
//! the real clock) and through the real `prescale replay --config` binary produce the
//! same forecasts and the same decisions, every one, exactly.

use prescale_profiler::series::{Bucket, Cell, MINUTE_MS};
use prescale_proxy::forecasting::{Forecasting, Update};
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

fn replay_decisions(dir: &Path, counts: &[u64]) -> (Vec<Row>, serde_json::Value) {
    let input = dir.join("series.csv");
    let mut csv = String::from("timestamp,value\n");
    for (m, n) in counts.iter().enumerate() {
        let t = UNIX_EPOCH + Duration::from_secs(START + 60 * m as u64);
        csv.push_str(&format!("{},{n}\n", humantime::format_rfc3339_seconds(t)));
    }
    std::fs::write(&input, csv).unwrap();
    let config = dir.join("mesh.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = dir.join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["replay", "--quiet", "--input"])
        .arg(&input)
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
    let summary: serde_json::Value =
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
    (rows, summary["forecast"]["engine"].clone())
}

#[test]
fn the_sidecar_driver_and_replay_make_the_same_forecasts_and_decisions() {
    let counts = series();
    let dir = tempfile::tempdir().unwrap();
    let (replayed, replayed_forecast) = replay_decisions(dir.path(), &counts);
    // A decision every sync period from the first complete 10 s on.
    assert!(
        replayed.len() as u64 >= MINUTES * 4 - 4,
        "{} decisions",
        replayed.len()
    );

    let cfg = prescale_proxy::MeshConfig::parse(CONFIG, Path::new("mesh.yaml")).unwrap();
    let (_shared, mut driver) =
        Forecasting::manual(cfg.profiler.forecast.clone(), cfg.policies.scaling.clone());
    let mut fed = 0usize;
    let (mut forecast_driven, mut ups, mut downs) = (0, 0, 0);
    let mut last: Option<String> = None;
    for row in &replayed {
        // The profiler sends each minute once it has ended, after the grace it
        // gives late samples (proxy/src/profiling.rs).
        while fed < counts.len()
            && (START + 60 * (fed as u64 + 1)) * 1000 + prescale_engine::MINUTE_GRACE_MS <= row.at
        {
            let n = counts[fed];
            let cell = Cell {
                requests: n,
                work_us: n * 1_000_000,
            };
            driver.update(Update::Minute(Bucket {
                start: START * 1000 + fed as u64 * MINUTE_MS,
                total: cell,
                by_signature: BTreeMap::new(),
            }));
            fed += 1;
        }
        // Replay's current demand is the rate over the last complete 10 s: here the
        // rate of the minute holding that window.
        let minute = ((row.at / 1000 - 10 - START) / 60) as usize;
        let rate = counts[minute] as f64 / 60.0;
        assert!((row.demand - rate).abs() < 1e-9, "{} vs {rate}", row.demand);
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
    // The forecasters end in the same state: same model, same scored accuracy.
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
        assert_eq!(live_forecast[key], replayed_forecast[key], "{key}");
    }
    assert!(total.accuracy.coverage.is_some(), "{live_forecast}");
    // The comparison covered forecast-led decisions and moves both ways.
    assert!(forecast_driven > 50, "{forecast_driven} forecast-led");
    assert!(ups >= 5 && downs >= 5, "{ups} up, {downs} down");
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
