//! The manager's scaler with the real aws-sdk-ec2 against moto_server: agents scale with the
//! queue, idle ones and ones that never join are terminated, an idle manager terminates
//! everything, its own instance last.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use fleet_cloud::aws::AwsProvider;
use fleet_cloud::testing::MotoServer;
use fleet_cloud::{CloudConfig, InstanceRequest, Provider, Role};
use fleet_manager::scaler::{FarmState, Scaler, ScalerSetup, ShutdownAction};
use fleet_manager::store::Store;
use fleet_protocol::{ChunkPolicy, FrameMode, FrameRange, JobSpec, OutputFormat};

const LOST_AFTER: i64 = 30_000;

fn spec(samples: u32) -> JobSpec {
    JobSpec {
        name: Some("shot".into()),
        main_file: "scene.blend".into(),
        files: BTreeMap::from([("scene.blend".into(), "2".repeat(64).parse().unwrap())]),
        frames: FrameRange {
            start: 1,
            end: 1,
            step: 1,
        },
        samples,
        resolution: None,
        output_format: OutputFormat::Png,
        seed: None,
        chunking: ChunkPolicy::default(),
        frame_mode: FrameMode::Auto,
        start: true,
    }
}

fn join(store: &Store, name: &str, now: i64) {
    let token = format!("test-token-{name}");
    store.add_join_token(&token, now, now + 60_000).unwrap();
    store
        .join_agent(&token, now, name, 4, "4.5.3", |_| {
            Ok::<_, std::convert::Infallible>((format!("fp-{name}"), ()))
        })
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn scaler_against_moto() {
    let moto = MotoServer::start().await;
    // moto stamps instances with the real clock; the scaler's times follow it.
    let t0 = fleet_manager::store::now_ms();
    let ami = moto.image_id().await;
    let config = CloudConfig::parse(&format!(
        r#"
provider = "aws"
farm = "scaled"
[agents]
machine_type = "c6i.xlarge"
[scaling]
max_agents = 2
samples_per_agent = 100
agent_idle_timeout_secs = 5
agent_boot_timeout_secs = 60
manager_idle_timeout_secs = 30
[aws]
region = "us-east-1"
zones = ["us-east-1a", "us-east-1b"]
ami = "{ami}"
endpoint_url = "{}"
"#,
        moto.url
    ))
    .unwrap();
    let aws = Arc::new(AwsProvider::new(config.aws.clone().unwrap(), 8443, vec![]).await);
    aws.prepare("scaled").await.unwrap();
    let manager = aws
        .create(
            "us-east-1a",
            &InstanceRequest {
                farm: "scaled".into(),
                name: "scaled-manager".into(),
                role: Role::Manager,
                machine_type: "t3.small".into(),
                spot: false,
                startup_script: "#!/bin/bash\n".into(),
                settings: BTreeMap::new(),
            },
        )
        .await
        .unwrap();
    let provider: Arc<dyn Provider> = aws.clone();
    let mut scaler = Scaler::new(
        ScalerSetup {
            provider,
            config,
            agent_script: "#!/bin/bash\necho agent\n".into(),
            manager_url: "https://10.0.0.9:8443".into(),
            ca_fingerprint: format!("sha256:{}", "a".repeat(64)),
            shutdown: ShutdownAction::TerminateManagerInstance,
        },
        t0,
    );
    let store = Store::in_memory().unwrap();
    let farm = FarmState::default();

    // 250 samples at 100 per agent, capped at 2.
    let job = store.create_job(&spec(250), t0).unwrap();
    let outcome = scaler.tick(&store, &farm, LOST_AFTER, t0).await.unwrap();
    assert_eq!(outcome.started.len(), 2, "{outcome:?}");
    let agents: Vec<_> = aws
        .list("scaled")
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.role == Some(Role::Agent))
        .collect();
    assert_eq!(agents.len(), 2);
    assert!(agents
        .iter()
        .all(|a| a.spot && a.machine_type == "c6i.xlarge"));
    // Steady: no more while both are alive.
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, t0 + 1000)
        .await
        .unwrap();
    assert!(outcome.started.is_empty(), "{outcome:?}");

    // One joins, the job is cancelled: it idles out after 5 s; the other never joins and
    // goes at the 60 s boot timeout.
    join(&store, &outcome_name(&agents, 0), t0 + 1000);
    store.cancel_job(job, t0 + 1000).unwrap();
    farm.touch(t0 + 1000);
    scaler
        .tick(&store, &farm, LOST_AFTER, t0 + 2000)
        .await
        .unwrap();
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, t0 + 8000)
        .await
        .unwrap();
    assert_eq!(outcome.terminated, vec![outcome_name(&agents, 0)]);
    farm.touch(t0 + 200_000);
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, t0 + 210_000)
        .await
        .unwrap();
    assert_eq!(
        outcome.terminated,
        vec![outcome_name(&agents, 1)],
        "{outcome:?}"
    );

    // No client for 30 s, nothing queued: the manager instance goes too.
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, t0 + 231_000)
        .await
        .unwrap();
    assert!(outcome.shut_down, "{outcome:?}");
    assert_eq!(outcome.terminated, vec![manager.name.clone()]);
    assert!(aws.list("scaled").await.unwrap().iter().all(|i| !matches!(
        i.state,
        fleet_cloud::InstanceState::Running | fleet_cloud::InstanceState::Pending
    )));
}

fn outcome_name(agents: &[fleet_cloud::Instance], index: usize) -> String {
    agents[index].name.clone()
}
