//! `down`: terminate every instance of a farm, agents and manager, and wait until the
//! provider lists none.

use std::time::Duration;

use crate::{CloudError, Instance, InstanceState, Provider};

/// Terminates every instance tagged with the farm and waits up to `wait` for the provider to
/// list none alive. Returns what was terminated.
pub async fn sweep(
    provider: &dyn Provider,
    farm: &str,
    wait: Duration,
) -> Result<Vec<Instance>, CloudError> {
    let found: Vec<Instance> = provider
        .list(farm)
        .await?
        .into_iter()
        .filter(|instance| instance.state.is_alive())
        .collect();
    provider.terminate(&found).await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left: Vec<Instance> = provider
            .list(farm)
            .await?
            .into_iter()
            .filter(|i| !matches!(i.state, InstanceState::Terminated | InstanceState::Stopping))
            .collect();
        if left.is_empty() {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            let names: Vec<&str> = left.iter().map(|i| i.name.as_str()).collect();
            return Err(CloudError::Timeout(format!(
                "instances to go away: still listed: {}",
                names.join(", ")
            )));
        }
        // Instances created while sweeping (a scaler still running) are swept too.
        provider.terminate(&left).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
