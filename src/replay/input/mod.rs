//! Access-log and request-count readers for `prescale replay`: Common/Combined Log
//! Format (and its `[DD:HH:MM:SS]` variant), JSON lines, per-request CSV and
//! tab-separated logs with a header, and `timestamp,value` rate CSV, plain or gzip,
//! streamed in time order.
//!
//! [`open`] detects the format and returns a [`Reader`], an iterator of
//! `Result<Record, InputError>`. Malformed lines are not errors there: they are counted in
//! [`InputStats`] and judged once, by [`Reader::finish`], against
//! [`InputOptions::max_malformed_fraction`]. An `Err` item is fatal (a read error, or the
//! first 1000 lines all malformed) and ends the iteration.

mod clf;
mod delimited;
mod detect;
mod jsonl;
#[cfg(test)]
mod proptests;
mod rate_csv;
mod reorder;
mod source;
#[cfg(test)]
mod tests;
mod time;

use reorder::{Placed, Reorder};
use source::{Lines, Opened};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// With no line read in this many, the input is not the format we think it is.
const EARLY_ABORT_LINES: u64 = 1000;
/// Malformed lines whose reasons are kept for the report.
const KEEP_REASONS: usize = 5;
/// Rows read ahead to infer a rate series' interval.
const INTERVAL_SAMPLE_LINES: usize = 2048;
/// Lines read ahead for detection, blank ones included.
const DETECT_MAX_LINES: usize = 1000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tell from the first lines.
    #[default]
    Auto,
    /// Apache/nginx combined: common plus quoted referer and user agent.
    Combined,
    /// Apache/nginx common: `host ident user [time] "request" status bytes`.
    Common,
    /// One JSON object a line (nginx, Envoy, Logstash keys).
    Jsonl,
    /// `timestamp,value`: requests per interval.
    RateCsv,
    /// A CSV with one request a row and a header; `--columns` says which column is
    /// the time and which the sizes (e.g. `TIMESTAMP,ContextTokens,GeneratedTokens`).
    RequestCsv,
    /// A tab-separated log with one request a row and a header (Zeek's `#fields` or a
    /// first line of names).
    Tsv,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Auto => "auto",
            Format::Combined => "combined",
            Format::Common => "common",
            Format::Jsonl => "jsonl",
            Format::RateCsv => "rate-csv",
            Format::RequestCsv => "request-csv",
            Format::Tsv => "tsv",
        })
    }
}

/// Reads one line as `format` does (`Auto`: detected from this line alone), for the
/// property tests and fuzz targets: `Ok(None)` is a rate-csv header line. Never panics.
#[cfg(any(test, fuzzing))]
pub fn parse_line(format: Format, line: &[u8]) -> Result<Option<Record>, String> {
    let format = match format {
        Format::Auto => detect::detect(std::iter::once(line)).ok_or("no format detected")?,
        f => f,
    };
    match format {
        Format::Auto | Format::RequestCsv | Format::Tsv => {
            Err("a delimited log needs its header".into())
        }
        Format::Combined | Format::Common => {
            clf::parse(line).map(|l| Some(Record::Request(l.request)))
        }
        Format::Jsonl => jsonl::parse(line).map(|r| Some(Record::Request(r))),
        Format::RateCsv => rate_csv::parse(line).map(|row| match row {
            rate_csv::Row::Header => None,
            rate_csv::Row::Data { ts, value } => Some(Record::Count {
                ts,
                count: value,
                interval: 1.0,
            }),
        }),
    }
}

/// One request from a per-request log.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Unix seconds (fractional allowed).
    pub ts: f64,
    /// `GET` …; `-` when absent or unreadable.
    pub method: String,
    /// The request target with its query (`/a/b?x=1`); `-` when absent.
    pub path: String,
    /// 0 when the log has none (Envoy logs 0 for no response too).
    pub status: u16,
    /// Response bytes; 0 for `-`.
    pub bytes: u64,
    /// Seconds; only JSON lines carry it (see `jsonl.rs` for keys and units).
    pub duration: Option<f64>,
    pub upstream_time: Option<f64>,
    /// The client address, without a port.
    pub source: Option<String>,
    pub request_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Request(Request),
    /// A rate-csv row: `count` requests during `[ts, ts + interval)` (seconds).
    Count {
        ts: f64,
        count: f64,
        interval: f64,
    },
}

impl Record {
    pub fn ts(&self) -> f64 {
        match self {
            Record::Request(r) => r.ts,
            Record::Count { ts, .. } => *ts,
        }
    }
}

#[derive(Clone, Debug)]
pub struct InputOptions {
    pub format: Format,
    /// The rate-csv interval; None infers it as the most common gap. Ignored by the
    /// per-request formats.
    pub interval: Option<Duration>,
    /// [`Reader::finish`] fails above this fraction of malformed lines.
    pub max_malformed_fraction: f64,
    /// How far behind the newest record a line may be and still be put in order.
    pub reorder_window: Duration,
    /// Which columns of a per-request CSV or TSV are what: `ROLE=NAME` pairs or bare
    /// names (time, request size, response size); see `delimited.rs`.
    pub columns: Option<String>,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            format: Format::Auto,
            interval: None,
            max_malformed_fraction: 0.1,
            reorder_window: Duration::from_secs(60),
            columns: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct InputStats {
    /// Lines read, blank ones and a CSV header included.
    pub lines: u64,
    /// Records emitted (the too-late ones are not).
    pub records: u64,
    pub malformed: u64,
    /// The first few malformed lines: line number and reason.
    pub first_malformed: Vec<(u64, String)>,
    /// Records that arrived behind a newer one and were put back in order.
    pub reordered: u64,
    /// Records more than the reorder window behind the newest one: dropped.
    pub too_late: u64,
    /// The format read: the one asked for, or the one detected.
    pub format: Format,
    /// The first and last emitted timestamps (a rate row's is its interval's start).
    pub first_ts: Option<f64>,
    pub last_ts: Option<f64>,
    pub gzip: bool,
    /// Records whose time carries no date (the `[DD:HH:MM:SS]` log variant: day of
    /// month and clock only, read as days since 1970-01-00); a report shows dates only
    /// when this is 0.
    pub undated: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{file}: {source}")]
    Open {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: read error after line {line}: {source}")]
    Read {
        file: String,
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {what}-compressed input is not read; decompress it first (gzip is)")]
    Compressed { file: String, what: &'static str },
    #[error("{file}: cannot tell the format from the first lines (first: {first}); pass --format: combined, common ([DD/Mon/YYYY:HH:MM:SS zone] or [DD:HH:MM:SS]), jsonl, rate-csv (timestamp,value), request-csv or tsv (a header naming a time column, or --columns)")]
    Undetected { file: String, first: String },
    #[error("{file}: {reason}")]
    Ambiguous { file: String, reason: String },
    #[error("{file}: {reason}")]
    Columns { file: String, reason: String },
    #[error("{file}: no records")]
    Empty { file: String },
    #[error("{file}: does not look like {format}: none of the first {lines} lines could be read; {reasons}")]
    NotFormat {
        file: String,
        format: Format,
        lines: u64,
        reasons: String,
    },
    #[error("{file}: {malformed} of {total} lines malformed ({percent:.1}%, over the {max_percent:.1}% allowed); {reasons}")]
    TooMalformed {
        file: String,
        malformed: u64,
        total: u64,
        percent: f64,
        max_percent: f64,
        reasons: String,
    },
    #[error("{file}: cannot infer the interval of the rate series ({reason}); pass --interval")]
    Interval { file: String, reason: String },
}

/// Streams records in time order; see the module docs for how errors surface.
pub struct Reader {
    file: String,
    lines: Lines,
    parser: Parser,
    reorder: Reorder,
    stats: InputStats,
    max_malformed: f64,
    /// Lines that parsed, whether emitted, buffered or dropped as too late.
    parsed: u64,
    /// Whether a non-blank line was seen: only the first may be a CSV header.
    seen_content: bool,
    eof: bool,
    failed: bool,
}

#[derive(Clone)]
enum Parser {
    Clf,
    Jsonl,
    RateCsv { interval: f64 },
    Delimited(delimited::Layout),
}

/// Opens `path` (gzip or plain, told by magic bytes) and settles the format: the
/// asked-for one, or for [`Format::Auto`] the one most of the first lines read as.
pub fn open(path: &Path, opts: &InputOptions) -> Result<Reader, InputError> {
    let file = path.display().to_string();
    let mut lines = match Lines::open(path) {
        Ok(Opened::Lines(l)) => l,
        Ok(Opened::Unsupported(what)) => return Err(InputError::Compressed { file, what }),
        Err(source) => return Err(InputError::Open { file, source }),
    };
    let format = match opts.format {
        Format::Auto => {
            let sample: Vec<&[u8]> = match lines.read_ahead(DETECT_MAX_LINES, detect::SAMPLE) {
                Ok(s) => s.collect(),
                Err(source) => {
                    return Err(InputError::Read {
                        file,
                        line: 0,
                        source,
                    })
                }
            };
            match detect::detect_input(&sample, opts.columns.is_some()) {
                Some(detect::Detected::Format(f)) => f,
                Some(detect::Detected::Ambiguous(reason)) => {
                    return Err(InputError::Ambiguous { file, reason })
                }
                None => {
                    return Err(match sample.iter().find(|l| !l.trim_ascii().is_empty()) {
                        Some(first) => InputError::Undetected {
                            first: snippet(first),
                            file,
                        },
                        None => InputError::Empty { file },
                    })
                }
            }
        }
        f => f,
    };
    let parser = match format {
        Format::Jsonl => Parser::Jsonl,
        Format::RateCsv => Parser::RateCsv {
            interval: rate_interval(&file, &mut lines, opts.interval)?,
        },
        Format::RequestCsv | Format::Tsv => Parser::Delimited(delimited_layout(
            &file,
            &mut lines,
            format,
            opts.columns.as_deref(),
        )?),
        Format::Auto | Format::Combined | Format::Common => Parser::Clf,
    };
    Ok(Reader {
        stats: InputStats {
            lines: 0,
            records: 0,
            malformed: 0,
            first_malformed: Vec::new(),
            reordered: 0,
            too_late: 0,
            format,
            first_ts: None,
            last_ts: None,
            gzip: lines.gzip,
            undated: 0,
        },
        file,
        lines,
        parser,
        reorder: Reorder::new(opts.reorder_window.as_secs_f64()),
        max_malformed: opts.max_malformed_fraction,
        parsed: 0,
        seen_content: false,
        eof: false,
        failed: false,
    })
}

/// The columns of a per-request CSV or TSV, from its header and `--columns`.
fn delimited_layout(
    file: &str,
    lines: &mut Lines,
    format: Format,
    columns: Option<&str>,
) -> Result<delimited::Layout, InputError> {
    let err = |reason: String| InputError::Columns {
        file: file.to_string(),
        reason,
    };
    let asked = columns
        .map(delimited::parse_columns)
        .transpose()
        .map_err(err)?;
    let delimiter = if format == Format::Tsv { b'\t' } else { b',' };
    let sample: Vec<&[u8]> = lines
        .read_ahead(DETECT_MAX_LINES, detect::SAMPLE)
        .map_err(|source| InputError::Read {
            file: file.to_string(),
            line: 0,
            source,
        })?
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty())
        .collect();
    // Zeek writes `#fields` after other `#` lines; otherwise the first line names.
    let header = sample
        .iter()
        .find(|l| l.starts_with(b"#fields"))
        .or_else(|| sample.iter().find(|l| !l.starts_with(b"#")))
        .and_then(|l| delimited::header_names(l, delimiter))
        .ok_or_else(|| {
            err(format!(
                "{format} needs a header line naming the columns (a time column such as \
                 ts, timestamp or time{}), as its first line{}",
                if columns.is_some() {
                    ", and the ones --columns names"
                } else {
                    "; or name them with --columns"
                },
                if format == Format::Tsv {
                    " or Zeek's #fields line"
                } else {
                    ""
                }
            ))
        })?;
    delimited::layout(&header, delimiter, asked.as_deref()).map_err(err)
}

fn rate_interval(
    file: &str,
    lines: &mut Lines,
    given: Option<Duration>,
) -> Result<f64, InputError> {
    let interval_err = |reason: String| InputError::Interval {
        file: file.to_string(),
        reason,
    };
    if let Some(d) = given {
        return if d.is_zero() {
            Err(interval_err("it is zero".into()))
        } else {
            Ok(d.as_secs_f64())
        };
    }
    let ts: Vec<f64> = lines
        .read_ahead(INTERVAL_SAMPLE_LINES, INTERVAL_SAMPLE_LINES)
        .map_err(|source| InputError::Read {
            file: file.to_string(),
            line: 0,
            source,
        })?
        .filter_map(|l| match rate_csv::parse(l.trim_ascii()) {
            Ok(rate_csv::Row::Data { ts, .. }) => Some(ts),
            _ => None,
        })
        .collect();
    rate_csv::infer_interval(ts).ok_or_else(|| {
        interval_err(format!(
            "fewer than two distinct timestamps in the first {INTERVAL_SAMPLE_LINES} lines"
        ))
    })
}

impl Reader {
    pub fn stats(&self) -> &InputStats {
        &self.stats
    }

    /// The stats, or an error when the input was empty, unreadable as its format, or
    /// malformed in more than the allowed fraction of its lines. Call it after the
    /// iteration ends: records not yet taken are not read.
    pub fn finish(self) -> Result<InputStats, InputError> {
        let malformed = self.stats.malformed;
        let total = self.parsed + malformed;
        if total == 0 {
            return Err(InputError::Empty { file: self.file });
        }
        if self.parsed == 0 {
            return Err(self.not_format());
        }
        let fraction = malformed as f64 / total as f64;
        if fraction > self.max_malformed {
            return Err(InputError::TooMalformed {
                reasons: self.reasons(),
                file: self.file,
                malformed,
                total,
                percent: fraction * 100.0,
                max_percent: self.max_malformed * 100.0,
            });
        }
        Ok(self.stats)
    }

    fn not_format(&self) -> InputError {
        InputError::NotFormat {
            file: self.file.clone(),
            format: self.stats.format,
            lines: self.stats.malformed,
            reasons: self.reasons(),
        }
    }

    fn reasons(&self) -> String {
        let mut out = String::from("first: ");
        for (i, (line, reason)) in self.stats.first_malformed.iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            out.push_str(&format!("{}:{line}: {reason}", self.file));
        }
        out
    }

    /// Reads and parses one line into the reorder buffer.
    fn step(&mut self) -> Result<(), InputError> {
        let next = self.lines.next_line().map_err(|source| InputError::Read {
            file: self.file.clone(),
            line: self.stats.lines,
            source,
        })?;
        let Some((no, line)) = next else {
            self.eof = true;
            return Ok(());
        };
        self.stats.lines = no;
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(());
        }
        let first = !self.seen_content;
        self.seen_content = true;
        let parsed = match &self.parser {
            Parser::Clf => clf::parse(line).map(|l| {
                self.stats.undated += u64::from(!l.dated);
                Some(Record::Request(l.request))
            }),
            // Comments (Zeek's `#` lines) and the header are not requests.
            Parser::Delimited(_) if line.starts_with(b"#") => Ok(None),
            Parser::Delimited(layout) => match layout.parse(line) {
                Err(_) if first => Ok(None),
                other => other.map(|r| Some(Record::Request(r))),
            },
            Parser::Jsonl => jsonl::parse(line).map(|r| Some(Record::Request(r))),
            Parser::RateCsv { interval } => match rate_csv::parse(line) {
                Ok(rate_csv::Row::Data { ts, value }) => Ok(Some(Record::Count {
                    ts,
                    count: value,
                    interval: *interval,
                })),
                Ok(rate_csv::Row::Header) if first => Ok(None),
                Ok(rate_csv::Row::Header) => {
                    Err(format!("a header after the first line {}", snippet(line)))
                }
                Err(e) => Err(e),
            },
        };
        match parsed {
            Ok(Some(record)) => {
                self.parsed += 1;
                match self.reorder.push(record) {
                    Placed::InOrder => {}
                    Placed::Reordered => self.stats.reordered += 1,
                    Placed::TooLate => self.stats.too_late += 1,
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(reason) => self.malformed(no, reason),
        }
    }

    fn malformed(&mut self, line: u64, reason: String) -> Result<(), InputError> {
        self.stats.malformed += 1;
        if self.stats.first_malformed.len() < KEEP_REASONS {
            self.stats.first_malformed.push((line, reason));
        }
        if self.parsed == 0 && self.stats.malformed >= EARLY_ABORT_LINES {
            return Err(self.not_format());
        }
        Ok(())
    }

    fn emit(&mut self, record: Record) -> Record {
        let ts = record.ts();
        self.stats.records += 1;
        self.stats.first_ts.get_or_insert(ts);
        self.stats.last_ts = Some(ts);
        record
    }
}

impl Iterator for Reader {
    type Item = Result<Record, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(record) = self.reorder.pop_ready() {
                return Some(Ok(self.emit(record)));
            }
            if self.eof {
                let record = self.reorder.pop_any()?;
                return Some(Ok(self.emit(record)));
            }
            if let Err(e) = self.step() {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}

/// Bytes as text, invalid UTF-8 replaced: logs carry whatever clients sent.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A short quoted excerpt for error reasons.
fn snippet(b: &[u8]) -> String {
    const MAX: usize = 60;
    let text = String::from_utf8_lossy(&b[..b.len().min(MAX)]);
    if b.len() > MAX {
        format!("{:?}…", text)
    } else {
        format!("{text:?}")
    }
}
