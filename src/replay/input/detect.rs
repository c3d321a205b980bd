//! Tells the format of a log from its first lines, by which parser reads most of them.

use super::{clf, jsonl, rate_csv, Format};

/// How many non-blank lines the vote looks at.
pub(super) const SAMPLE: usize = 16;

/// None when no line reads as any format.
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
