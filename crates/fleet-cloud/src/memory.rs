//! An in-memory provider: instances are records in a map. The manager's scaler tests use it;
//! it can refuse capacity in chosen zones to exercise the fallback.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::{CloudError, Instance, InstanceRequest, InstanceState, Provider};

/// A created instance and the request it was created from.
#[derive(Clone, Debug)]
pub struct Record {
    pub instance: Instance,
    pub request: InstanceRequest,
}

/// Instances in memory.
#[derive(Debug, Default)]
pub struct MemoryProvider {
    zones: Vec<String>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    records: BTreeMap<String, Record>,
    /// (zone, spot) pairs that answer with a capacity error.
    refused: HashSet<(String, bool)>,
    console: BTreeMap<String, String>,
    /// Creation time stamped on new instances; the real clock when unset.
    clock_ms: Option<i64>,
}

impl MemoryProvider {
    /// A provider with these zones, in order.
    pub fn new(zones: &[&str]) -> Self {
        Self {
            zones: zones.iter().map(|zone| (*zone).to_owned()).collect(),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `zone` refuse spot (`spot = true`) or on-demand instances for capacity.
    pub fn refuse(&self, zone: &str, spot: bool) {
        self.lock().refused.insert((zone.to_owned(), spot));
    }

    /// Stamps instances created from now on with this creation time (tests that pass their
    /// own times to the scaler).
    pub fn set_clock(&self, ms: i64) {
        self.lock().clock_ms = Some(ms);
    }

    /// Every instance ever created, terminated ones included.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.values().cloned().collect()
    }

    /// Sets what `console_output` returns for an instance.
    pub fn set_console(&self, id: &str, text: &str) {
        self.lock().console.insert(id.to_owned(), text.to_owned());
    }

    /// Marks every pending instance running, as a cloud does once they boot.
    pub fn boot_all(&self) {
        for record in self.lock().records.values_mut() {
            if record.instance.state == InstanceState::Pending {
                record.instance.state = InstanceState::Running;
            }
        }
    }
}

#[async_trait]
impl Provider for MemoryProvider {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn zones(&self) -> Vec<String> {
        self.zones.clone()
    }

    async fn create(&self, zone: &str, request: &InstanceRequest) -> Result<Instance, CloudError> {
        request.validate()?;
        let mut state = self.lock();
        if state.refused.contains(&(zone.to_owned(), request.spot)) {
            return Err(CloudError::Capacity {
                zone: zone.to_owned(),
                code: "ZONE_RESOURCE_POOL_EXHAUSTED".into(),
                message: "no capacity (simulated)".into(),
            });
        }
        state.next_id += 1;
        let instance = Instance {
            id: format!("mem-{}", state.next_id),
            name: request.name.clone(),
            zone: zone.to_owned(),
            state: InstanceState::Pending,
            machine_type: request.machine_type.clone(),
            created_at_ms: Some(state.clock_ms.unwrap_or_else(now_ms)),
            spot: request.spot,
            role: Some(request.role),
            public_address: Some(format!("198.51.100.{}", state.next_id % 250)),
            private_address: Some(format!("10.0.0.{}", state.next_id % 250)),
        };
        state.records.insert(
            instance.id.clone(),
            Record {
                instance: instance.clone(),
                request: request.clone(),
            },
        );
        Ok(instance)
    }

    async fn list(&self, farm: &str) -> Result<Vec<Instance>, CloudError> {
        Ok(self
            .lock()
            .records
            .values()
            .filter(|record| record.request.farm == farm && record.instance.state.is_alive())
            .map(|record| record.instance.clone())
            .collect())
    }

    async fn terminate(&self, instances: &[Instance]) -> Result<(), CloudError> {
        let mut state = self.lock();
        for instance in instances {
            if let Some(record) = state.records.get_mut(&instance.id) {
                record.instance.state = InstanceState::Terminated;
            }
        }
        Ok(())
    }

    async fn console_output(&self, instance: &Instance) -> Result<String, CloudError> {
        Ok(self
            .lock()
            .console
            .get(&instance.id)
            .cloned()
            .unwrap_or_default())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
