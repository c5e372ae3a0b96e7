//! Certificates, join credentials, brute force, hostile paths, oversized bodies: each refused
//! with the right status and `{code, message}`, and nothing changed.

use std::time::Duration;

use fleet_client::{AgentClient, ClientError};
use fleet_manager::Limits;
use fleet_protocol::{ErrorBody, ErrorCode, JoinRequest, Secret};

use crate::support::{write_partial, Farm, PASSWORD};

fn api_error(error: ClientError) -> (u16, ErrorCode, String) {
    match error {
        ClientError::Api {
            status,
            code,
            message,
        } => (status, code, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn guessing_passwords_gets_an_address_blocked() {
    let limits = Limits {
        max_failures: 3,
        lockout: Duration::from_secs(2),
        ..Limits::default()
    };
    let farm = Farm::start_with(limits).await;
    let wrong = fleet_client::Client::new(&farm.settings("guess")).unwrap();
    for _ in 0..2 {
        let (status, code, _) = api_error(wrong.jobs().await.unwrap_err());
        assert_eq!((status, code), (401, ErrorCode::Unauthorized));
    }
    let (status, code, message) = api_error(wrong.jobs().await.unwrap_err());
    assert_eq!((status, code), (429, ErrorCode::TooManyRequests));
    assert!(message.contains("127.0.0.1"), "{message}");

    // While blocked, even the right password is refused, with a Retry-After.
    let response = farm
        .raw()
        .get(format!("{}/api/v1/jobs", farm.manager.url()))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.code, ErrorCode::TooManyRequests);

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert!(farm.client().jobs().await.unwrap().jobs.is_empty());
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn join_credentials_are_single_use_and_expire() {
    let farm = Farm::start().await;
    let token = farm.token();
    let join = |token: Secret| async {
        let (request, _) = fleet_tls::client_request("a").unwrap();
        farm.anonymous_agent()
            .join(&JoinRequest {
                token,
                name: "a".into(),
                threads: 1,
                blender_version: "3.4.1".into(),
                certificate_request: request,
            })
            .await
    };
    join(token.clone()).await.unwrap();
    let (status, code, message) = api_error(join(token).await.unwrap_err());
    assert_eq!((status, code), (401, ErrorCode::Unauthorized));
    assert!(message.contains("used already"), "{message}");

    let short = farm
        .manager
        .create_join_token(Duration::from_millis(1))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, _, message) = api_error(join(short.token).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(message.contains("expired"), "{message}");

    let (request, _) = fleet_tls::client_request("b").unwrap();
    assert!(request.len() > 80);
    let garbage = farm
        .anonymous_agent()
        .join(&JoinRequest {
            token: farm.token(),
            name: "b".into(),
            threads: 1,
            blender_version: "3.4.1".into(),
            certificate_request: format!("{}AAAA{}", &request[..40], &request[80..]),
        })
        .await
        .unwrap_err();
    let (status, _, message) = api_error(garbage);
    assert_eq!(status, 400);
    assert!(message.contains("certificate signing request"), "{message}");
    assert_eq!(
        farm.client().agents().await.unwrap().len(),
        1,
        "only the first join counted"
    );
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn certificates_from_another_ca_fail_the_handshake() {
    let farm = Farm::start().await;
    let foreign = fleet_tls::CertificateAuthority::generate("BlendFleet CA").unwrap();
    let (request, key) = fleet_tls::client_request("impostor").unwrap();
    let cert = foreign
        .sign_client_request(&request, "blendfleet-agent-1")
        .unwrap();
    let impostor =
        AgentClient::with_identity(&farm.manager.url(), farm.manager.fingerprint, &cert, &key)
            .unwrap();
    match impostor.lease(Duration::ZERO).await.unwrap_err() {
        ClientError::Connect { detail, .. } => {
            assert!(!detail.is_empty());
        }
        other => panic!("expected a failed handshake, got {other:?}"),
    }
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn a_removed_agent_is_refused_and_its_chunk_requeued() {
    let farm = Farm::start().await;
    let client = farm.client();
    let (agent, identity) = farm.join("doomed").await;
    let spec = farm.uploaded_spec(8).await;
    let job = client.create_job(&spec).await.unwrap().id;
    let lease = agent.lease(Duration::ZERO).await.unwrap().unwrap();
    client.remove_agent(identity.id).await.unwrap();

    let (status, code, message) =
        api_error(agent.heartbeat(lease.lease_id, None).await.unwrap_err());
    assert_eq!((status, code), (403, ErrorCode::Forbidden));
    assert!(message.contains("revoked"), "{message}");
    // A new connection with the same certificate is refused as well.
    let again = farm.agent_with(&identity);
    let (status, _, _) = api_error(again.lease(Duration::ZERO).await.unwrap_err());
    assert_eq!(status, 403);
    assert!(client.agents().await.unwrap().is_empty());
    let (status, code, _) = api_error(client.remove_agent(identity.id).await.unwrap_err());
    assert_eq!((status, code), (404, ErrorCode::NotFound));

    let other = farm.agent("replacement").await;
    let requeued = other.lease(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(requeued.chunk_id, lease.chunk_id);
    assert_eq!(client.job(job).await.unwrap().summary.samples_done, 0);
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn hostile_file_paths_are_refused_and_windows_paths_mapped() {
    let farm = Farm::start().await;
    let client = farm.client();
    let good = farm.uploaded_spec(4).await;
    let hash = good.files.values().next().unwrap().clone();
    for path in [
        "../x.png",
        "/etc/passwd",
        "C:\\..\\x",
        "%2e%2e/x",
        "a\0b",
        "tex/../../x",
    ] {
        let mut bad = good.clone();
        bad.files.insert(path.to_owned(), hash.clone());
        let (status, code, message) = api_error(client.create_job(&bad).await.unwrap_err());
        assert_eq!(
            (status, code),
            (400, ErrorCode::BadRequest),
            "{path:?}: {message}"
        );
        assert!(message.contains("file path"), "{path:?}: {message}");
    }
    assert!(client.jobs().await.unwrap().jobs.is_empty());

    let mut windows = good.clone();
    windows.files.insert("tex\\wood.png".into(), hash);
    client.create_job(&windows).await.unwrap();
    let lease = farm
        .agent("a")
        .await
        .lease(Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert!(
        lease.files.contains_key("tex/wood.png"),
        "{:?}",
        lease.files
    );
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_413_and_store_nothing() {
    let limits = Limits {
        max_spec_bytes: 2_000,
        max_blob_bytes: 1_000,
        max_result_bytes: 100,
        ..Limits::default()
    };
    let farm = Farm::start_with(limits).await;
    let client = farm.client();

    let big = farm.path("big.bin");
    std::fs::write(&big, vec![1u8; 5_000]).unwrap();
    let hash = fleet_client::hash_file(&big).unwrap();
    let (status, code, _) = api_error(client.upload_blob(&hash, &big).await.unwrap_err());
    assert_eq!((status, code), (413, ErrorCode::PayloadTooLarge));
    assert_eq!(
        client
            .missing_blobs(std::slice::from_ref(&hash))
            .await
            .unwrap(),
        vec![hash]
    );

    let mut spec = farm.uploaded_spec(4).await;
    spec.name = Some("x".repeat(150));
    let blend = spec.files.values().next().unwrap().clone();
    for index in 0..40 {
        spec.files.insert(
            format!("textures/texture_number_{index:04}.png"),
            blend.clone(),
        );
    }
    let (status, code, _) = api_error(client.create_job(&spec).await.unwrap_err());
    assert_eq!((status, code), (413, ErrorCode::PayloadTooLarge));
    assert!(client.jobs().await.unwrap().jobs.is_empty());

    let small = farm.uploaded_spec(4).await;
    let job = client.create_job(&small).await.unwrap().id;
    let agent = farm.agent("a").await;
    let lease = agent.lease(Duration::ZERO).await.unwrap().unwrap();
    let partial = farm.path("p.exr");
    write_partial(&partial, 8, 6, |_| 1.0);
    let (status, code, _) = api_error(
        agent
            .upload_result(lease.lease_id, lease.sample_count, &partial)
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code), (413, ErrorCode::PayloadTooLarge));
    assert_eq!(client.job(job).await.unwrap().summary.samples_done, 0);
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn a_partial_missing_channels_is_rejected() {
    let farm = Farm::start().await;
    let client = farm.client();
    let mut spec = farm.uploaded_spec(8).await;
    spec.frame_mode = fleet_protocol::FrameMode::Split;
    let job = client.create_job(&spec).await.unwrap().id;
    let agent = farm.agent("a").await;
    let first = agent.lease(Duration::ZERO).await.unwrap().unwrap();
    let full = farm.path("full.exr");
    write_partial(&full, 8, 6, |_| 1.0);
    agent
        .upload_result(first.lease_id, first.sample_count, &full)
        .await
        .unwrap();

    let second = agent.lease(Duration::ZERO).await.unwrap().unwrap();
    let fewer = farm.path("fewer.exr");
    crate::support::write_partial_channels(&fewer, 8, 6, &["ViewLayer.Combined.R"]);
    let (status, code, message) = api_error(
        agent
            .upload_result(second.lease_id, second.sample_count, &fewer)
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code), (422, ErrorCode::Unprocessable));
    assert!(message.contains("lacks channel"), "{message}");
    let status = client.job(job).await.unwrap();
    assert_eq!(status.summary.samples_done, u64::from(first.sample_count));
    farm.manager.shutdown().await;
}
