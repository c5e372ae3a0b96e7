//! The scaler against the in-memory provider, with times passed in.

use std::sync::Arc;

use fleet_cloud::memory::MemoryProvider;
use fleet_cloud::{CloudConfig, InstanceRequest, Provider, Role};
use fleet_protocol::{FrameRange, JobId};

use super::*;
use crate::store::agents::tests::join;
use crate::store::test_support::spec;

const T0: i64 = 1_700_000_000_000;
const LOST_AFTER: i64 = 30_000;

fn config() -> CloudConfig {
    CloudConfig::parse(
        r#"
provider = "aws"
farm = "test"
[agents]
machine_type = "c6i.4xlarge"
[scaling]
max_agents = 3
samples_per_agent = 100
agent_idle_timeout_secs = 60
agent_boot_timeout_secs = 600
manager_idle_timeout_secs = 300
[aws]
region = "us-east-1"
zones = ["z1", "z2"]
ami = "ami-00000000"
"#,
    )
    .unwrap()
}

fn scaler(provider: &Arc<MemoryProvider>, config: CloudConfig, shutdown: ShutdownAction) -> Scaler {
    let dyn_provider: Arc<dyn Provider> = provider.clone();
    Scaler::new(
        ScalerSetup {
            provider: dyn_provider,
            config,
            agent_script: "#!/bin/bash\necho agent\n".into(),
            manager_url: "https://10.0.0.2:8443".into(),
            ca_fingerprint: format!("sha256:{}", "0".repeat(64)),
            shutdown,
        },
        T0,
    )
}

/// A memory provider whose clock agrees with the test times.
fn memory(zones: &[&str]) -> Arc<MemoryProvider> {
    let provider = Arc::new(MemoryProvider::new(zones));
    provider.set_clock(T0);
    provider
}

fn queue_job(store: &Store, samples: u32) -> JobId {
    store
        .create_job(
            &spec(
                FrameRange {
                    start: 1,
                    end: 1,
                    step: 1,
                },
                samples,
            ),
            T0,
        )
        .unwrap()
}

#[tokio::test]
async fn starts_agents_for_the_queue_each_with_its_own_join_credential() {
    let store = Store::in_memory().unwrap();
    let farm = FarmState::default();
    let provider = memory(&["z1", "z2"]);
    let mut scaler = scaler(&provider, config(), ShutdownAction::Nothing);

    // Nothing queued: nothing starts.
    let outcome = scaler.tick(&store, &farm, LOST_AFTER, T0).await.unwrap();
    assert!(outcome.started.is_empty());

    // 250 samples at 100 per agent: 3 agents; a second job would want more than max_agents.
    queue_job(&store, 250);
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, T0 + 1000)
        .await
        .unwrap();
    assert_eq!(outcome.started.len(), 3, "{outcome:?}");
    queue_job(&store, 1000);
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, T0 + 2000)
        .await
        .unwrap();
    assert!(
        outcome.started.is_empty(),
        "max_agents caps the farm: {outcome:?}"
    );

    let records = provider.records();
    assert_eq!(records.len(), 3);
    let mut tokens = std::collections::HashSet::new();
    for record in &records {
        let request = &record.request;
        assert!(request.spot && request.role == Role::Agent);
        assert_eq!(request.machine_type, "c6i.4xlarge");
        assert_eq!(request.settings["BLENDFLEET_AGENT_NAME"], request.name);
        assert_eq!(
            request.settings["BLENDFLEET_MANAGER"],
            "https://10.0.0.2:8443"
        );
        assert_eq!(request.settings["BLENDFLEET_PROVIDER"], "aws");
        assert!(request.settings["BLENDFLEET_CA_FINGERPRINT"].starts_with("sha256:"));
        tokens.insert(request.settings["BLENDFLEET_JOIN_TOKEN"].clone());
        // The credential really admits an agent, once.
        let hash = crate::auth::secret_hash(&request.settings["BLENDFLEET_JOIN_TOKEN"]);
        let joined = store
            .join_agent(&hash, T0 + 3000, &request.name, 4, "4.5", |_| {
                Ok::<_, std::convert::Infallible>((format!("fp-{}", request.name), ()))
            })
            .unwrap()
            .unwrap();
        assert!(matches!(joined, crate::store::agents::Joined::Agent(..)));
    }
    assert_eq!(tokens.len(), 3, "every instance has its own credential");
    let status = farm.status();
    assert_eq!(status.instances.len(), 3);
    assert_eq!(status.provider.as_deref(), Some("memory"));
}

#[tokio::test]
async fn zone_refusals_fall_back_and_are_reported() {
    let store = Store::in_memory().unwrap();
    let farm = FarmState::default();
    let provider = memory(&["z1", "z2"]);
    provider.refuse("z1", true);
    let mut scaler = scaler(&provider, config(), ShutdownAction::Nothing);
    queue_job(&store, 50);
    let outcome = scaler.tick(&store, &farm, LOST_AFTER, T0).await.unwrap();
    assert_eq!(outcome.started.len(), 1);
    assert_eq!(provider.records()[0].instance.zone, "z2");
    let events = farm.status().events;
    assert!(
        events.iter().any(|e| e.contains("refused in z1")),
        "{events:?}"
    );
}

#[tokio::test]
async fn idle_agents_and_instances_that_never_join_are_terminated() {
    let store = Store::in_memory().unwrap();
    let farm = FarmState::default();
    let provider = memory(&["z1"]);
    let mut scaler = scaler(&provider, config(), ShutdownAction::Nothing);
    let job = queue_job(&store, 150);
    let started = scaler
        .tick(&store, &farm, LOST_AFTER, T0)
        .await
        .unwrap()
        .started;
    assert_eq!(started.len(), 2);
    provider.boot_all();
    // One joins; the other never does.
    let agent = join(&store, &started[0], "fp-1", T0 + 1000);
    store.cancel_job(job, T0 + 2000).unwrap();

    // Idle since the first pass that sees it idle; kept until the timeout.
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, T0 + 10_000)
        .await
        .unwrap();
    assert!(outcome.terminated.is_empty(), "{outcome:?}");
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, T0 + 69_000)
        .await
        .unwrap();
    assert!(
        outcome.terminated.is_empty(),
        "59 s idle is under the timeout: {outcome:?}"
    );
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, T0 + 70_000)
        .await
        .unwrap();
    assert_eq!(outcome.terminated, vec![started[0].clone()]);
    assert!(store
        .list_agents(T0 + 70_000, LOST_AFTER)
        .unwrap()
        .iter()
        .all(|a| a.id != agent));

    // The one that never joined goes at the boot timeout, counted from its creation. (A
    // client keeps the manager itself from idling out meanwhile.)
    farm.touch(T0 + 590_000);
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, T0 + 599_000)
        .await
        .unwrap();
    assert!(outcome.terminated.is_empty(), "{outcome:?}");
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, T0 + 601_000)
        .await
        .unwrap();
    assert_eq!(outcome.terminated, vec![started[1].clone()]);
    assert!(provider.list("test").await.unwrap().is_empty());
}

#[tokio::test]
async fn busy_agents_are_kept_and_their_time_is_charged_to_the_job() {
    let store = Store::in_memory().unwrap();
    let farm = FarmState::default();
    let provider = memory(&["z1"]);
    let mut scaler = scaler(&provider, config(), ShutdownAction::Nothing);
    let job = queue_job(&store, 100);
    let started = scaler
        .tick(&store, &farm, LOST_AFTER, T0)
        .await
        .unwrap()
        .started;
    provider.boot_all();
    let agent = join(&store, &started[0], "fp-1", T0);
    // Created "now" by the memory provider; count from the next pass.
    let second = T0 + 1_000;
    scaler
        .tick(&store, &farm, LOST_AFTER, second)
        .await
        .unwrap();
    let lease = store.acquire_lease(agent, second, 10_000_000).unwrap();
    assert!(lease.is_some());
    // An hour busy: far past the idle timeout, and charged at c6i.4xlarge spot (0.28 $/h).
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER * 1000, second + 3_600_000)
        .await
        .unwrap();
    assert!(outcome.terminated.is_empty());
    let spend = farm.job_spend(&store, job).unwrap().unwrap();
    assert_eq!(spend.agent_seconds, 3600);
    assert_eq!(spend.cost_micro_usd, 280_000);
    assert!(!spend.budget_reached);
    let status = farm.status();
    assert!(status.total_cost_micro_usd >= 280_000);
    assert_eq!(status.jobs[0].job_id, job);
}

#[tokio::test]
async fn a_job_over_budget_gets_no_more_agents_and_says_so() {
    let store = Store::in_memory().unwrap();
    let farm = FarmState::default();
    let provider = memory(&["z1"]);
    let mut config = config();
    config.job_budget_usd = Some(0.5);
    let mut scaler = scaler(&provider, config, ShutdownAction::Nothing);
    let job = queue_job(&store, 100);
    store
        .add_spend(Some(job), "earlier", "c6i.4xlarge", 7200.0, 0.56)
        .unwrap();
    let outcome = scaler.tick(&store, &farm, LOST_AFTER, T0).await.unwrap();
    assert!(outcome.started.is_empty(), "{outcome:?}");
    let spend = farm.job_spend(&store, job).unwrap().unwrap();
    assert!(spend.budget_reached);
    assert_eq!(spend.budget_micro_usd, Some(500_000));
    assert!(farm.status().events.iter().any(|e| e.contains("budget")));

    // Another job under budget still gets an agent.
    queue_job(&store, 100);
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, T0 + 1000)
        .await
        .unwrap();
    assert_eq!(outcome.started.len(), 1);
}

#[tokio::test]
async fn an_idle_manager_terminates_its_agents_then_itself() {
    let store = Store::in_memory().unwrap();
    let farm = FarmState::default();
    let provider = memory(&["z1"]);
    let manager = provider
        .create(
            "z1",
            &InstanceRequest {
                farm: "test".into(),
                name: "test-manager".into(),
                role: Role::Manager,
                machine_type: "t3.small".into(),
                spot: false,
                startup_script: String::new(),
                settings: Default::default(),
            },
        )
        .await
        .unwrap();
    let mut scaler = scaler(
        &provider,
        config(),
        ShutdownAction::TerminateManagerInstance,
    );
    let job = queue_job(&store, 100);
    scaler.tick(&store, &farm, LOST_AFTER, T0).await.unwrap();
    store.cancel_job(job, T0).unwrap();

    // A client call keeps it up; five minutes after the last one it goes.
    farm.touch(T0 + 200_000);
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, T0 + 400_000)
        .await
        .unwrap();
    assert!(!outcome.shut_down);
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, T0 + 500_000)
        .await
        .unwrap();
    assert!(outcome.shut_down, "{outcome:?}");
    assert!(outcome.terminated.contains(&manager.name));
    assert!(
        provider.list("test").await.unwrap().is_empty(),
        "nothing is left running"
    );
    // Stopped for good.
    queue_job(&store, 100);
    let outcome = scaler
        .tick(&store, &farm, LOST_AFTER, T0 + 501_000)
        .await
        .unwrap();
    assert!(outcome.started.is_empty());
}
