//! Aggregated `timestamp,value` rows (NAB, CloudWatch or Prometheus exports): `value`
//! requests arrived in the interval starting at `timestamp`.

use super::{snippet, time};
use memchr::memchr;

pub(super) enum Row {
    /// A line of names, e.g. `timestamp,value`: skipped when it is the first line.
    Header,
    Data {
        ts: f64,
        value: f64,
    },
}

/// Columns after the second are ignored. Timestamps are ISO 8601 (a naive time is UTC),
/// `YYYY-MM-DD HH:MM:SS` or unix epoch.
pub(super) fn parse(line: &[u8]) -> Result<Row, String> {
    let comma = memchr(b',', line).ok_or("expected `timestamp,value`")?;
    let ts_field = unquote(&line[..comma]);
    let rest = &line[comma + 1..];
    let value_field = unquote(&rest[..memchr(b',', rest).unwrap_or(rest.len())]);
    let ts = time::parse_any(ts_field);
    let value = std::str::from_utf8(value_field)
        .ok()
        .and_then(|v| v.parse::<f64>().ok());
    match (ts, value) {
        (Some(ts), Some(value)) if value.is_finite() && value >= 0.0 => Ok(Row::Data { ts, value }),
        (Some(_), Some(_)) => Err(format!(
            "count {} is not a finite non-negative number",
            snippet(value_field)
        )),
        (None, None) if ts_field.first().is_some_and(u8::is_ascii_alphabetic) => Ok(Row::Header),
        (None, _) => Err(format!("unreadable timestamp {}", snippet(ts_field))),
        (Some(_), None) => Err(format!("unreadable value {}", snippet(value_field))),
    }
}

fn unquote(b: &[u8]) -> &[u8] {
    let b = b.trim_ascii();
    match b {
        [b'"', inner @ .., b'"'] => inner.trim_ascii(),
        _ => b,
    }
}

/// The most common positive gap between sorted timestamps, in seconds (rounded to the
/// millisecond so float noise does not split a mode); ties go to the smaller gap.
pub(super) fn infer_interval(mut ts: Vec<f64>) -> Option<f64> {
    ts.sort_by(f64::total_cmp);
    let mut gaps: Vec<i64> = ts
        .windows(2)
        .filter_map(|w| match w {
            [a, b] if b > a => Some(((b - a) * 1e3).round() as i64),
            _ => None,
        })
        .filter(|g| *g > 0)
        .collect();
    gaps.sort_unstable();
    let mut best: Option<(i64, usize)> = None;
    for run in gaps.chunk_by(|a, b| a == b) {
        if best.is_none_or(|(_, n)| run.len() > n) {
            best = run.first().map(|g| (*g, run.len()));
        }
    }
    best.map(|(g, _)| g as f64 / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_headers_and_bad_values() {
        assert!(matches!(parse(b"timestamp,value"), Ok(Row::Header)));
        assert!(matches!(
            parse(b"2014-04-10 00:04:00,94.0"),
            Ok(Row::Data { ts, value }) if ts == 1_397_088_240.0 && value == 94.0
        ));
        assert!(matches!(
            parse(b"\"1397088240\", 7 ,extra"),
            Ok(Row::Data { ts, value }) if ts == 1_397_088_240.0 && value == 7.0
        ));
        let e = |s: &[u8]| match parse(s) {
            Err(e) => e,
            Ok(_) => String::new(),
        };
        assert_eq!(e(b"yesterday,2"), "unreadable timestamp \"yesterday\"");
        assert_eq!(e(b"2014-04-10 00:04:00,lots"), "unreadable value \"lots\"");
        assert!(e(b"2014-04-10 00:04:00,-3").contains("non-negative"));
        assert!(e(b"2014-04-10 00:04:00").starts_with("expected"));
    }

    #[test]
    fn interval_is_the_most_common_gap() {
        let ts = vec![0.0, 300.0, 600.0, 1200.0, 1500.0, 1500.0, 1800.0];
        assert_eq!(infer_interval(ts), Some(300.0));
        assert_eq!(infer_interval(vec![10.0, 0.0]), Some(10.0));
        assert_eq!(infer_interval(vec![5.0]), None);
    }
}
