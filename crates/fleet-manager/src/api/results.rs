//! Downloading merged frames and previews.

use std::path::Path;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use fleet_protocol::{FrameState, JobId, OutputFormat};

use super::extract::{ApiPath, User};
use super::{ApiError, AppState};

pub async fn exr(
    _user: User,
    State(state): State<AppState>,
    ApiPath((id, frame)): ApiPath<(JobId, i32)>,
) -> Result<Response, ApiError> {
    finished_frame(&state, id, frame)?;
    serve(&state.frames.result_exr(id, frame), "image/x-exr").await
}

pub async fn image(
    _user: User,
    State(state): State<AppState>,
    ApiPath((id, frame)): ApiPath<(JobId, i32)>,
) -> Result<Response, ApiError> {
    let spec = finished_frame(&state, id, frame)?;
    if spec.output_format != OutputFormat::Png {
        return Err(ApiError::not_found(format!(
            "job {id} writes only the multilayer EXR; download it from the `exr` endpoint"
        )));
    }
    let (path, extension) = crate::post::image(&state.frames.frame_dir(id, frame));
    serve(&path, crate::post::content_type(&extension)).await
}

pub async fn preview(
    _user: User,
    State(state): State<AppState>,
    ApiPath((id, frame)): ApiPath<(JobId, i32)>,
) -> Result<Response, ApiError> {
    frame_of(&state, id, frame)?;
    let path = state.frames.preview_png(id, frame);
    if !path.exists() {
        return Err(ApiError::not_found(format!(
            "frame {frame} of job {id} has no merged samples yet"
        )));
    }
    serve(&path, "image/png").await
}

fn frame_of(
    state: &AppState,
    id: JobId,
    frame: i32,
) -> Result<(fleet_protocol::JobStatus, usize), ApiError> {
    let status = state
        .store
        .job_status(id)?
        .ok_or_else(|| ApiError::not_found(format!("job {id} not found")))?;
    let index = status
        .frames
        .iter()
        .position(|entry| entry.frame == frame)
        .ok_or_else(|| ApiError::not_found(format!("job {id} does not render frame {frame}")))?;
    Ok((status, index))
}

fn finished_frame(
    state: &AppState,
    id: JobId,
    frame: i32,
) -> Result<fleet_protocol::JobSpec, ApiError> {
    let (status, index) = frame_of(state, id, frame)?;
    let entry = &status.frames[index];
    if entry.state != FrameState::Done {
        return Err(ApiError::conflict(format!(
            "frame {frame} of job {id} is not finished ({} of {} samples merged)",
            entry.samples_done, entry.samples
        )));
    }
    state
        .store
        .job_spec(id)?
        .ok_or_else(|| ApiError::not_found(format!("job {id} not found")))
}

/// Streams a file as the response body.
pub async fn serve(path: &Path, content_type: &'static str) -> Result<Response, ApiError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|error| ApiError::internal(&error))?;
    let length = file
        .metadata()
        .await
        .map_err(|error| ApiError::internal(&error))?
        .len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        body,
    )
        .into_response())
}
