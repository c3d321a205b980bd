//! Reads `timestamp,value` CSV files (NAB-style or exported metrics) into a regular
//! series, with clear errors naming the line.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// A series on a regular grid: `values[i]` is the value at `start + i × step`.
/// Steps with no row are NaN (the forecaster treats a gap as "no news").
#[derive(Debug)]
pub struct RegularSeries {
    pub start_unix: u64,
    pub step: Duration,
    pub values: Vec<f64>,
    /// Rows folded into an existing step (several rows in one step are summed).
    pub merged_rows: usize,
    pub gaps: usize,
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
    let start = rows.first().map_or(0, |r| r.0 - r.0 % step_s);
    let end = rows.last().map_or(0, |r| r.0);
    let len = ((end - start) / step_s + 1) as usize;
    if len > 50_000_000 {
        return Err(CsvError::Series {
            file,
            reason: format!("{len} steps of {step_s}s is too many: pass a coarser --step"),
        });
    }
    let mut values = vec![f64::NAN; len];
    let mut merged_rows = 0;
    for (t, v) in rows {
        if let Some(slot) = values.get_mut(((t - start) / step_s) as usize) {
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
