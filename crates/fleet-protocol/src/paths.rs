//! Every path of the API, in one place. Paths with parameters are functions.

use crate::{AgentId, BlobHash, JobId, LeaseId};

/// Prefix of every path.
pub const PREFIX: &str = "/api/v1";

/// `GET`: [`crate::ServerInfo`].
pub const INFO: &str = "/api/v1/info";
/// `POST` [`crate::MissingBlobsRequest`] → [`crate::MissingBlobsResponse`].
pub const BLOBS_MISSING: &str = "/api/v1/blobs/missing";
/// `GET` → [`crate::JobList`]; `POST` [`crate::JobSpec`] → [`crate::CreateJobResponse`].
pub const JOBS: &str = "/api/v1/jobs";
/// `GET` → `Vec<`[`crate::AgentInfo`]`>`.
pub const AGENTS: &str = "/api/v1/agents";
/// `POST` [`crate::CreateJoinTokenRequest`] → [`crate::JoinToken`].
pub const JOIN_TOKENS: &str = "/api/v1/join-tokens";
/// `GET`: cloud instances, spend and scaling events.
pub const FARM: &str = "/api/v1/farm";
/// `POST` [`crate::JoinRequest`] → [`crate::JoinResponse`].
pub const AGENT_JOIN: &str = "/api/v1/agent/join";
/// `POST` [`crate::LeaseRequest`] → [`crate::Lease`], or 204 when there is no work.
pub const AGENT_LEASE: &str = "/api/v1/agent/lease";

/// `PUT` raw bytes: upload a file under its SHA-256.
pub fn blob(hash: &BlobHash) -> String {
    format!("{PREFIX}/blobs/{hash}")
}

/// `DELETE`: removes an agent and revokes its certificate.
pub fn agent(id: AgentId) -> String {
    format!("{PREFIX}/agents/{id}")
}

/// `GET` → [`crate::JobStatus`]; `DELETE` removes the job and its results.
pub fn job(id: JobId) -> String {
    format!("{PREFIX}/jobs/{id}")
}

/// `POST`: queue a created job.
pub fn job_start(id: JobId) -> String {
    format!("{PREFIX}/jobs/{id}/start")
}

/// `POST`: stop a job; leases on it are revoked.
pub fn job_cancel(id: JobId) -> String {
    format!("{PREFIX}/jobs/{id}/cancel")
}

/// `GET`: the merged multilayer EXR of a finished frame.
pub fn frame_exr(id: JobId, frame: i32) -> String {
    format!("{PREFIX}/jobs/{id}/frames/{frame}/exr")
}

/// `GET`: the flat PNG of a finished frame (when the job's output format is `png`).
pub fn frame_image(id: JobId, frame: i32) -> String {
    format!("{PREFIX}/jobs/{id}/frames/{frame}/image")
}

/// `GET`: a PNG of the frame's Combined pass, merged from what has arrived so far.
pub fn frame_preview(id: JobId, frame: i32) -> String {
    format!("{PREFIX}/jobs/{id}/frames/{frame}/preview")
}

/// `POST` [`crate::HeartbeatRequest`] → [`crate::HeartbeatResponse`]; 410 when the lease is gone.
pub fn lease_heartbeat(id: LeaseId) -> String {
    format!("{PREFIX}/agent/leases/{id}/heartbeat")
}

/// `PUT` a rendered piece of the lease (a partial EXR), with `?start=S&samples=N&seconds=T`
/// → [`crate::UploadResponse`]. Pieces are uploaded in order: `start` is where the lease's
/// unrendered rest begins; a retried piece is recognised and not counted twice.
pub fn lease_result(id: LeaseId) -> String {
    format!("{PREFIX}/agent/leases/{id}/result")
}

/// `POST`: the agent stops; the rest of the lease is queued again at once.
pub fn lease_release(id: LeaseId) -> String {
    format!("{PREFIX}/agent/leases/{id}/release")
}

/// `POST` [`crate::FailRequest`].
pub fn lease_fail(id: LeaseId) -> String {
    format!("{PREFIX}/agent/leases/{id}/fail")
}

/// `GET`: a project file, for agents.
pub fn agent_blob(hash: &BlobHash) -> String {
    format!("{PREFIX}/agent/blobs/{hash}")
}
