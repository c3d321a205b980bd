//! Property tests of the replay line readers: arbitrary bytes never panic in any format,
//! and generated well-formed lines read back what was written.

use super::{parse_line, Format, Record};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

const FORMATS: [Format; 5] = [
    Format::Auto,
    Format::Combined,
    Format::Common,
    Format::Jsonl,
    Format::RateCsv,
];

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Unix seconds of a UTC civil time (Howard Hinnant's days-from-civil).
fn epoch(y: i64, m: i64, d: i64, hh: i64, mm: i64, ss: i64) -> f64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hh * 3600 + mm * 60 + ss) as f64
}

fn sane(r: &Record) -> bool {
    match r {
        Record::Request(q) => q.ts.is_finite() && q.duration.is_none_or(|d| !d.is_nan()),
        Record::Count { ts, count, .. } => ts.is_finite() && count.is_finite() && *count >= 0.0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes_never_panic(line in prop::collection::vec(any::<u8>(), 0..300)) {
        for f in FORMATS {
            if let Ok(Some(r)) = parse_line(f, &line) {
                prop_assert!(sane(&r), "{f}: {r:?}");
            }
        }
    }

    #[test]
    fn log_shaped_text_never_panics(
        line in "[0-9.:a-f]{0,15} [-a-z]{0,3} [-a-z]{0,3} \\[[0-9A-Za-z/:+ -]{0,30}\\] \"[ -~]{0,40}\" [0-9-]{0,4} [0-9-]{0,8}( \"[ -~]{0,20}\"){0,2}"
    ) {
        for f in FORMATS {
            if let Ok(Some(r)) = parse_line(f, line.as_bytes()) {
                prop_assert!(sane(&r), "{f}: {r:?}");
            }
        }
    }

    #[test]
    fn json_shaped_text_never_panics(
        pairs in prop::collection::vec(
            (prop_oneof![
                Just("time"), Just("msec"), Just("@timestamp"), Just("status"), Just("path"),
                Just("request"), Just("bytes"), Just("request_time"), Just("duration"),
                Just("upstream_response_time"), Just("remote_addr"), Just("x")
            ],
             prop_oneof![
                "-?[0-9]{1,20}(\\.[0-9]{0,6})?(e[+-]?[0-9]{1,3})?".prop_map(|v| v),
                "\"[ -~]{0,30}\"".prop_map(|v| v.replace('\\', "")),
                Just("null".to_string()), Just("[1,2]".to_string()), Just("{\"a\":1}".to_string()),
                Just("\"1e400\"".to_string()), Just("1e400".to_string()), Just("-0".to_string())
             ]),
            0..8)
    ) {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let line = format!("{{{}}}", body.join(","));
        for f in FORMATS {
            if let Ok(Some(r)) = parse_line(f, line.as_bytes()) {
                prop_assert!(sane(&r), "{f}: {line} -> {r:?}");
            }
        }
    }

    /// A generated Common/Combined line reads back its time, method, path, status and size.
    #[test]
    fn clf_lines_round_trip(
        (y, mo, d, hh, mm, ss) in (1971i64..2100, 1i64..=12, 1i64..=28, 0i64..24, 0i64..60, 0i64..60),
        method in "(GET|POST|PUT|DELETE|HEAD)",
        path in "/[a-zA-Z0-9/._~-]{0,40}",
        status in 100u16..600,
        bytes in 0u64..10_000_000_000,
        combined in any::<bool>(),
    ) {
        let mon = MONTHS[(mo - 1) as usize];
        let mut line = format!(
            "192.0.2.7 - - [{d:02}/{mon}/{y}:{hh:02}:{mm:02}:{ss:02} +0000] \"{method} {path} HTTP/1.1\" {status} {bytes}"
        );
        if combined {
            line.push_str(" \"-\" \"curl/8\"");
        }
        let format = if combined { Format::Combined } else { Format::Common };
        for f in [format, Format::Auto] {
            let Ok(Some(Record::Request(r))) = parse_line(f, line.as_bytes()) else {
                return Err(TestCaseError::fail(format!("{f}: refused {line}")));
            };
            prop_assert_eq!(r.ts, epoch(y, mo, d, hh, mm, ss), "{}", line);
            prop_assert_eq!(&r.method, &method);
            prop_assert_eq!(&r.path, &path);
            prop_assert_eq!(r.status, status);
            prop_assert_eq!(r.bytes, bytes);
        }
    }

    /// A generated `epoch,count` row reads back its values.
    #[test]
    fn rate_csv_rows_round_trip(ts in 946_684_800u32..4_102_444_800, count in 0u32..1_000_000) {
        let line = format!("{ts},{count}");
        let Ok(Some(Record::Count { ts: t, count: c, .. })) = parse_line(Format::RateCsv, line.as_bytes()) else {
            return Err(TestCaseError::fail(format!("refused {line}")));
        };
        prop_assert_eq!(t, f64::from(ts));
        prop_assert_eq!(c, f64::from(count));
    }
}
