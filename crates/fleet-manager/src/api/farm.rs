//! `GET /api/v1/farm`: cloud instances, spend, scaling events.

use axum::extract::State;
use axum::Json;
use fleet_protocol::{FarmStatus, JobSpendLine};

use super::extract::User;
use super::{ApiError, AppState};

pub async fn status(
    _user: User,
    State(state): State<AppState>,
) -> Result<Json<FarmStatus>, ApiError> {
    let mut status = state.farm.status();
    if status.provider.is_none() {
        // No scaler: still report what was recorded (spend of an earlier cloud run).
        let (total, jobs) = state.store.farm_spend()?;
        status.total_cost_micro_usd = to_micro(total.cost_usd);
        status.jobs = jobs
            .into_iter()
            .map(|(job_id, spend)| JobSpendLine {
                job_id,
                cost_micro_usd: to_micro(spend.cost_usd),
                agent_seconds: to_micro(spend.seconds) / 1_000_000,
            })
            .collect();
    }
    Ok(Json(status))
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn to_micro(value: f64) -> u64 {
    (value * 1e6).round().max(0.0) as u64
}
