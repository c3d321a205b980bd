//! The verified identity of an mTLS client, taken from its certificate once per
//! connection and read per request without locks.
//!
//! After the handshake (client certificate already verified by rustls against the
//! listener's `client_ca`), pingora calls our callback with the peer's leaf
//! certificate; the name it yields rides in the connection's TLS digest. The name is,
//! in order: the first URI SAN (SPIFFE ids: `spiffe://trust-domain/ns/x/sa/y`), the
//! first DNS SAN, the subject CN. It is used as the request's source identity (for
//! profiling and tiers), and forwarded to the upstream in `x-prescale-client-id`
//! (like linkerd's `l5d-client-id`); a client-sent value of that header is always
//! removed first, so it cannot be forged.

use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::proxy::Session;
use std::any::Any;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The header carrying the verified client identity to the upstream.
pub const HEADER: &str = "x-prescale-client-id";

/// Longer names are cut: they go into headers and per-source tables.
const MAX_LEN: usize = 255;

/// The verified name of the peer of one TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub String);

/// Post-handshake hook that names the verified client.
pub struct PeerIdentityCallback;

#[async_trait::async_trait]
impl TlsAccept for PeerIdentityCallback {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let name = name_of(tls.peer_certificate_der()?)?;
        Some(Arc::new(PeerIdentity(name)))
    }
}

/// The name in a DER certificate: URI SAN, else DNS SAN, else subject CN.
pub fn name_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let sans: Vec<&GeneralName> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| ext.value.general_names.iter().collect())
        .unwrap_or_default();
    let uri = sans.iter().find_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let dns = sans.iter().find_map(|n| match n {
        GeneralName::DNSName(d) => Some(*d),
        _ => None,
    });
    let cn = || {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
    };
    let name = uri.or(dns).or_else(cn)?;
    let mut end = name.len().min(MAX_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let cut = name.get(..end)?;
    // Header-safe: visible ASCII only.
    (!cut.is_empty() && cut.bytes().all(|b| (0x21..0x7f).contains(&b))).then(|| cut.to_string())
}

/// The verified client identity of this request's connection, if it presented one.
pub fn of(session: &Session) -> Option<&str> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<PeerIdentity>()
        .map(|p| p.0.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: Vec<rcgen::SanType>, cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn prefers_uri_then_dns_then_cn() {
        let spiffe = "spiffe://cluster.local/ns/shop/sa/web";
        let both = cert(
            vec![
                rcgen::SanType::DnsName("web.shop".try_into().unwrap()),
                rcgen::SanType::URI(spiffe.try_into().unwrap()),
            ],
            "web",
        );
        assert_eq!(name_of(&both).as_deref(), Some(spiffe));
        let dns = cert(
            vec![rcgen::SanType::DnsName("web.shop".try_into().unwrap())],
            "web",
        );
        assert_eq!(name_of(&dns).as_deref(), Some("web.shop"));
        assert_eq!(
            name_of(&cert(vec![], "batch-job")).as_deref(),
            Some("batch-job")
        );
        assert_eq!(name_of(b"not a certificate"), None);
    }

    #[test]
    fn names_unfit_for_a_header_are_refused() {
        assert_eq!(name_of(&cert(vec![], "two words")), None);
    }
}
