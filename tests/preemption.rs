//! Losing machines: agents killed with SIGKILL or stopped with SIGTERM in the middle of a
//! chunk, and the manager killed with SIGKILL and restarted. Every job still finishes with the
//! single render's image, and no sample is merged twice.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_blender::BlenderCommand;
use fleet_client::Client;
use fleet_protocol::{
    FrameMode, FrameRange, JobId, JobSpec, JobState, JobStatus, OutputFormat, Resolution,
};
use support::farm::{alive, children_of, signal, Farm};
use support::reference::{assert_matches_reference, Rule};
use support::{merged_chunks, TestDir};

/// 160×120 with 192 samples: long enough, single-threaded, to catch agents mid-chunk.
const SAMPLES: u32 = 192;
const RESOLUTION: (u32, u32) = (160, 120);
/// Agents upload every second of rendering, so a piece is in progress most of the time.
const AGENT_ARGS: &[&str] = &["--piece-seconds", "1"];

async fn submit(client: &Client, blend: &Path) -> JobId {
    let hash = fleet_client::hash_file(blend).unwrap();
    client.upload_blob(&hash, blend).await.unwrap();
    let spec = JobSpec {
        name: None,
        main_file: "demo.blend".into(),
        files: [("demo.blend".to_owned(), hash)].into(),
        frames: FrameRange::single(1),
        samples: SAMPLES,
        resolution: Some(Resolution {
            width: RESOLUTION.0,
            height: RESOLUTION.1,
        }),
        output_format: OutputFormat::Exr,
        seed: None,
        chunking: Default::default(),
        frame_mode: FrameMode::Split,
        start: true,
    };
    client.create_job(&spec).await.unwrap().id
}

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

/// Waits until an agent has had a piece merged and still holds a lease with plenty of
/// samples left to render; returns that agent. Read from the manager's database, so that the
/// agent cannot finish its lease between the look and the signal that follows it.
async fn agent_mid_lease(client: &Client, job: JobId, db: &Path) -> String {
    const PLENTY: u32 = 16;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let found: Option<String> = {
            let connection = rusqlite::Connection::open(db).unwrap();
            connection
                .query_row(
                    "SELECT a.name FROM leases l
                     JOIN agents a ON a.id = l.agent_id JOIN chunks c ON c.id = l.chunk_id
                     WHERE l.state = 'active' AND a.samples_rendered > 0
                       AND c.sample_count >= ?1
                     LIMIT 1",
                    [PLENTY],
                    |row| row.get(0),
                )
                .ok()
        };
        if let Some(name) = found {
            return name;
        }
        let status = client.job(job).await.unwrap();
        assert!(
            !status.summary.state.is_final(),
            "the job ended before an agent was caught mid-lease: {status:?}"
        );
        assert!(Instant::now() < deadline, "no agent got busy: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn finished(client: &Client, job: JobId) -> JobStatus {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        match client.job(job).await {
            Ok(status) if status.summary.state.is_final() => return status,
            Ok(_) => {}
            // The manager may be restarting.
            Err(error) => eprintln!("status: {error}"),
        }
        assert!(Instant::now() < deadline, "the job did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every sample of the frame was merged exactly once.
fn assert_tiled_once(db: &Path) {
    let chunks = merged_chunks(db);
    let mut next = 0;
    for &(start, count) in &chunks {
        assert_eq!(start, next, "no sample merged twice or missed: {chunks:?}");
        next += count;
    }
    assert_eq!(next, SAMPLES, "{chunks:?}");
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

fn lease_states(db: &Path, agent: &str) -> Vec<String> {
    let connection = rusqlite::Connection::open(db).unwrap();
    let mut query = connection
        .prepare(
            "SELECT l.state FROM leases l JOIN agents a ON a.id = l.agent_id
             WHERE a.name = ?1 ORDER BY l.id",
        )
        .unwrap();
    query
        .query_map([agent], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn result_matches(
    farm: &Farm,
    job: JobId,
    blender: &BlenderCommand,
    blend: &Path,
    dir: &Path,
) {
    let merged = dir.join("merged.exr");
    farm.client()
        .download_frame_exr(job, 1, &merged)
        .await
        .unwrap();
    assert_matches_reference(
        blender,
        blend,
        &merged,
        SAMPLES,
        RESOLUTION,
        dir,
        Rule::Design,
    )
    .await;
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
    let job = submit(&client, &blend).await;

    let victim = busy_agent(&client, job).await;
    let pid = farm.pid(&victim);
    let blender_processes = children_of(pid);
    assert!(
        !blender_processes.is_empty(),
        "the busy agent runs a resident Blender"
    );
    signal(pid, "KILL");

    let status = finished(&client, job).await;
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
    assert_tiled_once(&db);

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
    result_matches(&farm, job, &blender, &blend, dir.path()).await;
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
    let job = submit(&client, &blend).await;

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

    let states = lease_states(&db, &victim);
    assert!(
        states.contains(&"released".to_owned()),
        "the rest of the lease was handed back: {states:?}"
    );
    assert!(
        !states.contains(&"expired".to_owned()),
        "nothing was left to lapse: {states:?}"
    );
    let rendered = client
        .agents()
        .await
        .unwrap()
        .into_iter()
        .find(|agent| agent.name == victim)
        .map_or(0, |agent| agent.samples_rendered);
    assert!(rendered > 0, "what the stopped agent rendered was merged");

    let status = finished(&client, job).await;
    assert_eq!(status.summary.state, JobState::Done, "{status:?}");
    assert_tiled_once(&db);
    result_matches(&farm, job, &blender, &blend, dir.path()).await;
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
    let job = submit(&farm.client(), &blend).await;
    busy_agent(&farm.client(), job).await;
    let before = farm.client().job(job).await.unwrap().summary.samples_done;

    farm.restart_manager();
    let status = finished(&farm.client(), job).await;
    assert_eq!(status.summary.state, JobState::Done, "{status:?}");
    assert_eq!(status.summary.samples_done, u64::from(SAMPLES));
    assert!(before > 0);
    // The agents came back by themselves: both are still in the agent list, and nobody
    // joined again.
    let agents = farm.client().agents().await.unwrap();
    assert_eq!(agents.len(), 2, "{agents:?}");
    assert_tiled_once(&farm.state.join("state.db"));
    result_matches(&farm, job, &blender, &blend, dir.path()).await;
}
