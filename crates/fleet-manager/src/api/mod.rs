//! The HTTP API under `/api/v1`.

mod agent;
mod blobs;
mod error;
mod extract;
mod farm;
mod jobs;
mod results;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use fleet_protocol::{paths, ServerInfo};
use fleet_tls::CertificateAuthority;
use tokio::sync::Notify;

pub use error::ApiError;

/// An error and its causes as one line, for logs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

use crate::auth::Credentials;
use crate::blobs::BlobStore;
use crate::frames::Frames;
use crate::limiter::FailureLimiter;
use crate::store::Store;

/// Limits and timeouts the API enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A lease lapses when its agent is silent this long.
    pub lease_timeout: Duration,
    /// Failures of one chunk before its job fails.
    pub max_attempts: u32,
    /// Once an agent's speed is known, a split chunk holds about this many seconds of its
    /// work.
    pub chunk_seconds: f64,
    /// Largest project file accepted.
    pub max_blob_bytes: u64,
    /// Largest partial render accepted.
    pub max_result_bytes: u64,
    /// Largest task spec accepted.
    pub max_spec_bytes: usize,
    /// Failed logins or joins from one address within `failure_window` before it is
    /// blocked for `lockout`.
    pub max_failures: u32,
    /// See `max_failures`.
    pub failure_window: Duration,
    /// See `max_failures`.
    pub lockout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            lease_timeout: Duration::from_secs(30),
            max_attempts: 3,
            chunk_seconds: crate::store::leases::DEFAULT_CHUNK_SECONDS,
            max_blob_bytes: 64 << 30,
            max_result_bytes: 8 << 30,
            max_spec_bytes: 16 << 20,
            max_failures: 10,
            failure_window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
        }
    }
}

impl Limits {
    fn lease_timeout_ms(&self) -> i64 {
        i64::try_from(self.lease_timeout.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Everything handlers share.
pub struct Shared {
    pub store: Store,
    pub blobs: BlobStore,
    pub frames: Frames,
    pub credentials: Credentials,
    /// Signs the certificates of joining agents.
    pub ca: CertificateAuthority,
    pub limiter: FailureLimiter,
    pub limits: Limits,
    /// Woken whenever work may have become available (new job, requeued chunk).
    pub work: Notify,
    /// Denoises, composites and writes each finished frame in the scene's format.
    pub post: crate::post::PostProcessor,
    /// Cloud instances, spend and client activity, for the scaler and `GET /farm`.
    pub farm: crate::scaler::FarmState,
}

/// The state handlers receive.
pub type AppState = Arc<Shared>;

/// The complete API.
pub fn router(state: AppState) -> Router {
    let spec_limit = state.limits.max_spec_bytes;
    let user = Router::new()
        .route(paths::INFO, get(info))
        .route(paths::BLOBS_MISSING, post(blobs::missing))
        .route("/api/v1/blobs/{hash}", put(blobs::upload))
        .route(
            paths::JOBS,
            get(jobs::list)
                .post(jobs::create)
                .layer(DefaultBodyLimit::max(spec_limit)),
        )
        .route("/api/v1/jobs/{id}", get(jobs::status).delete(jobs::delete))
        .route("/api/v1/jobs/{id}/start", post(jobs::start))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/v1/jobs/{id}/frames/{frame}/exr", get(results::exr))
        .route(
            "/api/v1/jobs/{id}/frames/{frame}/image",
            get(results::image),
        )
        .route(
            "/api/v1/jobs/{id}/frames/{frame}/preview",
            get(results::preview),
        )
        .route(paths::AGENTS, get(agent::list))
        .route("/api/v1/agents/{id}", delete(agent::remove))
        .route(paths::JOIN_TOKENS, post(agent::create_join_token))
        .route(paths::FARM, get(farm::status));
    let agents = Router::new()
        .route(paths::AGENT_JOIN, post(agent::join))
        .route(paths::AGENT_LEASE, post(agent::lease))
        .route(
            "/api/v1/agent/leases/{id}/heartbeat",
            post(agent::heartbeat),
        )
        .route("/api/v1/agent/leases/{id}/result", put(agent::upload))
        .route("/api/v1/agent/leases/{id}/fail", post(agent::fail))
        .route("/api/v1/agent/leases/{id}/release", post(agent::release))
        .route("/api/v1/agent/blobs/{hash}", get(agent::blob));
    user.merge(agents)
        .layer(DefaultBodyLimit::max(1 << 20))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn info(
    _user: extract::User,
    state: axum::extract::State<AppState>,
) -> Result<axum::Json<ServerInfo>, ApiError> {
    let now = crate::store::now_ms();
    let lost_after = state.limits.lease_timeout_ms();
    let online = state
        .store
        .list_agents(now, lost_after)?
        .iter()
        .filter(|agent| agent.state != fleet_protocol::AgentState::Lost)
        .count();
    Ok(axum::Json(ServerInfo {
        server: "blendfleet-manager".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: fleet_protocol::API_VERSION,
        agents_online: u32::try_from(online).unwrap_or(u32::MAX),
    }))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: `{}`", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        fleet_protocol::ErrorCode::MethodNotAllowed,
        format!("`{method}` is not allowed on `{}`", uri.path()),
    )
}
