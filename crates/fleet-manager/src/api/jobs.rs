//! Submitting, inspecting and controlling jobs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use fleet_protocol::{CreateJobResponse, JobId, JobList, JobSpec, JobState, JobStatus};

use super::extract::{ApiJson, ApiPath, User};
use super::{ApiError, AppState};
use crate::store::jobs::JobChange;
use crate::store::now_ms;

pub async fn list(_user: User, State(state): State<AppState>) -> Result<Json<JobList>, ApiError> {
    Ok(Json(JobList {
        jobs: state.store.list_jobs()?,
    }))
}

pub async fn create(
    _user: User,
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<JobSpec>,
) -> Result<(StatusCode, Json<CreateJobResponse>), ApiError> {
    let spec = spec
        .normalized()
        .map_err(|error| ApiError::bad_request(format!("invalid task spec: {error}")))?;
    if let Some((path, hash)) = spec
        .files
        .iter()
        .find(|(_, hash)| !state.blobs.contains(hash))
    {
        return Err(ApiError::bad_request(format!(
            "file `{path}` (hash `{hash}`) has not been uploaded"
        )));
    }
    let id = state.store.create_job(&spec, now_ms())?;
    let job_state = if spec.start {
        JobState::Queued
    } else {
        JobState::Created
    };
    tracing::info!(job = %id, name = %spec.display_name(), frames = %spec.frames, samples = spec.samples, "job created");
    state.work.notify_waiters();
    Ok((
        StatusCode::CREATED,
        Json(CreateJobResponse {
            id,
            state: job_state,
        }),
    ))
}

pub async fn status(
    _user: User,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<JobId>,
) -> Result<Json<JobStatus>, ApiError> {
    job_status(&state, id).map(Json)
}

fn job_status(state: &AppState, id: JobId) -> Result<JobStatus, ApiError> {
    let mut status = state
        .store
        .job_status(id)?
        .ok_or_else(|| ApiError::not_found(format!("job {id} not found")))?;
    status.spend = state.farm.job_spend(&state.store, id)?;
    crate::post::annotate(state, &mut status)?;
    Ok(status)
}

pub async fn start(
    _user: User,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<JobId>,
) -> Result<Json<JobStatus>, ApiError> {
    changed(state.store.start_job(id)?, id, "started")?;
    state.work.notify_waiters();
    job_status(&state, id).map(Json)
}

pub async fn cancel(
    _user: User,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<JobId>,
) -> Result<Json<JobStatus>, ApiError> {
    changed(state.store.cancel_job(id, now_ms())?, id, "cancelled")?;
    tracing::info!(job = %id, "job cancelled");
    job_status(&state, id).map(Json)
}

pub async fn delete(
    _user: User,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<JobId>,
) -> Result<StatusCode, ApiError> {
    if !state.store.delete_job(id)? {
        return Err(ApiError::not_found(format!("job {id} not found")));
    }
    state
        .frames
        .remove_job(id)
        .await
        .map_err(|error| ApiError::internal(&error))?;
    tracing::info!(job = %id, "job deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn changed(change: JobChange, id: JobId, verb: &str) -> Result<(), ApiError> {
    match change {
        JobChange::Changed(_) => Ok(()),
        JobChange::NotFound => Err(ApiError::not_found(format!("job {id} not found"))),
        JobChange::Conflict(current) => Err(ApiError::conflict(format!(
            "job {id} is {} and cannot be {verb}",
            current.as_str()
        ))),
    }
}
