//! Submitting a job and watching it, through the client and the manager's database.

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_client::Client;
use fleet_protocol::{FrameMode, FrameRange, JobId, JobSpec, JobStatus, OutputFormat, Resolution};

/// Uploads `blend` and submits frame 1 of it as `demo.blend`, split across agents, as EXR.
pub async fn submit_frame(
    client: &Client,
    blend: &Path,
    samples: u32,
    (width, height): (u32, u32),
) -> JobId {
    let hash = fleet_client::hash_file(blend).unwrap();
    client.upload_blob(&hash, blend).await.unwrap();
    let spec = JobSpec {
        name: None,
        main_file: "demo.blend".into(),
        files: [("demo.blend".to_owned(), hash)].into(),
        frames: FrameRange::single(1),
        samples,
        resolution: Some(Resolution { width, height }),
        output_format: OutputFormat::Exr,
        seed: None,
        chunking: Default::default(),
        frame_mode: FrameMode::Split,
        start: true,
    };
    client.create_job(&spec).await.unwrap().id
}

/// Waits until the job reaches a final state. Errors are tolerated (the manager may be
/// restarting) until the time is up.
pub async fn wait_final(client: &Client, job: JobId, limit: Duration) -> JobStatus {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        match client.job(job).await {
            Ok(status) if status.summary.state.is_final() => return status,
            Ok(status) => last = Some(status),
            Err(error) => eprintln!("status: {error}"),
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish within {limit:?}; last status: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until an agent has had a piece merged and still holds a lease with plenty of
/// samples left to render; returns that agent. Read from the manager's database, so that the
/// agent cannot finish its lease between the look and whatever the test does next.
pub async fn agent_mid_lease(client: &Client, job: JobId, db: &Path) -> String {
    const PLENTY: u32 = 16;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let found: Option<String> = rusqlite::Connection::open(db)
            .unwrap()
            .query_row(
                "SELECT a.name FROM leases l
                 JOIN agents a ON a.id = l.agent_id JOIN chunks c ON c.id = l.chunk_id
                 WHERE l.state = 'active' AND a.samples_rendered > 0
                   AND c.sample_count >= ?1
                 LIMIT 1",
                [PLENTY],
                |row| row.get(0),
            )
            .ok();
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

/// The states of an agent's leases, oldest first.
pub fn lease_states(db: &Path, agent: &str) -> Vec<String> {
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

/// An agent that stopped gracefully handed the rest of its lease back (none lapsed), and
/// what it rendered before stopping was merged; returns how many samples that was.
pub async fn assert_handed_back(client: &Client, db: &Path, agent: &str) -> u64 {
    let states = lease_states(db, agent);
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
        .find(|listed| listed.name == agent)
        .map_or(0, |listed| listed.samples_rendered);
    assert!(
        rendered > 0,
        "what {agent} rendered before it stopped was merged"
    );
    rendered
}
