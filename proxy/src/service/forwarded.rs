//! The forwarding headers a proxy adds: `x-forwarded-for` and `x-forwarded-proto`.

use pingora::http::RequestHeader;
use std::net::IpAddr;

/// Appends the client address and scheme to any existing values, keeping the chain an
/// edge proxy started (`client, proxy1, proxy2` as in the de-facto convention).
pub fn append(req: &mut RequestHeader, client: Option<IpAddr>, tls: bool) -> pingora::Result<()> {
    if let Some(ip) = client {
        append_one(req, "x-forwarded-for", &ip.to_string())?;
    }
    append_one(req, "x-forwarded-proto", if tls { "https" } else { "http" })
}

fn append_one(req: &mut RequestHeader, name: &'static str, value: &str) -> pingora::Result<()> {
    // Several header lines of the same name are folded into one list first.
    let joined: Vec<&str> = req
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if joined.is_empty() {
        return req.insert_header(name, value);
    }
    let mut out = joined.join(", ");
    out.push_str(", ");
    out.push_str(value);
    req.insert_header(name, out)
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
