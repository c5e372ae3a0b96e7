//! rustls configurations for the manager and its clients.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{
    crypto_provider, CertificateAuthority, Fingerprint, IssuedCertificate, PinnedVerifier, TlsError,
};

/// TLS 1.3 and 1.2 only, as rustls allows by default.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The manager's server configuration. It presents `server` followed by the CA certificate, so
/// that clients which pin the CA fingerprint can find the CA in the chain.
///
/// Client certificates are optional at the handshake (users authenticate with a password),
/// but one that is presented must chain to this CA: a certificate from any other CA fails
/// the handshake. Which endpoints need a certificate is the application's decision.
pub fn server_config(
    ca: &CertificateAuthority,
    server: &IssuedCertificate,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone())?;
    let clients =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|error| TlsError::Identity(error.to_string()))?;
    let chain = vec![server.cert_der.clone(), ca.cert_der().clone()];
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, server.key_der())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts only the CA with fingerprint `pin`.
pub fn pinned_client_config(pin: Fingerprint) -> Result<ClientConfig, TlsError> {
    let provider = crypto_provider();
    let verifier = PinnedVerifier::new(pin, Arc::clone(&provider));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A pinned client configuration that also presents a client certificate (an agent's).
pub fn pinned_client_config_with_identity(
    pin: Fingerprint,
    cert_pem: &str,
    key_pem: &str,
) -> Result<ClientConfig, TlsError> {
    let invalid = |what: &str| TlsError::Identity(what.to_owned());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| invalid("the certificate is not PEM"))?;
    if chain.is_empty() {
        return Err(invalid("no certificate in the PEM"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| invalid("the private key is not PEM"))?;
    let provider = crypto_provider();
    let verifier = PinnedVerifier::new(pin, Arc::clone(&provider));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
