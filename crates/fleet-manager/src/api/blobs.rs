//! Uploading project files.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use fleet_protocol::{BlobHash, ErrorCode, MissingBlobsRequest, MissingBlobsResponse};

use super::extract::{ApiJson, ApiPath, User};
use super::{ApiError, AppState};
use crate::blobs::{BlobError, BodyError};

/// The most hashes one `missing` call may ask about.
const MAX_HASHES: usize = 100_000;

pub async fn missing(
    _user: User,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<MissingBlobsRequest>,
) -> Result<Json<MissingBlobsResponse>, ApiError> {
    if request.hashes.len() > MAX_HASHES {
        return Err(ApiError::bad_request(format!(
            "ask about at most {MAX_HASHES} hashes at a time, not {}",
            request.hashes.len()
        )));
    }
    let missing = request
        .hashes
        .into_iter()
        .filter(|hash| !state.blobs.contains(hash))
        .collect();
    Ok(Json(MissingBlobsResponse { missing }))
}

pub async fn upload(
    _user: User,
    State(state): State<AppState>,
    ApiPath(hash): ApiPath<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let hash: BlobHash = hash
        .parse()
        .map_err(|error: fleet_protocol::BlobHashError| ApiError::bad_request(error.to_string()))?;
    // The body is read and checked even when the blob exists: answering before the
    // client has sent it would break its connection mid-upload.
    let stream = body.into_data_stream();
    match state
        .blobs
        .put(&hash, stream, state.limits.max_blob_bytes)
        .await
    {
        Ok(()) => Ok(StatusCode::CREATED),
        Err(BlobError::HashMismatch { .. }) => Err(ApiError::new(
            ErrorCode::Unprocessable,
            format!("the uploaded bytes do not hash to `{hash}`; nothing was stored"),
        )),
        Err(BlobError::Body(error)) => Err(body_error(&error)),
    }
}

/// Maps a failed body read to the right response.
pub fn body_error(error: &BodyError) -> ApiError {
    match error {
        BodyError::TooLarge { .. } => ApiError::new(ErrorCode::PayloadTooLarge, error.to_string()),
        BodyError::Interrupted(_) => ApiError::bad_request(error.to_string()),
        BodyError::Io { .. } => ApiError::internal(error),
    }
}
