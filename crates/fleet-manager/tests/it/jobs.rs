//! Files, jobs and their life cycle.

use fleet_client::ClientError;
use fleet_protocol::{ErrorCode, JobId, JobState};

use crate::support::Farm;

#[tokio::test]
async fn info_answers_with_the_version() {
    let farm = Farm::start().await;
    let info = farm.client().info().await.unwrap();
    assert_eq!(info.server, "blendfleet-manager");
    assert_eq!(info.api_version, 1);
    assert_eq!(info.agents_online, 0);
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn unchanged_files_are_not_uploaded_twice() {
    let farm = Farm::start().await;
    let client = farm.client();
    let file = farm.path("texture.png");
    std::fs::write(&file, vec![7u8; 300_000]).unwrap();
    let hash = fleet_client::hash_file(&file).unwrap();
    assert_eq!(
        client
            .missing_blobs(std::slice::from_ref(&hash))
            .await
            .unwrap(),
        vec![hash.clone()]
    );
    client.upload_blob(&hash, &file).await.unwrap();
    assert!(client
        .missing_blobs(std::slice::from_ref(&hash))
        .await
        .unwrap()
        .is_empty());
    // Uploading again is harmless.
    client.upload_blob(&hash, &file).await.unwrap();
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn job_life_cycle() {
    let farm = Farm::start().await;
    let client = farm.client();
    let mut spec = farm.uploaded_spec(16).await;
    spec.start = false;
    let created = client.create_job(&spec).await.unwrap();
    assert_eq!(created.state, JobState::Created);
    let status = client.job(created.id).await.unwrap();
    assert_eq!(status.summary.name, "test job");
    assert_eq!(status.summary.samples_total, 16);
    assert_eq!(status.frames.len(), 1);

    let started = client.start_job(created.id).await.unwrap();
    assert_eq!(started.summary.state, JobState::Queued);
    let again = client.start_job(created.id).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::Conflict));

    let cancelled = client.cancel_job(created.id).await.unwrap();
    assert_eq!(cancelled.summary.state, JobState::Cancelled);
    assert!(cancelled.finished_at_ms.is_some());

    let list = client.jobs().await.unwrap();
    assert_eq!(list.jobs.len(), 1);
    client.delete_job(created.id).await.unwrap();
    assert!(client.jobs().await.unwrap().jobs.is_empty());
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn unknown_jobs_are_404() {
    let farm = Farm::start().await;
    let client = farm.client();
    for error in [
        client.job(JobId(4242)).await.unwrap_err(),
        client.start_job(JobId(4242)).await.unwrap_err(),
        client.cancel_job(JobId(4242)).await.unwrap_err(),
        client.delete_job(JobId(4242)).await.unwrap_err(),
        client.frame_preview(JobId(4242), 1).await.unwrap_err(),
    ] {
        match error {
            ClientError::Api {
                status,
                code,
                message,
            } => {
                assert_eq!(status, 404);
                assert_eq!(code, ErrorCode::NotFound);
                assert!(message.contains("4242"), "{message}");
            }
            other => panic!("expected a 404, got {other:?}"),
        }
    }
    assert!(
        client.jobs().await.unwrap().jobs.is_empty(),
        "nothing was created"
    );
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut config = fleet_manager::ManagerConfig::new(state.clone());
    config.listen = "127.0.0.1:0".parse().unwrap();
    let first = fleet_manager::start(config.clone()).await.unwrap();
    let password = first
        .generated_password
        .clone()
        .expect("first start generates a password");
    let fingerprint = first.fingerprint;
    first.shutdown().await;

    let second = fleet_manager::start(config).await.unwrap();
    assert!(second.generated_password.is_none(), "the password is kept");
    assert_eq!(second.fingerprint, fingerprint, "the CA is kept");
    let client = fleet_client::Client::new(&fleet_client::ConnectionSettings {
        url: second.url(),
        user: "admin".into(),
        password,
        ca_fingerprint: fingerprint,
    })
    .unwrap();
    client.info().await.unwrap();
    second.shutdown().await;
}
