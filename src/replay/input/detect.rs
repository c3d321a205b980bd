//! Tells the format of a log from its first lines, by which parser reads most of them,
//! and refuses what it cannot read unambiguously: a CSV is a request-count series only
//! when it has two columns and regular timestamps; a CSV of requests (irregular times,
//! or more columns, e.g. `TIMESTAMP,ContextTokens,GeneratedTokens`) is never read as
//! counts.

use super::{clf, delimited, jsonl, rate_csv, time, Format};

/// What the first lines say.
#[derive(Debug, PartialEq)]
pub(super) enum Detected {
    Format(Format),
    /// Readable more than one way: the reason names the flags that settle it.
    Ambiguous(String),
}

/// Share of a rate series' gaps that equal its most common gap (the others are
/// multiples of it: missing rows).
const REGULAR_SHARE: f64 = 0.5;

/// The format of the sampled lines; `columns` says `--columns` was given (so a CSV
/// or TSV is one request a row). None when no line reads as any format.
pub(super) fn detect_input(lines: &[&[u8]], columns: bool) -> Option<Detected> {
    let content: Vec<&[u8]> = lines
        .iter()
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty())
        .collect();
    let first = content.iter().find(|l| !l.starts_with(b"#"))?;
    let zeek = content.iter().any(|l| l.starts_with(b"#fields\t"));
    let tabbed = first.contains(&b'\t') && !first.starts_with(b"{");
    if zeek || (tabbed && columns) {
        return Some(Detected::Format(Format::Tsv));
    }
    if tabbed && clf::parse(first).is_err() {
        let header = delimited::header_names(first, b'\t');
        return Some(match header.map(|h| delimited::layout(&h, b'\t', None)) {
            Some(Ok(layout)) if layout.unambiguous() => Detected::Format(Format::Tsv),
            _ => Detected::Ambiguous(
                "a tab-separated log is read with a header naming its columns: Zeek's \
                 #fields line, or a first line with a time column (ts, timestamp, time, \
                 @timestamp, datetime) and a method, path (uri, url) or status column; \
                 or pass --format tsv --columns time=NAME[,ROLE=NAME...]"
                    .into(),
            ),
        });
    }
    let format = detect(content.iter().copied())?;
    if format != Format::RateCsv && !columns {
        return Some(Detected::Format(format));
    }
    if columns {
        return Some(Detected::Format(Format::RequestCsv));
    }
    Some(judge_csv(&content))
}

/// A CSV the vote calls a rate series: a request-count series only if unambiguous.
fn judge_csv(content: &[&[u8]]) -> Detected {
    let header = content
        .first()
        .and_then(|l| delimited::header_names(l, b','));
    // A header naming a time and a method, path or status column: a request log.
    if header
        .as_ref()
        .and_then(|h| delimited::layout(h, b',', None).ok())
        .is_some_and(|l| l.unambiguous())
    {
        return Detected::Format(Format::RequestCsv);
    }
    let data: Vec<&[u8]> = content
        .iter()
        .copied()
        .filter(|l| matches!(rate_csv::parse(l), Ok(rate_csv::Row::Data { .. })))
        .collect();
    let width = data
        .iter()
        .map(|l| l.split(|c| *c == b',').count())
        .max()
        .unwrap_or(0);
    let names = header.map_or_else(
        || format!("{width} columns"),
        |h| format!("columns {}", h.join(",")),
    );
    let advice = "if each row is one request, pass --format request-csv --columns \
         TIME[,REQUEST_SIZE[,RESPONSE_SIZE]] (or ROLE=NAME pairs); if each row counts \
         the requests of an interval, pass --format rate-csv (it reads the first two \
         columns as timestamp,value)";
    if width > 2 {
        return Detected::Ambiguous(format!(
            "a CSV with {names}: not a timestamp,value request-count series; {advice}"
        ));
    }
    let mut ts: Vec<f64> = data
        .iter()
        .filter_map(|l| {
            let comma = l.iter().position(|c| *c == b',')?;
            time::parse_any(l.get(..comma)?)
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    let gaps: Vec<i64> = ts
        .windows(2)
        .filter_map(|w| Some(((w.get(1)? - w.first()?) * 1e3).round() as i64))
        .collect();
    // Regular: every gap a whole number of the most common one (rows may be missing),
    // that one at least a second and most of the gaps. Fewer than two rows: let the
    // rate reader say what it needs.
    let mode = rate_csv::infer_interval(ts.clone()).map(|g| (g * 1e3).round() as i64);
    let regular = mode.is_none_or(|m| {
        m >= 1000
            && gaps.iter().all(|g| *g > 0 && g % m == 0)
            && gaps.iter().filter(|g| **g == m).count() as f64 >= REGULAR_SHARE * gaps.len() as f64
    });
    if regular {
        Detected::Format(Format::RateCsv)
    } else {
        Detected::Ambiguous(format!(
            "a CSV with {names} whose timestamps are not evenly spaced (a request-count \
             series has one row per interval); {advice}"
        ))
    }
}

/// How many non-blank lines the vote looks at.
pub(super) const SAMPLE: usize = 16;

/// The format most of the lines read as; None when no line reads as any format.
pub(super) fn detect<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<Format> {
    let (mut json, mut clf, mut combined, mut csv) = (0, 0, false, 0);
    for line in lines.map(<[u8]>::trim_ascii).filter(|l| !l.is_empty()) {
        if line.starts_with(b"{") {
            json += usize::from(jsonl::parse(line).is_ok());
        } else if let Ok(l) = clf::parse(line) {
            clf += 1;
            combined |= l.combined;
        } else if let Ok(rate_csv::Row::Data { .. }) = rate_csv::parse(line) {
            csv += 1;
        }
    }
    let clf_format = if combined {
        Format::Combined
    } else {
        Format::Common
    };
    // Ties go to the more specific format, in this order.
    [
        (json, Format::Jsonl),
        (clf, clf_format),
        (csv, Format::RateCsv),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .fold(None, |best: Option<(usize, Format)>, (n, f)| match best {
        Some((b, _)) if b >= n => best,
        _ => Some((n, f)),
    })
    .map(|(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect_str(text: &str) -> Option<Format> {
        detect(text.lines().map(str::as_bytes))
    }

    #[test]
    fn each_format_by_its_lines() {
        let combined =
            r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "-" "UA""#;
        let common = r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5"#;
        assert_eq!(detect_str(combined), Some(Format::Combined));
        assert_eq!(detect_str(common), Some(Format::Common));
        assert_eq!(
            detect_str(&format!("{common}\n{combined}\n")),
            Some(Format::Combined)
        );
        assert_eq!(
            detect_str(
                "{\"time\":1431857103,\"path\":\"/\"}\n\n{\"time\":1431857104,\"path\":\"/\"}"
            ),
            Some(Format::Jsonl)
        );
        assert_eq!(
            detect_str("timestamp,value\n2014-04-10 00:04:00,94.0\n"),
            Some(Format::RateCsv)
        );
        assert_eq!(
            detect_str("garbage\n{\"time\":1431857103,\"path\":\"/\"}\n"),
            Some(Format::Jsonl)
        );
    }

    #[test]
    fn nothing_readable_is_none() {
        assert_eq!(detect_str(""), None);
        assert_eq!(detect_str("timestamp,value\n"), None);
        assert_eq!(detect_str("hello world\nfoo"), None);
    }
}
