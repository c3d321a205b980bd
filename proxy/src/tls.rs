//! Loads TLS material for listeners and clusters, returning errors instead of panicking.
//!
//! pingora's `TlsSettings::build()` panics on a bad certificate file, which would turn a
//! typo in a reload into a crash. So everything is parsed and checked here first, and
//! pingora receives a ready certificate resolver and client verifier.

use crate::config::ListenerTls;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::ALPN;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// TLS material that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    path: String,
    reason: String,
}

/// Always presents the one configured certificate.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

/// A checked listener TLS setup, ready to hand to pingora.
pub struct ServerTls {
    cert: Arc<CertifiedKey>,
    client_roots: Option<Arc<RootCertStore>>,
}

// === impl ServerTls ===

impl ServerTls {
    /// pingora settings: h2 and HTTP/1.1 by ALPN, TLS 1.2+ (pingora's rustls defaults).
    pub fn settings(&self) -> Result<TlsSettings, TlsError> {
        // Same rustls defaults as `intermediate` (TLS 1.2+), plus the hook that names a
        // verified client certificate's peer.
        let mut settings =
            TlsSettings::with_callbacks(Box::new(crate::peer_identity::PeerIdentityCallback))
                .map_err(|e| err("listener", e))?;
        settings.set_cert_resolver(Arc::new(FixedCert(self.cert.clone())));
        if let Some(roots) = &self.client_roots {
            let verifier = WebPkiClientVerifier::builder(roots.clone())
                .build()
                .map_err(|e| err("client_ca", e))?;
            settings.set_client_cert_verifier(verifier);
        }
        settings.set_alpn(ALPN::H2H1);
        Ok(settings)
    }
}

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Loads and checks a listener's certificate, key and optional client CA.
pub fn server_config(tls: &ListenerTls) -> Result<ServerTls, TlsError> {
    let certs = certs(&tls.cert)?;
    let key = private_key(&tls.key)?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| err(&tls.key, e))?;
    let cert = CertifiedKey::new(certs, signer);
    // A key that does not belong to the certificate only fails at the first handshake
    // otherwise; catch it at load time.
    cert.keys_match()
        .map_err(|e| err(&tls.key, format!("key does not match certificate: {e}")))?;
    let client_roots = match &tls.client_ca {
        Some(ca) => Some(Arc::new(root_store(ca)?)),
        None => None,
    };
    Ok(ServerTls {
        cert: Arc::new(cert),
        client_roots,
    })
}

/// Loads CA certificates for verifying an upstream, checking each is usable as a root.
pub fn ca_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = certs(path)?;
    let mut store = RootCertStore::empty();
    for c in &certs {
        store.add(c.clone()).map_err(|e| err(path, e))?;
    }
    Ok(certs)
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store.add(c).map_err(|e| err(path, e))?;
    }
    Ok(store)
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| err(path, e))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, e))?;
    if certs.is_empty() {
        return Err(err(path, "no PEM certificate found"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| err(path, e))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| err(path, e))?
        .ok_or_else(|| err(path, "no PEM private key found"))
}

fn err(path: impl AsRef<Path>, reason: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.as_ref().display().to_string(),
        reason: reason.to_string(),
    }
}
