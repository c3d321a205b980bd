//! The per-request timeouts of the stream timeout model: the cluster's
//! `response_header` and `stream_idle`, bounded by the request's own `grpc-timeout`.
//!
//! | wait | bound |
//! | --- | --- |
//! | response head | `grpc-timeout` if the request has one; else `response_header`, or `stream_idle` for gRPC |
//! | each later upstream read (body, trailers, upgraded bytes) | `stream_idle`, at most `grpc-timeout` |
//! | each client read of an upgraded (WebSocket) connection | `stream_idle` |
//!
//! None of them caps how long a stream lives while bytes keep moving.

use crate::config::Timeouts;
use pingora::http::RequestHeader;
use std::time::Duration;

/// The longest `grpc-timeout` honoured (the header allows 10^8 hours).
const MAX_GRPC_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The request's `grpc-timeout` (gRPC over HTTP/2: 1-8 ASCII digits and a unit `H`,
/// `M`, `S`, `m`, `u` or `n`), capped at a day; `None` if absent or malformed.
pub fn grpc_timeout(req: &RequestHeader) -> Option<Duration> {
    const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
    let value = req.headers.get(GRPC_TIMEOUT)?.to_str().ok()?.trim();
    parse_grpc_timeout(value)
}

fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() || value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    // A zero deadline has already passed; 1 ms keeps the timer meaningful.
    Some(d.clamp(Duration::from_millis(1), MAX_GRPC_TIMEOUT))
}

/// Whether the request is gRPC (`content-type: application/grpc[+proto|;...]`).
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The wait for the response head (`None`: unbounded). A gRPC call's head may come
/// only after the client has streamed its last message, so a call without a deadline
/// is bounded by `stream_idle` (at least `response_header`) instead.
pub fn response_header(t: &Timeouts, grpc: Option<Duration>, is_grpc: bool) -> Option<Duration> {
    match (grpc, is_grpc) {
        (Some(g), _) => Some(g),
        (None, true) => t.stream_idle.map(|idle| idle.max(t.response_header)),
        (None, false) => Some(t.response_header),
    }
}

/// The wait for each later upstream read; `None` is no bound (`stream_idle: off`
/// without a `grpc-timeout`).
pub fn stream_idle(t: &Timeouts, grpc: Option<Duration>) -> Option<Duration> {
    match (t.stream_idle, grpc) {
        (Some(idle), Some(g)) => Some(idle.min(g)),
        (idle, g) => idle.or(g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let p = parse_grpc_timeout;
        assert_eq!(p("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(p("3M"), Some(Duration::from_secs(180)));
        assert_eq!(p("120S"), Some(Duration::from_secs(120)));
        assert_eq!(p("250m"), Some(Duration::from_millis(250)));
        assert_eq!(p("5000u"), Some(Duration::from_millis(5)));
        assert_eq!(p("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(p("0m"), Some(Duration::from_millis(1)));
        assert_eq!(p("99999999H"), Some(MAX_GRPC_TIMEOUT));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in [
            "",
            "S",
            "10",
            "10s",
            "1.5S",
            "-1S",
            "123456789S",
            "1 S",
            "١S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_timeout_bounds_both_waits() {
        let t = Timeouts::default();
        let g = Some(Duration::from_secs(5));
        assert_eq!(response_header(&t, g, true), g);
        assert_eq!(response_header(&t, g, false), g);
        assert_eq!(response_header(&t, None, false), Some(t.response_header));
        assert_eq!(response_header(&t, None, true), t.stream_idle);
        assert_eq!(stream_idle(&t, g), g);
        assert_eq!(stream_idle(&t, None), t.stream_idle);
        let off = Timeouts {
            stream_idle: None,
            ..Timeouts::default()
        };
        assert_eq!(stream_idle(&off, None), None);
        assert_eq!(response_header(&off, None, true), None);
        assert_eq!(stream_idle(&off, g), g);
    }
}
