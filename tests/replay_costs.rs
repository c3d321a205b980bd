//! `prescale replay` fits the sidecar's per-signature cost model on what a request log
//! implies, and scores the resource forecast against it: the real binary on the real
//! Apache log (network: request plus response bytes), and on a log of real measured
//! requests (CPU: the logged service time).
//!
//! The second log is made here: a real local upstream (`tests/support`'s hyper
//! server) is asked, over real TCP on loopback, for three kinds of request — `/delay/2`
//! (the log calls it `/ping`), `/delay/25` (`/search`) and `/bytes/150000`
//! (`/download`) — and each request's wall time and body size are measured. Those
//! measured requests are then laid on an 8-hour schedule whose mix of the three
//! varies minute to minute (a cost model needs minutes of varying mix; a test cannot
//! run for hours): every row's duration and size is one of the measured ones, its
//! time is the schedule's (`PRESCALE_KEEP_CSV=FILE` keeps the log for a look). A
//! missing trace fails under `CI=true`.

#[path = "support/mod.rs"]
mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::time::Instant;
use support::replay_cli::{replay, summary};

const APACHE: &str = "apache_access_semicomplete_2015-05-17_20.log";

fn signature<'a>(costs: &'a Value, route_prefix: &str) -> Vec<&'a Value> {
    costs["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["top_route"]
                .as_str()
                .is_some_and(|r| r.starts_with(route_prefix))
        })
        .collect()
}

#[test]
fn the_apache_logs_network_costs_and_forecast_follow_its_bytes() {
    let test = "the_apache_logs_network_costs_and_forecast_follow_its_bytes";
    let Some(input) = support::require::trace(test, APACHE) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let s = summary(&replay(&input, &out, &[]), &out);
    let costs = &s["costs"];
    // No duration column: network only.
    assert_eq!(costs["observed"], serde_json::json!(["network"]), "{costs}");
    assert!(costs["cpu_forecast"].as_array().unwrap().is_empty());
    assert!(costs["bridge"].is_null());
    // Of the two signatures that carry the most bytes, at least one has an identified
    // network cost within ±35 % of the bytes its requests carried; no identified cost
    // is negative or without a standard error.
    let mut sigs: Vec<&Value> = costs["signatures"].as_array().unwrap().iter().collect();
    let carried = |s: &Value| {
        s["requests"].as_f64().unwrap() * s["logged_bytes_per_request"].as_f64().unwrap()
    };
    sigs.sort_by(|a, b| carried(b).total_cmp(&carried(a)));
    let close = sigs.iter().take(2).any(|s| {
        s["network_bytes_per_request"].as_f64().is_some_and(|b| {
            let logged = s["logged_bytes_per_request"].as_f64().unwrap();
            (b - logged).abs() <= 0.35 * logged
        })
    });
    assert!(close, "{costs}");
    for s in &sigs {
        if s["network_identified"] == true {
            assert!(
                s["network_bytes_per_request"].as_f64().unwrap() > 0.0,
                "{s}"
            );
            assert!(s["network_std_error"].as_f64().is_some(), "{s}");
        } else {
            assert!(s["network_bytes_per_request"].is_null(), "{s}");
        }
    }
    // The forecast was scored at every horizon step, its interval covering a sane
    // share of the steps.
    let steps = costs["network_forecast"].as_array().unwrap();
    assert!(!steps.is_empty(), "{costs}");
    for st in steps {
        assert!(st["scored"].as_u64().unwrap() >= 30, "{st}");
        let coverage = st["coverage"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&coverage), "{st}");
        assert!(st["mae"].as_f64().unwrap().is_finite(), "{st}");
    }
}

/// One measured request: wall seconds and body bytes.
fn measure(addr: std::net::SocketAddr, path: &str) -> (f64, usize) {
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: upstream\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let head = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    assert!(response.starts_with(b"HTTP/1.1 200"), "{path}");
    (elapsed, response.len() - head - 4)
}

/// Requests per minute of each kind at minute `m`: three independent cycles.
fn mix(m: u64) -> [u64; 3] {
    let wave = |period: f64, phase: f64| {
        ((m as f64 * std::f64::consts::TAU / period) + phase).sin() * 0.5 + 0.5
    };
    let jitter = |k: u64| (m.wrapping_mul(2_654_435_761).wrapping_add(k * 97) >> 7) % 5;
    [
        8 + (20.0 * wave(90.0, 0.0)) as u64 + jitter(1),
        2 + (10.0 * wave(53.0, 1.3)) as u64 + jitter(2),
        1 + (6.0 * wave(127.0, 2.1)) as u64 + jitter(3) % 3,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_measured_requests_gives_cpu_costs_a_forecast_and_the_bridge() {
    let upstream = support::Upstream::start().await;
    let addr = upstream.addr;
    // 40 real requests of each kind, measured.
    let kinds = [
        ("/ping", "/delay/2"),
        ("/search", "/delay/25"),
        ("/download", "/bytes/150000"),
    ];
    let measured: Vec<Vec<(f64, usize)>> = tokio::task::spawn_blocking(move || {
        kinds
            .iter()
            .map(|(_, real)| (0..40).map(|_| measure(addr, real)).collect())
            .collect()
    })
    .await
    .unwrap();
    let mean = |k: usize| measured[k].iter().map(|m| m.0).sum::<f64>() / 40.0;
    assert!(
        mean(1) > 5.0 * mean(0),
        "search {} ping {}",
        mean(1),
        mean(0)
    );

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("requests.csv");
    let mut csv = String::from("time,path,duration_s,bytes\n");
    let start = 1_700_000_040u64;
    let mut used = [0usize; 3];
    for m in 0..8 * 60 {
        let counts = mix(m);
        let n: u64 = counts.iter().sum();
        let mut i = 0;
        for (k, count) in counts.iter().enumerate() {
            for _ in 0..*count {
                let (secs, bytes) = measured[k][used[k] % 40];
                used[k] += 1;
                let t = start as f64 + 60.0 * m as f64 + 60.0 * i as f64 / n as f64;
                csv.push_str(&format!("{t:.3},{},{secs:.6},{bytes}\n", kinds[k].0));
                i += 1;
            }
        }
    }
    std::fs::write(&input, csv).unwrap();
    let out = dir.path().join("out");
    let columns = "time=time,path=path,duration=duration_s,response_size=bytes";
    let run = replay(
        &input,
        &out,
        &["--format", "request-csv", "--columns", columns],
    );
    let s = summary(&run, &out);
    let costs = &s["costs"];
    if let Ok(keep) = std::env::var("PRESCALE_KEEP_CSV") {
        std::fs::copy(&input, keep).unwrap();
    }
    assert_eq!(
        costs["observed"],
        serde_json::json!(["cpu", "network"]),
        "{costs}"
    );
    // The slow kind's CPU (logged seconds) per request is identified within ±35 % of
    // what its requests took, and above the quick kind's.
    let search = signature(costs, "/search");
    let ping = signature(costs, "/ping");
    assert!(!search.is_empty() && !ping.is_empty(), "{costs}");
    let cpu = |s: &Value| s["cpu_seconds_per_request"].as_f64();
    let heavy = search.iter().filter_map(|s| cpu(s)).fold(0.0, f64::max);
    assert!(
        (heavy - mean(1)).abs() <= 0.35 * mean(1),
        "search {heavy} vs measured {}: {costs}",
        mean(1)
    );
    for p in &ping {
        if let Some(light) = cpu(p) {
            assert!(light < heavy, "{costs}");
        }
    }
    // The CPU forecast against the CPU the log implies.
    for st in costs["cpu_forecast"].as_array().unwrap() {
        assert!(st["scored"].as_u64().unwrap() >= 100, "{st}");
        let observed = st["mean_observed"].as_f64().unwrap();
        let forecast = st["mean_forecast"].as_f64().unwrap();
        assert!((forecast - observed).abs() <= 0.25 * observed, "{st}");
        assert!(st["mae"].as_f64().unwrap() < 0.5 * observed, "{st}");
        let coverage = st["coverage"].as_f64().unwrap();
        assert!((0.7..=1.0).contains(&coverage), "{st}");
    }
    // The bridge: a replica's request is its capacity's CPU, and what it covered
    // is a share.
    let bridge = &costs["bridge"];
    assert!(
        bridge["base_cpu_per_replica"].as_f64().unwrap() > 0.0,
        "{bridge}"
    );
    if let Some(share) = bridge["covered_share"].as_f64() {
        assert!((0.0..=1.0).contains(&share), "{bridge}");
    }
    assert!(
        bridge["shortfall_with"].as_f64().unwrap() <= bridge["shortfall_without"].as_f64().unwrap(),
        "{bridge}"
    );

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("Resource costs and forecasts"),
        "no costs table"
    );

    // A column map naming a column the file does not have is refused, naming it.
    let bad = replay(
        &input,
        &dir.path().join("bad"),
        &[
            "--format",
            "request-csv",
            "--columns",
            "time=time,duration=service_ms",
        ],
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("service_ms"), "{stderr}");
    let bad = replay(
        &input,
        &dir.path().join("bad2"),
        &[
            "--format",
            "request-csv",
            "--columns",
            "time=time,cpu=duration_s",
        ],
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("unknown role"), "{stderr}");
    drop(upstream);
}
