//! End-to-end tests through [`open`]: files on disk, gzip, detection, reordering, the
//! malformed threshold, and the real traces in `testdata/traces/` (a missing one fails under `CI=true`).

use super::*;
use std::io::Write;
use std::path::PathBuf;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn read_all(path: &Path, opts: &InputOptions) -> (Vec<Record>, Result<InputStats, InputError>) {
    let mut reader = open(path, opts).unwrap();
    let records = reader.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
    (records, reader.finish())
}

fn requests(records: &[Record]) -> Vec<&Request> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Request(q) => Some(q),
            Record::Count { .. } => None,
        })
        .collect()
}

const COMBINED: &str = r#"83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /a?x=1 HTTP/1.1" 200 203023 "http://semicomplete.com/" "Mozilla/5.0"
::1 - - [17/May/2015:12:05:43 +0200] "GET /b HTTP/1.1" 304 - "-" "curl"

10.0.0.1 - bob [17/May/2015:10:05:47 +0000] "POST /c HTTP/1.0" 201 5
"#;

#[test]
fn combined_file_with_odd_lines_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "access.log", COMBINED);
    let (records, stats) = read_all(&p, &InputOptions::default());
    let stats = stats.unwrap();
    let reqs = requests(&records);
    assert_eq!(reqs.len(), 3);
    assert_eq!(stats.format, Format::Combined);
    assert_eq!((stats.lines, stats.records, stats.malformed), (4, 3, 0));
    assert_eq!(reqs[1].source.as_deref(), Some("::1"));
    assert_eq!(reqs[1].ts, 1_431_857_143.0);
    assert_eq!((reqs[1].status, reqs[1].bytes), (304, 0));
    assert_eq!(reqs[2].method, "POST");
    assert_eq!(stats.first_ts, Some(1_431_857_103.0));
    assert_eq!(stats.last_ts, Some(1_431_857_147.0));
    assert!(!stats.gzip);
}

#[test]
fn gzip_round_trip_is_told_by_magic_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("access.log");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(COMBINED.as_bytes()).unwrap();
    let mut bytes = gz.finish().unwrap();
    // A second member, as `cat a.gz b.gz` of rotated logs gives.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(COMBINED.lines().next().unwrap_or_default().as_bytes())
        .unwrap();
    bytes.extend(gz.finish().unwrap());
    std::fs::write(&p, bytes).unwrap();

    let (records, stats) = read_all(&p, &InputOptions::default());
    let stats = stats.unwrap();
    assert!(stats.gzip);
    assert_eq!(stats.format, Format::Combined);
    assert_eq!(records.len(), 4);
}

#[test]
fn other_compressions_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    std::fs::write(&p, [0x28, 0xb5, 0x2f, 0xfd, 0, 0]).unwrap();
    let e = open(&p, &InputOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("zstd"), "{e}");
}

#[test]
fn auto_detects_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1"#,
            Format::Common,
        ),
        (
            r#"{"@timestamp":"2015-05-17T10:05:03Z","request":"GET /x HTTP/1.1","status":200}"#,
            Format::Jsonl,
        ),
        (
            "timestamp,value\n2014-04-10 00:04:00,94.0\n2014-04-10 00:09:00,56\n",
            Format::RateCsv,
        ),
    ];
    for (i, (text, format)) in cases.into_iter().enumerate() {
        let p = write(&dir, &format!("f{i}"), text);
        let r = open(&p, &InputOptions::default()).unwrap();
        assert_eq!(r.stats().format, format, "{text}");
    }
    let p = write(&dir, "junk", "\nhello\nworld\n");
    let e = open(&p, &InputOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cannot tell the format") && e.contains("\"hello\""),
        "{e}"
    );
    let p = write(&dir, "empty", "\n\n");
    let e = open(&p, &InputOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.ends_with("empty: no records"), "{e}");
}

#[test]
fn jsonl_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "envoy.jsonl",
        concat!(
            r#"{"start_time":"2015-05-17T10:05:03.000Z","method":"GET","path":"/a","response_code":200,"bytes_sent":10,"duration":12}"#,
            "\n",
            r#"{"start_time":"2015-05-17T10:05:02.000Z","method":"PUT","path":"/b","response_code":500,"bytes_sent":0,"duration":3}"#,
            "\n",
        ),
    );
    let (records, stats) = read_all(&p, &InputOptions::default());
    let stats = stats.unwrap();
    let reqs = requests(&records);
    assert_eq!(stats.format, Format::Jsonl);
    assert_eq!(stats.reordered, 1);
    assert_eq!(reqs[0].method, "PUT");
    assert_eq!(reqs[0].duration, Some(0.003));
    assert_eq!(reqs[1].path, "/a");
}

#[test]
fn rate_csv_infers_the_interval_or_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = "timestamp,value\n2014-04-10 00:00:00,1\n2014-04-10 00:05:00,2\n\n2014-04-10 00:15:00,4.5\n2014-04-10 00:20:00,0\n";
    let p = write(&dir, "rate.csv", text);
    let (records, stats) = read_all(&p, &InputOptions::default());
    assert_eq!(stats.unwrap().records, 4);
    assert_eq!(
        records[2],
        Record::Count {
            ts: 1_397_088_900.0,
            count: 4.5,
            interval: 300.0
        }
    );
    let opts = InputOptions {
        format: Format::RateCsv,
        interval: Some(Duration::from_secs(60)),
        ..InputOptions::default()
    };
    let (records, _) = read_all(&p, &opts);
    assert!(matches!(records[0], Record::Count { interval, .. } if interval == 60.0));

    let p = write(&dir, "one.csv", "2014-04-10 00:00:00,1\n");
    let e = open(&p, &InputOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("pass --interval"), "{e}");
}

#[test]
fn reorders_within_the_window_and_drops_older() {
    let dir = tempfile::tempdir().unwrap();
    let line = |t: &str, path: &str| {
        format!("1.2.3.4 - - [17/May/2015:10:{t} +0000] \"GET {path} HTTP/1.1\" 200 1\n")
    };
    let text = [
        line("05:30", "/a"),
        line("05:10", "/b"),
        line("07:00", "/c"),
        line("05:59", "/late"),
        line("06:30", "/d"),
        line("06:30", "/e"),
    ]
    .concat();
    let p = write(&dir, "x.log", &text);
    let (records, stats) = read_all(&p, &InputOptions::default());
    let stats = stats.unwrap();
    let paths: Vec<&str> = requests(&records).iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/b", "/a", "/d", "/e", "/c"]);
    assert_eq!((stats.reordered, stats.too_late, stats.records), (3, 1, 5));
    let ts: Vec<f64> = records.iter().map(Record::ts).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn malformed_lines_are_counted_with_numbers_and_judged_at_finish() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1"#;
    let bad = r#"1.2.3.4 - - [xx] "GET / HTTP/1.1" 200 1"#;
    let mut text = String::new();
    for i in 1..=20 {
        text.push_str(if i == 3 || i == 17 { bad } else { good });
        text.push('\n');
    }
    let p = write(&dir, "access.log", &text);
    let (records, stats) = read_all(&p, &InputOptions::default());
    let stats = stats.unwrap();
    assert_eq!(records.len(), 18);
    assert_eq!(stats.malformed, 2);
    assert_eq!(
        stats.first_malformed[1],
        (17, "unreadable timestamp \"[xx]\"".to_string())
    );

    let strict = InputOptions {
        max_malformed_fraction: 0.05,
        ..InputOptions::default()
    };
    let (_, stats) = read_all(&p, &strict);
    let e = stats.err().unwrap().to_string();
    assert!(e.contains("2 of 20 lines malformed (10.0%"), "{e}");
    assert!(
        e.contains("access.log:17: unreadable timestamp \"[xx]\""),
        "{e}"
    );
}

#[test]
fn a_file_of_another_format_aborts_early() {
    let dir = tempfile::tempdir().unwrap();
    let text = "2014-04-10 00:00:00,1\n".repeat(1500);
    let p = write(&dir, "rate.csv", &text);
    let opts = InputOptions {
        format: Format::Combined,
        ..InputOptions::default()
    };
    let mut reader = open(&p, &opts).unwrap();
    let e = reader.next().unwrap().err().unwrap().to_string();
    assert!(e.contains("does not look like combined"), "{e}");
    assert!(e.contains("rate.csv:1: no [timestamp]"), "{e}");
    assert_eq!(reader.stats().lines, 1000);
    assert!(reader.next().is_none());

    // Too short to abort early: finish says so instead.
    let p = write(&dir, "short.csv", &"2014-04-10 00:00:00,1\n".repeat(10));
    let (records, stats) = read_all(&p, &opts);
    assert!(records.is_empty());
    let e = stats.err().unwrap().to_string();
    assert!(e.contains("does not look like combined"), "{e}");
}

#[test]
fn the_real_apache_trace() {
    let Some(p) = crate::test_require::trace(
        "the_real_apache_trace",
        "apache_access_semicomplete_2015-05-17_20.log",
    ) else {
        return;
    };
    let (records, stats) = read_all(&p, &InputOptions::default());
    let stats = stats.unwrap();
    assert_eq!(stats.format, Format::Combined);
    assert_eq!(stats.lines, 10_000);
    assert_eq!(stats.malformed, 0, "{:?}", stats.first_malformed);
    // Lines run backwards by at most 59 s, inside the 60 s window.
    assert_eq!((stats.records, stats.too_late), (10_000, 0));
    assert!(stats.reordered > 1000);
    let ts: Vec<f64> = records.iter().map(Record::ts).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(stats.first_ts, Some(1_431_857_100.0)); // 2015-05-17 10:05:00 UTC
    assert_eq!(stats.last_ts, Some(1_432_155_959.0)); // 2015-05-20 21:05:59 UTC
    let reqs = requests(&records);
    assert_eq!(reqs.iter().filter(|r| r.method == "GET").count(), 9952);
    assert_eq!(reqs.iter().filter(|r| r.status == 200).count(), 9126);
}

#[test]
fn the_real_rate_trace() {
    let Some(p) =
        crate::test_require::trace("the_real_rate_trace", "nab_elb_request_count_8c0756.csv")
    else {
        return;
    };
    let (records, stats) = read_all(&p, &InputOptions::default());
    let stats = stats.unwrap();
    assert_eq!(stats.format, Format::RateCsv);
    assert_eq!((stats.records, stats.malformed), (4032, 0));
    assert!(records
        .iter()
        .all(|r| matches!(r, Record::Count { interval, count, .. } if *interval == 300.0 && *count >= 0.0)));
    let ts: Vec<f64> = records.iter().map(Record::ts).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn a_truncated_gzip_is_an_error_not_a_short_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("access.log.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(COMBINED.repeat(2000).as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let result = open(&p, &InputOptions::default()).and_then(|r| r.collect::<Result<Vec<_>, _>>());
    let e = result.err().unwrap().to_string();
    assert!(e.contains("access.log.gz: read error"), "{e}");
}

#[test]
fn format_value_names_for_the_command_line() {
    use clap::ValueEnum;
    let names: Vec<String> = Format::value_variants()
        .iter()
        .filter_map(|f| Some(f.to_possible_value()?.get_name().to_string()))
        .collect();
    assert_eq!(
        names,
        [
            "auto",
            "combined",
            "common",
            "jsonl",
            "rate-csv",
            "request-csv",
            "tsv"
        ]
    );
    assert!(Format::value_variants().iter().all(|f| f
        .to_possible_value()
        .is_some_and(|v| v.get_name() == f.to_string())));
}

/// A small cut of a real input in `testdata/replay/` (see its README), or None after
/// `unmet`. A macro, not a function: `benches/replay_input.rs` compiles this module
/// without the test harness, where only `#[test]` bodies are left out.
macro_rules! fixture {
    ($test:expr, $name:expr) => {{
        let p = crate::test_require::traces_dir()
            .parent()
            .map(|d| d.join("replay"))
            .unwrap_or_default()
            .join($name);
        if p.is_file() {
            Some(p)
        } else {
            crate::test_require::unmet($test, &format!("{} is absent", p.display()));
            None
        }
    }};
}

#[test]
fn a_per_request_llm_csv_is_refused_by_detection_and_read_with_columns() {
    let name = "a_per_request_llm_csv_is_refused_by_detection_and_read_with_columns";
    let Some(p) = fixture!(name, "azure_llm_code_head.csv") else {
        return;
    };
    // Three columns, irregular sub-second times: never a count series.
    let e = match open(&p, &InputOptions::default()) {
        Err(e) => e.to_string(),
        Ok(r) => panic!("read as {:?}", r.stats().format),
    };
    assert!(
        e.contains("columns TIMESTAMP,ContextTokens,GeneratedTokens")
            && e.contains("--format request-csv --columns")
            && e.contains("--format rate-csv"),
        "{e}"
    );
    // Named: one request a row, the token counts as its sizes.
    for format in [Format::RequestCsv, Format::Auto] {
        let opts = InputOptions {
            format,
            columns: Some("TIMESTAMP,ContextTokens,GeneratedTokens".into()),
            ..InputOptions::default()
        };
        let (records, stats) = read_all(&p, &opts);
        let stats = stats.unwrap();
        assert_eq!(stats.format, Format::RequestCsv);
        assert_eq!((stats.records, stats.malformed), (72, 0), "{stats:?}");
        let reqs = requests(&records);
        assert_eq!(reqs.len(), 72);
        // 2023-11-16 18:17:03.9799600 UTC
        assert!(
            (reqs[0].ts - 1_700_158_623.979_96).abs() < 1e-4,
            "{}",
            reqs[0].ts
        );
        assert_eq!((reqs[0].request_bytes, reqs[0].bytes), (Some(4808), 10));
        assert_eq!(stats.undated, 0);
    }
    // A column the header lacks is named in the error.
    let opts = InputOptions {
        format: Format::RequestCsv,
        columns: Some("time=TIMESTAMP,duration=Latency".into()),
        ..InputOptions::default()
    };
    let e = open(&p, &opts).err().unwrap().to_string();
    assert!(e.contains("no column \"Latency\""), "{e}");
}

#[test]
fn the_day_and_clock_log_variant_is_read_without_a_date() {
    let name = "the_day_and_clock_log_variant_is_read_without_a_date";
    let Some(p) = fixture!(name, "epa_http_head.log") else {
        return;
    };
    let (records, stats) = read_all(&p, &InputOptions::default());
    let stats = stats.unwrap();
    assert_eq!(stats.format, Format::Common);
    assert_eq!((stats.records, stats.malformed, stats.undated), (9, 0, 9));
    let reqs = requests(&records);
    // [29:23:53:25] then [29:23:53:36]; [30:16:07:56] is the next day.
    assert_eq!(reqs[1].ts - reqs[0].ts, 11.0);
    assert_eq!(reqs[8].ts - reqs[0].ts, 16.0 * 3600.0 + 14.0 * 60.0 + 31.0);
    assert_eq!((reqs[8].status, reqs[8].bytes), (304, 0));
    assert_eq!(reqs[0].path, "/Software.html");
}

#[test]
fn a_zeek_http_log_is_read_from_its_fields_header() {
    let name = "a_zeek_http_log_is_read_from_its_fields_header";
    let Some(p) = fixture!(name, "zeek_http_semicomplete.log") else {
        return;
    };
    let (records, stats) = read_all(&p, &InputOptions::default());
    let stats = stats.unwrap();
    assert_eq!(stats.format, Format::Tsv);
    assert_eq!((stats.records, stats.malformed), (8, 0));
    let reqs = requests(&records);
    // The same requests as the Apache log they were cut from, in time order.
    assert_eq!(stats.first_ts, Some(1_431_857_103.0)); // 10:05:03, the first line's
    assert!(reqs.windows(2).all(|w| w[0].ts <= w[1].ts));
    assert!(reqs.iter().all(|r| r.method == "GET" && r.status == 200));
    assert_eq!(reqs[0].bytes, 203_023);
    assert_eq!(reqs[0].source.as_deref(), Some("83.149.9.216"));
}

#[test]
fn a_tab_separated_log_without_a_header_says_what_is_expected() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "access.tsv",
        "1431857103\t83.149.9.216\tGET\t/a\t200\t5\n1431857104\t83.149.9.216\tGET\t/b\t200\t7\n",
    );
    let e = open(&p, &InputOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("#fields")
            && e.contains("a time column")
            && e.contains("--format tsv --columns"),
        "{e}"
    );
}
