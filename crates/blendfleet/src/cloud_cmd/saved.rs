//! The connection to a cloud manager, saved by `cloud up` so later commands reconnect:
//! `~/.config/blendfleet/cloud/<farm>.toml`, mode 0600 (it holds the password).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What `cloud up` learned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedFarm {
    pub farm: String,
    pub provider: String,
    /// The manager's instance.
    pub instance_id: String,
    pub instance_name: String,
    pub zone: String,
    /// `https://ADDRESS:PORT`.
    pub url: String,
    pub user: String,
    pub password: String,
    /// `sha256:…`, read through the cloud's API.
    pub ca_fingerprint: String,
    /// The connection string other commands take (`--manager`).
    pub connection: String,
}

/// `$XDG_CONFIG_HOME/blendfleet` or `~/.config/blendfleet`.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .context("neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(base.join("blendfleet"))
}

/// Where a farm's connection is saved.
pub fn path(farm: &str) -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("cloud").join(format!("{farm}.toml")))
}

/// Writes a file readable by its owner only (created 0600, replaced atomically).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("creating `{}`", temporary.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing `{}`", path.display()))?;
    Ok(())
}

impl SavedFarm {
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = path(&self.farm)?;
        write_private(&path, &toml::to_string(self)?)?;
        Ok(path)
    }

    /// The saved connection of a farm, if `cloud up` saved one.
    pub fn load(farm: &str) -> anyhow::Result<Option<Self>> {
        let path = path(farm)?;
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading `{}`", path.display()))?;
        Ok(Some(toml::from_str(&text).with_context(|| {
            format!("parsing `{}`", path.display())
        })?))
    }

    pub fn remove(farm: &str) -> anyhow::Result<()> {
        let path = path(farm)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error).with_context(|| format!("removing `{}`", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud/farm.toml");
        write_private(&path, "one").unwrap();
        write_private(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
