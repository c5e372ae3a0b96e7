//! Checking the credentials of users (basic auth), and generating secrets.

use std::collections::HashSet;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use fleet_protocol::Secret;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How many verified credentials the fast path remembers.
const VERIFIED_CACHE: usize = 16;

/// The user name and an argon2id hash of the password.
///
/// Argon2 is deliberately slow (tens of milliseconds), too slow to run on every request of
/// a client that polls. After one successful check, a keyed digest of the presented
/// credentials is remembered in memory; later requests with the same credentials compare
/// digests instead. The key is random per process, so the digests are useless elsewhere.
pub struct Credentials {
    user: String,
    hash: String,
    cache_key: [u8; 32],
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("hash", &"****")
            .finish_non_exhaustive()
    }
}

/// The stored credentials cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("the stored credentials are not an argon2 hash")]
pub struct UnreadableCredentials;

impl Credentials {
    /// Credentials for `user` with `password`, hashed with argon2id under a random salt.
    pub fn new(user: &str, password: &Secret) -> Self {
        let salt_bytes: [u8; 16] = rand::random();
        let hash = SaltString::encode_b64(&salt_bytes)
            .and_then(|salt| {
                Argon2::default()
                    .hash_password(password.expose().as_bytes(), &salt)
                    .map(|hash| hash.to_string())
            })
            // Hashing with the default parameters and a 16-byte salt cannot fail.
            .unwrap_or_default();
        Self::from_parts(user.to_owned(), hash)
    }

    fn from_parts(user: String, hash: String) -> Self {
        Self {
            user,
            hash,
            cache_key: rand::random(),
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Serialises as `user:$argon2id$…` for the settings table. The password is not in it.
    pub fn to_setting(&self) -> String {
        format!("{}:{}", self.user, self.hash)
    }

    /// Parses [`Credentials::to_setting`] output.
    pub fn from_setting(text: &str) -> Result<Self, UnreadableCredentials> {
        let (user, hash) = text.split_once(':').ok_or(UnreadableCredentials)?;
        PasswordHash::new(hash).map_err(|_| UnreadableCredentials)?;
        Ok(Self::from_parts(user.to_owned(), hash.to_owned()))
    }

    /// Checks an `Authorization` header value.
    pub fn check_header(&self, header: &str) -> bool {
        let Some((user, password)) = parse_basic(header) else {
            return false;
        };
        let digest = self.digest(&user, &password);
        let mut verified = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if verified
            .iter()
            .any(|known| bool::from(known.ct_eq(&digest)))
        {
            return true;
        }
        drop(verified);
        let user_ok: bool = Sha256::digest(user.as_bytes())
            .ct_eq(&Sha256::digest(self.user.as_bytes()))
            .into();
        // The password is checked even for a wrong user, so both cost the same time.
        let password_ok = PasswordHash::new(&self.hash).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        });
        if !(user_ok && password_ok) {
            return false;
        }
        verified = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if verified.len() >= VERIFIED_CACHE {
            verified.clear();
        }
        verified.insert(digest);
        true
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.cache_key);
        hasher.update(user.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }
}

fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A random password or token: 32 characters from `[A-Za-z0-9]` (≈190 bits), drawn from the
/// operating system's CSPRNG through rand's thread-local generator.
pub fn generate_secret() -> Secret {
    Secret::new(Alphanumeric.sample_string(&mut rand::rng(), 32))
}

/// The hex SHA-256 of a join credential, as stored. Credentials have ≈190 bits of entropy,
/// so a fast hash is enough to make the stored form useless to a reader of the database.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    #[test]
    fn accepts_only_the_right_pair() {
        let credentials = Credentials::new("admin", &Secret::new("s3cret:with:colons"));
        assert!(credentials.check_header(&header("admin", "s3cret:with:colons")));
        // Again, from the cache.
        assert!(credentials.check_header(&header("admin", "s3cret:with:colons")));
        assert!(!credentials.check_header(&header("admin", "wrong")));
        assert!(!credentials.check_header(&header("root", "s3cret:with:colons")));
        assert!(!credentials.check_header("Bearer abc"));
        assert!(!credentials.check_header("Basic !!!"));
    }

    #[test]
    fn setting_round_trip_keeps_the_password_out() {
        let credentials = Credentials::new("admin", &Secret::new("pw-123"));
        let text = credentials.to_setting();
        assert!(text.starts_with("admin:$argon2id$"), "{text}");
        assert!(!text.contains("pw-123"));
        let parsed = Credentials::from_setting(&text).unwrap();
        assert!(parsed.check_header(&header("admin", "pw-123")));
        assert!(!parsed.check_header(&header("admin", "pw-124")));
        assert!(!format!("{credentials:?}").contains("argon2"));
        assert!(Credentials::from_setting("admin:0011:2233").is_err());
    }

    #[test]
    fn generated_secrets_differ() {
        let first = generate_secret();
        assert_eq!(first.expose().len(), 32);
        assert_ne!(first, generate_secret());
    }
}
