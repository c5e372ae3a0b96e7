//! Wire types of the BlendFleet API.
//!
//! Everything the manager, the agents and the clients exchange is defined here, so that the
//! three sides cannot drift apart. The crate does no I/O: it only describes, parses and
//! validates.

mod agent;
mod blob;
mod error;
mod farm;
#[doc(hidden)]
pub mod fuzzing;
mod ids;
pub mod paths;
mod secret;
mod spec;
mod status;

pub use agent::{
    AgentInfo, AgentState, CreateJoinTokenRequest, FailRequest, HeartbeatRequest,
    HeartbeatResponse, JoinRequest, JoinResponse, JoinToken, Lease, LeaseRequest, UploadResponse,
};
pub use blob::{BlobHash, BlobHashError, MissingBlobsRequest, MissingBlobsResponse};
pub use error::{ErrorBody, ErrorCode};
pub use farm::{format_usd, FarmInstance, FarmStatus, JobSpend, JobSpendLine};
pub use ids::{AgentId, ChunkId, JobId, LeaseId};
pub use secret::Secret;
pub use spec::{
    validate_relative_path, ChunkPolicy, FrameMode, FrameRange, JobSpec, OutputFormat, PathError,
    Resolution, SpecError, MAX_FILES_PER_JOB, MAX_FRAMES_PER_JOB, MAX_SAMPLES,
};
pub use status::{
    CreateJobResponse, FrameState, FrameStatus, JobList, JobState, JobStatus, JobSummary,
    ServerInfo,
};

/// The version of the API this crate describes; every path starts with `/api/v1`.
pub const API_VERSION: u32 = 1;
