//! Finding the manager a command should talk to.

use std::path::PathBuf;

use anyhow::Context;
use fleet_client::ConnectionSettings;
use fleet_protocol::Secret;
use serde::Deserialize;

use crate::cli::RemoteArgs;

/// The password for a configured manager.
pub const ENV_PASSWORD: &str = "BLENDFLEET_PASSWORD";

/// `~/.config/blendfleet/client.toml`: a configured manager.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    /// Connection string, as `blendfleet manager` prints it.
    manager: String,
    /// Password; `BLENDFLEET_PASSWORD` wins.
    password: Option<String>,
}

fn client_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("blendfleet").join("client.toml"))
}

/// The configured manager: `--manager`/`BLENDFLEET_MANAGER`, else the client file. `None`
/// when neither is set.
pub fn configured(remote: &RemoteArgs) -> anyhow::Result<Option<ConnectionSettings>> {
    let env_password = std::env::var(ENV_PASSWORD).ok().map(Secret::new);
    let (text, file_password) = if let Some(text) = &remote.manager {
        (text.clone(), None)
    } else if let Some(path) = client_file().filter(|path| path.exists()) {
        let content = std::fs::read_to_string(&path)
            .with_context(|| format!("reading `{}`", path.display()))?;
        let file: ClientFile =
            toml::from_str(&content).with_context(|| format!("parsing `{}`", path.display()))?;
        (file.manager, file.password.map(Secret::new))
    } else {
        return Ok(None);
    };
    let password = env_password
        .or(file_password)
        .with_context(|| format!("a manager is configured but no password: set {ENV_PASSWORD}"))?;
    let settings = ConnectionSettings::from_connection_string(&text, password)?;
    Ok(Some(settings))
}

/// The configured manager, or an error that says how to configure one.
pub fn required(remote: &RemoteArgs) -> anyhow::Result<fleet_client::Client> {
    let settings = configured(remote)?.context(
        "no manager configured: pass --manager (or set BLENDFLEET_MANAGER) with the \
         connection string `blendfleet manager` printed, and set BLENDFLEET_PASSWORD",
    )?;
    Ok(fleet_client::Client::new(&settings)?)
}
