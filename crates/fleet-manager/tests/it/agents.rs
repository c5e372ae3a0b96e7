//! Agents joining, leasing, uploading; merging and results.

use std::time::Duration;

use fleet_client::ClientError;
use fleet_manager::Limits;
use fleet_protocol::{ErrorCode, FrameState, JobState, JoinRequest, Secret};

use crate::support::{eventually, write_partial, Farm};

#[tokio::test]
async fn a_wrong_join_credential_is_refused() {
    let farm = Farm::start().await;
    let agent = farm.anonymous_agent();
    let (request, _) = fleet_tls::client_request("intruder").unwrap();
    let error = agent
        .join(&JoinRequest {
            token: Secret::new("guess"),
            name: "intruder".into(),
            threads: 1,
            blender_version: "3.4.1".into(),
            certificate_request: request,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Unauthorized));
    assert!(
        error.to_string().contains("unknown join credential"),
        "{error}"
    );
    // Agent endpoints without a certificate are refused too.
    let error = agent.lease(Duration::ZERO).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Unauthorized));
    assert!(error.to_string().contains("client certificate"), "{error}");
    assert!(farm.client().agents().await.unwrap().is_empty());
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn partials_are_merged_by_sample_weight_into_the_frame_result() {
    let farm = Farm::start().await;
    let client = farm.client();
    let agents = [farm.agent("one").await, farm.agent("two").await];
    let spec = farm.uploaded_spec(24).await;
    let job = client.create_job(&spec).await.unwrap().id;

    let mut chunks = Vec::new();
    let mut turn = 0;
    while let Some(lease) = agents[turn % 2].lease(Duration::ZERO).await.unwrap() {
        assert_eq!(lease.main_file, "scene.blend");
        assert_eq!(lease.files, spec.files);
        let partial = farm.path(&format!("chunk{}.exr", lease.chunk_id));
        let start = lease.sample_start;
        // Combined.R holds the chunk's first sample number; Depth is real only in sample 0.
        write_partial(&partial, 8, 6, |channel| match channel {
            0 => start as f32,
            4 if start == 0 => 5.0,
            4 => 1e10,
            _ => 0.5,
        });
        let answer = agents[turn % 2]
            .upload_result(lease.lease_id, lease.sample_count, &partial)
            .await
            .unwrap();
        assert_eq!(answer.frame_samples, 24);
        chunks.push((lease.sample_start, lease.sample_count));
        turn += 1;
    }
    assert!(chunks.len() >= 3, "{chunks:?}");
    assert_eq!(chunks.iter().map(|c| c.1).sum::<u32>(), 24);

    eventually("the job to finish", || async {
        client.job(job).await.unwrap().summary.state == JobState::Done
    })
    .await;
    let status = client.job(job).await.unwrap();
    assert_eq!(status.frames[0].state, FrameState::Done);
    assert_eq!(status.summary.samples_done, 24);

    let merged = farm.path("merged.exr");
    client.download_frame_exr(job, 1, &merged).await.unwrap();
    let planes = fleet_merge::compare::read_planes(&merged).unwrap();
    let channel = |name: &str| {
        let index = planes.names.iter().position(|n| n == name).unwrap();
        planes.planes[index].clone()
    };
    let expected_r: f64 = chunks
        .iter()
        .map(|&(s, c)| f64::from(s) * f64::from(c))
        .sum::<f64>()
        / 24.0;
    let red = channel("ViewLayer.Combined.R");
    let depth = channel("ViewLayer.Depth.Z");
    assert!(
        (f64::from(red[0]) - expected_r).abs() < 1e-4,
        "{} vs {expected_r}",
        red[0]
    );
    assert_eq!(depth[0], 5.0);

    let png = farm.path("merged.png");
    client.download_frame_image(job, 1, &png).await.unwrap();
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    let preview = client.frame_preview(job, 1).await.unwrap();
    assert_eq!(&preview[..8], b"\x89PNG\r\n\x1a\n");
    let agents = client.agents().await.unwrap();
    assert_eq!(agents.iter().map(|a| a.samples_rendered).sum::<u64>(), 24);
    // Once the result is written, the journal of partials is gone; the result stays.
    let frame_dir = farm.dir.path().join(format!("state/jobs/{job}/frame_1"));
    assert!(frame_dir.join("result.exr").is_file());
    assert!(!frame_dir.join("acc").exists());
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn bad_partials_are_rejected_and_their_chunk_requeued_until_the_retry_cap() {
    let farm = Farm::start().await;
    let client = farm.client();
    // Two agents take turns, so that neither is blocked for the job before the chunk's
    // retry cap is reached.
    let agents = [farm.agent("flaky-1").await, farm.agent("flaky-2").await];
    let spec = farm.uploaded_spec(8).await;
    let job = client.create_job(&spec).await.unwrap().id;

    let truncated = farm.path("truncated.exr");
    write_partial(&truncated, 8, 6, |_| 1.0);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let wrong_size = farm.path("wrong_size.exr");
    write_partial(&wrong_size, 4, 4, |_| 1.0);
    let not_exr = farm.path("not.exr");
    std::fs::write(&not_exr, b"GIF89a definitely not an EXR").unwrap();

    let first = agents[0].lease(Duration::ZERO).await.unwrap().unwrap();
    let mut lease = first.clone();
    for (attempt, (file, expected)) in [
        (&truncated, "truncated"),
        (&wrong_size, "8x6"),
        (&not_exr, "not an OpenEXR"),
    ]
    .into_iter()
    .enumerate()
    {
        let agent = &agents[attempt % 2];
        let error = agent
            .upload_result(lease.lease_id, lease.sample_count, file)
            .await
            .unwrap_err();
        let ClientError::Api {
            status,
            code,
            message,
        } = error
        else {
            panic!("expected an API error");
        };
        assert_eq!((status, code), (422, ErrorCode::Unprocessable), "{message}");
        assert!(message.contains(expected), "{message}");
        let status = client.job(job).await.unwrap();
        assert_eq!(status.summary.samples_done, 0, "nothing was merged");
        if attempt < 2 {
            // The chunk is back in the queue, unchanged.
            lease = agents[(attempt + 1) % 2]
                .lease(Duration::ZERO)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(lease.chunk_id, first.chunk_id);
            assert_eq!(
                (lease.sample_start, lease.sample_count),
                (first.sample_start, first.sample_count)
            );
        }
    }
    // The third rejection reached the retry cap: the job failed and says why.
    let status = client.job(job).await.unwrap();
    assert_eq!(status.summary.state, JobState::Failed);
    let error = status.summary.error.unwrap();
    assert!(error.contains("rejected partial render"), "{error}");
    assert!(agents[0].lease(Duration::ZERO).await.unwrap().is_none());
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn silent_agents_lose_their_lease_to_others() {
    let limits = Limits {
        lease_timeout: Duration::from_millis(800),
        ..Limits::default()
    };
    let farm = Farm::start_with(limits).await;
    let client = farm.client();
    let silent = farm.agent("silent").await;
    let spec = farm.uploaded_spec(8).await;
    client.create_job(&spec).await.unwrap();
    let lease = silent.lease(Duration::ZERO).await.unwrap().unwrap();
    silent.heartbeat(lease.lease_id, Some(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let error = silent.heartbeat(lease.lease_id, None).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Gone));
    let partial = farm.path("late.exr");
    write_partial(&partial, 8, 6, |_| 1.0);
    let error = silent
        .upload_result(lease.lease_id, lease.sample_count, &partial)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Gone));

    let other = farm.agent("other").await;
    let again = other.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(again.chunk_id, lease.chunk_id);
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_job_stops_its_agents_and_bad_sample_counts_are_400() {
    let farm = Farm::start().await;
    let client = farm.client();
    let agent = farm.agent("worker").await;
    let spec = farm.uploaded_spec(8).await;
    let job = client.create_job(&spec).await.unwrap().id;
    let lease = agent.lease(Duration::ZERO).await.unwrap().unwrap();
    let partial = farm.path("p.exr");
    write_partial(&partial, 8, 6, |_| 1.0);
    for samples in [0, lease.sample_count + 1] {
        let error = agent
            .upload_result(lease.lease_id, samples, &partial)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::BadRequest), "{error}");
    }
    assert_eq!(
        client.job(job).await.unwrap().agents,
        vec!["worker".to_owned()]
    );
    client.cancel_job(job).await.unwrap();
    let error = agent.heartbeat(lease.lease_id, None).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Gone));
    assert!(agent.lease(Duration::ZERO).await.unwrap().is_none());
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn an_agent_gone_mid_upload_does_not_strand_its_piece() {
    let farm = Farm::start().await;
    let client = farm.client();
    let agent = farm.agent("doomed").await;
    let mut spec = farm.uploaded_spec(8).await;
    // Large enough that folding the piece takes a while to catch it in the middle.
    let (width, height) = (1600, 1200);
    spec.resolution = Some(fleet_protocol::Resolution {
        width: width as u32,
        height: height as u32,
    });
    let job = client.create_job(&spec).await.unwrap().id;
    let lease = agent.lease(Duration::ZERO).await.unwrap().unwrap();
    assert!(lease.sample_count >= 2, "{lease:?}");
    let partial = farm.path("piece.exr");
    write_partial(&partial, width, height, |_| 0.25);

    let db = farm.path("state/state.db");
    let merging = || {
        let connection = rusqlite::Connection::open(&db).unwrap();
        connection
            .query_row(
                "SELECT count(*) FROM chunks WHERE state = 'merging'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .unwrap()
    };
    // The agent sends its piece and vanishes while the manager is folding it: its
    // connection closes before the answer comes.
    let upload = tokio::spawn(async move {
        agent
            .upload_piece(lease.lease_id, None, 2, Some(1.0), &partial)
            .await
    });
    let caught = async {
        while merging() == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), caught)
        .await
        .expect("the manager began folding the piece");
    upload.abort();
    assert!(upload.await.unwrap_err().is_cancelled());

    // The fold still completes and is counted.
    eventually("the piece to be merged", || async {
        client.job(job).await.unwrap().summary.samples_done == 2
    })
    .await;
    assert_eq!(merging(), 0, "no piece is left half merged");
    farm.manager.shutdown().await;
}
