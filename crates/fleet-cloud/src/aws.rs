//! AWS EC2 through aws-sdk-ec2: one-time spot instances that terminate on interruption,
//! tagged with the farm and role, user data = `export` preamble + start-up script; the
//! manager's security group admits its port only from the agents' group (and the
//! configured client ranges); agents need no inbound rule.

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, IamInstanceProfileSpecification,
    InstanceInterruptionBehavior, InstanceMarketOptionsRequest, InstanceStateName, InstanceType,
    IpPermission, IpRange, MarketType, Placement, ResourceType, ShutdownBehavior, SpotInstanceType,
    SpotMarketOptions, Tag, TagSpecification, UserIdGroupPair, VolumeType,
};
use aws_sdk_ec2::Client;
use base64::Engine;

use crate::config::AwsSettings;
use crate::{
    CloudError, Instance, InstanceRequest, InstanceState, Provider, Role, FARM_LABEL, ROLE_LABEL,
};

/// Error codes that mean "no room here": another zone or on-demand may work.
const CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "MaxSpotInstanceCountExceeded",
    "SpotMaxPriceTooLow",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "Unsupported",
];

/// EC2 in one region.
pub struct AwsProvider {
    client: Client,
    settings: AwsSettings,
    /// The manager's port, opened to the agents' security group.
    manager_port: u16,
    client_cidrs: Vec<String>,
}

impl AwsProvider {
    /// A provider using aws-config's default credential chain (environment, profile, SSO,
    /// instance profile), the configured region and, for tests, an endpoint override.
    pub async fn new(settings: AwsSettings, manager_port: u16, client_cidrs: Vec<String>) -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(settings.region.clone()))
            .load()
            .await;
        let mut builder = aws_sdk_ec2::config::Builder::from(&shared);
        if let Some(url) = &settings.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        Self {
            client: Client::from_conf(builder.build()),
            settings,
            manager_port,
            client_cidrs,
        }
    }

    /// The underlying client (tests read instance attributes with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn api<E: ProvideErrorMetadata + std::fmt::Debug>(call: &'static str, error: &E) -> CloudError {
        CloudError::Api {
            provider: "aws",
            call,
            message: describe(error),
        }
    }

    async fn vpc_id(&self) -> Result<String, CloudError> {
        if !self.settings.vpc_id.is_empty() {
            return Ok(self.settings.vpc_id.clone());
        }
        let answer = self
            .client
            .describe_vpcs()
            .filters(Filter::builder().name("is-default").values("true").build())
            .send()
            .await
            .map_err(|e| Self::api("DescribeVpcs", &e))?;
        answer
            .vpcs()
            .iter()
            .find_map(|vpc| vpc.vpc_id().map(str::to_owned))
            .ok_or_else(|| {
                CloudError::Invalid(
                    "the region has no default VPC; set aws.vpc_id and aws.subnets".into(),
                )
            })
    }

    async fn find_group(&self, vpc: &str, name: &str) -> Result<Option<String>, CloudError> {
        let answer = self
            .client
            .describe_security_groups()
            .filters(Filter::builder().name("group-name").values(name).build())
            .filters(Filter::builder().name("vpc-id").values(vpc).build())
            .send()
            .await
            .map_err(|e| Self::api("DescribeSecurityGroups", &e))?;
        Ok(answer
            .security_groups()
            .iter()
            .find_map(|group| group.group_id().map(str::to_owned)))
    }

    async fn ensure_group(
        &self,
        vpc: &str,
        farm: &str,
        role: Role,
    ) -> Result<(String, bool), CloudError> {
        let name = group_name(farm, role);
        if let Some(id) = self.find_group(vpc, &name).await? {
            return Ok((id, false));
        }
        let created = self
            .client
            .create_security_group()
            .group_name(&name)
            .description(format!("BlendFleet farm {farm}: {}", role.as_str()))
            .vpc_id(vpc)
            .tag_specifications(tags(ResourceType::SecurityGroup, farm, role, &name))
            .send()
            .await
            .map_err(|e| Self::api("CreateSecurityGroup", &e))?;
        let id = created.group_id().unwrap_or_default().to_owned();
        Ok((id, true))
    }

    /// The security group for a role, looked up by name in the farm's VPC.
    async fn group_for(&self, farm: &str, role: Role) -> Result<String, CloudError> {
        let vpc = self.vpc_id().await?;
        self.find_group(&vpc, &group_name(farm, role))
            .await?
            .ok_or_else(|| {
                CloudError::Invalid(format!(
                    "security group {} is missing; prepare the farm first",
                    group_name(farm, role)
                ))
            })
    }

    async fn root_device(&self) -> Option<String> {
        let answer = self
            .client
            .describe_images()
            .image_ids(&self.settings.ami)
            .send()
            .await
            .ok()?;
        answer
            .images()
            .first()
            .and_then(|image| image.root_device_name().map(str::to_owned))
    }
}

/// EC2 takes at most 16 KiB of user data (before base64).
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// The user data as sent: the text, or gzip of it when the text is over EC2's limit
/// (cloud-init unpacks gzip'd user data by itself).
pub fn encode_user_data(text: &str) -> Result<Vec<u8>, CloudError> {
    if text.len() <= USER_DATA_LIMIT {
        return Ok(text.as_bytes().to_vec());
    }
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let packed = encoder
        .write_all(text.as_bytes())
        .and_then(|()| encoder.finish())
        .map_err(|error| CloudError::Invalid(format!("cannot compress the user data: {error}")))?;
    if packed.len() > USER_DATA_LIMIT {
        return Err(CloudError::Invalid(format!(
            "the start-up script and settings are {} bytes, {} gzip'd: over EC2's 16 KiB user data",
            text.len(),
            packed.len()
        )));
    }
    Ok(packed)
}

/// Reverses [`encode_user_data`].
pub fn decode_user_data(bytes: &[u8]) -> Option<String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut text)
            .ok()?;
        return Some(text);
    }
    String::from_utf8(bytes.to_vec()).ok()
}

/// `blendfleet-<farm>-agent` or `blendfleet-<farm>-manager`.
pub fn group_name(farm: &str, role: Role) -> String {
    format!("blendfleet-{farm}-{}", role.as_str())
}

fn tags(kind: ResourceType, farm: &str, role: Role, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .tags(Tag::builder().key("Name").value(name).build())
        .tags(Tag::builder().key(FARM_LABEL).value(farm).build())
        .tags(Tag::builder().key(ROLE_LABEL).value(role.as_str()).build())
        .build()
}

fn describe<E: ProvideErrorMetadata + std::fmt::Debug>(error: &E) -> String {
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => format!("{error:?}"),
    }
}

fn state(name: Option<&InstanceStateName>) -> InstanceState {
    match name {
        Some(InstanceStateName::Pending) => InstanceState::Pending,
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(InstanceStateName::ShuttingDown | InstanceStateName::Stopping) => {
            InstanceState::Stopping
        }
        Some(InstanceStateName::Stopped) => InstanceState::Stopped,
        Some(InstanceStateName::Terminated) => InstanceState::Terminated,
        Some(other) => InstanceState::Other(other.as_str().to_owned()),
        None => InstanceState::Other("unknown".into()),
    }
}

fn convert(instance: &aws_sdk_ec2::types::Instance) -> Instance {
    let tag = |key: &str| {
        instance
            .tags()
            .iter()
            .find(|tag| tag.key() == Some(key))
            .and_then(|tag| tag.value().map(str::to_owned))
    };
    Instance {
        id: instance.instance_id().unwrap_or_default().to_owned(),
        name: tag("Name").unwrap_or_default(),
        zone: instance
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_owned(),
        state: state(instance.state().and_then(|s| s.name())),
        machine_type: instance
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        created_at_ms: instance.launch_time().and_then(|t| t.to_millis().ok()),
        spot: instance
            .instance_lifecycle()
            .is_some_and(|l| l.as_str() == "spot"),
        role: tag(ROLE_LABEL).as_deref().and_then(Role::parse),
        public_address: instance.public_ip_address().map(str::to_owned),
        private_address: instance.private_ip_address().map(str::to_owned),
    }
}

#[async_trait]
impl Provider for AwsProvider {
    fn kind(&self) -> &'static str {
        "aws"
    }

    fn zones(&self) -> Vec<String> {
        self.settings.zones.clone()
    }

    async fn prepare(&self, farm: &str) -> Result<(), CloudError> {
        let vpc = self.vpc_id().await?;
        let (agents, _) = self.ensure_group(&vpc, farm, Role::Agent).await?;
        let (manager, created) = self.ensure_group(&vpc, farm, Role::Manager).await?;
        if created {
            let port = i32::from(self.manager_port);
            let mut rule = IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(port)
                .to_port(port)
                .user_id_group_pairs(UserIdGroupPair::builder().group_id(&agents).build());
            for cidr in &self.client_cidrs {
                rule = rule.ip_ranges(
                    IpRange::builder()
                        .cidr_ip(cidr)
                        .description("BlendFleet client")
                        .build(),
                );
            }
            self.client
                .authorize_security_group_ingress()
                .group_id(&manager)
                .ip_permissions(rule.build())
                .send()
                .await
                .map_err(|e| Self::api("AuthorizeSecurityGroupIngress", &e))?;
        }
        Ok(())
    }

    async fn create(&self, zone: &str, request: &InstanceRequest) -> Result<Instance, CloudError> {
        request.validate()?;
        let group = self.group_for(&request.farm, request.role).await?;
        let user_data = base64::engine::general_purpose::STANDARD
            .encode(encode_user_data(&request.user_data())?);
        let mut call = self
            .client
            .run_instances()
            .image_id(&self.settings.ami)
            .instance_type(InstanceType::from(request.machine_type.as_str()))
            .min_count(1)
            .max_count(1)
            .user_data(user_data)
            .placement(Placement::builder().availability_zone(zone).build())
            .security_group_ids(group)
            .tag_specifications(tags(
                ResourceType::Instance,
                &request.farm,
                request.role,
                &request.name,
            ))
            .tag_specifications(tags(
                ResourceType::Volume,
                &request.farm,
                request.role,
                &request.name,
            ));
        if let Some(subnet) = self.settings.subnets.get(zone) {
            call = call.subnet_id(subnet);
        }
        if let Some(device) = self.root_device().await {
            call = call.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(device)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(i32::try_from(self.settings.disk_gb).unwrap_or(30))
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        if request.spot {
            call = call.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .build(),
                    )
                    .build(),
            );
        } else {
            // A `poweroff` inside the instance ends its billing for good.
            call = call.instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate);
        }
        if request.role == Role::Manager && !self.settings.manager_instance_profile.is_empty() {
            call = call.iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(&self.settings.manager_instance_profile)
                    .build(),
            );
        }
        let answer = call.send().await.map_err(|error| {
            let code = error.code().unwrap_or_default().to_owned();
            if CAPACITY_CODES.contains(&code.as_str()) {
                CloudError::Capacity {
                    zone: zone.to_owned(),
                    code,
                    message: error.message().unwrap_or_default().to_owned(),
                }
            } else {
                Self::api("RunInstances", &error)
            }
        })?;
        let mut instance =
            answer
                .instances()
                .first()
                .map(convert)
                .ok_or_else(|| CloudError::Api {
                    provider: "aws",
                    call: "RunInstances",
                    message: "the answer lists no instance".into(),
                })?;
        // RunInstances answers before tags are readable everywhere; fill in what was asked.
        instance.name.clone_from(&request.name);
        instance.role = Some(request.role);
        instance.spot = request.spot;
        Ok(instance)
    }

    async fn list(&self, farm: &str) -> Result<Vec<Instance>, CloudError> {
        let mut instances = Vec::new();
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{FARM_LABEL}"))
                    .values(farm)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .values("shutting-down")
                    .values("stopping")
                    .values("stopped")
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Self::api("DescribeInstances", &e))?;
            for reservation in page.reservations() {
                instances.extend(reservation.instances().iter().map(convert));
            }
        }
        Ok(instances)
    }

    async fn terminate(&self, instances: &[Instance]) -> Result<(), CloudError> {
        if instances.is_empty() {
            return Ok(());
        }
        self.client
            .terminate_instances()
            .set_instance_ids(Some(instances.iter().map(|i| i.id.clone()).collect()))
            .send()
            .await
            .map_err(|e| Self::api("TerminateInstances", &e))?;
        Ok(())
    }

    async fn console_output(&self, instance: &Instance) -> Result<String, CloudError> {
        let answer = self
            .client
            .get_console_output()
            .instance_id(&instance.id)
            .latest(true)
            .send()
            .await
            .map_err(|e| Self::api("GetConsoleOutput", &e))?;
        let encoded = answer.output().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .unwrap_or_default();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
