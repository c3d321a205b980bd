//! Reads `timestamp,value` CSV files (NAB-style or exported metrics) into a regular
//! series, with clear errors naming the line.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// A series on a regular grid: `values[i]` is the value at `start + i × step`, the
/// grid anchored at the first row's time (not snapped to a multiple of the step, so
/// times come back exactly as the file has them). Steps with no row are NaN (the
/// forecaster treats a gap as "no news").
#[derive(Debug)]
pub struct RegularSeries {
    pub start_unix: u64,
    /// How the file writes times, so output can use the series' own clock.
    pub clock: Clock,
    pub step: Duration,
    pub values: Vec<f64>,
    /// Rows folded into an existing step (several rows in one step are summed).
    pub merged_rows: usize,
    pub gaps: usize,
}

/// The file's time format: a naive local time (`2014-04-10 00:04:00`, no zone) is
/// written back without a zone suffix; anything else as RFC 3339 UTC.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Clock {
    naive: bool,
    /// Separator between date and time in a naive file (`' '` or `'T'`).
    separator: char,
}

impl Clock {
    fn of(sample: &str) -> Self {
        let has_zone = sample.ends_with(['Z', 'z'])
            || sample
                .get(19..)
                .is_some_and(|rest| rest.contains(['+', '-']));
        Self {
            naive: !has_zone,
            separator: if sample.as_bytes().get(10) == Some(&b'T') {
                'T'
            } else {
                ' '
            },
        }
    }

    /// `unix` in the file's own format.
    pub fn format(&self, unix: u64) -> String {
        let utc = format_time(unix);
        if !self.naive {
            return utc;
        }
        let mut s: String = utc.trim_end_matches('Z').to_string();
        if self.separator != 'T' {
            s = s.replacen('T', &self.separator.to_string(), 1);
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    Line {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{file}: {reason}")]
    Series { file: String, reason: String },
}

/// Reads the file; `step` None infers it as the most common gap between rows.
pub fn read(path: &Path, step: Option<Duration>) -> Result<RegularSeries, CsvError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CsvError::Read {
        file: file.clone(),
        source,
    })?;
    let mut rows: Vec<(u64, f64)> = Vec::new();
    let mut clock = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && !line.starts_with(|c: char| c.is_ascii_digit())) {
            continue; // blank lines and a header
        }
        let bad = |reason: String| CsvError::Line {
            file: file.clone(),
            line: i + 1,
            reason,
        };
        let (ts, value) = line
            .split_once(',')
            .ok_or_else(|| bad("expected `timestamp,value`".into()))?;
        let t = parse_time(ts.trim()).ok_or_else(|| bad(format!("unreadable timestamp {ts:?}")))?;
        clock.get_or_insert_with(|| Clock::of(ts.trim()));
        let v: f64 = value
            .trim()
            .parse()
            .map_err(|_| bad(format!("unreadable value {value:?}")))?;
        rows.push((t, v));
    }
    if rows.len() < 2 {
        return Err(CsvError::Series {
            file,
            reason: "needs at least two rows".into(),
        });
    }
    rows.sort_by_key(|r| r.0);
    let step = match step {
        Some(s) => s,
        None => infer_step(&rows).ok_or_else(|| CsvError::Series {
            file: file.clone(),
            reason: "cannot infer the step: pass --step".into(),
        })?,
    };
    let step_s = step.as_secs().max(1);
    let start = rows.first().map_or(0, |r| r.0);
    let end = rows.last().map_or(0, |r| r.0);
    // Each row goes to the nearest grid point (a row a few seconds late still lands).
    let slot = |t: u64| ((t - start + step_s / 2) / step_s) as usize;
    let len = slot(end) + 1;
    if len > 50_000_000 {
        return Err(CsvError::Series {
            file,
            reason: format!("{len} steps of {step_s}s is too many: pass a coarser --step"),
        });
    }
    let mut values = vec![f64::NAN; len];
    let mut merged_rows = 0;
    for (t, v) in rows {
        if let Some(slot) = values.get_mut(slot(t)) {
            if slot.is_nan() {
                *slot = v;
            } else {
                *slot += v;
                merged_rows += 1;
            }
        }
    }
    let gaps = values.iter().filter(|v| v.is_nan()).count();
    Ok(RegularSeries {
        start_unix: start,
        clock: clock.unwrap_or(Clock {
            naive: false,
            separator: 'T',
        }),
        step: Duration::from_secs(step_s),
        values,
        merged_rows,
        gaps,
    })
}

/// `2014-04-10 00:04:00`, `2014-04-10T00:04:00Z` or RFC 3339 with an offset; a
/// naive time is read as UTC.
pub fn parse_time(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(s)
        .or_else(|_| humantime::parse_rfc3339(s))
        .ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

pub fn format_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn infer_step(rows: &[(u64, f64)]) -> Option<Duration> {
    let mut counts: std::collections::BTreeMap<u64, usize> = std::collections::BTreeMap::new();
    for w in rows.windows(2) {
        if let [a, b] = w {
            if b.0 > a.0 {
                *counts.entry(b.0 - a.0).or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| Duration::from_secs(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_naive_and_iso_times_infers_the_step_and_marks_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(
            &p,
            "timestamp,value\n2014-04-10 00:00:00,1\n2014-04-10T00:05:00Z,2\n2014-04-10 00:15:00,4\n2014-04-10 00:20:00,5\n",
        )
        .unwrap();
        let s = read(&p, None).unwrap();
        assert_eq!(s.step, Duration::from_secs(300));
        assert_eq!(s.values.len(), 5);
        assert!(s.values[2].is_nan());
        assert_eq!(s.gaps, 1);
        assert_eq!(format_time(s.start_unix), "2014-04-10T00:00:00Z");
        // The file's own clock: no zone, a space, and the grid is not snapped.
        assert_eq!(s.clock.format(s.start_unix + 300), "2014-04-10 00:05:00");
        std::fs::write(
            &p,
            "t,v\n2015-02-26T21:42:53Z,1\n2015-02-26T21:47:53Z,2\n2015-02-26T21:52:55Z,3\n",
        )
        .unwrap();
        let s = read(&p, None).unwrap();
        assert_eq!(s.values, vec![1.0, 2.0, 3.0]);
        assert_eq!(s.clock.format(s.start_unix + 600), "2015-02-26T21:52:53Z");
    }

    #[test]
    fn a_bad_line_is_named_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(&p, "timestamp,value\n2014-04-10 00:00:00,1\nyesterday,2\n").unwrap();
        let e = read(&p, None).unwrap_err().to_string();
        assert!(
            e.ends_with("s.csv:3: unreadable timestamp \"yesterday\""),
            "{e}"
        );
    }
}
