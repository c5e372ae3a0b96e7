//! The cloud configuration (TOML): which provider, how agents and the manager's instance
//! look, how the farm scales, when it shuts down, what it may spend. The CLI reads it from
//! the user's file; the manager reads the same text from its instance's metadata.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::prices::ProviderPrices;
use crate::types::validate_label_value;

/// Which cloud.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Aws,
    Gcp,
}

impl ProviderKind {
    /// `aws` or `gcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Gcp => "gcp",
        }
    }
}

/// Everything about a cloud farm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    pub provider: ProviderKind,
    /// Farm name: every instance is tagged or labelled `blendfleet-farm=<farm>`.
    pub farm: String,
    #[serde(default)]
    pub agents: AgentSettings,
    #[serde(default)]
    pub manager: ManagerSettings,
    #[serde(default)]
    pub scaling: Scaling,
    /// Stop starting agents for a job once its spend reaches this many US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_budget_usd: Option<f64>,
    /// Prices that replace the built-in table's.
    #[serde(default)]
    pub prices: ProviderPrices,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpSettings>,
}

/// The agents' instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// Machine type; empty means the provider's default (`c6i.4xlarge`, `n2-highcpu-16`).
    pub machine_type: String,
    /// Spot instances (terminated or deleted on interruption).
    pub spot: bool,
    /// When no zone has spot capacity, start on-demand instances instead.
    pub on_demand_fallback: bool,
    /// The Blender release agents install: a version the start-up scripts pin (`4.5`,
    /// `4.5.4`, `3.6`).
    pub blender_version: String,
    /// Where instances download the `blendfleet` binary, with its checksum as a
    /// `#sha256=HEX` suffix; empty: the image must already have it.
    pub binary_url: String,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            machine_type: String::new(),
            spot: true,
            on_demand_fallback: false,
            blender_version: "4.5".into(),
            binary_url: String::new(),
        }
    }
}

/// The manager's instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagerSettings {
    /// Machine type; empty means `t3.small` or `e2-small`.
    pub machine_type: String,
    /// The HTTPS port.
    pub port: u16,
    /// Address ranges (CIDR) allowed to reach the manager's port besides the agents: the
    /// user's own address, e.g. `203.0.113.7/32`. Empty: only agents can connect.
    pub client_cidrs: Vec<String>,
    /// The URL agents reach the manager at; empty: `https://<its private address>:<port>`.
    pub url: String,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        Self {
            machine_type: String::new(),
            port: 8443,
            client_cidrs: Vec::new(),
            url: String::new(),
        }
    }
}

/// How the farm grows and shrinks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scaling {
    /// Never more agents than this.
    pub max_agents: u32,
    /// One agent per this many samples of work left (at least one while work remains).
    pub samples_per_agent: u32,
    /// An agent with nothing to do this long is terminated.
    pub agent_idle_timeout_secs: u64,
    /// An instance that has not joined this long after it was created is terminated.
    pub agent_boot_timeout_secs: u64,
    /// With no job queued or running and no client request this long, the manager
    /// terminates its agents, then itself.
    pub manager_idle_timeout_secs: u64,
    /// Seconds between two passes of the scaler.
    pub interval_secs: u64,
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            max_agents: 4,
            samples_per_agent: 256,
            agent_idle_timeout_secs: 300,
            agent_boot_timeout_secs: 1200,
            manager_idle_timeout_secs: 1800,
            interval_secs: 10,
        }
    }
}

/// AWS settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    pub region: String,
    /// Availability zones to try in order.
    pub zones: Vec<String>,
    /// The machine image (a Debian 12 or Ubuntu 24.04 AMI of the region).
    pub ami: String,
    /// Subnet to use per zone; a zone without one uses the default VPC's subnet.
    #[serde(default)]
    pub subnets: BTreeMap<String, String>,
    /// VPC for the security groups; empty: the default VPC.
    #[serde(default)]
    pub vpc_id: String,
    /// Root disk size in GiB.
    #[serde(default = "default_disk_gb")]
    pub disk_gb: u32,
    /// Instance profile the manager's instance runs with (it needs the EC2 permissions in
    /// docs/cloud.md to start and stop agents).
    #[serde(default)]
    pub manager_instance_profile: String,
    /// Endpoint override (tests against moto_server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

/// GCP settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpSettings {
    pub project: String,
    /// Zones to try in order.
    pub zones: Vec<String>,
    /// Boot image.
    #[serde(default = "default_gcp_image")]
    pub image: String,
    /// Boot disk size in GB.
    #[serde(default = "default_disk_gb")]
    pub disk_gb: u32,
    /// VPC network.
    #[serde(default = "default_gcp_network")]
    pub network: String,
    /// Service account the manager's instance runs as (it needs the permissions in
    /// docs/cloud.md to start and delete agents); empty: the project's default.
    #[serde(default)]
    pub manager_service_account: String,
    /// Endpoint override (tests against a local server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Send no credentials (only with an endpoint override, for tests).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
}

fn default_disk_gb() -> u32 {
    30
}

fn default_gcp_image() -> String {
    "projects/debian-cloud/global/images/family/debian-12".into()
}

fn default_gcp_network() -> String {
    "global/networks/default".into()
}

/// The configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cloud config: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("cloud config: {0}")]
    Invalid(String),
}

impl CloudConfig {
    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// The start-up settings every instance of the farm gets, manager and agents alike (see
    /// provider-scripts/): `BLENDFLEET_PROVIDER`, `BLENDFLEET_BLENDER_VERSION`, and
    /// `BLENDFLEET_BINARY_URL` when `agents.binary_url` is set.
    pub fn instance_settings(&self) -> BTreeMap<String, String> {
        let mut settings = BTreeMap::from([
            (
                "BLENDFLEET_PROVIDER".to_owned(),
                self.provider.as_str().to_owned(),
            ),
            (
                "BLENDFLEET_BLENDER_VERSION".to_owned(),
                self.agents.blender_version.clone(),
            ),
        ]);
        if !self.agents.binary_url.is_empty() {
            settings.insert(
                "BLENDFLEET_BINARY_URL".to_owned(),
                self.agents.binary_url.clone(),
            );
        }
        settings
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        // Every field serialises to TOML (no maps with non-string keys, no NaN budgets:
        // validate refuses those).
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if let Err(error) = validate_label_value(&self.farm) {
            return invalid(error.to_string());
        }
        if self.scaling.max_agents == 0 {
            return invalid("scaling.max_agents must be at least 1".into());
        }
        if self.scaling.samples_per_agent == 0 {
            return invalid("scaling.samples_per_agent must be at least 1".into());
        }
        if self.scaling.interval_secs == 0 {
            return invalid("scaling.interval_secs must be at least 1".into());
        }
        if let Some(budget) = self.job_budget_usd {
            if !budget.is_finite() || budget <= 0.0 {
                return invalid(format!(
                    "job_budget_usd must be a positive number, not {budget}"
                ));
            }
        }
        for (machine, price) in self.prices.on_demand.iter().chain(&self.prices.spot) {
            if !price.is_finite() || *price < 0.0 {
                return invalid(format!("prices: `{machine}` must be a number ≥ 0"));
            }
        }
        for cidr in &self.manager.client_cidrs {
            if !is_cidr(cidr) {
                return invalid(format!(
                    "manager.client_cidrs: `{cidr}` is not an address range like 203.0.113.7/32"
                ));
            }
        }
        match self.provider {
            ProviderKind::Aws => {
                let Some(aws) = &self.aws else {
                    return invalid("provider is \"aws\" but there is no [aws] section".into());
                };
                if aws.region.is_empty() {
                    return invalid("aws.region is empty".into());
                }
                if aws.zones.is_empty() {
                    return invalid(
                        "aws.zones is empty: list at least one availability zone".into(),
                    );
                }
                if !aws.ami.starts_with("ami-") {
                    return invalid(format!("aws.ami `{}` is not an AMI id (ami-…)", aws.ami));
                }
            }
            ProviderKind::Gcp => {
                let Some(gcp) = &self.gcp else {
                    return invalid("provider is \"gcp\" but there is no [gcp] section".into());
                };
                if gcp.project.is_empty() {
                    return invalid("gcp.project is empty".into());
                }
                if gcp.zones.is_empty() {
                    return invalid("gcp.zones is empty: list at least one zone".into());
                }
                if gcp.anonymous && gcp.endpoint.is_none() {
                    return invalid("gcp.anonymous only works with gcp.endpoint (tests)".into());
                }
            }
        }
        Ok(())
    }

    /// The agents' machine type, with the provider's default filled in.
    pub fn agent_machine_type(&self) -> &str {
        match (self.agents.machine_type.as_str(), self.provider) {
            ("", ProviderKind::Aws) => "c6i.4xlarge",
            ("", ProviderKind::Gcp) => "n2-highcpu-16",
            (machine, _) => machine,
        }
    }

    /// The manager's machine type, with the provider's default filled in.
    pub fn manager_machine_type(&self) -> &str {
        match (self.manager.machine_type.as_str(), self.provider) {
            ("", ProviderKind::Aws) => "t3.small",
            ("", ProviderKind::Gcp) => "e2-small",
            (machine, _) => machine,
        }
    }

    /// The built-in price table with this configuration's overrides.
    pub fn price_table(&self) -> crate::PriceTable {
        crate::PriceTable::builtin().with_overrides(self.provider.as_str(), &self.prices)
    }
}

fn is_cidr(text: &str) -> bool {
    let Some((address, bits)) = text.split_once('/') else {
        return false;
    };
    match (address.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(bits)) => bits <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(bits)) => bits <= 128,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWS: &str = r#"
provider = "aws"
farm = "studio"
job_budget_usd = 5.0
[agents]
machine_type = "c6i.2xlarge"
[manager]
client_cidrs = ["203.0.113.7/32"]
[scaling]
max_agents = 8
[aws]
region = "us-east-1"
zones = ["us-east-1a", "us-east-1b"]
ami = "ami-0123456789abcdef0"
"#;

    #[test]
    fn parses_fills_defaults_and_round_trips() {
        let config = CloudConfig::parse(AWS).unwrap();
        assert_eq!(config.scaling.max_agents, 8);
        assert_eq!(config.scaling.agent_idle_timeout_secs, 300);
        assert_eq!(config.scaling.manager_idle_timeout_secs, 1800);
        assert!(config.agents.spot);
        assert_eq!(config.agent_machine_type(), "c6i.2xlarge");
        assert_eq!(config.manager_machine_type(), "t3.small");
        assert_eq!(config.aws.as_ref().unwrap().disk_gb, 30);
        assert_eq!(CloudConfig::parse(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn every_instance_gets_the_provider_the_blender_and_the_binary_when_set() {
        let mut config = CloudConfig::parse(AWS).unwrap();
        let settings = config.instance_settings();
        assert_eq!(settings["BLENDFLEET_PROVIDER"], "aws");
        assert_eq!(
            settings["BLENDFLEET_BLENDER_VERSION"],
            config.agents.blender_version
        );
        assert!(!settings.contains_key("BLENDFLEET_BINARY_URL"));
        config.agents.binary_url = "https://example.org/blendfleet#sha256=ab".into();
        assert_eq!(
            config.instance_settings()["BLENDFLEET_BINARY_URL"],
            "https://example.org/blendfleet#sha256=ab"
        );
    }

    #[test]
    fn mistakes_get_clear_errors() {
        let cases = [
            (
                AWS.replace("farm = \"studio\"", "farm = \"Studio!\""),
                "farm name",
            ),
            (
                AWS.replace("max_agents = 8", "max_agents = 0"),
                "max_agents",
            ),
            (AWS.replace("ami-0123456789abcdef0", "debian"), "aws.ami"),
            (AWS.replace("203.0.113.7/32", "my laptop"), "client_cidrs"),
            (AWS.replace("5.0", "-1.0"), "job_budget_usd"),
            (AWS.replace("[aws]", "[aws_typo]"), "unknown field"),
            (
                AWS.replace("provider = \"aws\"", "provider = \"gcp\""),
                "no [gcp] section",
            ),
            (
                AWS.replace("max_agents = 8", "max_agents = \"many\""),
                "invalid type",
            ),
        ];
        for (text, expected) in cases {
            let error = CloudConfig::parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
