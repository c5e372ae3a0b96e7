//! The manager's certificate authority.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::{Fingerprint, TlsError};

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
const LEAF_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Certificates start being valid a little in the past, so that clocks that lag slightly behind
/// the manager's still accept them.
const BACKDATE: Duration = Duration::from_secs(24 * 3600);

/// A private certificate authority: its certificate and the key that signs with it.
pub struct CertificateAuthority {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate signed by the CA, with its private key.
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    key_pem: String,
    key_der: Vec<u8>,
}

impl IssuedCertificate {
    /// The private key, PEM (PKCS#8). Write it only to files with mode 0600.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The private key for rustls.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("fingerprint", &Fingerprint::of_der(&self.cert_der))
            .field("key", &"****")
            .finish()
    }
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("fingerprint", &self.fingerprint())
            .field("key", &"****")
            .finish()
    }
}

impl CertificateAuthority {
    /// Generates a new CA with an ECDSA P-256 key.
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_LIFETIME);
        let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA from `dir`, or generates one and stores it there (key with mode 0600).
    /// Returns the CA and whether it was created now.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<(Self, bool), TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            return Ok((Self::load(&cert_path, &key_path)?, false));
        }
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let ca = Self::generate(common_name)?;
        write_private(&key_path, ca.issuer.key().serialize_pem().as_bytes())?;
        write_private(&cert_path, ca.cert_pem.as_bytes())?;
        Ok((ca, true))
    }

    /// Loads a CA certificate and key from PEM files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let invalid = |path: &Path, what| TlsError::Invalid {
            path: path.to_owned(),
            what,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|_| invalid(key_path, "private key"))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|_| invalid(cert_path, "CA certificate"))?;
        let cert_der =
            first_certificate_der(&cert_pem).ok_or_else(|| invalid(cert_path, "CA certificate"))?;
        Ok(Self {
            cert_der,
            cert_pem,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The fingerprint clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.cert_der)
    }

    /// Issues a server certificate valid for every name in `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[String]) -> Result<IssuedCertificate, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name("BlendFleet manager");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(TlsError::Generate),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// Issues a client certificate whose subject common name is `common_name`.
    pub fn issue_client(&self, common_name: &str) -> Result<IssuedCertificate, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// Signs an agent's certificate signing request. Only the public key is taken from the
    /// request (its signature is checked); subject, usage and validity are the CA's choice:
    /// `common_name`, client authentication only. Returns the certificate, PEM.
    pub fn sign_client_request(
        &self,
        request_pem: &str,
        common_name: &str,
    ) -> Result<String, TlsError> {
        let request = CertificateSigningRequestParams::from_pem(request_pem)
            .map_err(|error| TlsError::Request(error.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params, LEAF_LIFETIME);
        params.use_authority_key_identifier_extension = true;
        let signing = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        };
        let cert = signing
            .signed_by(&self.issuer)
            .map_err(TlsError::Generate)?;
        Ok(cert.pem())
    }

    fn sign(&self, mut params: CertificateParams) -> Result<IssuedCertificate, TlsError> {
        set_validity(&mut params, LEAF_LIFETIME);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(TlsError::Generate)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }
}

/// A fresh key pair and a certificate signing request for it: what an agent sends when it
/// joins. Returns `(request_pem, private_key_pem)`; the key never leaves the agent.
pub fn client_request(common_name: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate().map_err(TlsError::Generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    let request = params.serialize_request(&key).map_err(TlsError::Generate)?;
    let pem = request.pem().map_err(TlsError::Generate)?;
    Ok((pem, key.serialize_pem()))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "BlendFleet");
    name.push(DnType::CommonName, common_name);
    name
}

fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes a file readable by its owner only. The file is written beside its final name and
/// renamed, so a crash never leaves a half-written key behind.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let temporary: PathBuf = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)
}

fn first_certificate_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn load_or_create_persists_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = CertificateAuthority::load_or_create(dir.path(), "test").unwrap();
        assert!(created);
        let (second, created) = CertificateAuthority::load_or_create(dir.path(), "test").unwrap();
        assert!(!created);
        assert_eq!(first.fingerprint(), second.fingerprint());
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_key_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_create(dir.path(), "test").unwrap();
        std::fs::write(dir.path().join(CA_KEY_FILE), "garbage").unwrap();
        let error = CertificateAuthority::load_or_create(dir.path(), "test").unwrap_err();
        assert!(error.to_string().contains("ca.key"), "{error}");
    }

    #[test]
    fn client_requests_are_signed_with_the_cas_subject_choice() {
        let ca = CertificateAuthority::generate("test").unwrap();
        let (request, key) = client_request("whatever the agent says").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let pem = ca
            .sign_client_request(&request, "blendfleet-agent-7")
            .unwrap();
        let der = first_certificate_der(&pem).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let subject = parsed.subject().to_string();
        assert!(subject.contains("blendfleet-agent-7"), "{subject}");
        let (_, ca_parsed) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(parsed.issuer(), ca_parsed.subject());
        assert!(ca
            .sign_client_request(
                "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n",
                "x"
            )
            .is_err());
    }

    #[test]
    fn issued_certificates_chain_to_the_ca() {
        let ca = CertificateAuthority::generate("test").unwrap();
        let server = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&server.cert_der).unwrap();
        let (_, ca_parsed) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(parsed.issuer(), ca_parsed.subject());
        assert!(format!("{server:?}").contains("****"));
        assert!(!format!("{server:?}").contains("PRIVATE"));
    }
}
