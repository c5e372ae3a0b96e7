//! The provider a cloud config names, when this binary was built with its feature.

use std::sync::Arc;

use fleet_cloud::{CloudConfig, Provider, ProviderKind};

/// Builds the provider for `config`, or explains which build feature is missing.
pub async fn provider(config: &CloudConfig) -> anyhow::Result<Arc<dyn Provider>> {
    match config.provider {
        ProviderKind::Aws => aws(config).await,
        ProviderKind::Gcp => gcp(config).await,
    }
}

#[cfg(feature = "aws")]
async fn aws(config: &CloudConfig) -> anyhow::Result<Arc<dyn Provider>> {
    let settings = config
        .aws
        .clone()
        .ok_or_else(|| anyhow::anyhow!("provider is \"aws\" but there is no [aws] section"))?;
    Ok(Arc::new(
        fleet_cloud::aws::AwsProvider::new(
            settings,
            config.manager.port,
            config.manager.client_cidrs.clone(),
        )
        .await,
    ))
}

#[cfg(not(feature = "aws"))]
async fn aws(_config: &CloudConfig) -> anyhow::Result<Arc<dyn Provider>> {
    anyhow::bail!(
        "this blendfleet was built without AWS support; build it with \
         `cargo build --release -p blendfleet --features aws,gcp`"
    )
}

#[cfg(feature = "gcp")]
async fn gcp(config: &CloudConfig) -> anyhow::Result<Arc<dyn Provider>> {
    let settings = config
        .gcp
        .clone()
        .ok_or_else(|| anyhow::anyhow!("provider is \"gcp\" but there is no [gcp] section"))?;
    Ok(Arc::new(
        fleet_cloud::gcp::GcpProvider::new(
            settings,
            config.manager.port,
            config.manager.client_cidrs.clone(),
        )
        .await?,
    ))
}

#[cfg(not(feature = "gcp"))]
async fn gcp(_config: &CloudConfig) -> anyhow::Result<Arc<dyn Provider>> {
    anyhow::bail!(
        "this blendfleet was built without GCP support; build it with \
         `cargo build --release -p blendfleet --features aws,gcp`"
    )
}
