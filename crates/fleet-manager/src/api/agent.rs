//! The agent side: joining, leases, heartbeats, results.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleet_merge::ChunkInfo;
use fleet_protocol::{
    AgentId, AgentInfo, BlobHash, CreateJoinTokenRequest, ErrorCode, FailRequest, HeartbeatRequest,
    HeartbeatResponse, JoinRequest, JoinResponse, JoinToken, Lease, LeaseId, LeaseRequest,
    UploadResponse,
};
use serde::Deserialize;

use super::blobs::body_error;
use super::extract::{
    check_not_blocked, failed_attempt, Agent, ApiJson, ApiPath, ApiQuery, ClientAddress, User,
};
use super::{ApiError, AppState};
use crate::auth::secret_hash;
use crate::blobs::{unique_name, write_stream};
use crate::frames::FoldError;
use crate::store::agents::Joined;
use crate::store::leases::FailOutcome;
use crate::store::{now_ms, UploadPlan};

/// The longest an agent name may be.
const MAX_NAME_LEN: usize = 100;

pub async fn list(
    _user: User,
    State(state): State<AppState>,
) -> Result<Json<Vec<AgentInfo>>, ApiError> {
    let agents = state
        .store
        .list_agents(now_ms(), state.limits.lease_timeout_ms())?;
    Ok(Json(agents))
}

/// The largest certificate signing request accepted.
const MAX_REQUEST_PEM: usize = 16 * 1024;
/// Join credentials live an hour unless asked otherwise, and a week at most.
const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;
const MAX_TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

pub async fn join(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(request): ApiJson<JoinRequest>,
) -> Result<Json<JoinResponse>, ApiError> {
    check_not_blocked(&state, address)?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "agent name must be 1 to {MAX_NAME_LEN} printable characters"
        )));
    }
    if request.certificate_request.len() > MAX_REQUEST_PEM {
        return Err(ApiError::bad_request(
            "the certificate signing request is too large",
        ));
    }
    let joined = state.store.join_agent(
        &secret_hash(request.token.expose()),
        now_ms(),
        name,
        request.threads,
        &request.blender_version,
        |agent| {
            let pem = state.ca.sign_client_request(
                &request.certificate_request,
                &format!("blendfleet-agent-{agent}"),
            )?;
            let fingerprint = certificate_fingerprint(&pem)?;
            Ok::<_, fleet_tls::TlsError>((fingerprint, pem))
        },
    )?;
    match joined {
        Ok(Joined::Agent(agent_id, certificate)) => {
            tracing::info!(agent = %agent_id, name, blender = %request.blender_version, "agent joined");
            Ok(Json(JoinResponse {
                agent_id,
                certificate,
            }))
        }
        Ok(Joined::Refused(refusal)) => {
            tracing::warn!(name, address = ?address, %refusal, "refused an agent's join credential");
            let refused = ApiError::unauthorized(refusal.to_string());
            Err(failed_attempt(&state, address, refused))
        }
        Err(error) => Err(ApiError::bad_request(error.to_string())),
    }
}

fn certificate_fingerprint(pem: &str) -> Result<String, fleet_tls::TlsError> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| fleet_tls::TlsError::Identity("the signed certificate is not PEM".into()))?;
    Ok(fleet_tls::Fingerprint::of_der(&der).to_string())
}

pub async fn create_join_token(
    _user: User,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateJoinTokenRequest>,
) -> Result<(StatusCode, Json<JoinToken>), ApiError> {
    let ttl = request.ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS);
    if ttl == 0 || ttl > MAX_TOKEN_TTL_SECS {
        return Err(ApiError::bad_request(format!(
            "`ttl_secs` must be between 1 and {MAX_TOKEN_TTL_SECS}, got {ttl}"
        )));
    }
    let token = crate::new_join_token(&state.store, Duration::from_secs(ttl))?;
    Ok((StatusCode::CREATED, Json(token)))
}

pub async fn remove(
    _user: User,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<AgentId>,
) -> Result<StatusCode, ApiError> {
    if !state.store.revoke_agent(id, now_ms())? {
        return Err(ApiError::not_found(format!("agent {id} not found")));
    }
    tracing::info!(agent = %id, "agent removed; its certificate is revoked");
    state.work.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn lease(
    Agent(agent): Agent,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LeaseRequest>,
) -> Result<Response, ApiError> {
    // Hold the request while there is no work, but never so long that the agent would
    // look lost to the manager.
    let wait = Duration::from_millis(request.wait_ms).min(state.limits.lease_timeout / 2);
    let deadline = Instant::now() + wait;
    let timeout = state.limits.lease_timeout_ms();
    loop {
        let notified = state.work.notified();
        let chunk_seconds = state.limits.chunk_seconds;
        if let Some(grant) =
            state
                .store
                .acquire_lease_with(agent, now_ms(), timeout, chunk_seconds)?
        {
            tracing::info!(
                agent = %agent, job = %grant.job_id, frame = grant.frame,
                start = grant.sample_start, count = grant.sample_count, "chunk leased"
            );
            let lease = Lease {
                lease_id: grant.lease_id,
                chunk_id: grant.chunk_id,
                job_id: grant.job_id,
                frame: grant.frame,
                sample_start: grant.sample_start,
                sample_count: grant.sample_count,
                frame_samples: grant.spec.samples,
                seed: grant.spec.seed,
                resolution: grant.spec.resolution,
                main_file: grant.spec.main_file,
                files: grant.spec.files,
                heartbeat_interval_ms: u64::try_from(timeout / 4).unwrap_or(1000),
                lease_timeout_ms: u64::try_from(timeout).unwrap_or(u64::MAX),
            };
            return Ok(Json(lease).into_response());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // Expired leases are noticed by the expiry loop, which wakes us; the timeout is a
        // safety net.
        let _ = tokio::time::timeout((deadline - now).min(Duration::from_secs(1)), notified).await;
    }
}

pub async fn heartbeat(
    Agent(agent): Agent,
    State(state): State<AppState>,
    ApiPath(lease): ApiPath<LeaseId>,
    ApiJson(_request): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let timeout = state.limits.lease_timeout_ms();
    match state.store.heartbeat(lease, agent, now_ms(), timeout)? {
        Some(remaining) => Ok(Json(HeartbeatResponse {
            expires_in_ms: u64::try_from(remaining).unwrap_or(0),
        })),
        None => Err(lease_gone(lease)),
    }
}

fn lease_gone(lease: LeaseId) -> ApiError {
    ApiError::new(
        ErrorCode::Gone,
        format!("lease {lease} is no longer yours: it expired, was revoked or is finished"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// First sample of the piece; defaults to where the lease's rest begins.
    start: Option<u32>,
    /// Samples in the piece.
    samples: u32,
    /// Seconds the agent spent rendering them, for its speed.
    seconds: Option<f64>,
}

/// Receives a rendered piece of a lease, validates it and folds it into its frame.
pub async fn upload(
    Agent(agent): Agent,
    State(state): State<AppState>,
    ApiPath(lease): ApiPath<LeaseId>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    body: Body,
) -> Result<Json<UploadResponse>, ApiError> {
    let timeout = state.limits.lease_timeout_ms();
    // Refuse before reading the body when the lease is not the agent's any more.
    if state
        .store
        .heartbeat(lease, agent, now_ms(), timeout)?
        .is_none()
    {
        return Err(lease_gone(lease));
    }
    if query.samples == 0 {
        return Err(ApiError::bad_request("`samples` must be at least 1"));
    }
    // The rest runs as a task of its own: an agent that goes away mid-request (killed,
    // preempted) must not cancel a fold half way, which would leave its piece neither
    // merged nor queued.
    let task = tokio::spawn(async move {
        let incoming = state.frames.incoming_dir().join(unique_name("partial"));
        let written = write_stream(
            &incoming,
            body.into_data_stream(),
            state.limits.max_result_bytes,
        )
        .await;
        let result = match written {
            Ok(_) => merge_upload(&state, agent, lease, &query, incoming.clone()).await,
            Err(error) => Err(body_error(&error)),
        };
        let _ = tokio::fs::remove_file(&incoming).await;
        result
    });
    task.await.map_err(|error| ApiError::internal(&error))?
}

async fn merge_upload(
    state: &AppState,
    agent: AgentId,
    lease: LeaseId,
    query: &UploadQuery,
    partial: std::path::PathBuf,
) -> Result<Json<UploadResponse>, ApiError> {
    let timeout = state.limits.lease_timeout_ms();
    let plan =
        state
            .store
            .begin_upload(lease, agent, query.start, query.samples, now_ms(), timeout)?;
    let piece = match plan {
        UploadPlan::Fold(piece) => piece,
        UploadPlan::Duplicate { frame_id } => {
            let progress = state.store.frame_progress(frame_id)?;
            return Ok(Json(UploadResponse {
                frame_samples_done: progress.frame_samples_done,
                frame_samples: progress.frame_samples,
            }));
        }
        UploadPlan::Gone => return Err(lease_gone(lease)),
        UploadPlan::Invalid(message) => return Err(ApiError::bad_request(message)),
    };
    let spec = state
        .store
        .job_spec(piece.job_id)?
        .ok_or_else(|| lease_gone(lease))?;
    let chunk = ChunkInfo {
        id: piece.chunk_id.0,
        samples: piece.samples,
        holds_sample_zero: piece.sample_start == 0,
    };
    let outcome = state
        .frames
        .fold(piece.job_id, piece.frame, partial, chunk, spec.resolution)
        .await;
    if let Err(error) = outcome {
        let (message, response) = match error {
            FoldError::Rejected(reason) => {
                tracing::warn!(agent = %agent, lease = %lease, %reason, "rejected a partial render");
                let message = format!("rejected partial render: {reason}");
                (
                    message.clone(),
                    ApiError::new(ErrorCode::Unprocessable, message),
                )
            }
            FoldError::Internal(error) => (
                "the manager could not merge a partial render".to_owned(),
                ApiError::internal(error.as_ref()),
            ),
        };
        let max = state.limits.max_attempts;
        if let Some(job) = state
            .store
            .reject_upload(lease, &piece, &message, now_ms(), max)?
        {
            tracing::error!(job = %job, %message, "job failed");
        }
        state.work.notify_waiters();
        return Err(response);
    }
    let progress = state.store.finish_upload(lease, &piece, query.seconds)?;
    tracing::info!(
        job = %piece.job_id, frame = piece.frame, start = piece.sample_start,
        samples = piece.samples, done = progress.frame_samples_done, of = progress.frame_samples,
        "partial merged"
    );
    if progress.complete() {
        let state = std::sync::Arc::clone(state);
        let (job, frame, frame_id) = (piece.job_id, piece.frame, piece.frame_id);
        tokio::spawn(async move {
            crate::finish_frame(&state, job, frame, frame_id, spec.output_format).await;
        });
    }
    Ok(Json(UploadResponse {
        frame_samples_done: progress.frame_samples_done,
        frame_samples: progress.frame_samples,
    }))
}

/// The agent stops working on a lease (it is shutting down): the rest goes back to the queue.
pub async fn release(
    Agent(agent): Agent,
    State(state): State<AppState>,
    ApiPath(lease): ApiPath<LeaseId>,
) -> Result<StatusCode, ApiError> {
    if !state.store.release_lease(lease, agent)? {
        return Err(lease_gone(lease));
    }
    tracing::info!(agent = %agent, lease = %lease, "lease released; its rest is queued again");
    state.work.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn fail(
    Agent(agent): Agent,
    State(state): State<AppState>,
    ApiPath(lease): ApiPath<LeaseId>,
    ApiJson(request): ApiJson<FailRequest>,
) -> Result<StatusCode, ApiError> {
    let message: String = request.message.chars().take(4000).collect();
    let outcome =
        state
            .store
            .fail_lease(lease, agent, &message, now_ms(), state.limits.max_attempts)?;
    match outcome {
        FailOutcome::Gone => Err(lease_gone(lease)),
        FailOutcome::Requeued => {
            tracing::warn!(agent = %agent, lease = %lease, %message, "chunk failed; requeued");
            state.work.notify_waiters();
            Ok(StatusCode::NO_CONTENT)
        }
        FailOutcome::JobFailed(job) => {
            tracing::error!(agent = %agent, job = %job, %message, "job failed");
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

pub async fn blob(
    _agent: Agent,
    State(state): State<AppState>,
    ApiPath(hash): ApiPath<String>,
) -> Result<Response, ApiError> {
    let hash: BlobHash = hash
        .parse()
        .map_err(|error: fleet_protocol::BlobHashError| ApiError::bad_request(error.to_string()))?;
    if !state.blobs.contains(&hash) {
        return Err(ApiError::not_found(format!("no file with hash `{hash}`")));
    }
    super::results::serve(&state.blobs.path(&hash), "application/octet-stream").await
}
