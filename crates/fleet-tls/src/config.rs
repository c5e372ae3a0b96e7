//! rustls configurations for the manager and its clients.

use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};

use crate::{
    crypto_provider, CertificateAuthority, Fingerprint, IssuedCertificate, PinnedVerifier, TlsError,
};

/// TLS 1.3 and 1.2 only, as rustls allows by default.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The manager's server configuration. It presents `server` followed by the CA certificate, so
/// that clients which pin the CA fingerprint can find the CA in the chain.
pub fn server_config(
    ca: &CertificateAuthority,
    server: &IssuedCertificate,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = vec![server.cert_der.clone(), ca.cert_der().clone()];
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
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
