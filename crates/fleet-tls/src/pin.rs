//! Server verification against a pinned CA fingerprint.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::Fingerprint;

/// Trusts exactly one CA: the certificate in the server's chain whose SHA-256 equals the pin.
///
/// The server sends its CA certificate along with its own. The verifier picks the CA out of
/// the chain by fingerprint and then runs the ordinary WebPKI checks (signature chain,
/// validity period, key usage, host name) with that CA as the only root. A server whose chain
/// holds no certificate with the pinned fingerprint is refused.
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

/// The server's chain holds no certificate with the pinned fingerprint.
///
/// `Debug` prints the same sentence as `Display`, because rustls formats the causes of
/// certificate errors with `Debug` and this message should reach the user readable.
#[derive(thiserror::Error)]
#[error("the manager's certificate authority is not the pinned one (pinned {pinned}, presented {presented})")]
pub struct PinMismatch {
    /// What the client expected.
    pub pinned: Fingerprint,
    /// The last certificate of the presented chain, usually its CA.
    pub presented: String,
}

impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl PinnedVerifier {
    /// A verifier that trusts the CA with fingerprint `pin`.
    pub fn new(pin: Fingerprint, provider: Arc<CryptoProvider>) -> Self {
        Self { pin, provider }
    }

    fn mismatch(&self, chain: &[CertificateDer<'_>]) -> rustls::Error {
        let presented = chain.last().map_or_else(
            || "no CA certificate".to_owned(),
            |cert| Fingerprint::of_der(cert).to_string(),
        );
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            PinMismatch {
                pinned: self.pin,
                presented,
            },
        ))))
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|cert| Fingerprint::of_der(cert) == self.pin)
        else {
            return Err(self.mismatch(intermediates));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|error| rustls::Error::General(error.to_string()))?;
        let rest: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|cert| *cert != ca)
            .cloned()
            .collect();
        webpki.verify_server_cert(end_entity, &rest, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
