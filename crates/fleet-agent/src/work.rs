//! The agent's main loop: join, lease, prepare, render with heartbeats, upload.

use std::time::{Duration, Instant};

use fleet_blender::Worker;
use fleet_client::{AgentClient, ClientError};
use fleet_protocol::{ErrorCode, JoinRequest};
use tokio_util::sync::CancellationToken;

use crate::files::WorkDir;
use crate::identity::Identity;
use crate::lease::{worker_options, Agent};
use crate::pieces::PieceSizer;
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
    let worker: Option<Worker> = match Worker::spawn(&config.blender, worker_options(&config)).await
    {
        Ok(worker) => Some(worker),
        Err(error) => {
            tracing::warn!(error = %chain(&error), "Blender did not start; retrying with the first chunk");
            None
        }
    };
    let mut unreachable_since: Option<Instant> = None;
    let mut agent = Agent {
        client: client.clone(),
        config: config.clone(),
        work,
        worker,
        sizer: PieceSizer::new(config.piece_seconds),
    };

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
        if let Err(error) = agent.work_on(&lease, &shutdown).await {
            tracing::warn!(lease = %lease.lease_id, error = %chain(&error), "chunk not delivered");
        }
    }
    if let Some(worker) = agent.worker.take() {
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

pub(crate) fn chain(error: &dyn std::error::Error) -> String {
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
