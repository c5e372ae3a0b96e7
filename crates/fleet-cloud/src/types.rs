//! Provider-independent instances, requests and errors.

use std::collections::BTreeMap;

/// Tag (AWS) or label (GCP) naming the farm an instance belongs to.
pub const FARM_LABEL: &str = "blendfleet-farm";
/// Tag or label naming an instance's role: `agent` or `manager`.
pub const ROLE_LABEL: &str = "blendfleet-role";

/// What an instance does in the farm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Agent,
    Manager,
}

impl Role {
    /// `agent` or `manager`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Manager => "manager",
        }
    }

    /// Parses a tag value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "agent" => Some(Self::Agent),
            "manager" => Some(Self::Manager),
            _ => None,
        }
    }
}

/// Where an instance is in its life.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Being created or booting.
    Pending,
    Running,
    /// Shutting down or being deleted.
    Stopping,
    /// Stopped (it keeps its disk, which may bill).
    Stopped,
    Terminated,
    /// A state this crate does not know, as the provider spells it.
    Other(String),
}

impl InstanceState {
    /// Whether the instance may still be billing for compute.
    pub fn is_alive(&self) -> bool {
        !matches!(self, Self::Terminated)
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pending => f.write_str("pending"),
            Self::Running => f.write_str("running"),
            Self::Stopping => f.write_str("stopping"),
            Self::Stopped => f.write_str("stopped"),
            Self::Terminated => f.write_str("terminated"),
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// One instance, whatever the provider.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    /// The provider's id (AWS `i-…`, GCP the numeric id as text).
    pub id: String,
    /// The instance name (AWS `Name` tag); agents join under this name.
    pub name: String,
    /// Availability zone or zone.
    pub zone: String,
    pub state: InstanceState,
    pub machine_type: String,
    /// Creation time, milliseconds since the Unix epoch, when the provider says.
    pub created_at_ms: Option<i64>,
    /// Spot (preemptible) rather than on-demand.
    pub spot: bool,
    /// `blendfleet-role`, when the instance carries it.
    pub role: Option<Role>,
    /// Public IPv4 address, once it has one.
    pub public_address: Option<String>,
    /// Address inside the VPC, once it has one.
    pub private_address: Option<String>,
}

/// What to start.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceRequest {
    /// Farm name: goes into the `blendfleet-farm` tag or label.
    pub farm: String,
    /// Instance name, a valid GCP name (lower-case letters, digits, `-`; at most 63).
    pub name: String,
    pub role: Role,
    pub machine_type: String,
    /// Spot (terminated or deleted on interruption) or on-demand.
    pub spot: bool,
    /// The start-up script (AWS user data, GCP `startup-script`).
    pub startup_script: String,
    /// `BLENDFLEET_*` settings: GCP metadata keys; on AWS a preamble of `export` lines
    /// before the script.
    pub settings: BTreeMap<String, String>,
}

impl InstanceRequest {
    /// The AWS user data: `#!/bin/bash`, one `export KEY='value'` line per setting, then the
    /// script (its own shebang line dropped).
    pub fn user_data(&self) -> String {
        let mut text = String::from("#!/bin/bash\n");
        for (key, value) in &self.settings {
            text.push_str(&format!("export {key}={}\n", shell_quote(value)));
        }
        let body = match self.startup_script.strip_prefix("#!") {
            Some(rest) => rest.split_once('\n').map_or("", |(_, body)| body),
            None => &self.startup_script,
        };
        text.push_str(body);
        text
    }

    /// Checks names and settings before anything is sent to a provider.
    pub fn validate(&self) -> Result<(), CloudError> {
        validate_name(&self.name)?;
        validate_label_value(&self.farm)?;
        for key in self.settings.keys() {
            let valid = key.starts_with("BLENDFLEET_")
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(CloudError::Invalid(format!(
                    "setting `{key}` must be named BLENDFLEET_ followed by upper-case letters, digits or `_`"
                )));
            }
        }
        Ok(())
    }
}

/// Quotes a value for a POSIX shell: single quotes, with embedded ones closed and escaped.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Instance names: what GCP accepts (`[a-z]([-a-z0-9]{0,61}[a-z0-9])?`), used on AWS too so
/// that names mean the same everywhere.
pub fn validate_name(name: &str) -> Result<(), CloudError> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(CloudError::Invalid(format!(
            "`{name}` is not a valid instance name: use 1 to 63 lower-case letters, digits and `-`, starting with a letter and not ending with `-`"
        )))
    }
}

/// Farm names become label values: at most 63 lower-case letters, digits, `-` or `_`.
pub fn validate_label_value(value: &str) -> Result<(), CloudError> {
    let valid = !value.is_empty()
        && value.len() <= 40
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && value.as_bytes()[0].is_ascii_lowercase();
    if valid {
        Ok(())
    } else {
        Err(CloudError::Invalid(format!(
            "`{value}` is not a valid farm name: use 1 to 40 lower-case letters, digits and `-`, starting with a letter"
        )))
    }
}

/// A new instance name: `<prefix>-<8 random hex digits>`.
pub fn instance_name(prefix: &str) -> String {
    let suffix: u32 = rand_u32();
    format!("{prefix}-{suffix:08x}")
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS; names need uniqueness, not secrecy.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() as u32
}

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The zone has no capacity for this machine type, or a quota is used up: worth trying
    /// another zone, or on-demand.
    #[error("no capacity in {zone}: {code}: {message}")]
    Capacity {
        zone: String,
        /// The provider's code (`InsufficientInstanceCapacity`, `QUOTA_EXCEEDED`, …).
        code: String,
        message: String,
    },
    /// The request is wrong; retrying elsewhere will not help.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Any other failure of the provider's API.
    #[error("{provider} API call `{call}` failed: {message}")]
    Api {
        provider: &'static str,
        call: &'static str,
        message: String,
    },
    /// Waiting for an operation took too long.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

impl CloudError {
    /// Whether another zone or on-demand might succeed.
    pub fn is_capacity(&self) -> bool {
        matches!(self, Self::Capacity { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> InstanceRequest {
        InstanceRequest {
            farm: "studio".into(),
            name: "studio-agent-0001abcd".into(),
            role: Role::Agent,
            machine_type: "c6i.large".into(),
            spot: true,
            startup_script: "#!/usr/bin/env bash\nset -eu\necho hi\n".into(),
            settings: BTreeMap::from([
                ("BLENDFLEET_JOIN_TOKEN".into(), "a'b".into()),
                ("BLENDFLEET_MANAGER".into(), "https://10.0.0.2:8443".into()),
            ]),
        }
    }

    #[test]
    fn user_data_is_exports_then_the_script() {
        let text = request().user_data();
        assert_eq!(
            text,
            "#!/bin/bash\nexport BLENDFLEET_JOIN_TOKEN='a'\\''b'\nexport BLENDFLEET_MANAGER='https://10.0.0.2:8443'\nset -eu\necho hi\n"
        );
    }

    #[test]
    fn bad_names_and_settings_are_refused() {
        assert!(request().validate().is_ok());
        for name in ["", "Agent", "1agent", "agent-", "a_b", &"a".repeat(64)] {
            let mut bad = request();
            bad.name = name.into();
            assert!(bad.validate().is_err(), "{name:?}");
        }
        let mut bad = request();
        bad.settings.insert("PATH".into(), "/tmp".into());
        assert!(bad.validate().unwrap_err().to_string().contains("PATH"));
        let mut bad = request();
        bad.farm = "My Farm".into();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn generated_names_are_valid_and_differ() {
        let a = instance_name("studio-agent");
        validate_name(&a).unwrap();
        assert_ne!(a, instance_name("studio-agent"));
    }
}
