//! What clients read back: jobs, frames, server information.

use serde::{Deserialize, Serialize};

use crate::{FrameRange, JobId};

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Submitted with `start: false`; waits for a start request.
    Created,
    /// Waiting for agents; no chunk has been handed out yet.
    Queued,
    /// At least one chunk has been leased.
    Running,
    /// Every frame is merged and written.
    Done,
    /// A chunk failed in a way that retrying cannot fix; see the job's `error`.
    Failed,
    /// Stopped by a user.
    Cancelled,
}

impl JobState {
    /// Whether the job can no longer change.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }

    /// The lowercase name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses [`JobState::as_str`] output.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Created,
            Self::Queued,
            Self::Running,
            Self::Done,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// Where one frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameState {
    /// No samples merged yet.
    Pending,
    /// Some samples merged.
    Rendering,
    /// All samples merged; the result is available.
    Done,
}

/// One frame of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameStatus {
    /// Blender frame number.
    pub frame: i32,
    /// Where the frame is.
    pub state: FrameState,
    /// Samples asked for.
    pub samples: u32,
    /// Samples merged so far.
    pub samples_done: u32,
    /// Partial renders merged so far.
    pub chunks_merged: u32,
    /// Whether a merged preview can be downloaded.
    pub preview_available: bool,
    /// Extension of the finished frame's flat image (`png`, `jpg`, `exr`, ...): the scene's
    /// output format once the frame is post-processed. Absent until the frame is finished
    /// and for jobs that deliver only the multilayer EXR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_format: Option<String>,
}

/// A line of the job list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job.
    pub id: JobId,
    /// Display name.
    pub name: String,
    /// Where it is.
    pub state: JobState,
    /// The frames it renders.
    pub frame_range: FrameRange,
    /// Samples per frame.
    pub samples: u32,
    /// Samples merged so far, over all frames.
    pub samples_done: u64,
    /// Samples asked for, over all frames.
    pub samples_total: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Why the job failed, in Blender's words where Blender said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything known about one job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The summary line.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// Per-frame progress.
    pub frames: Vec<FrameStatus>,
    /// Names of the agents holding a lease on this job right now.
    pub agents: Vec<String>,
    /// When the first chunk was leased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    /// When the job reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    /// What the job has cost on cloud instances, and its budget; absent when nothing was
    /// spent and no budget applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<crate::JobSpend>,
    /// What a user should know about the results, e.g. that denoising was asked for but the
    /// manager's Blender has none, so frames are delivered undenoised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The job list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobSummary>,
}

/// The answer to a job submission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateJobResponse {
    /// The new job.
    pub id: JobId,
    /// Its state right after creation.
    pub state: JobState,
}

/// `GET /api/v1/info`: who answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// `blendfleet-manager`.
    pub server: String,
    /// The manager's version.
    pub version: String,
    /// The API version, 1.
    pub api_version: u32,
    /// Agents that are connected now.
    pub agents_online: u32,
}
