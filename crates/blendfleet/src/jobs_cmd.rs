//! `blendfleet jobs | status | cancel | download | agents` against a configured manager.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use fleet_protocol::{AgentId, ErrorCode, FrameState, JobId};

use crate::cli::RemoteArgs;
use crate::{connection, output};

pub async fn jobs(remote: &RemoteArgs) -> anyhow::Result<ExitCode> {
    let list = connection::required(remote)?.jobs().await?;
    if remote.json {
        output::json(&list)?;
    } else if list.jobs.is_empty() {
        output::line("no jobs");
    } else {
        for job in &list.jobs {
            output::line(format!(
                "{:>5}  {:<10} {:<24} frames {:<10} {}/{} samples{}",
                job.id,
                job.state.as_str(),
                job.name,
                job.frame_range.to_string(),
                job.samples_done,
                job.samples_total,
                job.error
                    .as_deref()
                    .map(|e| format!("  {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(job: JobId, remote: &RemoteArgs) -> anyhow::Result<ExitCode> {
    let status = connection::required(remote)?.job(job).await?;
    if remote.json {
        output::json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    let summary = &status.summary;
    output::line(format!(
        "job {} `{}`: {}",
        summary.id,
        summary.name,
        summary.state.as_str()
    ));
    if let Some(error) = &summary.error {
        output::line(format!("  error: {error}"));
    }
    for note in &status.notes {
        output::line(format!("  note: {note}"));
    }
    output::line(format!(
        "  samples: {}/{}",
        summary.samples_done, summary.samples_total
    ));
    output::line(format!("  agents: {}", status.agents.join(", ")));
    if let Some(spend) = &status.spend {
        let budget = match spend.budget_micro_usd {
            Some(budget) if spend.budget_reached => {
                format!(
                    " (budget {} reached: no more agents start for this job)",
                    fleet_protocol::format_usd(budget, 2)
                )
            }
            Some(budget) => format!(" of a {} budget", fleet_protocol::format_usd(budget, 2)),
            None => String::new(),
        };
        output::line(format!(
            "  spend: {} for {} agent-seconds{budget}",
            fleet_protocol::format_usd(spend.cost_micro_usd, 4),
            spend.agent_seconds
        ));
    }
    for frame in &status.frames {
        output::line(format!(
            "  frame {:>5}: {:<9} {}/{} samples, {} chunks merged",
            frame.frame,
            format!("{:?}", frame.state).to_lowercase(),
            frame.samples_done,
            frame.samples,
            frame.chunks_merged
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(job: JobId, remote: &RemoteArgs) -> anyhow::Result<ExitCode> {
    let status = connection::required(remote)?.cancel_job(job).await?;
    output::line(format!("job {job} is {}", status.summary.state.as_str()));
    Ok(ExitCode::SUCCESS)
}

pub async fn download(job: JobId, dir: &Path, remote: &RemoteArgs) -> anyhow::Result<ExitCode> {
    let client = connection::required(remote)?;
    let status = client.job(job).await?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let mut count = 0;
    for frame in status.frames.iter().filter(|f| f.state == FrameState::Done) {
        let base = format!("{}_{:04}", status.summary.name, frame.frame);
        let exr = dir.join(format!("{base}.exr"));
        client.download_frame_exr(job, frame.frame, &exr).await?;
        output::line(format!("saved {}", exr.display()));
        // Jobs with output format `exr` have no flat image; the manager answers 404.
        let image = dir.join(crate::render::image_file_name(
            &status.summary.name,
            frame.frame,
            frame.image_format.as_deref(),
        ));
        match client.download_frame_image(job, frame.frame, &image).await {
            Ok(()) => output::line(format!("saved {}", image.display())),
            Err(error) if error.code() == Some(ErrorCode::NotFound) => {}
            Err(error) => return Err(error.into()),
        }
        count += 1;
    }
    if count == 0 {
        output::line(format!("job {job} has no finished frames yet"));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn agents(remote: &RemoteArgs) -> anyhow::Result<ExitCode> {
    let agents = connection::required(remote)?.agents().await?;
    if remote.json {
        output::json(&agents)?;
    } else if agents.is_empty() {
        output::line("no agents");
    } else {
        for agent in &agents {
            output::line(format!(
                "{:>4}  {:<20} {:<5} blender {:<8} threads {:<3} {} samples rendered",
                agent.id,
                agent.name,
                format!("{:?}", agent.state).to_lowercase(),
                agent.blender_version,
                agent.threads,
                agent.samples_rendered
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn remove_agent(agent: AgentId, remote: &RemoteArgs) -> anyhow::Result<ExitCode> {
    connection::required(remote)?.remove_agent(agent).await?;
    output::line(format!("agent {agent} removed; its certificate is revoked"));
    Ok(ExitCode::SUCCESS)
}

pub async fn create_token(ttl_minutes: u64, remote: &RemoteArgs) -> anyhow::Result<ExitCode> {
    let ttl = std::time::Duration::from_secs(ttl_minutes.max(1) * 60);
    let token = connection::required(remote)?.create_join_token(ttl).await?;
    if remote.json {
        let shown = serde_json::json!({
            "token": token.token.expose(),
            "expires_at_ms": token.expires_at_ms,
        });
        output::json(&shown)?;
    } else {
        output::line(token.token.expose());
    }
    Ok(ExitCode::SUCCESS)
}
