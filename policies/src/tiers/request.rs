//! What classification reads from a request, borrowed so the proxy never copies headers.

use std::net::IpAddr;

/// A request as tier matching sees it. The proxy implements this over pingora's request
/// header and its per-request context; replay and tests use [`RequestParts`].
pub trait RequestView {
    /// The method as sent (`GET`).
    fn method(&self) -> &str;
    /// The path, without the query.
    fn path(&self) -> &str;
    /// The profiler's route template (`/users/{id}`), when known.
    fn route(&self) -> Option<&str>;
    /// The source identity (mTLS peer name, identity header, ...), when known.
    fn source(&self) -> Option<&str>;
    /// The client address of the connection.
    fn client_ip(&self) -> Option<IpAddr>;
    /// The first value of header `name`; `name` is lower-case, lookups are
    /// case-insensitive as HTTP header names are.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

/// A request given as plain parts.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub source: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    /// `(name, value)` pairs; names in any case.
    pub headers: &'a [(&'a str, &'a str)],
}

// === impl RequestParts ===

impl RequestView for RequestParts<'_> {
    fn method(&self) -> &str {
        self.method
    }

    fn path(&self) -> &str {
        self.path
    }

    fn route(&self) -> Option<&str> {
        self.route
    }

    fn source(&self) -> Option<&str> {
        self.source
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}
