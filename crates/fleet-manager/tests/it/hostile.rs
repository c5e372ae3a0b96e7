//! Bad input gets a clear `{code, message}` error and changes nothing.

use fleet_client::ClientError;
use fleet_protocol::{ErrorBody, ErrorCode, FrameRange, Resolution};

use crate::support::Farm;

async fn assert_no_jobs(farm: &Farm) {
    assert!(farm.client().jobs().await.unwrap().jobs.is_empty());
}

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
async fn wrong_or_missing_password_is_401_with_a_challenge() {
    let farm = Farm::start().await;
    let wrong = fleet_client::Client::new(&farm.settings("guess")).unwrap();
    let (status, code, _) = api_error(wrong.jobs().await.unwrap_err());
    assert_eq!((status, code), (401, ErrorCode::Unauthorized));
    let spec = farm.uploaded_spec(4).await;
    assert!(wrong.create_job(&spec).await.is_err());
    assert_no_jobs(&farm).await;

    let response = farm
        .raw()
        .get(format!("{}/api/v1/jobs", farm.manager.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.code, ErrorCode::Unauthorized);
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn a_client_pinning_another_ca_cannot_connect() {
    let farm = Farm::start().await;
    let other = fleet_tls::CertificateAuthority::generate("other").unwrap();
    let mut settings = farm.settings(crate::support::PASSWORD);
    settings.ca_fingerprint = other.fingerprint();
    let client = fleet_client::Client::new(&settings).unwrap();
    match client.info().await.unwrap_err() {
        ClientError::PinMismatch(message) => {
            assert!(message.contains("not the pinned one"), "{message}");
            assert!(
                message.contains(&other.fingerprint().to_string()),
                "{message}"
            );
        }
        error => panic!("expected a pin mismatch, got {error:?}"),
    }
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn malformed_and_out_of_range_specs_are_400() {
    let farm = Farm::start().await;
    let client = farm.client();
    let good = farm.uploaded_spec(8).await;
    let url = format!("{}/api/v1/jobs", farm.manager.url());
    let raw = farm.raw();
    let bodies = [
        ("{not json".to_owned(), "JSON"),
        (
            serde_json::to_string(&good)
                .unwrap()
                .replace("\"samples\"", "\"sampels\""),
            "sampels",
        ),
        (
            serde_json::to_string(&good)
                .unwrap()
                .replace("\"samples\":8", "\"samples\":-3"),
            "samples",
        ),
    ];
    for (body, expected) in bodies {
        let response = raw
            .post(&url)
            .basic_auth("admin", Some(crate::support::PASSWORD))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let error: ErrorBody = response.json().await.unwrap();
        assert_eq!(error.code, ErrorCode::BadRequest);
        assert!(error.message.contains(expected), "{}", error.message);
    }

    let mut zero = good.clone();
    zero.samples = 0;
    let mut huge = good.clone();
    huge.resolution = Some(Resolution {
        width: 1_000_000,
        height: 2,
    });
    let mut backwards = good.clone();
    backwards.frames = FrameRange {
        start: 9,
        end: 2,
        step: 1,
    };
    let mut traversal = good.clone();
    let hash = traversal.files.values().next().unwrap().clone();
    traversal.files.insert("../../etc/passwd".into(), hash);
    let mut missing = good.clone();
    missing
        .files
        .insert("tex/wood.png".into(), "ab".repeat(32).parse().unwrap());
    for (bad, expected) in [
        (zero, "samples"),
        (huge, "resolution"),
        (backwards, "before start"),
        (traversal, ".."),
        (missing, "has not been uploaded"),
    ] {
        let (status, code, message) = api_error(client.create_job(&bad).await.unwrap_err());
        assert_eq!((status, code), (400, ErrorCode::BadRequest));
        assert!(message.contains(expected), "{message}");
    }
    assert_no_jobs(&farm).await;
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn uploads_that_do_not_match_their_hash_are_refused() {
    let farm = Farm::start().await;
    let client = farm.client();
    let file = farm.path("a.bin");
    std::fs::write(&file, b"real content").unwrap();
    let claimed: fleet_protocol::BlobHash = "cd".repeat(32).parse().unwrap();
    let (status, code, message) = api_error(client.upload_blob(&claimed, &file).await.unwrap_err());
    assert_eq!((status, code), (422, ErrorCode::Unprocessable));
    assert!(message.contains("do not hash"), "{message}");
    assert_eq!(
        client
            .missing_blobs(std::slice::from_ref(&claimed))
            .await
            .unwrap(),
        vec![claimed]
    );

    let response = farm
        .raw()
        .put(format!(
            "{}/api/v1/blobs/..%2F..%2Fetc%2Fpasswd",
            farm.manager.url()
        ))
        .basic_auth("admin", Some(crate::support::PASSWORD))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: ErrorBody = response.json().await.unwrap();
    assert!(body.message.contains("SHA-256"), "{}", body.message);
    farm.manager.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let farm = Farm::start().await;
    let raw = farm.raw();
    let response = raw
        .get(format!("{}/api/v1/nothing-here", farm.manager.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.code, ErrorCode::NotFound);

    let response = raw
        .patch(format!("{}/api/v1/jobs", farm.manager.url()))
        .basic_auth("admin", Some(crate::support::PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.code, ErrorCode::MethodNotAllowed);

    let response = raw
        .get(format!("{}/api/v1/jobs/not-a-number", farm.manager.url()))
        .basic_auth("admin", Some(crate::support::PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    farm.manager.shutdown().await;
}
