//! GCP Compute Engine through google-cloud-compute-v1: Spot VMs (`provisioningModel: SPOT`,
//! `instanceTerminationAction: DELETE`), labels for farm and role, the start-up script and
//! the `BLENDFLEET_*` settings as metadata, zone operations waited for.

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_compute_v1::client::{Firewalls, Instances, ZoneOperations};
use google_cloud_compute_v1::model::{
    self, access_config, firewall, instance, metadata, operation, scheduling, AccessConfig,
    AttachedDisk, AttachedDiskInitializeParams, Firewall, Metadata, NetworkInterface, Scheduling,
    ServiceAccount, Tags,
};

use crate::config::GcpSettings;
use crate::{
    parse_fingerprint, CloudError, Instance, InstanceRequest, InstanceState, Provider, Role,
    FARM_LABEL, ROLE_LABEL,
};

/// Codes (in operation errors or error messages) that mean "no room here".
const CAPACITY_CODES: &[&str] = &[
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "QUOTA_EXCEEDED",
    "quotaExceeded",
];
/// The guest attribute the manager's start-up script writes.
pub const FINGERPRINT_ATTRIBUTE: &str = "blendfleet/ca-fingerprint";
/// How long an operation may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Compute Engine in one project.
pub struct GcpProvider {
    instances: Instances,
    operations: ZoneOperations,
    firewalls: Firewalls,
    settings: GcpSettings,
    manager_port: u16,
    client_cidrs: Vec<String>,
}

fn api(call: &'static str, error: &google_cloud_gax::error::Error) -> CloudError {
    CloudError::Api {
        provider: "gcp",
        call,
        message: error_text(error),
    }
}

fn error_text(error: &google_cloud_gax::error::Error) -> String {
    match (error.status(), error.http_payload()) {
        (Some(status), _) => format!("{error}: {}", status.message),
        (None, Some(payload)) => format!("{error}: {}", String::from_utf8_lossy(payload)),
        (None, None) => error.to_string(),
    }
}

fn capacity_code(text: &str) -> Option<&'static str> {
    CAPACITY_CODES
        .iter()
        .copied()
        .find(|code| text.contains(code))
}

/// The last path segment of a resource URL (`…/zones/us-central1-a` → `us-central1-a`).
fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

impl GcpProvider {
    /// A provider using Application Default Credentials, or none (`anonymous`, tests), and
    /// the configured endpoint.
    pub async fn new(
        settings: GcpSettings,
        manager_port: u16,
        client_cidrs: Vec<String>,
    ) -> Result<Self, CloudError> {
        let build_error = |error: google_cloud_gax::client_builder::Error| CloudError::Api {
            provider: "gcp",
            call: "client",
            message: error.to_string(),
        };
        macro_rules! client {
            ($ty:ty) => {{
                let mut builder = <$ty>::builder();
                if let Some(endpoint) = &settings.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if settings.anonymous {
                    builder = builder.with_credentials(
                        google_cloud_auth::credentials::anonymous::Builder::new().build(),
                    );
                }
                builder.build().await.map_err(build_error)?
            }};
        }
        Ok(Self {
            instances: client!(Instances),
            operations: client!(ZoneOperations),
            firewalls: client!(Firewalls),
            settings,
            manager_port,
            client_cidrs,
        })
    }

    /// Waits for a zone operation; an error inside it becomes a [`CloudError`].
    async fn wait(
        &self,
        zone: &str,
        operation: model::Operation,
        call: &'static str,
    ) -> Result<(), CloudError> {
        let deadline = tokio::time::Instant::now() + OPERATION_TIMEOUT;
        let mut current = operation;
        loop {
            if current.status == Some(operation::Status::Done) {
                return operation_result(zone, &current, call);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CloudError::Timeout(format!("{call} in {zone}")));
            }
            let name = current.name.clone().unwrap_or_default();
            current = self
                .operations
                .wait()
                .set_project(&self.settings.project)
                .set_zone(zone)
                .set_operation(name)
                .send()
                .await
                .map_err(|e| api("zoneOperations.wait", &e))?;
        }
    }

    fn network_tag(farm: &str, role: Role) -> String {
        format!("blendfleet-{farm}-{}", role.as_str())
    }

    fn body(&self, zone: &str, request: &InstanceRequest) -> model::Instance {
        let mut items = vec![metadata::Items::new()
            .set_key("startup-script")
            .set_value(&request.startup_script)];
        items.extend(
            request
                .settings
                .iter()
                .map(|(key, value)| metadata::Items::new().set_key(key).set_value(value)),
        );
        if request.role == Role::Manager {
            // The manager publishes its CA fingerprint as a guest attribute.
            items.push(
                metadata::Items::new()
                    .set_key("enable-guest-attributes")
                    .set_value("TRUE"),
            );
        }
        let scheduling = if request.spot {
            Scheduling::new()
                .set_provisioning_model(scheduling::ProvisioningModel::Spot)
                .set_instance_termination_action(scheduling::InstanceTerminationAction::Delete)
                .set_automatic_restart(false)
                .set_on_host_maintenance(scheduling::OnHostMaintenance::Terminate)
        } else {
            Scheduling::new().set_provisioning_model(scheduling::ProvisioningModel::Standard)
        };
        let mut body = model::Instance::new()
            .set_name(&request.name)
            .set_machine_type(format!(
                "zones/{zone}/machineTypes/{}",
                request.machine_type
            ))
            .set_labels([
                (FARM_LABEL.to_owned(), request.farm.clone()),
                (ROLE_LABEL.to_owned(), request.role.as_str().to_owned()),
            ])
            .set_tags(Tags::new().set_items([Self::network_tag(&request.farm, request.role)]))
            .set_metadata(Metadata::new().set_items(items))
            .set_disks([AttachedDisk::new()
                .set_boot(true)
                .set_auto_delete(true)
                .set_initialize_params(
                    AttachedDiskInitializeParams::new()
                        .set_source_image(&self.settings.image)
                        .set_disk_size_gb(i64::from(self.settings.disk_gb)),
                )])
            .set_network_interfaces([NetworkInterface::new()
                .set_network(&self.settings.network)
                .set_access_configs([AccessConfig::new()
                    .set_name("External NAT")
                    .set_type(access_config::Type::OneToOneNat)])])
            .set_scheduling(scheduling);
        if request.role == Role::Manager {
            let email = if self.settings.manager_service_account.is_empty() {
                "default"
            } else {
                &self.settings.manager_service_account
            };
            body = body.set_service_accounts([ServiceAccount::new()
                .set_email(email)
                .set_scopes(["https://www.googleapis.com/auth/cloud-platform"])]);
        }
        body
    }
}

fn operation_result(
    zone: &str,
    operation: &model::Operation,
    call: &'static str,
) -> Result<(), CloudError> {
    let Some(error) = &operation.error else {
        return Ok(());
    };
    let mut message = String::new();
    for entry in &error.errors {
        let code = entry.code.clone().unwrap_or_default();
        let text = entry.message.clone().unwrap_or_default();
        if let Some(capacity) = capacity_code(&code).or_else(|| capacity_code(&text)) {
            return Err(CloudError::Capacity {
                zone: zone.to_owned(),
                code: capacity.to_owned(),
                message: text,
            });
        }
        message.push_str(&format!("{code}: {text}; "));
    }
    if message.is_empty() {
        return Ok(());
    }
    Err(CloudError::Api {
        provider: "gcp",
        call,
        message: message.trim_end_matches("; ").to_owned(),
    })
}

fn state(status: Option<&instance::Status>) -> InstanceState {
    match status.and_then(|s| s.name()) {
        Some("PROVISIONING" | "STAGING" | "PENDING") => InstanceState::Pending,
        Some("RUNNING") => InstanceState::Running,
        Some("STOPPING" | "SUSPENDING" | "DEPROVISIONING") => InstanceState::Stopping,
        // TERMINATED is GCP's word for stopped: the disk stays and bills.
        Some("STOPPED" | "TERMINATED" | "SUSPENDED") => InstanceState::Stopped,
        Some(other) => InstanceState::Other(other.to_owned()),
        None => InstanceState::Other("unknown".into()),
    }
}

fn parse_time(text: &str) -> Option<i64> {
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

fn convert(instance: &model::Instance) -> Instance {
    let scheduling = instance.scheduling.as_ref();
    Instance {
        id: instance.id.map(|id| id.to_string()).unwrap_or_default(),
        name: instance.name.clone().unwrap_or_default(),
        zone: last_segment(instance.zone.as_deref().unwrap_or_default()).to_owned(),
        state: state(instance.status.as_ref()),
        machine_type: last_segment(instance.machine_type.as_deref().unwrap_or_default()).to_owned(),
        created_at_ms: instance.creation_timestamp.as_deref().and_then(parse_time),
        spot: scheduling.is_some_and(|s| {
            s.provisioning_model == Some(scheduling::ProvisioningModel::Spot)
                || s.preemptible == Some(true)
        }),
        role: instance
            .labels
            .get(ROLE_LABEL)
            .and_then(|role| Role::parse(role)),
        public_address: instance
            .network_interfaces
            .iter()
            .flat_map(|nic| &nic.access_configs)
            .find_map(|config| config.nat_ip.clone()),
        private_address: instance
            .network_interfaces
            .first()
            .and_then(|nic| nic.network_ip.clone()),
    }
}

#[async_trait]
impl Provider for GcpProvider {
    fn kind(&self) -> &'static str {
        "gcp"
    }

    fn zones(&self) -> Vec<String> {
        self.settings.zones.clone()
    }

    async fn prepare(&self, farm: &str) -> Result<(), CloudError> {
        let name = format!("blendfleet-{farm}-manager");
        let mut rule = Firewall::new()
            .set_name(&name)
            .set_network(&self.settings.network)
            .set_direction(firewall::Direction::Ingress)
            .set_allowed([firewall::Allowed::new()
                .set_ip_protocol("tcp")
                .set_ports([self.manager_port.to_string()])])
            .set_source_tags([Self::network_tag(farm, Role::Agent)])
            .set_target_tags([Self::network_tag(farm, Role::Manager)]);
        if !self.client_cidrs.is_empty() {
            rule = rule.set_source_ranges(self.client_cidrs.clone());
        }
        match self
            .firewalls
            .insert()
            .set_project(&self.settings.project)
            .set_body(rule)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.http_status_code() == Some(409) => Ok(()),
            Err(error) => Err(api("firewalls.insert", &error)),
        }
    }

    async fn create(&self, zone: &str, request: &InstanceRequest) -> Result<Instance, CloudError> {
        request.validate()?;
        let operation = self
            .instances
            .insert()
            .set_project(&self.settings.project)
            .set_zone(zone)
            .set_body(self.body(zone, request))
            .send()
            .await
            .map_err(|error| {
                let text = error_text(&error);
                match capacity_code(&text) {
                    Some(code) => CloudError::Capacity {
                        zone: zone.to_owned(),
                        code: code.to_owned(),
                        message: text,
                    },
                    None => api("instances.insert", &error),
                }
            })?;
        self.wait(zone, operation, "instances.insert").await?;
        let created = self
            .instances
            .get()
            .set_project(&self.settings.project)
            .set_zone(zone)
            .set_instance(&request.name)
            .send()
            .await
            .map_err(|e| api("instances.get", &e))?;
        Ok(convert(&created))
    }

    async fn list(&self, farm: &str) -> Result<Vec<Instance>, CloudError> {
        let mut found = Vec::new();
        for zone in &self.settings.zones {
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .instances
                    .list()
                    .set_project(&self.settings.project)
                    .set_zone(zone)
                    .set_filter(format!("labels.{FARM_LABEL} = \"{farm}\""))
                    .set_or_clear_page_token(token.take())
                    .send()
                    .await
                    .map_err(|e| api("instances.list", &e))?;
                found.extend(page.items.iter().map(convert));
                match page.next_page_token {
                    Some(next) if !next.is_empty() => token = Some(next),
                    _ => break,
                }
            }
        }
        Ok(found)
    }

    async fn terminate(&self, instances: &[Instance]) -> Result<(), CloudError> {
        for instance in instances {
            let answer = self
                .instances
                .delete()
                .set_project(&self.settings.project)
                .set_zone(&instance.zone)
                .set_instance(&instance.name)
                .send()
                .await;
            match answer {
                Ok(operation) => {
                    self.wait(&instance.zone, operation, "instances.delete")
                        .await?
                }
                Err(error) if error.http_status_code() == Some(404) => {}
                Err(error) => return Err(api("instances.delete", &error)),
            }
        }
        Ok(())
    }

    async fn console_output(&self, instance: &Instance) -> Result<String, CloudError> {
        let output = self
            .instances
            .get_serial_port_output()
            .set_project(&self.settings.project)
            .set_zone(&instance.zone)
            .set_instance(&instance.name)
            .set_port(1)
            .send()
            .await
            .map_err(|e| api("instances.getSerialPortOutput", &e))?;
        Ok(output.contents.unwrap_or_default())
    }

    async fn ca_fingerprint(&self, instance: &Instance) -> Result<Option<String>, CloudError> {
        let attribute = self
            .instances
            .get_guest_attributes()
            .set_project(&self.settings.project)
            .set_zone(&instance.zone)
            .set_instance(&instance.name)
            .set_variable_key(FINGERPRINT_ATTRIBUTE)
            .send()
            .await;
        if let Ok(attribute) = attribute {
            if let Some(value) = attribute.variable_value {
                let line = format!("{} {}", crate::FINGERPRINT_MARKER, value.trim());
                if let Some(fingerprint) = parse_fingerprint(&line) {
                    return Ok(Some(fingerprint));
                }
            }
        }
        Ok(parse_fingerprint(&self.console_output(instance).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_urls_and_times() {
        assert_eq!(
            last_segment("https://www.googleapis.com/compute/v1/projects/p/zones/europe-west1-b"),
            "europe-west1-b"
        );
        assert_eq!(parse_time("1970-01-01T00:00:01.500-00:00"), Some(1500));
        assert_eq!(
            parse_time("2024-05-01T10:00:00.000-07:00"),
            Some(1_714_582_800_000)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(
            capacity_code("Quota exceeded: QUOTA_EXCEEDED for CPUS"),
            Some("QUOTA_EXCEEDED")
        );
        assert_eq!(capacity_code("permission denied"), None);
    }
}
