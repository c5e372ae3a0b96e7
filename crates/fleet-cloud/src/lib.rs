//! Cloud providers for BlendFleet: start spot agents and the manager's instance, list the
//! instances of a farm, terminate them, and read a manager's CA fingerprint through the
//! provider's authenticated API.
//!
//! [`Provider`] is the interface; [`memory::MemoryProvider`] is an in-memory provider for
//! tests of the manager's scaler; `aws` (feature `aws`, EC2 through aws-sdk-ec2) and `gcp`
//! (feature `gcp`, Compute Engine through google-cloud-compute-v1) talk to real clouds.
//! [`launch::launch`] adds the fallback from a zone without capacity to the next zone, and
//! from spot to on-demand.

pub mod config;
pub mod launch;
pub mod memory;
pub mod prices;
mod sweep;
mod types;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "gcp")]
pub mod gcp;
#[cfg(feature = "aws")]
#[doc(hidden)]
pub mod testing;

pub use config::{CloudConfig, ConfigError, ProviderKind};
pub use launch::{launch, Launch, LaunchEvent};
pub use prices::{PriceError, PriceTable};
pub use sweep::sweep;
pub use types::*;

use async_trait::async_trait;

/// A cloud that runs BlendFleet instances.
#[async_trait]
pub trait Provider: Send + Sync {
    /// `aws`, `gcp` or `memory`.
    fn kind(&self) -> &'static str;

    /// The zones to try, in order of preference.
    fn zones(&self) -> Vec<String>;

    /// Prepares what instances need before the first one starts (AWS security groups, GCP
    /// firewall rule). Idempotent.
    async fn prepare(&self, _farm: &str) -> Result<(), CloudError> {
        Ok(())
    }

    /// Starts one instance in `zone`.
    async fn create(&self, zone: &str, request: &InstanceRequest) -> Result<Instance, CloudError>;

    /// The instances tagged or labelled with `blendfleet-farm=<farm>`, not yet terminated.
    async fn list(&self, farm: &str) -> Result<Vec<Instance>, CloudError>;

    /// Terminates (AWS) or deletes (GCP) instances. Already gone is not an error.
    async fn terminate(&self, instances: &[Instance]) -> Result<(), CloudError>;

    /// The serial console output of an instance, as far as the provider has it.
    async fn console_output(&self, instance: &Instance) -> Result<String, CloudError>;

    /// The manager's CA fingerprint, read through the provider's authenticated API (never
    /// by connecting to the instance). `None` while it has not been published yet.
    async fn ca_fingerprint(&self, instance: &Instance) -> Result<Option<String>, CloudError> {
        let output = self.console_output(instance).await?;
        Ok(parse_fingerprint(&output))
    }
}

/// The console line a manager prints once its CA exists.
pub const FINGERPRINT_MARKER: &str = "BLENDFLEET-CA-FINGERPRINT";

/// Finds the last `BLENDFLEET-CA-FINGERPRINT sha256:<64 hex>` line in console output.
pub fn parse_fingerprint(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let rest = &line[line.find(FINGERPRINT_MARKER)? + FINGERPRINT_MARKER.len()..];
        let value = rest.split_whitespace().next()?;
        let hex = value.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_fingerprint_line_among_boot_noise() {
        let hex = "ab".repeat(32);
        let output = format!(
            "[  1.0] systemd[1]: Started\nblendfleet-manager[42]: {FINGERPRINT_MARKER} sha256:{}\r\nmore\n",
            hex.to_uppercase()
        );
        assert_eq!(parse_fingerprint(&output), Some(format!("sha256:{hex}")));
        assert_eq!(parse_fingerprint("nothing here"), None);
        assert_eq!(
            parse_fingerprint(&format!("{FINGERPRINT_MARKER} sha256:abc")),
            None,
            "a short value is not a fingerprint"
        );
        assert_eq!(
            parse_fingerprint(&format!("{FINGERPRINT_MARKER} md5:{hex}")),
            None
        );
    }
}
