//! A cloud preemption notice stops an agent as SIGTERM does. Real agents render a real job
//! while each watches its own fake GCP metadata server; one server flips
//! `instance/preempted` to TRUE in the middle of a lease. That agent stops Blender, delivers
//! what it finished, hands back the rest and exits 0 within its stop deadline; the other
//! agent, never told, keeps rendering and the job finishes with the single render's image.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fleet_protocol::JobState;
use support::farm::{alive, Farm};
use support::jobs::{agent_mid_lease, assert_handed_back, submit_frame};
use support::reference::assert_frame_matches_reference;
use support::{assert_tiled_once, run_ok, TestDir};
use tokio::sync::watch;

const SAMPLES: u32 = 192;
const RESOLUTION: (u32, u32) = (160, 120);
const STOP_DEADLINE_SECS: u64 = 15;

/// GCP's `instance/preempted`, long-poll included: a `wait_for_change` request whose
/// `last_etag` is current is held until the value changes.
#[derive(Clone)]
struct FakeGcp {
    preempted: watch::Sender<bool>,
}

fn etag(preempted: bool) -> &'static str {
    if preempted {
        "9f3c2a71d0b4e865"
    } else {
        "41d8e0c7a92b3f50"
    }
}

async fn preempted(
    State(fake): State<FakeGcp>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("Metadata-Flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut changes = fake.preempted.subscribe();
    let current = etag(*changes.borrow_and_update());
    if query.get("wait_for_change").map(String::as_str) == Some("true")
        && query.get("last_etag").map(String::as_str) == Some(current)
    {
        let seconds = query
            .get("timeout_sec")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60);
        let _ = tokio::time::timeout(Duration::from_secs(seconds), changes.changed()).await;
    }
    let value = *fake.preempted.borrow();
    (
        [("ETag", etag(value))],
        if value { "TRUE" } else { "FALSE" },
    )
        .into_response()
}

async fn fake_gcp() -> (FakeGcp, SocketAddr) {
    let fake = FakeGcp {
        preempted: watch::channel(false).0,
    };
    let router = Router::new()
        .route("/computeMetadata/v1/instance/preempted", get(preempted))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (fake, address)
}

#[tokio::test]
async fn a_gcp_preemption_notice_stops_an_agent_gracefully_and_the_job_still_finishes() {
    let Some(blender) = support::blender_34() else {
        return;
    };
    let dir = TestDir::new();
    let blend = support::demo_scene(&blender, dir.path()).await;
    let mut farm = Farm::start(dir.path(), 3);
    let mut servers = HashMap::new();
    for name in ["e2e-1", "e2e-2"] {
        let (fake, address) = fake_gcp().await;
        let url = format!("http://{address}");
        let deadline = STOP_DEADLINE_SECS.to_string();
        farm.add_agent(
            name,
            &blender,
            &[
                "--piece-seconds",
                "1",
                "--stop-deadline",
                &deadline,
                "--preemption-notice",
                "gcp",
                "--metadata-url",
                &url,
            ],
        )
        .await;
        servers.insert(name, fake);
    }
    farm.wait_for_agents(2).await;
    let client = farm.client();
    let job = submit_frame(&client, &blend, SAMPLES, RESOLUTION).await;
    let db = farm.state.join("state.db");

    let victim = agent_mid_lease(&client, job, &db).await;
    let survivor = if victim == "e2e-1" { "e2e-2" } else { "e2e-1" };
    servers[victim.as_str()].preempted.send_replace(true);
    let noticed = Instant::now();
    let exit = loop {
        if let Some(status) = farm.agent(&victim).try_wait().unwrap() {
            break status;
        }
        assert!(
            noticed.elapsed() < Duration::from_secs(STOP_DEADLINE_SECS + 10),
            "the agent did not stop after the notice"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = noticed.elapsed();
    assert!(
        exit.success(),
        "the agent exits cleanly on a notice: {exit}"
    );
    assert!(
        took < Duration::from_secs(STOP_DEADLINE_SECS),
        "stopping took {took:?}, past the stop deadline"
    );
    let log = farm.log(&victim);
    assert!(
        log.contains("preemption notice: stopping as on SIGTERM"),
        "the notice is logged:\n{log}"
    );
    assert!(log.contains("GCP instance/preempted is TRUE"), "{log}");

    let rendered = assert_handed_back(&client, &db, &victim).await;
    // The agent whose server never said TRUE is still at work.
    assert!(
        alive(farm.pid(survivor)),
        "{survivor} stopped without a notice"
    );

    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        let status = client.job(job).await.unwrap();
        if status.summary.state.is_final() {
            break status;
        }
        assert!(Instant::now() < deadline, "the job did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.summary.state, JobState::Done, "{status:?}");
    assert_tiled_once(&db, SAMPLES);
    assert!(
        !farm.log(survivor).contains("preemption notice: stopping"),
        "{survivor} acted on a notice it never got"
    );

    assert_frame_matches_reference(
        &client,
        job,
        &blender,
        &blend,
        SAMPLES,
        RESOLUTION,
        dir.path(),
    )
    .await;
    eprintln!("the agent stopped {took:?} after the notice, having had {rendered} samples merged");
}

#[test]
fn preemption_settings_are_checked() {
    let fingerprint = format!("sha256:{}", "ab".repeat(32));
    let base = [
        "agent",
        "--manager",
        "https://127.0.0.1:1",
        "--ca-fingerprint",
        fingerprint.as_str(),
    ];
    let output = support::blendfleet()
        .args(base)
        .args(["--preemption-notice", "azure"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("unknown preemption notice source `azure`: use gcp, aws or none"),
        "{stderr}"
    );

    let output = support::blendfleet()
        .args(base)
        .args(["--metadata-url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no preemption notice is watched"),
        "{stderr}"
    );

    let output = support::blendfleet()
        .args(base)
        .args([
            "--preemption-notice",
            "aws",
            "--metadata-url",
            "https://169.254.169.254",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("must start with http://"), "{stderr}");

    let help = run_ok(support::blendfleet().args(["agent", "--help"]));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--preemption-notice") && help.contains("--metadata-url"));
}
