//! Lines per second of the `prescale replay` input readers on the real access log, plain,
//! gzipped and rewritten as JSON lines.
//!
//! `cargo bench --bench replay_input`, on the log in testdata/traces/.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::io::Write;
use std::path::Path;

// Benches cannot import from the binary crate, so the module is compiled in here. `unused`:
// the bench calls only `open`, and clippy's test build keeps the module's test imports.
#[allow(unused)]
#[path = "../src/replay/input/mod.rs"]
mod input;

const LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/traces/apache_access_semicomplete_2015-05-17_20.log"
);

/// Reads the whole file through the reader, as `replay` will; returns the record count.
fn read(path: &Path) -> u64 {
    let opts = input::InputOptions::default();
    let Ok(reader) = input::open(path, &opts) else {
        return 0;
    };
    let mut n = 0;
    for record in reader {
        if record.is_ok() {
            n += 1;
        }
    }
    n
}

/// The log as JSON lines with nginx keys, so JSON parsing is measured on real paths.
fn as_jsonl(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut quoted = line.split('"');
        let (Some(head), Some(request), Some(tail)) = (quoted.next(), quoted.next(), quoted.next())
        else {
            continue;
        };
        let time = head.split(['[', ']']).nth(1).unwrap_or("");
        let mut nums = tail.split_whitespace();
        let status = nums.next().unwrap_or("0");
        let bytes = nums.next().unwrap_or("-");
        let addr = head.split(' ').next().unwrap_or("-");
        let request = request.replace('\\', "\\\\");
        out.push_str(&format!(
            "{{\"time_local\":\"{time}\",\"remote_addr\":\"{addr}\",\"request\":\"{request}\",\"status\":\"{status}\",\"body_bytes_sent\":\"{bytes}\",\"request_time\":\"0.012\"}}\n"
        ));
    }
    out
}

fn bench(c: &mut Criterion) {
    let text = std::fs::read_to_string(LOG)
        .unwrap_or_else(|e| panic!("{LOG}: {e} (the trace is part of the repository)"));
    let lines = text.lines().count() as u64;
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("note: no temp dir; replay_input bench skipped");
        return;
    };
    let gz = dir.path().join("access.log.gz");
    let jsonl = dir.path().join("access.jsonl");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let json_text = as_jsonl(&text);
    let written = enc
        .write_all(text.as_bytes())
        .and_then(|()| enc.finish())
        .and_then(|bytes| std::fs::write(&gz, bytes))
        .and_then(|()| std::fs::write(&jsonl, &json_text));
    if let Err(e) = written {
        eprintln!("note: cannot write bench inputs ({e}); replay_input bench skipped");
        return;
    }

    let mut group = c.benchmark_group("replay_input");
    for (name, path, lines) in [
        ("combined", Path::new(LOG), lines),
        ("combined_gz", gz.as_path(), lines),
        ("jsonl", jsonl.as_path(), json_text.lines().count() as u64),
    ] {
        assert_eq!(read(path), lines, "{name}: every line should be a record");
        group.throughput(Throughput::Elements(lines));
        group.bench_function(name, |b| b.iter(|| read(path)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
