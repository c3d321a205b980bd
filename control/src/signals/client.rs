//! A one-shot HTTP/1.1 client for signals and warm start: one connection per exchange,
//! plain or rustls, the whole exchange under one deadline and the answer's body under
//! a size cap.
//!
//! A signal goes out at most once per sync period and warm start once per process, so
//! a connection pool would buy nothing and would keep sockets open to the platform.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where exchanges go: a parsed `http(s)://host[:port]/path` URL.
pub struct Endpoint {
    host: String,
    port: u16,
    authority: HeaderValue,
    path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// An answer with its whole (bounded) body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why an endpoint cannot be used at all (a config problem, found at startup).
#[derive(Debug, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct EndpointError {
    url: String,
    reason: String,
}

/// Why one exchange failed; every kind is worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {target}: {source}")]
    Tls {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answer body over {0} bytes")]
    TooLarge(usize),
    #[error("answer body: {0}")]
    Body(String),
}

// === impl Endpoint ===

impl Endpoint {
    /// Parses `url` (validated by the config) and, for `https`, loads the trusted
    /// roots: `ca_file` if given, else the system's.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, EndpointError> {
        let err = |reason: String| EndpointError {
            url: redact_url(url),
            reason,
        };
        let uri: Uri = url.parse().map_err(|e| err(format!("not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(err("must start with http:// or https://".into())),
        };
        let authority = uri.authority().ok_or_else(|| err("has no host".into()))?;
        // `[::1]` is the URL form of an IPv6 host; sockets and SNI want it bare.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let tls = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| err(format!("host is not a TLS server name: {e}")))?;
            Some((connector(ca_file).map_err(err)?, name))
        } else {
            None
        };
        Ok(Self {
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|e| err(format!("host: {e}")))?,
            host,
            port,
            path,
            tls,
        })
    }

    /// `host:port`: what logs name (never the path or query, which may carry tokens).
    pub fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The URL's path and query, e.g. `/scale` or `/prometheus`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Sends one request on a new connection and reads the answer, all within
    /// `timeout`; bodies over `max_body` bytes are refused.
    pub async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, ExchangeError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, self.authority.clone());
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let req = builder.body(Full::new(body))?;
        let exchange = async {
            let target = self.target();
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|source| ExchangeError::Connect {
                    target: target.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                Some((connector, name)) => {
                    let stream = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|source| ExchangeError::Tls { target, source })?;
                    send(stream, req, timeout, max_body).await
                }
                None => send(tcp, req, timeout, max_body).await,
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ExchangeError::Timeout(timeout))?
    }
}

async fn send<S>(
    io: S,
    req: Request<Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, ExchangeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // The connection ends when `sender` drops; the deadline bounds a peer that stalls.
    tokio::spawn(tokio::time::timeout(timeout, conn));
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ExchangeError::TooLarge(max_body)
            } else {
                ExchangeError::Body(e.to_string())
            }
        })?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// A rustls client (TLS 1.2+, ring, HTTP/1.1 by ALPN) trusting `ca_file` or the
/// system roots.
fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
        }
        None => {
            // Unparsable system certificates are skipped, as every TLS client does.
            for cert in rustls_native_certs::load_native_certs()
                .map_err(|e| format!("system roots: {e}"))?
            {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("no trusted root certificates".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// The URL without its path and query, for errors and logs.
/// Configured extra headers (validated at load), their values marked sensitive so
/// hyper never prints them. `section` names the config path in the error, which never
/// quotes a value.
pub fn secret_headers(
    headers: &std::collections::BTreeMap<String, prescale_proxy::config::Secret>,
    section: &str,
) -> std::io::Result<Vec<(HeaderName, HeaderValue)>> {
    headers
        .iter()
        .map(|(name, value)| {
            let bad = || std::io::Error::other(format!("{section}.headers.{name}: invalid"));
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| bad())?;
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect()
}

pub fn redact_url(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(u) => match (u.scheme_str(), u.authority()) {
            (Some(s), Some(a)) => format!("{s}://{}", a.as_str().rsplit('@').next().unwrap_or("")),
            _ => "<unparsable URL>".into(),
        },
        Err(_) => "<unparsable URL>".into(),
    }
}

/// Percent-encodes a query parameter value (everything but RFC 3986 unreserved).
pub fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_logged_without_path_or_credentials() {
        let e = Endpoint::new("http://127.0.0.1:9000/hooks/scale?token=abc", None).unwrap();
        assert_eq!(e.target(), "127.0.0.1:9000");
        assert_eq!(e.path(), "/hooks/scale?token=abc");
        let e = Endpoint::new("http://[::1]/x", None).unwrap();
        assert_eq!(e.target(), "::1:80");
        assert_eq!(redact_url("http://u:p@host:1/a?b"), "http://host:1");
        assert!(Endpoint::new("ftp://h/", None).is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query_value("sum(rate(x{a=\"b\"}[1m]))"),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29%29"
        );
        assert_eq!(encode_query_value("a b+c"), "a%20b%2Bc");
    }
}
