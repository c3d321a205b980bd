//! The request as tier matching sees it: its head, borrowed, plus what the
//! connection tells us (client address, source identity).

use http::request::Parts;
use prescale_policies::RequestView;
use std::cell::OnceCell;
use std::io::Write;
use std::net::IpAddr;

/// A [`RequestView`] over a request head (pingora's `RequestHeader` derefs to it). The
/// route template is built only if a tier's rules ask for it (the one allocation
/// classification may make).
pub(super) struct TierRequest<'a> {
    req: &'a Parts,
    source: Option<&'a str>,
    client_ip: Option<IpAddr>,
    route: OnceCell<String>,
}

/// A client address as text, on the stack: the source identity of a request that has
/// no better one, without allocating.
pub(super) struct IpText {
    /// The longest IPv6 text form is 45 bytes.
    buf: [u8; 48],
    len: usize,
}

// === impl TierRequest ===

impl<'a> TierRequest<'a> {
    pub(super) fn new(req: &'a Parts, source: Option<&'a str>, ip: Option<IpAddr>) -> Self {
        Self {
            req,
            source,
            client_ip: ip,
            route: OnceCell::new(),
        }
    }
}

impl RequestView for TierRequest<'_> {
    fn method(&self) -> &str {
        self.req.method.as_str()
    }

    fn path(&self) -> &str {
        self.req.uri.path()
    }

    fn route(&self) -> Option<&str> {
        let path = self.req.uri.path();
        Some(
            self.route
                .get_or_init(|| prescale_profiler::route::template(path)),
        )
    }

    fn source(&self) -> Option<&str> {
        self.source
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.req.headers.get(name).map(|v| v.as_bytes())
    }
}

// === impl IpText ===

impl IpText {
    pub(super) fn new(ip: IpAddr) -> Self {
        let mut buf = [0u8; 48];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        // Cannot fail: every address fits; on a surprise the text is just shorter.
        let _ = write!(cursor, "{}", ip.to_canonical());
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        Self { buf, len }
    }

    pub(super) fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;
    use prescale_policies::{PoliciesConfig, TierTable};

    #[test]
    fn addresses_print_as_they_parse_without_allocating() {
        for s in ["127.0.0.1", "10.255.0.7", "::1", "2001:db8::ff00:42:8329"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), s);
        }
        // An IPv4-mapped IPv6 peer (a dual-stack listener) is its IPv4 address.
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(IpText::new(mapped).as_str(), "10.1.2.3");
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(IpText::new(longest).as_str().len(), 39);
    }

    #[test]
    fn a_pingora_request_is_classified_by_method_route_and_header() {
        let cfg: PoliciesConfig = serde_yaml_ng::from_str(
            r#"
tiers:
  trusted_sources: ["10.0.0.0/8"]
  list:
    - { name: critical, match: { headers: { x-app: checkout } } }
    - { name: batch, match: { methods: [POST], route: ["/reports/{id}"] } }
    - { name: standard }
"#,
        )
        .unwrap();
        let table = TierTable::new(&cfg).unwrap();
        let name = |req: &RequestHeader, ip: &str| {
            let ip = Some(ip.parse().unwrap());
            let c = table.classify(&TierRequest::new(req, None, ip));
            (table.get(c.tier).unwrap().name.clone(), c.strip_header)
        };

        // The route template is built from the path, identifiers replaced.
        let report = RequestHeader::build("POST", b"/reports/981?full=1", None).unwrap();
        assert_eq!(name(&report, "192.0.2.1"), ("batch".into(), false));
        let get = RequestHeader::build("GET", b"/reports/981", None).unwrap();
        assert_eq!(name(&get, "192.0.2.1"), ("standard".into(), false));

        // Header names are matched case-insensitively, as HTTP says.
        let mut app = RequestHeader::build("GET", b"/", None).unwrap();
        app.insert_header("X-App", "checkout").unwrap();
        assert_eq!(name(&app, "192.0.2.1"), ("critical".into(), false));

        // A tier header from outside 10/8 is ignored and must be stripped.
        let mut spoof = RequestHeader::build("GET", b"/", None).unwrap();
        spoof.insert_header("x-prescale-tier", "critical").unwrap();
        assert_eq!(name(&spoof, "192.0.2.1"), ("standard".into(), true));
        assert_eq!(name(&spoof, "10.1.1.1"), ("critical".into(), false));
    }
}
