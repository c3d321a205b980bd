//! What the resource sampler costs per tick, on its own `resources` thread (never the
//! data path): one read of the `process` source (by pid file and by executable name)
//! and of the `cgroup` source, against the real `/proc` and cgroup v2 directory of
//! this bench process, and one refit of the cost model with 16 signatures over the
//! largest window the config allows (7 200 intervals). `cargo bench --bench resources`.
//!
//! The sampler does one read and one refit per profiler tick (1 s by default), so
//! their sum over the tick is its share of a core.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use prescale_profiler::resources::{CostModel, Load, Observation};
use prescale_proxy::config::ResourcesConfig;
use prescale_proxy::resources::{Source, MAX_INTERVALS};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Signatures in the fitted window: the profiler's largest useful k plus spares.
const SIGNATURES: u32 = 16;

fn config(yaml: &str) -> ResourcesConfig {
    serde_yaml_ng::from_str(yaml).expect("resources config")
}

/// This process's cgroup v2 directory: the `0::` line of `/proc/self/cgroup` under
/// the cgroup2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid
/// layout). None where there is no cgroup v2 hierarchy.
fn own_cgroup() -> Option<PathBuf> {
    let mount = std::fs::read_to_string("/proc/mounts")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })?;
    let rel = std::fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("0::")
                .map(|p| p.trim_start_matches('/').to_owned())
        })?;
    let dir = mount.join(rel);
    dir.join("cpu.stat").is_file().then_some(dir)
}

/// A full window: every interval has traffic (idle ones are capped at a quarter and
/// cost the same to fit), each signature's rate varies on its own period so the fit
/// identifies every cost, as it must in production.
fn full_model() -> CostModel {
    let mut model = CostModel::new(MAX_INTERVALS);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..MAX_INTERVALS {
        let mut load = BTreeMap::new();
        let mut cpu = 0.05;
        let mut memory = 50e6;
        let mut io = 0.0;
        for s in 0..SIGNATURES {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let phase = ((i as u32 / (5 + s)) % 3) as f64;
            let rate = phase * (1.0 + s as f64) + (state % 100) as f64 / 100.0;
            let concurrency = rate * 0.01 * (1 + s % 4) as f64;
            cpu += rate * 0.001 * (1 + s) as f64;
            memory += concurrency * 1e6;
            io += rate * 1024.0;
            load.insert(s, Load { rate, concurrency });
        }
        model.observe(Observation {
            at: i as u64 * 1000,
            cpu_cores: Some(cpu),
            memory_bytes: Some(memory),
            io_bytes_per_second: Some(io),
            load,
        });
    }
    assert_eq!(model.len(), MAX_INTERVALS);
    model
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("resources");

    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("bench.pid");
    std::fs::write(&pid_file, std::process::id().to_string()).unwrap();
    let mut by_pid = Source::new(
        &config(&format!(
            "source: process\npid_file: {}\n",
            pid_file.display()
        )),
        None,
    );
    by_pid.read().expect("process source by pid file");
    g.bench_function("sample_process_pid_file", |b| {
        b.iter(|| black_box(by_pid.read().expect("read")))
    });

    // By name: lists /proc and reads each comm, so it grows with the processes on the
    // machine (`ls /proc | grep -c '^[0-9]'` is printed for the record).
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    let mut by_name = Source::new(
        &config(&format!("source: process\nexe_name: {}\n", comm.trim())),
        None,
    );
    by_name.read().expect("process source by name");
    let procs = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        })
        .count();
    eprintln!("processes in /proc: {procs}");
    g.bench_function("sample_process_exe_name", |b| {
        b.iter(|| black_box(by_name.read().expect("read")))
    });

    match own_cgroup() {
        Some(cg) => {
            eprintln!("cgroup: {}", cg.display());
            let mut cgroup = Source::new(
                &config(&format!("source: cgroup\npath: {}\n", cg.display())),
                None,
            );
            cgroup.read().expect("cgroup source");
            g.bench_function("sample_cgroup", |b| {
                b.iter(|| black_box(cgroup.read().expect("read")))
            });
        }
        None => eprintln!("SKIPPED sample_cgroup: no cgroup v2 directory for this process"),
    }

    let model = full_model();
    let costs = model.fit();
    let cpu = costs.cpu.as_ref().expect("cpu fit");
    assert!(
        cpu.signatures.values().all(|c| c.identified),
        "every signature identified: {cpu:?}"
    );
    g.sample_size(20);
    g.bench_function("refit_16_signatures_7200_intervals", |b| {
        b.iter(|| black_box(model.fit()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
