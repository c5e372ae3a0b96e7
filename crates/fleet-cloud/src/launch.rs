//! Starting an instance with fallback: the next configured zone when a zone has no capacity
//! or the quota is used up, then on-demand when that is allowed.

use crate::{CloudError, Instance, InstanceRequest, Provider};

/// What happened on the way to a started instance (or to giving up).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LaunchEvent {
    pub zone: String,
    pub spot: bool,
    /// The provider's code and message.
    pub refused: String,
}

/// The outcome of [`launch`].
#[derive(Debug)]
pub struct Launch {
    /// The instance, when one started.
    pub instance: Result<Instance, CloudError>,
    /// Refusals met before that, in order.
    pub events: Vec<LaunchEvent>,
}

/// Starts `request` in the provider's zones in order; when `request.spot` and every zone
/// refused for capacity or quota, tries the zones again on-demand if `on_demand_fallback`.
/// Errors other than capacity stop at once.
pub async fn launch(
    provider: &dyn Provider,
    request: &InstanceRequest,
    on_demand_fallback: bool,
) -> Launch {
    let mut events = Vec::new();
    if let Err(error) = request.validate() {
        return Launch {
            instance: Err(error),
            events,
        };
    }
    let zones = provider.zones();
    if zones.is_empty() {
        return Launch {
            instance: Err(CloudError::Invalid("no zones are configured".into())),
            events,
        };
    }
    let mut modes = vec![request.spot];
    if request.spot && on_demand_fallback {
        modes.push(false);
    }
    let mut last = None;
    for spot in modes {
        let attempt = InstanceRequest {
            spot,
            ..request.clone()
        };
        for zone in &zones {
            match provider.create(zone, &attempt).await {
                Ok(instance) => {
                    if !events.is_empty() {
                        tracing::warn!(name = %request.name, %zone, spot, refusals = events.len(), "started after falling back");
                    }
                    return Launch {
                        instance: Ok(instance),
                        events,
                    };
                }
                Err(error) if error.is_capacity() => {
                    tracing::warn!(name = %request.name, %zone, spot, %error, "capacity refused; trying the next option");
                    events.push(LaunchEvent {
                        zone: zone.clone(),
                        spot,
                        refused: error.to_string(),
                    });
                    last = Some(error);
                }
                Err(error) => {
                    return Launch {
                        instance: Err(error),
                        events,
                    }
                }
            }
        }
    }
    Launch {
        instance: Err(last.unwrap_or_else(|| CloudError::Invalid("nothing was tried".into()))),
        events,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::memory::MemoryProvider;
    use crate::Role;

    fn request() -> InstanceRequest {
        InstanceRequest {
            farm: "f".into(),
            name: "f-agent-1".into(),
            role: Role::Agent,
            machine_type: "m".into(),
            spot: true,
            startup_script: "#!/bin/sh\n".into(),
            settings: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn falls_back_to_the_next_zone_then_on_demand() {
        let provider = MemoryProvider::new(&["z1", "z2"]);
        provider.refuse("z1", true);
        let launched = launch(&provider, &request(), true).await;
        let instance = launched.instance.unwrap();
        assert_eq!((instance.zone.as_str(), instance.spot), ("z2", true));
        assert_eq!(launched.events.len(), 1);
        assert_eq!(launched.events[0].zone, "z1");

        provider.refuse("z2", true);
        let mut second = request();
        second.name = "f-agent-2".into();
        let launched = launch(&provider, &second, true).await;
        let instance = launched.instance.unwrap();
        assert_eq!((instance.zone.as_str(), instance.spot), ("z1", false));
        assert_eq!(launched.events.len(), 2);

        let mut third = request();
        third.name = "f-agent-3".into();
        let launched = launch(&provider, &third, false).await;
        assert!(launched.instance.unwrap_err().is_capacity());
        assert_eq!(launched.events.len(), 2);
    }

    #[tokio::test]
    async fn other_errors_stop_at_once() {
        let provider = MemoryProvider::new(&["z1", "z2"]);
        let mut bad = request();
        bad.name = "Bad Name".into();
        let launched = launch(&provider, &bad, true).await;
        assert!(matches!(launched.instance, Err(CloudError::Invalid(_))));
        assert!(provider.list("f").await.unwrap().is_empty());
    }
}
