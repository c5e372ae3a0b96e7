//! Losing machines: agents killed with SIGKILL or stopped with SIGTERM in the middle of a
//! chunk, and the manager killed with SIGKILL and restarted. Every job still finishes with the
//! single render's image, and no sample is merged twice.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_blender::BlenderCommand;
use fleet_client::Client;
use fleet_protocol::{JobId, JobState};
use support::farm::{alive, children_of, signal, Farm};
use support::jobs::{agent_mid_lease, assert_handed_back, lease_states, submit_frame, wait_final};
use support::reference::assert_frame_matches_reference;
use support::{assert_tiled_once, TestDir};

/// 160×120 with 192 samples: long enough, single-threaded, to catch agents mid-chunk.
const SAMPLES: u32 = 192;
const RESOLUTION: (u32, u32) = (160, 120);
/// Agents upload every second of rendering, so a piece is in progress most of the time.
const AGENT_ARGS: &[&str] = &["--piece-seconds", "1"];
/// How long a job may take, with agents lost on the way, on a loaded 2-core machine.
const FINISH: Duration = Duration::from_secs(240);

/// Waits until the job has merged something and an agent is rendering; returns that agent.
async fn busy_agent(client: &Client, job: JobId) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = client.job(job).await.unwrap();
        if status.summary.samples_done > 0 {
            if let Some(name) = status.agents.first() {
                return name.clone();
            }
        }
        assert!(
            !status.summary.state.is_final(),
            "the job ended first: {status:?}"
        );
        assert!(Instant::now() < deadline, "no agent got busy: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn farm(blender: &BlenderCommand, dir: &Path, agents: usize) -> Farm {
    let mut farm = Farm::start(dir, 3);
    for index in 1..=agents {
        farm.add_agent(&format!("e2e-{index}"), blender, AGENT_ARGS)
            .await;
    }
    farm.wait_for_agents(agents).await;
    farm
}

#[tokio::test]
async fn an_agent_killed_mid_chunk_loses_its_lease_and_the_frame_still_matches() {
    let Some(blender) = support::blender_34() else {
        return;
    };
    let dir = TestDir::new();
    let blend = support::demo_scene(&blender, dir.path()).await;
    let farm = farm(&blender, dir.path(), 3).await;
    let client = farm.client();
    let job = submit_frame(&client, &blend, SAMPLES, RESOLUTION).await;

    let victim = busy_agent(&client, job).await;
    let pid = farm.pid(&victim);
    let blender_processes = children_of(pid);
    assert!(
        !blender_processes.is_empty(),
        "the busy agent runs a resident Blender"
    );
    signal(pid, "KILL");

    let status = wait_final(&client, job, FINISH).await;
    assert_eq!(status.summary.state, JobState::Done, "{status:?}");
    assert_eq!(status.summary.samples_done, u64::from(SAMPLES));
    // The killed agent's Blender died with it.
    for blender_pid in blender_processes {
        assert!(
            !alive(blender_pid),
            "Blender {blender_pid} outlived its agent"
        );
    }
    let db = farm.state.join("state.db");
    assert!(
        lease_states(&db, &victim).contains(&"expired".to_owned()),
        "the killed agent's lease expired"
    );
    assert_tiled_once(&db, SAMPLES);

    // Secrets stay out of the logs.
    for log in ["manager", "e2e-1", "e2e-2", "e2e-3"] {
        let text = farm.log(log);
        assert!(!text.is_empty(), "{log}.log is empty");
        assert!(
            !text.contains(support::farm::PASSWORD),
            "the password is in {log}.log"
        );
        assert!(
            !text.contains(&farm.join_token),
            "a join credential is in {log}.log"
        );
        assert!(
            !text.contains("PRIVATE KEY"),
            "a private key is in {log}.log"
        );
    }
    assert_frame_matches_reference(
        &farm.client(),
        job,
        &blender,
        &blend,
        SAMPLES,
        RESOLUTION,
        dir.path(),
    )
    .await;
}

#[tokio::test]
async fn an_agent_stopped_with_sigterm_keeps_its_work_and_hands_back_the_rest() {
    let Some(blender) = support::blender_34() else {
        return;
    };
    let dir = TestDir::new();
    let blend = support::demo_scene(&blender, dir.path()).await;
    let mut farm = farm(&blender, dir.path(), 2).await;
    let client = farm.client();
    let job = submit_frame(&client, &blend, SAMPLES, RESOLUTION).await;

    let db = farm.state.join("state.db");
    let victim = agent_mid_lease(&client, job, &db).await;
    signal(farm.pid(&victim), "TERM");
    let stopping = Instant::now();
    let exit = loop {
        if let Some(status) = farm.agent(&victim).try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(25),
            "the agent did not stop in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = stopping.elapsed();
    assert!(exit.success(), "the agent exits cleanly on SIGTERM: {exit}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");

    let rendered = assert_handed_back(&client, &db, &victim).await;

    let status = wait_final(&client, job, FINISH).await;
    assert_eq!(status.summary.state, JobState::Done, "{status:?}");
    assert_tiled_once(&db, SAMPLES);
    assert_frame_matches_reference(
        &farm.client(),
        job,
        &blender,
        &blend,
        SAMPLES,
        RESOLUTION,
        dir.path(),
    )
    .await;
    eprintln!("the agent stopped {took:?} after SIGTERM, having had {rendered} samples merged");
}

#[tokio::test]
async fn a_manager_killed_mid_job_resumes_after_a_restart() {
    let Some(blender) = support::blender_34() else {
        return;
    };
    let dir = TestDir::new();
    let blend = support::demo_scene(&blender, dir.path()).await;
    let mut farm = farm(&blender, dir.path(), 2).await;
    let job = submit_frame(&farm.client(), &blend, SAMPLES, RESOLUTION).await;
    busy_agent(&farm.client(), job).await;
    let before = farm.client().job(job).await.unwrap().summary.samples_done;

    farm.restart_manager();
    let status = wait_final(&farm.client(), job, FINISH).await;
    assert_eq!(status.summary.state, JobState::Done, "{status:?}");
    assert_eq!(status.summary.samples_done, u64::from(SAMPLES));
    assert!(before > 0);
    // The agents came back by themselves: both are still in the agent list, and nobody
    // joined again.
    let agents = farm.client().agents().await.unwrap();
    assert_eq!(agents.len(), 2, "{agents:?}");
    assert_tiled_once(&farm.state.join("state.db"), SAMPLES);
    assert_frame_matches_reference(
        &farm.client(),
        job,
        &blender,
        &blend,
        SAMPLES,
        RESOLUTION,
        dir.path(),
    )
    .await;
}
