//! The open-loop overload scenario through the real binary: three tiers at three times
//! the upstream's capacity.
//!
//! An upstream with a fixed capacity (24 slots × 240 ms ≈ 100 req/s; the excess waits
//! in its own FIFO queue) behind prescale, whose config names three tiers by path
//! prefix and gives the limit only a generous floor and ceiling: the upstream's
//! capacity is not configured, the adaptive limit has to find it. Critical traffic
//! alone at 40 % of capacity gives the unloaded p99; then open-loop Poisson arrivals
//! at three times capacity (20 % critical, 30 % standard, 50 % batch) are measured
//! for 20 s after a 6 s warm-up (repeated once if the machine stalled the generator:
//! ≈ 40 s, at worst ≈ 70 s). `support/overload.rs` has the upstream and the
//! generator; `benches/overload.sh` runs the same scenario against release builds and
//! HAProxy.
//!
//! Scale: the debug build on two shared cores cannot drive the 800 req/s of the release-build scenario
//! (3 × that through a debug proxy and a debug client saturates the machine, and the
//! limiter then learns the proxy's own CPU queue). Keeping 24 slots and stretching the
//! service time keeps the queueing the same in units of service time at an eighth of
//! the request rate.
//!
//! Critical queues (`queue: true`): at the limit it waits in prescale's queue, where
//! the next freed slot goes to it, instead of going over the limit into the
//! upstream's FIFO behind batch work. The limiter is told the upstream is steady
//! (`tolerance: 1.03`, `drift_guard: 1.05`, `queue_size: 2`), which keeps the
//! upstream's own queue to a few requests; its capacity is still not configured.
//!
//! Bounds, where they differ from the design targets, are the tightest that held over runs
//! on this machine (figures in docs/tiers-and-admission.md):
//! - critical p99 ≤ 1.5 × its unloaded p99 (target 1.25; measured 1.29–1.33 over
//!   three runs, 1.46–1.48 before critical queued). 1.25 is out of reach at 99 %
//!   goodput for any admission in front of a non-preemptive upstream: every slot is
//!   busy, so a critical request waits for the next slot to free (μ = 100/s, critical
//!   λ = 60/s); as a priority M/M/1 its p99 wait is ln(0.6/0.01)/(μ−λ) ≈ 100 ms, 1.4×
//!   (slots free more regularly than Poisson, hence the measured ≈ 75 ms). Holding
//!   slots free costs goodput: `tolerance: 1.0` measured 1.22 at 96.7 % goodput;
//! - rejection p50 < 2 ms from send (target 1 ms; measured 0.98–1.18 ms through a
//!   debug proxy and a debug client; 0.16 ms in release, `benches/overload.sh`),
//!   p99 < 150 ms: never a queue wait.

#[path = "support/overload.rs"]
mod overload;
mod support;

use overload::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{admin_get, free_port, Proxy};

const SLOTS: usize = 24;
const SERVICE: Duration = Duration::from_millis(240);
/// Nominal capacity, req/s (timers make the real one a little lower; it is measured).
const NOMINAL: f64 = SLOTS as f64 / 0.240;
const MIX: [f64; 3] = [0.2, 0.3, 0.5];
const WARMUP: Duration = Duration::from_secs(6);
const MEASURED: Duration = Duration::from_secs(20);
/// Per request: an answer later than this is a failure.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The generator sending a request later than this after its scheduled start means the
/// machine stalled it (well-behaved runs stay under 25 ms; stalled ones reach 200+).
const STALL: Duration = Duration::from_millis(100);

fn config(admin: SocketAddr, listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"admin:
  address: {admin}
listeners:
  - name: inbound
    direction: inbound
    address: {listen}
    cluster: local
clusters:
  - name: local
    endpoints: ["{upstream}"]
policies:
  tiers:
    default: batch
    list:
      # Strict priority: critical may hold the whole limit, whatever the others hold;
      # each lower level leaves 30 % of the limit to the levels above it.
      - {{ name: critical, priority: 0, share: 1.0, sheddable: false, queue: true, match: {{ path_prefix: ["/critical"] }} }}
      - {{ name: standard, priority: 1, match: {{ path_prefix: ["/standard"] }} }}
      - {{ name: batch, priority: 2 }}
  admission:
    # A latency objective: at the limit, refuse at once (queue: true tiers wait with
    # CoDel deadlines) instead of letting every tier wait.
    latency_objective: 500ms
    # Generous bounds only: the upstream's 24 slots are for the limit to find.
    limit: {{ floor: 1, ceiling: 1000, tolerance: 1.03, drift_guard: 1.05, queue_size: 2 }}
    priority_headroom: 0.3
    # Critical waits here for a freed slot rather than in the upstream's FIFO. A slot
    # frees every 10 ms (24 slots x 240 ms), so CoDel's target must be above that.
    queue: {{ target: 20ms, interval: 200ms }}
"#
    )
}

/// The cluster's limit from `GET /v1/tiers`.
fn limit(admin: SocketAddr) -> Option<u64> {
    let (_, body) = admin_get(admin, "/v1/tiers")?;
    let view: serde_json::Value = serde_json::from_str(&body).ok()?;
    view["clusters"][0]["limit"].as_u64()
}

/// Three times capacity for `WARMUP + MEASURED`: the recorded samples, the upstream's
/// capacity over the measured window and the limits seen in it.
async fn overload_phase(
    base: &str,
    upstream: &CapacityUpstream,
    admin: SocketAddr,
    seed: u64,
) -> (Vec<Sample>, Capacity, Vec<u64>) {
    let phase = Phase {
        rate: 3.0 * NOMINAL,
        duration: WARMUP + MEASURED,
        mix: MIX,
        warmup: WARMUP,
    };
    let stats = upstream.stats.clone();
    let window = tokio::task::spawn_blocking(move || {
        std::thread::sleep(WARMUP);
        let a = stats.snapshot();
        let mut limits = Vec::new();
        while a.at.elapsed() < MEASURED {
            limits.extend(limit(admin));
            std::thread::sleep(Duration::from_millis(250));
        }
        (a, stats.snapshot(), limits)
    });
    let samples = run_phase(base, &phase, seed, TIMEOUT).await;
    let (a, b, limits) = window.await.expect("measured window");
    (samples, capacity(SLOTS, &a, &b), limits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_three_times_capacity_critical_is_served_and_the_rest_shed_at_once() {
    let began = Instant::now();
    let upstream = CapacityUpstream::start(SocketAddr::from(([127, 0, 0, 1], 0)), SLOTS, SERVICE)
        .expect("start the upstream");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml = config(admin, listen, upstream.addr);
    let _proxy = tokio::task::spawn_blocking(move || Proxy::start(&yaml, admin))
        .await
        .expect("proxy start");
    let base = format!("http://{listen}");

    // 1. Unloaded: critical alone at 40 % of capacity (about 10 of 24 slots busy).
    let unloaded = Phase {
        rate: 0.4 * NOMINAL,
        duration: Duration::from_secs(10),
        mix: [1.0, 0.0, 0.0],
        warmup: Duration::from_secs(1),
    };
    let quiet = summarise(&run_phase(&base, &unloaded, 1, TIMEOUT).await);
    assert!(quiet[0].sent > 300, "unloaded sent {}", quiet[0].sent);
    assert_eq!(quiet[0].ok, quiet[0].sent, "unloaded critical all served");
    let unloaded_p50 = pct(&quiet[0].ok_latency, 50.0);
    let unloaded_p99 = pct(&quiet[0].ok_latency, 99.0);

    // 2. Overload: three times capacity, measured after a warm-up. A run in which the
    //    machine stalled the generator itself (another job took the CPU: the arrivals
    //    then come bunched, not Poisson) is not the scenario: it is repeated once.
    let mut attempt = 0;
    let (samples, cap, limits, lags) = loop {
        let (samples, cap, limits) = overload_phase(&base, &upstream, admin, 2 + attempt).await;
        let lags: Vec<Duration> = samples.iter().map(|s| s.lag).collect();
        let worst = pct(&lags, 100.0);
        attempt += 1;
        if worst <= STALL || attempt == 2 {
            break (samples, cap, limits, lags);
        }
        eprintln!(
            "the generator stalled for {:.0} ms (machine busy): measuring again",
            ms(worst)
        );
    };
    let tiers = summarise(&samples);

    // The figures, for docs/tiers-and-admission.md and for anyone reading a failure.
    let secs = MEASURED.as_secs_f64();
    let goodput = tiers.iter().map(|t| t.ok).sum::<usize>() as f64 / secs;
    let offered = [0, 1, 2].map(|i| tiers[i].sent as f64 / secs);
    let ideal = strict_priority_ideal(cap.rps, offered);
    let rejections: Vec<Duration> = tiers
        .iter()
        .flat_map(|t| t.reject_service.iter().copied())
        .collect();
    let (rej_p50, rej_p99) = (pct(&rejections, 50.0), pct(&rejections, 99.0));
    let crit_p99 = pct(&tiers[0].ok_latency, 99.0);
    let ratio = ms(crit_p99) / ms(unloaded_p99);
    let (lmin, lmax) = (
        limits.iter().min().copied().unwrap_or(0),
        limits.iter().max().copied().unwrap_or(0),
    );
    eprintln!(
        "unloaded critical: p50 {:.1} ms, p99 {:.1} ms ({} requests)",
        ms(unloaded_p50),
        ms(unloaded_p99),
        quiet[0].sent
    );
    eprintln!(
        "overload (attempt {attempt}) {:.0} req/s offered; capacity {:.1} req/s (service {:.1} ms); goodput {:.1} req/s = {:.3} of capacity; upstream busy {:.3}; limit {lmin}..={lmax}; generator lag p99 {:.1} ms, max {:.1} ms",
        offered.iter().sum::<f64>(),
        cap.rps,
        cap.service_ms,
        goodput,
        goodput / cap.rps,
        cap.utilisation,
        ms(pct(&lags, 99.0)),
        ms(pct(&lags, 100.0)),
    );
    for (i, t) in tiers.iter().enumerate() {
        eprintln!(
            "  {:8} sent {:5} ok {:.4} (strict-priority ideal {:.3}) rejected {:5} failed {} p50 {:.1} ms p99 {:.1} ms {:?}",
            TIERS[i],
            t.sent,
            t.success(),
            ideal[i],
            t.rejected,
            t.failed,
            ms(pct(&t.ok_latency, 50.0)),
            ms(pct(&t.ok_latency, 99.0)),
            t.reasons,
        );
    }
    eprintln!(
        "  critical p99 / unloaded p99 = {ratio:.2}; rejections ({}): p50 {:.2} ms, p99 {:.2} ms from send; test {:.0} s",
        rejections.len(),
        ms(rej_p50),
        ms(rej_p99),
        began.elapsed().as_secs_f64()
    );

    // Critical is served, and fast.
    let crit = &tiers[0];
    assert!(crit.sent > 1000, "critical sent {}", crit.sent);
    assert!(
        crit.success() >= 0.999,
        "critical success {:.4}",
        crit.success()
    );
    assert!(
        ratio <= 1.5,
        "critical p99 {crit_p99:?} vs unloaded {unloaded_p99:?}"
    );
    // The upstream is kept busy: goodput close to its capacity.
    assert!(
        goodput >= 0.99 * cap.rps,
        "goodput {goodput:.1} of {:.1}",
        cap.rps
    );
    // Standard gets close to what strict priority would give it; batch is shed.
    let std_ok = tiers[1].success();
    assert!(
        (std_ok - ideal[1]).abs() <= 0.05,
        "standard success {std_ok:.3} vs ideal {:.3}",
        ideal[1]
    );
    assert!(
        tiers[2].success() <= 0.05,
        "batch success {:.3}",
        tiers[2].success()
    );
    // Refusals are 503 overload with Retry-After, answered at once; nothing fails.
    for (i, t) in tiers.iter().enumerate() {
        assert_eq!(t.failed, 0, "{} failed requests", TIERS[i]);
        assert_eq!(
            t.reject_without_retry_after, 0,
            "{} without Retry-After",
            TIERS[i]
        );
        let overload = format!("503 overload; tier={}", TIERS[i]);
        assert!(
            t.reasons.keys().all(|k| *k == overload),
            "{}: {:?}",
            TIERS[i],
            t.reasons
        );
    }
    assert!(
        rejections.len() > 2_500,
        "only {} rejections",
        rejections.len()
    );
    assert!(
        rej_p50 < Duration::from_millis(2),
        "rejection p50 {rej_p50:?}"
    );
    assert!(
        rej_p99 < Duration::from_millis(150),
        "rejection p99 {rej_p99:?}"
    );
    // The limit was found: above the upstream's slots, well under the ceiling.
    assert!(
        lmin >= SLOTS as u64 && lmax <= 3 * SLOTS as u64,
        "learned limit {lmin}..={lmax}"
    );
}
