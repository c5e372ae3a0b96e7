//! The agent's main loop: join, lease, prepare, render with heartbeats, upload.

use std::time::{Duration, Instant};

use fleet_blender::{ChunkRequest, Worker, WorkerOptions};
use fleet_client::{AgentClient, ClientError};
use fleet_protocol::{ErrorCode, JoinRequest, Lease};
use tokio_util::sync::CancellationToken;

use crate::files::WorkDir;
use crate::identity::Identity;
use crate::{AgentConfig, AgentError};

/// Pause between attempts to reach an unreachable manager.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Joins the manager and renders until `shutdown` fires.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let stored = Identity::load(&config.work_dir, config.ca_fingerprint)?;
    if stored.is_none() && config.join_token.is_none() {
        return Err(AgentError::NoJoinToken);
    }
    let blender_version = config.blender.version().await?;
    let work = WorkDir::create(config.work_dir.clone())?;
    let identity = match stored {
        Some(identity) => {
            tracing::info!("using the certificate from an earlier join");
            identity
        }
        None => join(&config, &blender_version, &shutdown).await?,
    };
    let client = AgentClient::with_identity(
        &config.manager_url,
        config.ca_fingerprint,
        &identity.certificate_pem,
        &identity.key_pem,
    )?;
    // Start Blender now, while the first job is still being uploaded, so that the first
    // chunk does not wait for it. A failure here is reported with the first chunk instead.
    let mut worker: Option<Worker> = match Worker::spawn(&config.blender, worker_options(&config))
        .await
    {
        Ok(worker) => Some(worker),
        Err(error) => {
            tracing::warn!(error = %chain(&error), "Blender did not start; retrying with the first chunk");
            None
        }
    };
    let mut unreachable_since: Option<Instant> = None;

    while !shutdown.is_cancelled() {
        let leased = tokio::select! {
            leased = client.lease(config.lease_wait) => leased,
            () = shutdown.cancelled() => break,
        };
        let lease = match leased {
            Ok(Some(lease)) => {
                unreachable_since = None;
                lease
            }
            Ok(None) => {
                unreachable_since = None;
                continue;
            }
            Err(error) => {
                wait_for_manager(&error, &mut unreachable_since, &config, &shutdown).await?;
                continue;
            }
        };
        let outcome = work_on(&client, &config, &work, &mut worker, &lease, &shutdown).await;
        if let Err(error) = outcome {
            tracing::warn!(lease = %lease.lease_id, error = %chain(&error), "chunk not delivered");
        }
    }
    if let Some(worker) = worker {
        let _ = worker.shutdown().await;
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// Joins the farm: a fresh key pair, a signing request sent with the join credential, and
/// the signed certificate stored with the key in the work directory.
async fn join(
    config: &AgentConfig,
    blender_version: &str,
    shutdown: &CancellationToken,
) -> Result<Identity, AgentError> {
    let token = config.join_token.clone().ok_or(AgentError::NoJoinToken)?;
    let client = AgentClient::new(&config.manager_url, config.ca_fingerprint)?;
    let (certificate_request, key_pem) = fleet_tls::client_request(&config.name)?;
    let request = JoinRequest {
        token,
        name: config.name.clone(),
        threads: config.threads,
        blender_version: blender_version.to_owned(),
        certificate_request,
    };
    let mut unreachable_since = None;
    loop {
        match client.join(&request).await {
            Ok(answer) => {
                tracing::info!(agent = %answer.agent_id, manager = %client.url(), blender = blender_version, "joined");
                let identity = Identity {
                    certificate_pem: answer.certificate,
                    key_pem,
                };
                identity.save(&config.work_dir, config.ca_fingerprint)?;
                return Ok(identity);
            }
            Err(error) => {
                wait_for_manager(&error, &mut unreachable_since, config, shutdown).await?;
            }
        }
    }
}

/// Waits a moment after a failed call when the manager may come back; gives up on refusals
/// and after `connect_patience` of silence.
async fn wait_for_manager(
    error: &ClientError,
    unreachable_since: &mut Option<Instant>,
    config: &AgentConfig,
    shutdown: &CancellationToken,
) -> Result<(), AgentError> {
    match error {
        ClientError::Api {
            code: ErrorCode::Unauthorized | ErrorCode::Forbidden,
            message,
            ..
        } => {
            // A stored certificate the manager refuses is of no use any more: the next
            // start joins afresh (with a new join credential).
            Identity::forget(&config.work_dir);
            return Err(AgentError::Refused(message.clone()));
        }
        ClientError::PinMismatch(message) => return Err(AgentError::Refused(message.clone())),
        _ => {}
    }
    let since = *unreachable_since.get_or_insert_with(Instant::now);
    if since.elapsed() > config.connect_patience {
        return Err(AgentError::Unreachable(clone_error(error)));
    }
    tracing::warn!(error = %chain(error), "manager not reachable; retrying");
    tokio::select! {
        () = tokio::time::sleep(RETRY_PAUSE) => {}
        () = shutdown.cancelled() => {}
    }
    Ok(())
}

fn clone_error(error: &ClientError) -> ClientError {
    ClientError::Protocol(chain(error))
}

/// Renders one lease and uploads its result.
async fn work_on(
    client: &AgentClient,
    config: &AgentConfig,
    work: &WorkDir,
    worker: &mut Option<Worker>,
    lease: &Lease,
    shutdown: &CancellationToken,
) -> Result<(), AgentError> {
    tracing::info!(
        lease = %lease.lease_id, job = %lease.job_id, frame = lease.frame,
        start = lease.sample_start, count = lease.sample_count, "rendering chunk"
    );
    let root = match work.prepare_job(client, lease.job_id, &lease.files).await {
        Ok(root) => root,
        Err(error) => {
            let message = format!(
                "the agent could not fetch the project files: {}",
                chain(&error)
            );
            let _ = client.fail(lease.lease_id, &message).await;
            return Err(error);
        }
    };
    let output = work.output(&format!("lease_{}.exr", lease.lease_id));
    let request = ChunkRequest {
        blend: root.join(&lease.main_file),
        frame: lease.frame,
        sample_start: lease.sample_start,
        sample_count: lease.sample_count,
        seed: lease.seed,
        frame_samples: Some(lease.frame_samples),
        resolution: lease.resolution.map(|r| (r.width, r.height)),
        output: output.clone(),
    };
    let rendered = render_with_heartbeats(client, config, worker, lease, &request, shutdown).await;
    let result = match rendered {
        Rendered::Done(samples) => upload(client, lease, samples, &output).await,
        Rendered::Failed(message) => client
            .fail(lease.lease_id, &message)
            .await
            .map_err(AgentError::from),
        Rendered::Abandoned(reason) => {
            tracing::info!(lease = %lease.lease_id, reason, "chunk abandoned");
            Ok(())
        }
    };
    let _ = std::fs::remove_file(&output);
    result
}

fn worker_options(config: &AgentConfig) -> WorkerOptions {
    WorkerOptions {
        threads: config.threads,
        extra_env: Vec::new(),
    }
}

enum Rendered {
    Done(u32),
    Failed(String),
    Abandoned(&'static str),
}

async fn render_with_heartbeats(
    client: &AgentClient,
    config: &AgentConfig,
    slot: &mut Option<Worker>,
    lease: &Lease,
    request: &ChunkRequest,
    shutdown: &CancellationToken,
) -> Rendered {
    if slot.is_none() {
        match Worker::spawn(&config.blender, worker_options(config)).await {
            Ok(worker) => *slot = Some(worker),
            Err(error) => return Rendered::Failed(blender_message(&error)),
        }
    }
    let Some(worker) = slot.as_mut() else {
        return Rendered::Failed("no Blender worker".into());
    };
    let progress = worker.progress();
    let interval = Duration::from_millis(lease.heartbeat_interval_ms.max(100));
    let heartbeats = async {
        loop {
            tokio::time::sleep(interval).await;
            let done = *progress.borrow();
            match client.heartbeat(lease.lease_id, Some(done)).await {
                Ok(_) => {}
                Err(error) if error.code() == Some(ErrorCode::Gone) => return "lease gone",
                Err(error) => tracing::warn!(error = %chain(&error), "heartbeat failed"),
            }
        }
    };
    let outcome = tokio::select! {
        outcome = worker.render_chunk(request) => Some(outcome),
        reason = heartbeats => { return abandon(slot, reason); }
        () = shutdown.cancelled() => None,
    };
    match outcome {
        Some(Ok(outcome)) => {
            tracing::info!(
                lease = %lease.lease_id, samples = outcome.samples,
                loaded_scene = outcome.loaded_scene,
                sync_seconds = outcome.sync_seconds,
                render_seconds = outcome.render_seconds,
                save_seconds = outcome.save_seconds,
                total_seconds = outcome.total_seconds,
                "chunk rendered"
            );
            Rendered::Done(outcome.samples)
        }
        Some(Err(error)) => {
            // A worker that failed may be in any state; start afresh next time.
            *slot = None;
            Rendered::Failed(blender_message(&error))
        }
        None => abandon(slot, "agent shutting down"),
    }
}

/// Stops rendering: the worker is killed (it cannot be interrupted mid-render otherwise).
fn abandon(slot: &mut Option<Worker>, reason: &'static str) -> Rendered {
    *slot = None;
    Rendered::Abandoned(reason)
}

async fn upload(
    client: &AgentClient,
    lease: &Lease,
    samples: u32,
    output: &std::path::Path,
) -> Result<(), AgentError> {
    let deadline = Instant::now() + Duration::from_millis(lease.lease_timeout_ms);
    loop {
        match client.upload_result(lease.lease_id, samples, output).await {
            Ok(answer) => {
                tracing::info!(
                    lease = %lease.lease_id, frame = lease.frame,
                    done = answer.frame_samples_done, of = answer.frame_samples, "uploaded"
                );
                return Ok(());
            }
            Err(ClientError::Connect { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Blender's error with the last lines it printed, for the job's error message.
fn blender_message(error: &fleet_blender::BlenderError) -> String {
    let mut message = error.to_string();
    let tail = error.output_tail();
    if !tail.is_empty() && !message.contains('\n') {
        let shown: Vec<&str> = tail
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(String::as_str)
            .collect();
        message.push_str("\nBlender's last output:\n");
        message.push_str(&shown.join("\n"));
    }
    message
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
