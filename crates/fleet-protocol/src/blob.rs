//! Content addresses of uploaded files.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The SHA-256 of a file's bytes, as 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlobHash(String);

/// A string that is not a SHA-256 hex digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a SHA-256 hash (expected 64 hex digits)")]
pub struct BlobHashError(String);

impl BlobHash {
    /// Wraps a digest computed by the caller.
    pub fn from_digest(digest: &[u8; 32]) -> Self {
        use fmt::Write;
        let mut text = String::with_capacity(64);
        for byte in digest {
            let _ = write!(text, "{byte:02x}");
        }
        Self(text)
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BlobHash {
    type Err = BlobHashError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
        if valid {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            let shown: String = text.chars().take(80).collect();
            Err(BlobHashError(shown))
        }
    }
}

impl TryFrom<String> for BlobHash {
    type Error = BlobHashError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<BlobHash> for String {
    fn from(hash: BlobHash) -> Self {
        hash.0
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which of these blobs does the manager lack?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingBlobsRequest {
    /// Hashes the client is about to reference.
    pub hashes: Vec<BlobHash>,
}

/// The subset of the asked hashes that must be uploaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingBlobsResponse {
    /// Hashes the manager does not have, in the order asked.
    pub missing: Vec<BlobHash>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lowercases() {
        let upper = "A".repeat(64);
        let hash: BlobHash = upper.parse().unwrap();
        assert_eq!(hash.as_str(), "a".repeat(64));
    }

    #[test]
    fn rejects_bad_text() {
        assert!("abc".parse::<BlobHash>().is_err());
        assert!("g".repeat(64).parse::<BlobHash>().is_err());
        assert!("../etc/passwd".parse::<BlobHash>().is_err());
        let json = serde_json::from_str::<BlobHash>("\"xyz\"");
        assert!(json.is_err());
    }

    #[test]
    fn from_digest_is_hex() {
        let hash = BlobHash::from_digest(&[0xab; 32]);
        assert_eq!(hash.as_str(), "ab".repeat(32));
    }
}
