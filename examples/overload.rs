//! Driver of `benches/overload.sh`: the overload scenario of `tests/overload.rs`
//! (shared code in `tests/support/overload.rs`) against any HTTP proxy.
//!
//! ```text
//! # an upstream with 24 slots of 60 ms (≈ 400 req/s), until killed:
//! cargo run --release --example overload -- upstream --listen 127.0.0.1:9000 --slots 24 --service-ms 60
//! # unloaded critical, then 3 × capacity over three tiers through the proxy:
//! cargo run --release --example overload -- load --url http://127.0.0.1:8080 \
//!     --upstream 127.0.0.1:9000 --slots 24 --service-ms 60 --label prescale
//! ```
//!
//! Tiers are path prefixes (`/critical/…`, `/standard/…`, `/batch/…`); the proxy maps
//! them to its priorities. `load` prints a summary and one machine-readable `RESULT`
//! line (latencies in ms, shares in [0, 1]).

#[path = "../tests/support/overload.rs"]
mod overload;

use clap::{Parser, Subcommand};
use overload::*;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the fixed-capacity upstream until killed.
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 24)]
        slots: usize,
        #[arg(long, default_value_t = 60)]
        service_ms: u64,
    },
    /// Run the scenario through `--url`; `--upstream` is read for its counters.
    Load {
        #[arg(long)]
        url: String,
        #[arg(long)]
        upstream: SocketAddr,
        #[arg(long, default_value_t = 24)]
        slots: usize,
        #[arg(long, default_value_t = 60)]
        service_ms: u64,
        /// Offered load as a multiple of nominal capacity.
        #[arg(long, default_value_t = 3.0)]
        multiplier: f64,
        /// Seconds of critical-only traffic at 40 % of capacity (the unloaded p99).
        #[arg(long, default_value_t = 10)]
        unloaded: u64,
        /// Unmeasured seconds of overload before the measured ones.
        #[arg(long, default_value_t = 10)]
        warmup: u64,
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Per-request timeout, ms: a later answer is a failure.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        #[arg(long, default_value = "target")]
        label: String,
    },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.cmd {
        Cmd::Upstream {
            listen,
            slots,
            service_ms,
        } => {
            let up = CapacityUpstream::start(listen, slots, Duration::from_millis(service_ms))?;
            println!("upstream {} slots {slots} service {service_ms} ms", up.addr);
            // Serves on its own thread; this one only waits to be killed.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Cmd::Load {
            url,
            upstream,
            slots,
            service_ms,
            multiplier,
            unloaded,
            warmup,
            duration,
            timeout_ms,
            label,
        } => {
            if !(0.1..=10.0).contains(&multiplier) || duration > 300 || warmup > 120 {
                return Err("keep runs bounded: multiplier 0.1..10, duration ≤ 300 s".into());
            }
            let nominal = slots as f64 / (service_ms as f64 / 1000.0);
            let timeout = Duration::from_millis(timeout_ms);
            rt.block_on(load(
                &url, upstream, slots, nominal, multiplier, unloaded, warmup, duration, timeout,
                &label,
            ))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn load(
    url: &str,
    upstream: SocketAddr,
    slots: usize,
    nominal: f64,
    multiplier: f64,
    unloaded: u64,
    warmup: u64,
    duration: u64,
    timeout: Duration,
    label: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let quiet = Phase {
        rate: 0.4 * nominal,
        duration: Duration::from_secs(unloaded.max(2)),
        mix: [1.0, 0.0, 0.0],
        warmup: Duration::from_secs(1),
    };
    let q = summarise(&run_phase(url, &quiet, 1, timeout).await);
    let unloaded_p99 = pct(&q[0].ok_latency, 99.0);

    let phase = Phase {
        rate: multiplier * nominal,
        duration: Duration::from_secs(warmup + duration),
        mix: [0.2, 0.3, 0.5],
        warmup: Duration::from_secs(warmup),
    };
    // Upstream counters over the measured window, read over HTTP.
    let window = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(warmup)).await;
        let a = remote_stats(upstream).await;
        tokio::time::sleep(Duration::from_secs(duration)).await;
        (a, remote_stats(upstream).await)
    });
    let samples = run_phase(url, &phase, 2, timeout).await;
    let (a, b) = window.await?;
    // An upstream out of descriptors may not answer: then nominal capacity, busy unknown.
    let cap = match (a, b) {
        (Some(a), Some(b)) if b.completed > a.completed => capacity(slots, &a, &b),
        _ => Capacity {
            rps: nominal,
            utilisation: f64::NAN,
            service_ms: slots as f64 / nominal * 1e3,
            max_waiting: 0,
        },
    };
    let t = summarise(&samples);

    let secs = duration as f64;
    let goodput = t.iter().map(|x| x.ok).sum::<usize>() as f64 / secs;
    let rejections: Vec<Duration> = t
        .iter()
        .flat_map(|x| x.reject_service.iter().copied())
        .collect();
    let rejected: usize = t.iter().map(|x| x.rejected).sum();
    let with_retry_after = rejected
        - t.iter()
            .map(|x| x.reject_without_retry_after)
            .sum::<usize>();
    let failed: usize = t.iter().map(|x| x.failed).sum();
    let lags: Vec<Duration> = samples.iter().map(|s| s.lag).collect();
    let offered = [0, 1, 2].map(|i| t[i].sent as f64 / secs);
    let ideal = strict_priority_ideal(cap.rps, offered);
    let crit_p99 = pct(&t[0].ok_latency, 99.0);

    println!(
        "== {label}: offered {:.0} req/s, capacity {:.1} req/s (service {:.2} ms), goodput {:.1} req/s ({:.3}), upstream busy {:.3}",
        offered.iter().sum::<f64>(),
        cap.rps,
        cap.service_ms,
        goodput,
        goodput / cap.rps,
        cap.utilisation
    );
    for (i, x) in t.iter().enumerate() {
        println!(
            "   {:8} sent {:6} ok {:.4} (ideal {:.3}) rejected {:6} failed {:5} p50 {:8.1} ms p99 {:8.1} ms",
            TIERS[i],
            x.sent,
            x.success(),
            ideal[i],
            x.rejected,
            x.failed,
            ms(pct(&x.ok_latency, 50.0)),
            ms(pct(&x.ok_latency, 99.0)),
        );
    }
    println!(
        "   unloaded critical p99 {:.1} ms; critical p99 / unloaded {:.2}; rejections {rejected}: p50 {:.2} ms p99 {:.2} ms, {with_retry_after} with Retry-After; failed {failed}; generator lag p99 {:.2} ms",
        ms(unloaded_p99),
        ms(crit_p99) / ms(unloaded_p99).max(1e-9),
        ms(pct(&rejections, 50.0)),
        ms(pct(&rejections, 99.0)),
        ms(pct(&lags, 99.0)),
    );
    let mut line = format!(
        "RESULT label={label} capacity={:.1} goodput={:.1} goodput_share={:.4} unloaded_p99={:.2} crit_ratio={:.2} rej_p50={:.3} rej_p99={:.3} rejected={rejected} retry_after={with_retry_after} failed={failed} lag_p99={:.2}",
        cap.rps,
        goodput,
        goodput / cap.rps,
        ms(unloaded_p99),
        ms(crit_p99) / ms(unloaded_p99).max(1e-9),
        ms(pct(&rejections, 50.0)),
        ms(pct(&rejections, 99.0)),
        ms(pct(&lags, 99.0)),
    );
    for (i, x) in t.iter().enumerate() {
        let n = TIERS[i];
        line.push_str(&format!(
            " {n}_ok={:.4} {n}_ideal={:.3} {n}_p50={:.1} {n}_p99={:.1}",
            x.success(),
            ideal[i],
            ms(pct(&x.ok_latency, 50.0)),
            ms(pct(&x.ok_latency, 99.0)),
        ));
    }
    println!("{line}");
    Ok(())
}
