//! Apache/nginx Common and Combined Log Format lines, parsed by hand over bytes:
//! `%h %l %u %t "%r" %>s %b ["%{Referer}i" "%{User-agent}i" ...]`. The variant of the
//! old public traces (EPA-HTTP: `host [DD:HH:MM:SS] "request" status bytes`, no ident
//! or user, a day of the month and a clock but no month or year) is read too; its
//! times have no date (see `Line::dated`).

use super::{lossy, snippet, time, Request};
use memchr::{memchr, memchr_iter};

/// One parsed line; `combined` says quoted fields (referer, user agent) followed the byte
/// count, which is how Combined is told from Common.
pub(super) struct Line {
    pub request: Request,
    pub combined: bool,
    /// False for a `[DD:HH:MM:SS]` time: days since 1970-01-00, not a date.
    pub dated: bool,
}

pub(super) fn parse(line: &[u8]) -> Result<Line, String> {
    let host_end =
        memchr(b' ', line).ok_or("expected `host ident user [time] \"request\" status bytes`")?;
    let host = &line[..host_end];
    // Ident and user are skipped by looking for the bracket: neither is used, and a user
    // name is the one field Apache may log with spaces in it.
    let open = host_end
        + memchr(b'[', &line[host_end..]).ok_or("no [timestamp] after the client address")?;
    let close = open
        + memchr(b']', &line[open..])
            .ok_or_else(|| format!("unterminated timestamp {}", snippet(&line[open..])))?;
    let stamp = &line[open + 1..close];
    let (ts, dated) = match time::parse_clf(stamp) {
        Some(ts) => (ts, true),
        None => (
            time::parse_day_clock(stamp)
                .ok_or_else(|| format!("unreadable timestamp {}", snippet(&line[open..=close])))?,
            false,
        ),
    };

    let rest = line[close + 1..].trim_ascii_start();
    let rest = rest.strip_prefix(b"\"").ok_or_else(|| {
        format!(
            "expected a quoted request after the timestamp, found {}",
            snippet(rest)
        )
    })?;
    // The request ends at the first quote followed by ` <3-digit status>`: quotes inside
    // the request (escaped `\"` by Apache, or raw from odd clients) are not followed by one.
    let (request_line, status, after) = memchr_iter(b'"', rest)
        .find_map(|q| status_after(&rest[q + 1..]).map(|(s, after)| (&rest[..q], s, after)))
        .ok_or_else(|| {
            format!(
                "no closing quote and status after the request {}",
                snippet(rest)
            )
        })?;

    let bytes_end = memchr(b' ', after).unwrap_or(after.len());
    let bytes = match &after[..bytes_end] {
        b"-" => 0,
        b => number(b).ok_or_else(|| format!("unreadable byte count {}", snippet(b)))?,
    };
    let combined = memchr(b'"', &after[bytes_end..]).is_some();

    let (method, path) = split_request(request_line);
    Ok(Line {
        request: Request {
            ts,
            method,
            path,
            status,
            bytes,
            duration: None,
            upstream_time: None,
            source: (host != b"-").then(|| lossy(host)),
            request_bytes: None,
        },
        combined,
        dated,
    })
}

/// `METHOD target [HTTP/x]` to method and target. A request line that is not one
/// (`-` for a timed-out connection, TLS bytes sent to a plain port) is still an arrival,
/// so it is kept with method and path `-`.
pub(super) fn split_request(r: &[u8]) -> (String, String) {
    let r = r.trim_ascii();
    let Some(sp) = memchr(b' ', r) else {
        return ("-".into(), "-".into());
    };
    let method = &r[..sp];
    if !method
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
    {
        return ("-".into(), "-".into());
    }
    let target = r[sp + 1..].trim_ascii_start();
    // Keep unescaped spaces inside the target: cut only a trailing protocol.
    let target = match memchr::memrchr(b' ', target) {
        Some(p) if target[p + 1..].starts_with(b"HTTP/") => target[..p].trim_ascii_end(),
        _ => target,
    };
    let target = if target.is_empty() { b"-" } else { target };
    (lossy(method), lossy(target))
}

/// ` 200 rest` (or ` 200` at the end) to the status and what follows its space.
fn status_after(b: &[u8]) -> Option<(u16, &[u8])> {
    match b {
        [b' ', d @ (b'1'..=b'9'), e, f, tail @ ..] if e.is_ascii_digit() && f.is_ascii_digit() => {
            let status = u16::from(d - b'0') * 100 + u16::from(e - b'0') * 10 + u16::from(f - b'0');
            match tail {
                [] => Some((status, tail)),
                [b' ', after @ ..] => Some((status, after)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u64, |acc, c| {
        acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Line {
        match parse(line.as_bytes()) {
            Ok(l) => l,
            Err(e) => panic!("{line}: {e}"),
        }
    }

    #[test]
    fn a_combined_line() {
        let l = ok(
            r#"83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /presentations/kibana-search.png?x=1 HTTP/1.1" 200 203023 "http://semicomplete.com/" "Mozilla/5.0 (Macintosh)""#,
        );
        let r = l.request;
        assert!(l.combined);
        assert_eq!(r.ts, 1_431_857_103.0);
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/presentations/kibana-search.png?x=1");
        assert_eq!((r.status, r.bytes), (200, 203_023));
        assert_eq!(r.source.as_deref(), Some("83.149.9.216"));
        assert_eq!(r.duration, None);
    }

    #[test]
    fn a_common_line_with_dash_bytes_and_ipv6_host() {
        let l = ok(
            r#"2001:db8::1 - frank [10/Oct/2000:13:55:36 -0700] "HEAD /apache_pb.gif HTTP/1.0" 304 -"#,
        );
        assert!(!l.combined);
        assert_eq!(l.request.source.as_deref(), Some("2001:db8::1"));
        assert_eq!(l.request.method, "HEAD");
        assert_eq!((l.request.status, l.request.bytes), (304, 0));
        // 13:55:36 at -07:00 is 20:55:36 UTC.
        assert_eq!(l.request.ts, 971_211_336.0);
    }

    #[test]
    fn quotes_and_spaces_inside_the_request() {
        let l = ok(
            r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /search?q=\"a b\" HTTP/1.1" 200 10 "-" "UA""#,
        );
        assert_eq!(l.request.path, r#"/search?q=\"a b\""#);
        let l = ok(r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /a"b HTTP/1.1" 404 7"#);
        assert_eq!(l.request.path, r#"/a"b"#);
        assert_eq!(l.request.status, 404);
    }

    #[test]
    fn odd_request_lines_are_kept_as_arrivals() {
        let l = ok(r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "-" 408 0 "-" "-""#);
        assert_eq!(
            (l.request.method.as_str(), l.request.path.as_str()),
            ("-", "-")
        );
        let l = ok(r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "\x16\x03\x01\x00" 400 226"#);
        assert_eq!(l.request.method, "-");
        let l = ok(r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /old" 200 5"#);
        assert_eq!(l.request.path, "/old");
    }

    #[test]
    fn missing_referer_and_agent() {
        let l = ok(r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "POST /api HTTP/1.1" 201 12"#);
        assert!(!l.combined);
        assert_eq!(l.request.method, "POST");
        let l = ok(r#"- - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 12 "-""#);
        assert!(l.combined);
        assert_eq!(l.request.source, None);
    }

    #[test]
    fn reasons_name_the_bad_part() {
        let e = |s: &str| parse(s.as_bytes()).err().unwrap_or_default();
        assert_eq!(
            e(r#"1.2.3.4 - - [xx] "GET / HTTP/1.1" 200 1"#),
            "unreadable timestamp \"[xx]\""
        );
        assert!(e("garbage").starts_with("expected"));
        assert!(
            e(r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 2000 1"#)
                .starts_with("no closing quote")
        );
        assert!(
            e(r#"1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1x"#)
                .starts_with("unreadable byte count")
        );
    }
}
