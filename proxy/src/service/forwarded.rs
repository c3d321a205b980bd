//! The forwarding headers a proxy adds: `x-forwarded-for` and `x-forwarded-proto`.

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use std::io::Write;
use std::net::IpAddr;

const FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Longest textual IP address (IPv6 with an embedded IPv4 tail).
const MAX_IP_LEN: usize = 45;

/// Appends the client address and scheme to any existing values, keeping the chain an
/// edge proxy started (`client, proxy1, proxy2` as in the de-facto convention).
pub fn append(req: &mut RequestHeader, client: Option<IpAddr>, tls: bool) -> pingora::Result<()> {
    if let Some(ip) = client {
        // Every request pays for this: the address is written on the stack, not into a
        // `String` first (one allocation, the header value's, instead of two).
        let mut buf = [0u8; MAX_IP_LEN];
        let mut cursor = std::io::Cursor::new(buf.as_mut_slice());
        if write!(cursor, "{ip}").is_ok() {
            let len = usize::try_from(cursor.position()).unwrap_or(0);
            append_one(
                req,
                &FOR,
                "x-forwarded-for",
                buf.get(..len).unwrap_or_default(),
            )?;
        }
    }
    let proto: &[u8] = if tls { b"https" } else { b"http" };
    append_one(req, &PROTO, "x-forwarded-proto", proto)
}

fn append_one(
    req: &mut RequestHeader,
    name: &HeaderName,
    wire_name: &'static str,
    value: &[u8],
) -> pingora::Result<()> {
    // Several header lines of the same name are folded into one list first.
    let mut existing = req
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .peekable();
    if existing.peek().is_none() {
        let value = HeaderValue::from_bytes(value).map_err(|_| {
            pingora::Error::explain(pingora::ErrorType::InvalidHTTPHeader, "forwarding header")
        })?;
        return req.insert_header(wire_name, value);
    }
    let mut out = existing.collect::<Vec<_>>().join(", ");
    out.push_str(", ");
    out.push_str(std::str::from_utf8(value).unwrap_or_default());
    req.insert_header(wire_name, out)
}

/// Size of the request line and headers as sent, for the 431 limit.
pub fn header_bytes(req: &RequestHeader) -> usize {
    let target = req.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len());
    let line = req.method.as_str().len() + target + 12;
    req.headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_to_an_existing_chain_and_starts_a_new_one() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-forwarded-for", "203.0.113.9").unwrap();
        append(&mut req, Some("127.0.0.1".parse().unwrap()), false).unwrap();
        assert_eq!(req.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(req.headers["x-forwarded-proto"], "http");
        append(&mut req, None, true).unwrap();
        assert_eq!(req.headers["x-forwarded-proto"], "http, https");
    }
}
