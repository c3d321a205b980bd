//! An open-loop HTTP/1.1 (or h2c) load generator: requests start at a fixed rate whether
//! or not earlier ones have finished, so a slow server cannot slow the arrivals down (no
//! coordinated omission, unlike closed-loop tools such as wrk).
//!
//! A pacer thread sleeps until each scheduled start (std's nanosleep, finer than tokio's
//! 1 ms timer) and hands it to a single-threaded tokio runtime, which sends the request
//! over a keep-alive pool. Latency is measured from the *scheduled* start to the end of
//! the response body, so any delay in the generator itself counts against the target;
//! the pacer's own lateness is reported separately as `lag`.
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080/ --rate 2000 --duration 10
//! ```
//!
//! Prints one machine-readable `RESULT key=value ...` line (latencies in microseconds).

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Target URL (plain http).
    #[arg(long)]
    url: String,
    /// Requests started per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured seconds first, at the same rate (fills the connection pool).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Per-request timeout in seconds; a timed-out request counts as an error.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// Speak h2c with prior knowledge (requests multiplexed on one connection) instead
    /// of HTTP/1.1 over a keep-alive pool.
    #[arg(long)]
    h2c: bool,
}

#[derive(Default)]
struct Samples {
    /// Scheduled start to end of body, µs, measured requests only.
    latency: Vec<u64>,
    /// Actual send to end of body, µs.
    service: Vec<u64>,
    /// Actual send minus scheduled start, µs.
    lag: Vec<u64>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
}

fn main() {
    let args = Args::parse();
    assert!(
        (1..=100_000).contains(&args.rate),
        "--rate must be 1..=100000"
    );
    assert!(args.duration <= 300 && args.warmup <= 60, "keep runs short");
    let uri: hyper::Uri = args.url.parse().expect("--url");
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let warm = u64::from(args.rate) * args.warmup;
    let total = warm + u64::from(args.rate) * args.duration;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let start = Instant::now() + Duration::from_millis(50);
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let at = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send((i, at)).is_err() {
                return;
            }
        }
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let samples = Arc::new(Mutex::new(Samples::default()));
    let timeout = Duration::from_secs(args.timeout);
    rt.block_on(async {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(30))
            .http2_only(args.h2c)
            .build_http::<Empty<Bytes>>();
        let mut tasks = tokio::task::JoinSet::new();
        while let Some((i, at)) = rx.recv().await {
            let client = client.clone();
            let uri = uri.clone();
            let samples = samples.clone();
            tasks.spawn(async move {
                let sent = Instant::now();
                let res = tokio::time::timeout(timeout, async {
                    let resp = client.get(uri).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
                })
                .await;
                let done = Instant::now();
                if i < warm {
                    return;
                }
                let mut s = samples.lock().unwrap();
                match res {
                    Ok(Ok(status)) if status.is_success() => {
                        s.ok += 1;
                        s.latency.push(micros(done - at));
                        s.service.push(micros(done - sent));
                        s.lag.push(micros(sent.saturating_duration_since(at)));
                    }
                    Ok(Ok(_)) => s.non_2xx += 1,
                    _ => s.errors += 1,
                }
            });
            // Reap finished tasks as we go so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    });
    pacer.join().expect("pacer");

    let elapsed = start.elapsed().as_secs_f64() - args.warmup as f64;
    let mut s = samples.lock().unwrap();
    let measured = s.ok + s.non_2xx + s.errors;
    let (p50, p90, p99, p999, max) = {
        let l = &mut s.latency;
        l.sort_unstable();
        (
            pct(l, 50.0),
            pct(l, 90.0),
            pct(l, 99.0),
            pct(l, 99.9),
            l.last().copied().unwrap_or(0),
        )
    };
    s.service.sort_unstable();
    s.lag.sort_unstable();
    println!(
        "RESULT rate={} duration_s={} sent={measured} ok={} non_2xx={} errors={} achieved_rps={:.0} \
         p50_us={p50} p90_us={p90} p99_us={p99} p999_us={p999} max_us={max} \
         service_p50_us={} service_p99_us={} lag_p50_us={} lag_p99_us={}",
        args.rate,
        args.duration,
        s.ok,
        s.non_2xx,
        s.errors,
        measured as f64 / elapsed.max(1e-9),
        pct(&s.service, 50.0),
        pct(&s.service, 99.0),
        pct(&s.lag, 50.0),
        pct(&s.lag, 99.0),
    );
}

fn micros(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted samples; 0 when empty.
fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
