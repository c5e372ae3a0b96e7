//! AWS EC2 through the real aws-sdk-ec2, against moto_server.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, InstanceAttributeName};
use base64::Engine;
use fleet_cloud::aws::{group_name, AwsProvider};
use fleet_cloud::config::AwsSettings;
use fleet_cloud::testing::MotoServer;
use fleet_cloud::{instance_name, launch, sweep, InstanceRequest, Provider, Role};

async fn provider(moto: &MotoServer) -> AwsProvider {
    let settings = AwsSettings {
        disk_gb: 40,
        ..moto.aws_settings(&["us-east-1a", "us-east-1b"], &moto.image_id().await)
    };
    AwsProvider::new(settings, 8443, vec!["203.0.113.7/32".into()]).await
}

fn agent_request(farm: &str, index: usize) -> InstanceRequest {
    let name = instance_name(&format!("{farm}-agent"));
    InstanceRequest {
        farm: farm.into(),
        name: name.clone(),
        role: Role::Agent,
        machine_type: "c6i.large".into(),
        spot: true,
        startup_script: "#!/bin/bash\nset -eu\necho \"agent $BLENDFLEET_AGENT_NAME\"\n".into(),
        settings: BTreeMap::from([
            ("BLENDFLEET_MANAGER".into(), "https://10.0.0.5:8443".into()),
            ("BLENDFLEET_JOIN_TOKEN".into(), format!("token-{index}")),
            ("BLENDFLEET_AGENT_NAME".into(), name),
            ("BLENDFLEET_PROVIDER".into(), "aws".into()),
        ]),
    }
}

#[tokio::test]
async fn spot_agents_with_tags_user_data_and_security_groups_then_a_sweep() {
    let moto = MotoServer::start().await;
    let aws = provider(&moto).await;
    let farm = "motofarm";
    aws.prepare(farm).await.unwrap();
    aws.prepare(farm).await.unwrap(); // idempotent

    // The manager's group admits its port from the agents' group and the client range only.
    let groups = aws
        .client()
        .describe_security_groups()
        .filters(
            Filter::builder()
                .name("group-name")
                .values(group_name(farm, Role::Manager))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let manager_group = &groups.security_groups()[0];
    let agents_group = aws
        .client()
        .describe_security_groups()
        .filters(
            Filter::builder()
                .name("group-name")
                .values(group_name(farm, Role::Agent))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let agents_group = &agents_group.security_groups()[0];
    assert!(
        agents_group.ip_permissions().is_empty(),
        "agents need no inbound rule"
    );
    let rules = manager_group.ip_permissions();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        (rules[0].from_port(), rules[0].to_port()),
        (Some(8443), Some(8443))
    );
    assert_eq!(
        rules[0].user_id_group_pairs()[0].group_id(),
        agents_group.group_id()
    );
    assert_eq!(rules[0].ip_ranges()[0].cidr_ip(), Some("203.0.113.7/32"));

    let mut requests: Vec<InstanceRequest> = (0..3).map(|i| agent_request(farm, i)).collect();
    // A start-up script over EC2's 16 KiB user data limit goes gzip'd (cloud-init unpacks it).
    requests[2]
        .startup_script
        .push_str(&"# padding the script past 16 KiB\n".repeat(600));
    assert!(requests[2].user_data().len() > fleet_cloud::aws::USER_DATA_LIMIT);
    for request in &requests {
        let launched = launch(&aws, request, false).await;
        let instance = launched.instance.unwrap();
        assert!(instance.spot && instance.role == Some(Role::Agent));
        assert_eq!(instance.zone, "us-east-1a");
    }
    // Another farm's instance must survive this farm's sweep.
    let other = agent_request("otherfarm", 9);
    aws.prepare("otherfarm").await.unwrap();
    launch(&aws, &other, false).await.instance.unwrap();

    let listed = aws.list(farm).await.unwrap();
    assert_eq!(listed.len(), 3);
    for request in &requests {
        let instance = listed.iter().find(|i| i.name == request.name).unwrap();
        assert_eq!(instance.machine_type, "c6i.large");
        assert!(instance.spot, "instance lifecycle is spot");
        assert_eq!(instance.role, Some(Role::Agent));
        let described = aws
            .client()
            .describe_instances()
            .instance_ids(&instance.id)
            .send()
            .await
            .unwrap();
        let raw = &described.reservations()[0].instances()[0];
        let tags: BTreeMap<&str, &str> = raw
            .tags()
            .iter()
            .map(|t| (t.key().unwrap(), t.value().unwrap()))
            .collect();
        assert_eq!(tags["blendfleet-farm"], farm);
        assert_eq!(tags["blendfleet-role"], "agent");
        assert_eq!(tags["Name"], request.name);
        assert_eq!(raw.security_groups()[0].group_id(), agents_group.group_id());
        let attribute = aws
            .client()
            .describe_instance_attribute()
            .instance_id(&instance.id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let encoded = attribute.user_data().and_then(|v| v.value()).unwrap();
        let user_data = fleet_cloud::aws::decode_user_data(
            &base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(user_data, request.user_data());
        assert!(user_data.contains(&format!(
            "export BLENDFLEET_AGENT_NAME='{}'\n",
            request.name
        )));
    }

    let swept = sweep(&aws, farm, Duration::from_secs(60)).await.unwrap();
    assert_eq!(swept.len(), 3);
    assert!(aws.list(farm).await.unwrap().is_empty());
    assert_eq!(aws.list("otherfarm").await.unwrap().len(), 1);
}

#[test]
fn user_data_is_gzipped_only_when_too_long_and_refused_when_still_too_long() {
    use fleet_cloud::aws::{decode_user_data, encode_user_data};
    assert_eq!(encode_user_data("#!/bin/bash\n").unwrap(), b"#!/bin/bash\n");
    let long = "echo line\n".repeat(3000);
    let packed = encode_user_data(&long).unwrap();
    assert_eq!(&packed[..2], &[0x1f, 0x8b]);
    assert_eq!(decode_user_data(&packed).unwrap(), long);
    // Incompressible: a long run of pseudo-random digits.
    let mut state = 12345_u64;
    let noise: String = (0..40_000)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            char::from(b'0' + u8::try_from((state >> 33) % 10).unwrap())
        })
        .collect();
    let error = encode_user_data(&noise).unwrap_err();
    assert!(error.to_string().contains("16 KiB"), "{error}");
}

#[tokio::test]
async fn on_demand_instances_and_errors() {
    let moto = MotoServer::start().await;
    let aws = provider(&moto).await;
    aws.prepare("od").await.unwrap();
    let mut request = agent_request("od", 0);
    request.spot = false;
    let instance = aws.create("us-east-1b", &request).await.unwrap();
    assert!(!instance.spot);
    assert_eq!(aws.list("od").await.unwrap()[0].zone, "us-east-1b");

    // A farm whose security groups were never made is refused with a clear error.
    let error = aws
        .create("us-east-1a", &agent_request("unprepared", 0))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("prepare"), "{error}");
}
