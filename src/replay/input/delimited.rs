//! Per-request logs in delimited columns: a CSV (`--format request-csv`, e.g. the
//! Azure LLM inference trace `TIMESTAMP,ContextTokens,GeneratedTokens`) or a
//! tab-separated log (`--format tsv`, e.g. Zeek's `http.log`), one request a row,
//! columns told by a header.
//!
//! Which column is what comes from `--columns` (`ROLE=NAME` pairs, or bare names taken
//! as time, request size, response size in that order), or, without it, from the
//! header's names when they are the usual ones (see [`Role::names`]).

use super::{snippet, time, Request};

/// What a column means for the replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// The request's arrival time (required).
    Time,
    Method,
    Path,
    Status,
    /// Request size in any unit (bytes, prompt tokens...).
    RequestSize,
    /// Response size in any unit (bytes, generated tokens...): the service model's
    /// bandwidth-bound part.
    ResponseSize,
    /// Service time in seconds.
    Duration,
    Source,
}

impl Role {
    /// `--columns` role names.
    const KEYS: [(&'static str, Role); 8] = [
        ("time", Role::Time),
        ("method", Role::Method),
        ("path", Role::Path),
        ("status", Role::Status),
        ("request_size", Role::RequestSize),
        ("response_size", Role::ResponseSize),
        ("duration", Role::Duration),
        ("source", Role::Source),
    ];

    /// Header names read without `--columns` (lower case; Zeek's, nginx's and common
    /// exports').
    fn names(self) -> &'static [&'static str] {
        match self {
            Role::Time => &["ts", "timestamp", "time", "@timestamp", "datetime"],
            Role::Method => &["method", "request_method", "verb"],
            Role::Path => &["uri", "path", "url", "request_uri"],
            Role::Status => &["status", "status_code", "response_code"],
            Role::RequestSize => &["request_body_len", "request_length", "request_bytes"],
            Role::ResponseSize => &[
                "response_body_len",
                "bytes",
                "body_bytes_sent",
                "bytes_sent",
                "response_bytes",
            ],
            Role::Duration => &["duration", "request_time"],
            Role::Source => &["id.orig_h", "remote_addr", "client_ip", "client"],
        }
    }
}

/// The column layout of one file.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Layout {
    pub delimiter: u8,
    /// (column index, role).
    columns: Vec<(usize, Role)>,
    time: usize,
    /// A field meaning "no value" (Zeek's `-`, or empty).
    unset: &'static [u8],
}

/// Splits `--columns` into (role, name) pairs.
pub(super) fn parse_columns(spec: &str) -> Result<Vec<(Role, String)>, String> {
    let positional = [Role::Time, Role::RequestSize, Role::ResponseSize];
    let mut out = Vec::new();
    for (i, item) in spec.split(',').map(str::trim).enumerate() {
        if item.is_empty() {
            return Err(format!("--columns {spec:?}: empty column name"));
        }
        let (role, name) = match item.split_once('=') {
            Some((role, name)) => {
                let role = Role::KEYS
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(role.trim()))
                    .map(|(_, r)| *r)
                    .ok_or_else(|| {
                        let keys: Vec<&str> = Role::KEYS.iter().map(|(k, _)| *k).collect();
                        format!(
                            "--columns: unknown role {role:?} (roles: {})",
                            keys.join(", ")
                        )
                    })?;
                (role, name.trim().to_string())
            }
            None => {
                let role = positional.get(i).copied().ok_or_else(|| {
                    format!(
                        "--columns {spec:?}: bare names are time, request size and response \
                         size in that order; name more as ROLE=NAME"
                    )
                })?;
                (role, item.to_string())
            }
        };
        if out.iter().any(|(r, _)| *r == role) {
            return Err(format!("--columns {spec:?}: {role:?} named twice"));
        }
        out.push((role, name));
    }
    if !out.iter().any(|(r, _)| *r == Role::Time) {
        return Err(format!("--columns {spec:?}: no time column"));
    }
    Ok(out)
}

/// The header's field names: Zeek's `#fields` line, or a first line of names.
pub(super) fn header_names(line: &[u8], delimiter: u8) -> Option<Vec<String>> {
    let body = line
        .strip_prefix(b"#fields")
        .map(|rest| rest.strip_prefix(&[delimiter]).unwrap_or(rest))
        .unwrap_or(line);
    let names: Vec<String> = split(body, delimiter)
        .map(|f| String::from_utf8_lossy(unquote(f)).trim().to_string())
        .collect();
    // A header names things: no field of it is a timestamp or a number.
    let named = names.iter().all(|n| {
        !n.is_empty() && time::parse_any(n.as_bytes()).is_none() && n.parse::<f64>().is_err()
    });
    named.then_some(names)
}

/// The layout for a header: the columns `--columns` names, or the usual names.
pub(super) fn layout(
    names: &[String],
    delimiter: u8,
    asked: Option<&[(Role, String)]>,
) -> Result<Layout, String> {
    let find = |name: &str| names.iter().position(|n| n.eq_ignore_ascii_case(name));
    let mut columns = Vec::new();
    match asked {
        Some(asked) => {
            for (role, name) in asked {
                let i = find(name).ok_or_else(|| {
                    format!(
                        "no column {name:?} in the header (columns: {})",
                        names.join(", ")
                    )
                })?;
                columns.push((i, *role));
            }
        }
        None => {
            for (_, role) in Role::KEYS {
                if let Some(i) = role.names().iter().find_map(|n| find(n)) {
                    columns.push((i, role));
                }
            }
        }
    }
    let time = columns
        .iter()
        .find(|(_, r)| *r == Role::Time)
        .map(|(i, _)| *i)
        .ok_or_else(|| {
            format!(
                "no time column in the header (columns: {}); name it with --columns",
                names.join(", ")
            )
        })?;
    Ok(Layout {
        delimiter,
        columns,
        time,
        unset: if delimiter == b'\t' { b"-" } else { b"" },
    })
}

impl Layout {
    /// Whether the header alone says each row is a request: a time column and at
    /// least one of method, path or status (a size column alone could be a count).
    pub(super) fn unambiguous(&self) -> bool {
        self.columns
            .iter()
            .any(|(_, r)| matches!(r, Role::Method | Role::Path | Role::Status))
    }

    pub(super) fn parse(&self, line: &[u8]) -> Result<Request, String> {
        if line.starts_with(b"#") {
            return Err("a comment line".into());
        }
        let fields: Vec<&[u8]> = split(line, self.delimiter).map(unquote).collect();
        let field = |i: usize| fields.get(i).copied().filter(|f| *f != self.unset);
        let ts_field = fields.get(self.time).copied().unwrap_or_default();
        let ts = time::parse_any(ts_field)
            .ok_or_else(|| format!("unreadable timestamp {}", snippet(ts_field)))?;
        let mut r = Request {
            ts,
            method: "-".into(),
            path: "-".into(),
            status: 0,
            bytes: 0,
            duration: None,
            upstream_time: None,
            source: None,
            request_bytes: None,
        };
        for &(i, role) in &self.columns {
            let Some(f) = field(i) else { continue };
            let text = || String::from_utf8_lossy(f).into_owned();
            let number = || {
                std::str::from_utf8(f)
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| format!("unreadable {role:?} {}", snippet(f)))
            };
            match role {
                Role::Time => {}
                Role::Method => r.method = text(),
                Role::Path => r.path = text(),
                Role::Status => r.status = number()?.min(999.0) as u16,
                Role::RequestSize => r.request_bytes = Some(number()?.round() as u64),
                Role::ResponseSize => r.bytes = number()?.round() as u64,
                Role::Duration => r.duration = Some(number()?),
                Role::Source => r.source = Some(text()),
            }
        }
        Ok(r)
    }
}

fn split(line: &[u8], delimiter: u8) -> impl Iterator<Item = &[u8]> {
    line.split(move |c| *c == delimiter)
}

fn unquote(b: &[u8]) -> &[u8] {
    let b = b.trim_ascii();
    match b {
        [b'"', inner @ .., b'"'] => inner,
        _ => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_by_role_or_position() {
        let c = parse_columns("TIMESTAMP,ContextTokens,GeneratedTokens").unwrap();
        assert_eq!(
            c.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            [Role::Time, Role::RequestSize, Role::ResponseSize]
        );
        let c = parse_columns("time=ts, duration=rt").unwrap();
        assert_eq!(c[1], (Role::Duration, "rt".to_string()));
        assert!(parse_columns("a,b,c,d").unwrap_err().contains("ROLE=NAME"));
        assert!(parse_columns("size=x")
            .unwrap_err()
            .contains("unknown role"));
        assert!(parse_columns("duration=x").unwrap_err().contains("no time"));
    }

    #[test]
    fn a_header_without_a_time_column_is_refused_by_name() {
        let names = header_names(b"a,b", b',').unwrap();
        let e = layout(&names, b',', None).unwrap_err();
        assert!(e.contains("no time column") && e.contains("a, b"), "{e}");
        assert_eq!(header_names(b"2014-04-10 00:04:00,94", b','), None);
        let e = layout(&names, b',', Some(&parse_columns("c").unwrap())).unwrap_err();
        assert!(e.contains("no column \"c\""), "{e}");
    }
}
