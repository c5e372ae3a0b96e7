//! Cloud farm status and spend: `GET /api/v1/farm` and the `spend` of a job.
//!
//! Money is counted in millionths of a US dollar (`*_micro_usd`), so that the types stay
//! exact and comparable.

use serde::{Deserialize, Serialize};

use crate::JobId;

/// What a job has cost so far, and its budget.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpend {
    /// Estimated cost: instance seconds × the machine type's hourly price.
    pub cost_micro_usd: u64,
    /// Seconds of agent instance time attributed to the job.
    pub agent_seconds: u64,
    /// The budget the manager applies to each job, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_micro_usd: Option<u64>,
    /// The budget is used up: no more agents are started for this job.
    #[serde(default)]
    pub budget_reached: bool,
}

/// One instance of the farm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmInstance {
    pub name: String,
    /// `agent` or `manager`.
    pub role: String,
    pub zone: String,
    /// `pending`, `running`, `stopping`, `stopped`, …
    pub state: String,
    pub machine_type: String,
    pub spot: bool,
    /// US dollars per hour from the price table, in millionths; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly_micro_usd: Option<u64>,
}

/// Spend of one job, in the farm overview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpendLine {
    pub job_id: JobId,
    pub cost_micro_usd: u64,
    pub agent_seconds: u64,
}

/// `GET /api/v1/farm`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmStatus {
    /// `aws`, `gcp`, `memory`; absent when the manager provisions no instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The farm name (the `blendfleet-farm` tag or label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub farm: Option<String>,
    pub max_agents: u32,
    /// Instances as of the scaler's last pass.
    pub instances: Vec<FarmInstance>,
    /// Everything spent since the manager's database was created.
    pub total_cost_micro_usd: u64,
    /// Spend per job.
    pub jobs: Vec<JobSpendLine>,
    /// Recent scaling decisions and refusals (zone fallbacks, budgets, idle shutdowns).
    pub events: Vec<String>,
    /// When the price table was read (`YYYY-MM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices_retrieved: Option<String>,
}

/// Millionths of a dollar as `$1.234567` with the given number of decimals.
pub fn format_usd(micro: u64, decimals: usize) -> String {
    #[allow(clippy::cast_precision_loss)]
    let dollars = micro as f64 / 1e6;
    format!("${dollars:.decimals$}")
}
