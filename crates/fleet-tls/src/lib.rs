//! Certificates and TLS configuration for BlendFleet.
//!
//! The manager owns a private certificate authority ([`CertificateAuthority`]). It signs the
//! manager's server certificate; clients pin the CA by its SHA-256 [`Fingerprint`] and verify
//! the server's chain and host name against it ([`pinned_client_config`]). The server presents
//! its chain including the CA certificate, so a client needs nothing but the fingerprint.

mod ca;
mod config;
mod fingerprint;
mod pin;

pub use ca::{client_request, CertificateAuthority, IssuedCertificate};
pub use config::{pinned_client_config, pinned_client_config_with_identity, server_config};
pub use fingerprint::{Fingerprint, FingerprintError};
pub use pin::{PinMismatch, PinnedVerifier};

/// Everything that can go wrong creating, loading or using certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to generate a certificate")]
    Generate(#[source] rcgen::Error),
    #[error("failed to read `{path}`")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write `{path}`")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` does not hold a usable {what}")]
    Invalid {
        path: std::path::PathBuf,
        what: &'static str,
    },
    #[error("the certificate signing request is not usable: {0}")]
    Request(String),
    #[error("the client certificate or key is not usable: {0}")]
    Identity(String),
    #[error("failed to build the TLS configuration")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider every configuration in BlendFleet uses.
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
