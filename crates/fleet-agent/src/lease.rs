//! Working on one lease: fetch the project, render the range in pieces, upload each piece
//! as soon as it is rendered, and stop cleanly when told to.

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_blender::{ChunkOutcome, ChunkRequest, Worker, WorkerOptions};
use fleet_client::{AgentClient, ClientError};
use fleet_protocol::{ErrorCode, Lease};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::files::WorkDir;
use crate::pieces::PieceSizer;
use crate::{chain, AgentConfig, AgentError};

/// Pause between attempts to upload to an unreachable manager.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What the agent keeps between leases.
pub struct Agent {
    pub client: AgentClient,
    pub config: AgentConfig,
    pub work: WorkDir,
    pub worker: Option<Worker>,
    pub sizer: PieceSizer,
}

/// How rendering a piece ended.
enum Rendered {
    Done(ChunkOutcome),
    Failed(String),
    LeaseGone,
    /// Stopped in the middle of a piece, after this long.
    Stopping(Duration),
}

/// How a lease ended, before the in-flight upload is settled.
enum Ending {
    Finished,
    Failed(String),
    LeaseGone,
    Stopping,
}

impl Agent {
    /// Renders and uploads one lease. Returns early, releasing the rest of the lease, when
    /// `shutdown` fires; then finishes within the configured stop deadline.
    pub async fn work_on(
        &mut self,
        lease: &Lease,
        shutdown: &CancellationToken,
    ) -> Result<(), AgentError> {
        tracing::info!(
            lease = %lease.lease_id, job = %lease.job_id, frame = lease.frame,
            start = lease.sample_start, count = lease.sample_count, "working on a lease"
        );
        let root = match self
            .work
            .prepare_job(&self.client, lease.job_id, &lease.files)
            .await
        {
            Ok(root) => root,
            Err(error) => {
                let message = format!(
                    "the agent could not fetch the project files: {}",
                    chain(&error)
                );
                let _ = self.client.fail(lease.lease_id, &message).await;
                return Err(error);
            }
        };
        let gone = CancellationToken::new();
        let heartbeats = tokio::spawn(heartbeat(self.client.clone(), lease.clone(), gone.clone()));
        let mut head = lease.sample_start;
        let end = lease.sample_start + lease.sample_count;
        let mut in_flight: Option<JoinHandle<Result<(), ClientError>>> = None;
        let ending = loop {
            if head >= end {
                break Ending::Finished;
            }
            let count = self
                .sizer
                .next(lease.job_id, end - head, lease.frame_samples);
            let output = self
                .work
                .output(&format!("lease_{}_{head}.exr", lease.lease_id));
            let request = ChunkRequest {
                blend: root.join(&lease.main_file),
                frame: lease.frame,
                sample_start: head,
                sample_count: count,
                seed: lease.seed,
                frame_samples: Some(lease.frame_samples),
                resolution: lease.resolution.map(|r| (r.width, r.height)),
                output: output.clone(),
            };
            match self.render(&request, &gone, shutdown).await {
                Rendered::Done(outcome) => {
                    tracing::info!(
                        lease = %lease.lease_id, start = head, samples = outcome.samples,
                        loaded_scene = outcome.loaded_scene,
                        sync_seconds = outcome.sync_seconds,
                        render_seconds = outcome.render_seconds,
                        save_seconds = outcome.save_seconds,
                        total_seconds = outcome.total_seconds,
                        "chunk rendered"
                    );
                    self.sizer.record(
                        lease.job_id,
                        outcome.samples,
                        outcome.render_seconds,
                        outcome.save_seconds,
                    );
                    // One upload at a time: pieces must arrive in order.
                    if let Some(previous) = in_flight.take() {
                        if let Some(ending) = settle(previous.await) {
                            let _ = tokio::fs::remove_file(&output).await;
                            break ending;
                        }
                    }
                    let client = self.client.clone();
                    let lease = lease.clone();
                    let seconds = outcome.render_seconds;
                    in_flight = Some(tokio::spawn(async move {
                        let result = upload(&client, &lease, head, count, seconds, &output).await;
                        let _ = tokio::fs::remove_file(&output).await;
                        result
                    }));
                    head += count;
                }
                Rendered::Failed(message) => break Ending::Failed(message),
                Rendered::LeaseGone => break Ending::LeaseGone,
                Rendered::Stopping(elapsed) => {
                    // What the interrupted piece had rendered is lost; say how much.
                    let lost = self.sizer.speed(lease.job_id).map_or(0.0, |speed| {
                        (speed * elapsed.as_secs_f64()).min(f64::from(count))
                    });
                    tracing::info!(
                        lease = %lease.lease_id, start = head, samples = count,
                        elapsed_seconds = elapsed.as_secs_f64(), lost_samples = lost,
                        "stopped in the middle of a piece"
                    );
                    break Ending::Stopping;
                }
            }
        };
        heartbeats.abort();
        self.finish(lease, ending, in_flight).await
    }

    /// Settles the last upload and tells the manager how the lease ended.
    async fn finish(
        &mut self,
        lease: &Lease,
        ending: Ending,
        in_flight: Option<JoinHandle<Result<(), ClientError>>>,
    ) -> Result<(), AgentError> {
        let id = lease.lease_id;
        match ending {
            Ending::Finished => {
                if let Some(upload) = in_flight {
                    if let Some(Ending::Failed(message)) = settle(upload.await) {
                        return Err(AgentError::Refused(message));
                    }
                }
                Ok(())
            }
            Ending::Failed(message) => {
                if let Some(upload) = in_flight {
                    let _ = upload.await;
                }
                tracing::warn!(lease = %id, %message, "chunk failed");
                self.client
                    .fail(id, &message)
                    .await
                    .map_err(AgentError::from)
            }
            Ending::LeaseGone => {
                tracing::info!(lease = %id, "the lease is no longer ours; stopped working on it");
                if let Some(upload) = in_flight {
                    upload.abort();
                }
                Ok(())
            }
            Ending::Stopping => {
                // Deliver what is rendered, hand the rest back, and be quick about it.
                let deadline = self.config.stop_deadline;
                let stop = async {
                    if let Some(upload) = in_flight {
                        let _ = upload.await;
                    }
                    self.client.release(id).await
                };
                match tokio::time::timeout(deadline, stop).await {
                    Ok(Ok(())) => tracing::info!(lease = %id, "released the rest of the lease"),
                    Ok(Err(error)) => {
                        tracing::warn!(lease = %id, error = %chain(&error), "could not release the lease")
                    }
                    Err(_) => {
                        tracing::warn!(lease = %id, "stop deadline reached; the lease will lapse")
                    }
                }
                Ok(())
            }
        }
    }

    /// Renders one piece in the resident Blender, starting it when needed.
    async fn render(
        &mut self,
        request: &ChunkRequest,
        gone: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Rendered {
        if self.worker.is_none() {
            match Worker::spawn(&self.config.blender, worker_options(&self.config)).await {
                Ok(worker) => self.worker = Some(worker),
                Err(error) => return Rendered::Failed(blender_message(&error)),
            }
        }
        let Some(worker) = self.worker.as_mut() else {
            return Rendered::Failed("no Blender worker".into());
        };
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = worker.render_chunk(request) => outcome,
            () = gone.cancelled() => {
                // Blender cannot be interrupted at a sample boundary: stop it.
                self.worker = None;
                return Rendered::LeaseGone;
            }
            () = shutdown.cancelled() => {
                self.worker = None;
                return Rendered::Stopping(started.elapsed());
            }
        };
        match outcome {
            Ok(outcome) => Rendered::Done(outcome),
            Err(error) => {
                // A worker that failed may be in any state; start afresh next time.
                self.worker = None;
                Rendered::Failed(blender_message(&error))
            }
        }
    }
}

/// What a finished upload means for the lease: `None` to go on.
fn settle(joined: Result<Result<(), ClientError>, tokio::task::JoinError>) -> Option<Ending> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(error)) if error.code() == Some(ErrorCode::Gone) => Some(Ending::LeaseGone),
        Ok(Err(error)) => Some(Ending::Failed(format!(
            "uploading a rendered piece failed: {}",
            chain(&error)
        ))),
        Err(error) => Some(Ending::Failed(format!(
            "uploading a rendered piece failed: {error}"
        ))),
    }
}

/// Keeps the lease alive until it is aborted; fires `gone` when the manager says the lease
/// is no longer ours.
async fn heartbeat(client: AgentClient, lease: Lease, gone: CancellationToken) {
    let interval = Duration::from_millis(lease.heartbeat_interval_ms.max(100));
    loop {
        tokio::time::sleep(interval).await;
        match client.heartbeat(lease.lease_id, None).await {
            Ok(_) => {}
            Err(error) if matches!(error.code(), Some(ErrorCode::Gone | ErrorCode::Forbidden)) => {
                gone.cancel();
                return;
            }
            Err(error) => tracing::warn!(error = %chain(&error), "heartbeat failed"),
        }
    }
}

/// Uploads a piece, retrying while the manager is unreachable and the lease may still be
/// alive.
async fn upload(
    client: &AgentClient,
    lease: &Lease,
    start: u32,
    samples: u32,
    seconds: f64,
    output: &Path,
) -> Result<(), ClientError> {
    let deadline = Instant::now() + Duration::from_millis(lease.lease_timeout_ms);
    loop {
        match client
            .upload_piece(lease.lease_id, Some(start), samples, Some(seconds), output)
            .await
        {
            Ok(answer) => {
                tracing::info!(
                    lease = %lease.lease_id, frame = lease.frame, start, samples,
                    done = answer.frame_samples_done, of = answer.frame_samples, "uploaded"
                );
                return Ok(());
            }
            Err(ClientError::Connect { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => return Err(error),
        }
    }
}

pub fn worker_options(config: &AgentConfig) -> WorkerOptions {
    WorkerOptions {
        threads: config.threads,
        extra_env: Vec::new(),
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
