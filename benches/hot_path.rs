//! Per-request costs on the data path, and the off-path re-fit, measured with criterion.
//!
//! `cargo bench --bench hot_path`. Paths come from the real access log in
//! testdata/traces/.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use prescale_profiler::fanout::FanoutTable;
use prescale_profiler::recorder::Recorder;
use prescale_profiler::route::PathShape;
use prescale_profiler::sample::{Arrival, InlinePath, Method, Sample};
use prescale_profiler::signature::{self, FitParams, Model};
use prescale_profiler::testing::population;
use prescale_profiler::trace::TraceId;
use std::time::Duration;

fn paths() -> Vec<String> {
    let log = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/traces/apache_access_semicomplete_2015-05-17_20.log"
    );
    let text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("{log}: {e} (the trace is part of the repository)"));
    text.lines()
        .filter_map(|l| l.split('"').nth(1)?.split(' ').nth(1).map(str::to_string))
        .collect()
}

fn params() -> FitParams {
    FitParams {
        min_k: 1,
        max_k: 8,
        min_silhouette: 0.4,
        silhouette_sample: 600,
        seed: 1,
    }
}

fn bench(c: &mut Criterion) {
    let paths = paths();
    let (samples, _) = population(1, 4096);
    let model = signature::refit(&samples, &Model::empty(), &params()).expect("model");

    // Everything request_filter does for the profiler: shape, arrival, classification.
    let mut i = 0usize;
    c.bench_function("arrival: path shape + classify", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            let target = paths[i].as_str();
            let arrival = Arrival {
                method: Method::parse("GET"),
                shape: PathShape::of(target),
                request_bytes: 0,
                source: 42,
                tier: 0,
            };
            let guess = model.classify(&arrival);
            black_box((InlinePath::new(target), guess))
        })
    });

    let recorder = Recorder::new(1 << 20);
    let mut drained = Vec::with_capacity(1 << 20);
    c.bench_function("record: push one sample", |b| {
        b.iter_batched(
            || {
                // Keep the queue from filling (which would measure the drop path).
                if recorder.recorded().is_multiple_of(500_000) {
                    recorder.drain_into(&mut drained);
                    drained.clear();
                }
                samples[7]
            },
            |s: Sample| recorder.record(s),
            BatchSize::SmallInput,
        )
    });

    let table = FanoutTable::new(4096);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    c.bench_function("fanout: parse + begin + 3 calls + finish", |b| {
        b.iter(|| {
            let id = TraceId::parse("traceparent", black_box(tp)).expect("valid");
            let slot = table.begin(id);
            for _ in 0..3 {
                table.record_call(id);
            }
            black_box(slot.map(|s| table.finish(s)))
        })
    });

    let (ten_k, _) = population(2, 10_000);
    let mut group = c.benchmark_group("refit");
    group.sample_size(10);
    group.bench_function("refit on 10 000 samples (k in 1..=8)", |b| {
        b.iter(|| signature::refit(black_box(&ten_k), &model, &params()))
    });
    group.finish();
}

/// The tier decision per request: classify (three tiers with header, path, method and
/// route rules; the tier header present but untrusted), then try_acquire with a cost
/// hint and a per-source rate limit, then release with a latency sample.
fn admission(c: &mut Criterion) {
    use prescale_policies::{Admission, Decision, Outcome, PoliciesConfig, RequestParts};
    let cfg: PoliciesConfig = serde_yaml_ng::from_str(
        r#"
tiers:
  trusted_sources: ["10.0.0.0/8", "ingress-gateway"]
  list:
    - { name: critical, priority: 0, share: 0.5, sheddable: false, match: { path_prefix: ["/checkout"], sources: ["payments-app"] } }
    - { name: batch, priority: 2, match: { headers: { x-job: "*" }, methods: [POST], route: ["/reports/{id}"] } }
    - { name: standard, priority: 1, share: 0.3 }
  default: standard
sources:
  rate_limit: { rps: 1000000, burst: 1000000 }
admission:
  limit: { initial: 1000, floor: 1000, ceiling: 1000 }
"#,
    )
    .expect("bench config");
    let admission = Admission::new(&cfg, 0).expect("valid config");
    let headers = [("x-prescale-tier", "critical"), ("user-agent", "bench")];
    let client = Some("203.0.113.9".parse().expect("address"));
    let mut now = 0u64;
    let mut group = c.benchmark_group("admission");
    group.bench_function("classify + try_acquire + release", |b| {
        b.iter(|| {
            now += 10;
            let req = RequestParts {
                method: "GET",
                path: "/search/items",
                route: None,
                source: Some("203.0.113.9"),
                client_ip: client,
                headers: &headers,
            };
            let class = admission.tiers().classify(black_box(&req));
            match admission.try_acquire(class.tier, Some(0.02), req.source, now) {
                Decision::Admit(p) => p.release(Duration::from_millis(20), Outcome::Success, now),
                Decision::Reject(r) => {
                    black_box(r);
                }
                // No tier queues in this config.
                Decision::Wait(t) => drop(t),
            }
            black_box(class.strip_header)
        })
    });
    group.finish();
}

criterion_group!(benches, bench, admission);
criterion_main!(benches);
