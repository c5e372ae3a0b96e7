//! `blendfleet agent`.

use std::process::ExitCode;
use std::time::Duration;

use fleet_agent::preemption::PreemptionWatch;
use fleet_agent::AgentConfig;
use fleet_blender::BlenderCommand;
use fleet_protocol::Secret;

use crate::cli::AgentArgs;

/// The join credential, from the environment (so it stays out of process listings).
pub const ENV_JOIN_TOKEN: &str = "BLENDFLEET_JOIN_TOKEN";

pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let shutdown = fleet_agent::shutdown_on_signals();
    // A preemption notice stops the agent exactly as SIGTERM does: it cancels the same token.
    let watch = PreemptionWatch::new(args.preemption_notice, args.metadata_url);
    let watcher = fleet_agent::preemption::spawn(watch, shutdown.clone())?;
    // Only needed the first time: afterwards the agent has its certificate.
    let token = std::env::var(ENV_JOIN_TOKEN).ok().map(Secret::new);
    let blender = BlenderCommand::discover(args.blender.as_deref())?;
    let name = args.name.unwrap_or_else(hostname);
    let work_dir = match args.work_dir {
        Some(dir) => dir,
        None => crate::manager_cmd::data_dir()?.join("agent"),
    };
    let config = AgentConfig {
        manager_url: args.manager,
        ca_fingerprint: args.ca_fingerprint,
        join_token: token,
        name,
        threads: args.threads,
        blender,
        work_dir,
        lease_wait: Duration::from_secs(20),
        connect_patience: Duration::from_secs(300),
        piece_seconds: seconds("--piece-seconds", args.piece_seconds)?,
        stop_deadline: seconds("--stop-deadline", args.stop_deadline)?,
    };
    let result = fleet_agent::run(config, shutdown).await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "agent".to_owned())
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !(value > 0.0 && value <= 86_400.0) {
        anyhow::bail!("{flag} must be between 0 and 86400 seconds, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}
