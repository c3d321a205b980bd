//! `prescale replay --config` with tiers: the real binary classifies a real access log
//! (`testdata/traces/`, a missing one fails under `CI=true`) by the config's tier rules
//! and reports the requests each policy would have shed per tier, without and (for the
//! predictive engine) with pre-shedding.

#[path = "support/require.rs"]
mod require;

use serde_json::Value;
use std::process::Command;

const CONFIG: &str = "\
listeners: [{name: in, direction: inbound, address: \"127.0.0.1:1\", cluster: local}]
clusters: [{name: local, endpoints: [\"127.0.0.1:2\"]}]
policies:
  scaling: { capacity_per_replica: 0.05, startup_time: 120s, min_replicas: 1, max_replicas: 20 }
  admission: { preshed: { enabled: true, release_rate: 0.01 } }
  tiers:
    default: pages
    list:
      - { name: blog, priority: 0, sheddable: false, match: { path_prefix: [/blog] } }
      - { name: pages, priority: 1 }
      - { name: assets, priority: 2, match: { path_prefix: [/images, /files] } }
";

#[test]
fn a_tiered_replay_reports_requests_shed_per_tier_with_and_without_preshedding() {
    let name = "apache_access_semicomplete_2015-05-17_20.log";
    let Some(input) = require::trace(
        "a_tiered_replay_reports_requests_shed_per_tier_with_and_without_preshedding",
        name,
    ) else {
        return;
    };
    let log = std::fs::read_to_string(&input).unwrap();
    let count = |prefix: &str| {
        log.lines()
            .filter(|l| {
                l.split('"')
                    .nth(1)
                    .and_then(|r| r.split(' ').nth(1))
                    .is_some_and(|p| p.starts_with(prefix))
            })
            .count() as f64
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = dir.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["replay", "--quiet", "--start-delay", "300s", "--input"])
        .arg(&input)
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run prescale replay");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("requests shed by tier"), "{stdout}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Requests shed by tier"));
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let tiers = |policy: &str| summary["policies"][policy]["shed_by_tier"].clone();
    let predictive = tiers("predictive");
    let line = |name: &str| {
        predictive
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tier"] == name)
            .unwrap()
            .clone()
    };
    // The log's requests, classified by the tier rules (demand windows pool them, so
    // within a few per cent).
    for (tier, expected) in [
        ("blog", count("/blog")),
        ("assets", count("/images") + count("/files")),
    ] {
        let got = line(tier)["requests"].as_f64().unwrap();
        assert!(
            (got - expected).abs() <= 0.05 * expected,
            "{tier}: {got} vs {expected}"
        );
    }
    // Short of capacity some of the time: sheddable tiers lose requests, the tier that
    // is not sheddable (the most important) loses least.
    let shed = |t: &Value| t["shed"].as_f64().unwrap();
    let with = |t: &Value| t["shed_with_preshed"].as_f64().unwrap();
    assert!(
        shed(&line("pages")) + shed(&line("assets")) > 100.0,
        "{predictive}"
    );
    assert!(shed(&line("blog")) < shed(&line("pages")).min(shed(&line("assets"))));
    // Pre-shedding sheds more of the sheddable tiers ahead of the shortfalls the
    // forecast saw coming (here it did), never the others.
    let (pre, at_capacity) = (
        with(&line("pages")) + with(&line("assets")),
        shed(&line("pages")) + shed(&line("assets")),
    );
    assert!(pre > at_capacity + 1.0, "{pre} vs {at_capacity}");
    assert_eq!(with(&line("blog")), shed(&line("blog")));
    // Perfect foresight and a peak-sized fleet shed nothing; the HPA has no pre-shed.
    for policy in ["oracle", "static-peak"] {
        for t in tiers(policy).as_array().unwrap() {
            assert_eq!(shed(t), 0.0, "{policy}: {t}");
        }
    }
    assert!(tiers("hpa")[0]["shed_with_preshed"].is_null());
}
