//! The agent side of the API: joining, leases, heartbeats, uploads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AgentId, BlobHash, ChunkId, JobId, LeaseId, Resolution, Secret};

/// An agent introduces itself with a join credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The join credential the manager printed or handed to its local agents.
    pub token: Secret,
    /// A name for humans; need not be unique.
    pub name: String,
    /// Render threads this agent uses (0: all cores).
    pub threads: u32,
    /// The Blender it renders with, e.g. `3.4.1`.
    pub blender_version: String,
    /// A PKCS#10 certificate signing request (PEM) for the key the agent generated; the
    /// manager signs it with its CA. The private key never leaves the agent.
    pub certificate_request: String,
}

/// The manager accepts the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The agent's identity from now on.
    pub agent_id: AgentId,
    /// The agent's client certificate (PEM), signed by the manager's CA. Every later agent
    /// call is made over mutual TLS with it.
    pub certificate: String,
}

/// Asks for a join credential.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinTokenRequest {
    /// How long the credential stays valid, in seconds (default one hour, at most a week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// A join credential: one agent may join with it, once, before it expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The credential itself; shown once, stored hashed.
    pub token: Secret,
    /// When it expires, milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

/// Asks for work; the manager holds the request up to `wait_ms` when it has none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// How long the agent is willing to wait for work, in milliseconds.
    pub wait_ms: u64,
}

/// One chunk of work: render samples `[sample_start, sample_start + sample_count)` of a frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease; quote it in heartbeats and the upload.
    pub lease_id: LeaseId,
    /// The chunk leased.
    pub chunk_id: ChunkId,
    /// The job it belongs to.
    pub job_id: JobId,
    /// The frame to render.
    pub frame: i32,
    /// First sample (Cycles `sample_offset`).
    pub sample_start: u32,
    /// Number of samples.
    pub sample_count: u32,
    /// Samples of the whole frame. Every chunk of a frame renders with this total, which
    /// Blender 4.x's sampling pattern depends on.
    pub frame_samples: u32,
    /// Seed shared by every chunk of the frame; `None` keeps the scene's seed.
    pub seed: Option<u32>,
    /// Output size; `None` keeps the scene's size.
    pub resolution: Option<Resolution>,
    /// The .blend to open, a key of `files`.
    pub main_file: String,
    /// The project tree: relative path → content hash.
    pub files: BTreeMap<String, BlobHash>,
    /// Send a heartbeat at least this often.
    pub heartbeat_interval_ms: u64,
    /// The lease lapses when no heartbeat arrives for this long.
    pub lease_timeout_ms: u64,
}

/// Keeps a lease alive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// Samples finished so far, when the agent knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_done: Option<u32>,
}

/// The lease is still valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Milliseconds until the lease lapses without another heartbeat.
    pub expires_in_ms: u64,
}

/// The agent could not render its chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// What went wrong, in Blender's words where possible.
    pub message: String,
}

/// A partial render was merged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadResponse {
    /// Samples of the frame merged so far.
    pub frame_samples_done: u32,
    /// Samples the frame asks for.
    pub frame_samples: u32,
}

/// How an agent is doing, as the manager sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Connected, waiting for work.
    Idle,
    /// Holding a lease.
    Busy,
    /// Not heard from for longer than a lease lasts.
    Lost,
}

/// A line of the agent list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent.
    pub id: AgentId,
    /// Its name.
    pub name: String,
    /// Where it is.
    pub state: AgentState,
    /// Render threads (0: all cores).
    pub threads: u32,
    /// Blender version it renders with.
    pub blender_version: String,
    /// Last time the manager heard from it, milliseconds since the Unix epoch.
    pub last_seen_ms: i64,
    /// The job it works on, when busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// Samples it has had merged, over its lifetime.
    pub samples_rendered: u64,
}
