//! SHA-256 fingerprints of certificates.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The SHA-256 of a certificate's DER encoding. Displayed as `sha256:` followed by 64 hex
/// digits; parsing also accepts colon-separated pairs and upper case, as other tools print it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// Text that is not a SHA-256 fingerprint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a SHA-256 certificate fingerprint (expected 64 hex digits, optionally prefixed with `sha256:`)")]
pub struct FingerprintError(String);

impl Fingerprint {
    /// Fingerprints a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || FingerprintError(text.chars().take(120).collect());
        let trimmed = text.trim();
        let body = trimmed
            .strip_prefix("sha256:")
            .or_else(|| trimmed.strip_prefix("SHA256:"))
            .or_else(|| trimmed.strip_prefix("sha256="))
            .unwrap_or(trimmed);
        let digits: String = body.chars().filter(|&c| c != ':').collect();
        if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * index..2 * index + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let fingerprint = Fingerprint::of_der(b"certificate");
        let text = fingerprint.to_string();
        assert!(text.starts_with("sha256:"));
        assert_eq!(text.len(), 7 + 64);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fingerprint);
    }

    #[test]
    fn accepts_colon_pairs_and_upper_case() {
        let fingerprint = Fingerprint::of_der(b"x");
        let hex: String = fingerprint.to_string()[7..].to_uppercase();
        let pairs: Vec<String> = hex
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8(pair.to_vec()).unwrap())
            .collect();
        assert_eq!(pairs.join(":").parse::<Fingerprint>().unwrap(), fingerprint);
        assert_eq!(hex.parse::<Fingerprint>().unwrap(), fingerprint);
    }

    #[test]
    fn rejects_garbage() {
        assert!("sha256:1234".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
    }
}
