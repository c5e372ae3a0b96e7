//! Checking the credentials of users (basic auth) and agents (bearer secrets).

use base64::Engine;
use fleet_protocol::Secret;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The user name and a salted hash of the password.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    salt: [u8; 16],
    hash: [u8; 32],
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("hash", &"****")
            .finish()
    }
}

impl Credentials {
    /// Credentials for `user` with `password`, under a fresh random salt.
    pub fn new(user: &str, password: &Secret) -> Self {
        let salt: [u8; 16] = rand::random();
        Self {
            user: user.to_owned(),
            salt,
            hash: salted(&salt, password.expose()),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Serialises as `user:salt_hex:hash_hex` for the settings table.
    pub fn to_setting(&self) -> String {
        format!(
            "{}:{}:{}",
            self.user,
            hex::encode(self.salt),
            hex::encode(self.hash)
        )
    }

    /// Parses [`Credentials::to_setting`] output.
    pub fn from_setting(text: &str) -> Option<Self> {
        let mut parts = text.rsplitn(3, ':');
        let hash = hex::decode(parts.next()?).ok()?.try_into().ok()?;
        let salt = hex::decode(parts.next()?).ok()?.try_into().ok()?;
        let user = parts.next()?.to_owned();
        Some(Self { user, salt, hash })
    }

    /// Checks an `Authorization` header value. The comparison takes the same time whether
    /// the user, the password, or both are wrong.
    pub fn check_header(&self, header: &str) -> bool {
        let Some(encoded) = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        let user_ok = Sha256::digest(user.as_bytes()).ct_eq(&Sha256::digest(self.user.as_bytes()));
        let password_ok = salted(&self.salt, password).ct_eq(&self.hash);
        bool::from(user_ok & password_ok)
    }
}

fn salted(salt: &[u8], password: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    hasher.finalize().into()
}

/// A random password or token: 32 characters from `[A-Za-z0-9]` (≈190 bits), drawn from the
/// operating system's CSPRNG through rand's thread-local generator.
pub fn generate_secret() -> Secret {
    Secret::new(Alphanumeric.sample_string(&mut rand::rng(), 32))
}

/// The hex SHA-256 of a bearer secret, as stored.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares a presented token with the expected one in constant time.
pub fn token_matches(expected: &Secret, presented: &Secret) -> bool {
    let expected = Sha256::digest(expected.expose().as_bytes());
    let presented = Sha256::digest(presented.expose().as_bytes());
    bool::from(expected.ct_eq(&presented))
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
        assert!(!credentials.check_header(&header("admin", "wrong")));
        assert!(!credentials.check_header(&header("root", "s3cret:with:colons")));
        assert!(!credentials.check_header("Bearer abc"));
        assert!(!credentials.check_header("Basic !!!"));
    }

    #[test]
    fn setting_round_trip_keeps_the_password_out() {
        let credentials = Credentials::new("admin", &Secret::new("pw-123"));
        let text = credentials.to_setting();
        assert!(!text.contains("pw-123"));
        let parsed = Credentials::from_setting(&text).unwrap();
        assert!(parsed.check_header(&header("admin", "pw-123")));
        assert!(!format!("{credentials:?}").contains(&hex::encode(credentials.hash)));
    }

    #[test]
    fn generated_secrets_differ() {
        let first = generate_secret();
        assert_eq!(first.expose().len(), 32);
        assert_ne!(first, generate_secret());
    }
}
