//! The agent's certificate and key, kept in its work directory between runs.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fleet_tls::Fingerprint;

use crate::AgentError;

/// The certificate the manager signed and the private key that never left this machine.
pub struct Identity {
    pub certificate_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("key", &"****")
            .finish_non_exhaustive()
    }
}

/// `identity/` in the work directory: `agent.pem`, `agent.key` (mode 0600) and `farm`, the
/// fingerprint of the CA that signed them, so that an identity is only used with its farm.
fn dir(work_dir: &Path) -> PathBuf {
    work_dir.join("identity")
}

impl Identity {
    /// The identity stored for the farm whose CA is `farm`, if there is one.
    pub fn load(work_dir: &Path, farm: Fingerprint) -> Result<Option<Self>, AgentError> {
        let dir = dir(work_dir);
        let read = |name: &str| -> Result<Option<String>, AgentError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(AgentError::Io { path, source }),
            }
        };
        let (Some(stored_farm), Some(certificate_pem), Some(key_pem)) =
            (read("farm")?, read("agent.pem")?, read("agent.key")?)
        else {
            return Ok(None);
        };
        if stored_farm.trim() != farm.to_string() {
            return Ok(None);
        }
        Ok(Some(Self {
            certificate_pem,
            key_pem,
        }))
    }

    /// Stores the identity for the farm whose CA is `farm`.
    pub fn save(&self, work_dir: &Path, farm: Fingerprint) -> Result<(), AgentError> {
        let dir = dir(work_dir);
        std::fs::create_dir_all(&dir).map_err(|source| AgentError::Io {
            path: dir.clone(),
            source,
        })?;
        write_private(&dir.join("agent.key"), self.key_pem.as_bytes())?;
        write_private(&dir.join("agent.pem"), self.certificate_pem.as_bytes())?;
        write_private(&dir.join("farm"), farm.to_string().as_bytes())
    }

    /// Forgets the stored identity (the manager no longer knows it).
    pub fn forget(work_dir: &Path) {
        let _ = std::fs::remove_dir_all(dir(work_dir));
    }
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), AgentError> {
    let error = |source| AgentError::Io {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("tmp");
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn stored_per_farm_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let farm = Fingerprint::of_der(b"farm ca");
        let other = Fingerprint::of_der(b"other ca");
        assert!(Identity::load(dir.path(), farm).unwrap().is_none());
        let identity = Identity {
            certificate_pem: "CERT".into(),
            key_pem: "KEY".into(),
        };
        identity.save(dir.path(), farm).unwrap();
        let loaded = Identity::load(dir.path(), farm).unwrap().unwrap();
        assert_eq!(loaded.key_pem, "KEY");
        assert!(Identity::load(dir.path(), other).unwrap().is_none());
        let mode = std::fs::metadata(dir.path().join("identity/agent.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{loaded:?}").contains("KEY"));
        Identity::forget(dir.path());
        assert!(Identity::load(dir.path(), farm).unwrap().is_none());
    }
}
