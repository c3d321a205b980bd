//! Bounded memory under hostile cardinality of *headers*, through the real binary: every
//! request carries a distinct source identity (`x-client-id`, from a trusted peer, with
//! per-source rate limiting on so the heavy-hitter table is in play), a distinct trace
//! id (`traceparent`, so the fanout table is in play) and a distinct path. RSS must stay
//! under 128 MiB and flat, and every metric label set and table within its cap.
//!
//! tests/profiler.rs covers distinct paths alone with h2load. h2load cannot vary headers
//! per request, so the load here is wrk with a Lua script. The debug build serves about
//! 1 500-2 500 requests a second on two shared cores, so CI sends for
//! `PRESCALE_TEST_SECONDS` (default 30) per half; `bash benches/memory.sh` runs 10^6
//! requests through a release build for the figure in docs/reliability.md.

#[path = "support/procfs.rs"]
mod procfs;
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Every request distinct in path, `x-client-id` and `traceparent`: per wrk thread a
/// counter, prefixed by the thread's number and the run's `half`.
const SCRIPT: &str = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local letters = "abcdefghijklmnopqrstuvwxyz"
local function word(n)
  local s = ""
  repeat
    local d = n % 26
    s = s .. string.sub(letters, d + 1, d + 1)
    n = (n - d) / 26
  until n == 0
  return s
end
local n = 0
request = function()
  n = n + 1
  local who = HALF * 100 + tid
  local path = "/catalog/" .. word(who) .. "x" .. word(n) .. "/detail"
  local trace = string.format("00-%08x%08x0000000000000001-%08x%08x-01", who, n, n, who)
  return wrk.format("GET", path, {
    ["x-client-id"] = string.format("client-%d-%d", who, n),
    ["traceparent"] = trace,
  })
end
"#;

/// Runs wrk for `secs` with the script; returns (requests, non-2xx).
fn wrk(dir: &std::path::Path, listen: SocketAddr, half: u32, secs: u64) -> (u64, u64) {
    let script = dir.join(format!("distinct-{half}.lua"));
    std::fs::write(&script, format!("HALF = {half}\n{SCRIPT}")).unwrap();
    let out = Command::new("timeout")
        .arg((secs + 30).to_string())
        .args(["wrk", "-t2", "-c16", "--timeout", "5s"])
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{listen}/"))
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("wrk summary: {text}"));
    let bad = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        !text.contains("Socket errors"),
        "wrk saw socket errors: {text}"
    );
    (requests, bad)
}

fn metrics(admin: SocketAddr) -> String {
    admin_get(admin, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

fn value(exposition: &str, name: &str) -> f64 {
    metric_value(exposition, name, "").unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_tables_stay_bounded_under_distinct_sources_and_trace_ids() {
    let secs: u64 = std::env::var("PRESCALE_TEST_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: local}}\nclusters:\n  - {{name: local, endpoints: [\"{}\"]}}\nprofiler: {{refit_interval: 5s, min_samples: 100, tick: 200ms, source_header: x-client-id}}\npolicies:\n  tiers: {{trusted_sources: [\"127.0.0.1/32\"]}}\n  sources: {{rate_limit: {{rps: 1000, burst: 1000}}, top_k: 1024}}\n  admission: {{enabled: false}}\n",
        upstream.addr
    );
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&cfg, admin))
        .await
        .unwrap();
    let pid = proxy.child.id();
    let dir = proxy.dir.path().to_path_buf();
    let start_rss = procfs::rss_kib(pid);

    let t = Instant::now();
    let d = dir.clone();
    let (n1, bad1) = tokio::task::spawn_blocking(move || wrk(&d, listen, 1, secs))
        .await
        .unwrap();
    let mid_rss = procfs::rss_kib(pid);
    let d = dir.clone();
    let (n2, bad2) = tokio::task::spawn_blocking(move || wrk(&d, listen, 2, secs))
        .await
        .unwrap();
    let took = t.elapsed();
    let n = n1 + n2;
    assert_eq!(bad1 + bad2, 0, "every request must be a 2xx");
    assert!(
        n >= 10_000,
        "only {n} requests in {took:?}: too few to mean anything"
    );

    // Every request reached the profiler (recorded, or dropped and counted).
    let deadline = Instant::now() + Duration::from_secs(15);
    let m = loop {
        let m = metrics(admin);
        let seen = value(&m, "prescale_profiler_samples_total")
            + value(&m, "prescale_profiler_dropped_samples_total");
        if seen >= n as f64 || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let end_rss = procfs::rss_kib(pid);

    // Labels: only config names, fixed sets and signature ids; no id, path or source.
    let series: Vec<&str> = m.lines().filter(|l| !l.starts_with('#')).collect();
    let leaked: Vec<&&str> = series
        .iter()
        .filter(|l| l.contains("client-") || l.contains("catalog") || l.contains("00-0"))
        .collect();
    assert!(leaked.is_empty(), "request data became labels: {leaked:?}");
    let signatures: BTreeSet<&str> = series
        .iter()
        .filter_map(|l| l.split_once("signature=\"")?.1.split_once('"').map(|x| x.0))
        .collect();
    assert!(signatures.len() <= 18, "signature labels {signatures:?}");
    assert!(series.len() < 1000, "{} metric series", series.len());
    // Sources: the heavy-hitter table holds at most top_k; the rest share `other`.
    let (_, tiers) = admin_get(admin, "/v1/tiers").unwrap();
    let tiers: serde_json::Value = serde_json::from_str(&tiers).unwrap();
    let tracked = tiers["sources"]["tracked"]
        .as_u64()
        .unwrap_or_else(|| panic!("{tiers:#}"));
    assert!(tracked <= 1024, "{tracked} sources tracked, top_k 1024");
    // Trace ids: the fanout table is fixed; untracked ones are counted, not stored.
    let fanout_untracked = value(&m, "prescale_profiler_fanout_untracked_total");

    eprintln!(
        "{n} requests ({n1} + {n2}) in {took:?}, each a distinct path, source and trace id; \
         RSS start {start_rss} KiB, mid {mid_rss} KiB, end {end_rss} KiB; {} series, \
         signatures {signatures:?}, sources tracked {tracked} (other: {}), fanout untracked \
         {fanout_untracked}",
        series.len(),
        tiers["sources"]["other"]
    );
    assert!(end_rss < 128 * 1024, "RSS {end_rss} KiB after {n} requests");
    assert!(
        end_rss <= mid_rss + 16 * 1024,
        "RSS grew from {mid_rss} KiB to {end_rss} KiB over the second half"
    );
}
