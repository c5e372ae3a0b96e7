//! The resident Blender worker: one Blender process that keeps a .blend loaded and
//! renders many sample chunks of it. The protocol it speaks is in [`crate::protocol`].

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::chunk::{absolute, utf8, validate, ChunkOutcome, ChunkRequest};
use crate::command::BlenderCommand;
use crate::error::BlenderError;
use crate::process::{self, describe_status, OutputLog, Spawned, RECENT_LINES};
use crate::protocol::{split_timings, to_line, Ready, Reply, Request};
use crate::scripts::{self, Script};

/// How long Blender may take to start and connect.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a worker may take to exit after `shutdown` or after its connection broke.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Blender's largest thread count.
const MAX_THREADS: u32 = 1024;

/// How to run a [`Worker`].
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Render threads; 0 lets Blender use every core.
    pub threads: u32,
    /// Extra environment variables for the Blender process.
    pub extra_env: Vec<(String, String)>,
}

/// What the worker reported when it started.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WorkerInfo {
    /// Blender's version, e.g. `3.4.1`.
    pub blender_version: String,
    /// The version of Blender's Python.
    pub python_version: String,
    /// Whether Blender's Python could import its standard library (`ssl`); false points
    /// at a foreign Python on `PATH`.
    pub stdlib_ok: bool,
}

/// A resident Blender process that renders chunks. Dropping it kills the process.
pub struct Worker {
    process: Spawned,
    replies: Lines<BufReader<OwnedReadHalf>>,
    requests: OwnedWriteHalf,
    output: OutputLog,
    info: WorkerInfo,
    threads: u32,
    next_id: u64,
    /// How the process ended, once it has.
    ended: Option<String>,
    _dir: tempfile::TempDir,
}

enum Event {
    Line(std::io::Result<Option<String>>),
    Exited(std::io::Result<std::process::ExitStatus>),
}

impl Worker {
    /// Starts Blender with the worker script and waits until it is ready.
    pub async fn spawn(cmd: &BlenderCommand, options: WorkerOptions) -> Result<Self, BlenderError> {
        if options.threads > MAX_THREADS {
            return Err(BlenderError::InvalidRequest(format!(
                "`threads` must be at most {MAX_THREADS}, got {}",
                options.threads
            )));
        }
        let dir = scripts::temp_dir()?;
        let script = Script::Worker.write_to(dir.path())?;
        let socket = dir.path().join("control.sock");
        let listener = UnixListener::bind(&socket).map_err(|source| {
            BlenderError::io("could not listen on the worker's control socket", source)
        })?;
        let output = OutputLog::new();
        let command = cmd.script_command(
            &script,
            &["serve".into(), socket.into()],
            &options.extra_env,
        );
        let mut process = process::spawn(command, cmd.program(), &output).await?;

        let started = Instant::now();
        let stream = tokio::select! {
            accepted = tokio::time::timeout(START_TIMEOUT, listener.accept()) => match accepted {
                Ok(Ok((stream, _))) => stream,
                Ok(Err(source)) => return Err(BlenderError::io("could not accept Blender's connection", source)),
                Err(_) => return Err(startup_failure(&mut process, &output, "it did not connect within 120 s").await),
            },
            status = process.child.wait() => {
                let status = status.map(describe_status).unwrap_or_else(|e| e.to_string());
                process.drain().await;
                return Err(BlenderError::Startup {
                    message: format!("`{}` {status} before the worker script connected", cmd.program().display()),
                    output: output.tail(RECENT_LINES),
                });
            }
        };
        let (read_half, requests) = stream.into_split();
        let mut replies = BufReader::new(read_half).lines();
        let remaining = START_TIMEOUT.saturating_sub(started.elapsed());
        let ready = match tokio::time::timeout(remaining, replies.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                return Err(startup_failure(
                    &mut process,
                    &output,
                    "the worker script closed its connection",
                )
                .await)
            }
            Err(_) => {
                return Err(startup_failure(
                    &mut process,
                    &output,
                    "the worker script did not report ready",
                )
                .await)
            }
        };
        let ready: Ready = serde_json::from_str(&ready)
            .ok()
            .filter(|ready: &Ready| ready.event == "ready")
            .ok_or_else(|| BlenderError::Protocol(ready.clone()))?;
        if !ready.info.stdlib_ok {
            tracing::warn!(
                program = %cmd.program().display(),
                "Blender's Python cannot import `ssl`: a foreign Python on PATH may be shadowing Blender's"
            );
        }
        tracing::debug!(pid = ?process.child.id(), version = %ready.info.blender_version, "Blender worker ready");
        Ok(Self {
            process,
            replies,
            requests,
            output,
            info: ready.info,
            threads: options.threads,
            next_id: 0,
            ended: None,
            _dir: dir,
        })
    }

    /// What the worker reported when it started.
    pub fn info(&self) -> &WorkerInfo {
        &self.info
    }

    /// The Blender process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.child.id()
    }

    /// Samples done in the current chunk, as Blender reports them. Cycles reports in
    /// steps (in background mode typically after the first sample and at the end).
    pub fn progress(&self) -> watch::Receiver<u32> {
        self.output.subscribe()
    }

    /// The last lines Blender printed (stdout and stderr).
    pub fn recent_output(&self) -> Vec<String> {
        self.output.tail(RECENT_LINES)
    }

    /// Renders one chunk and saves it to `request.output` as a 32-bit multilayer EXR.
    ///
    /// Opens `request.blend` only if it is not the loaded file or it changed on disk.
    /// Returns promptly with [`BlenderError::Exited`] if Blender dies. If this future is
    /// dropped mid-chunk, Blender finishes that chunk before it starts the next one.
    pub async fn render_chunk(
        &mut self,
        request: &ChunkRequest,
    ) -> Result<ChunkOutcome, BlenderError> {
        validate(request)?;
        let blend = absolute(&request.blend)?;
        let output = absolute(&request.output)?;
        let context = format!(
            "Blender could not render frame {} of `{}`",
            request.frame,
            blend.display()
        );
        if let Some(status) = &self.ended {
            return Err(BlenderError::Exited {
                context,
                status: format!("is not running: it {status}"),
                output: self.output.tail(RECENT_LINES),
            });
        }
        if let Some(parent) = output.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|source| {
                BlenderError::io(format!("could not create `{}`", parent.display()), source)
            })?;
        }
        self.next_id += 1;
        let id = self.next_id;
        let message = Request::Render {
            id,
            blend: utf8(&blend)?,
            frame: request.frame,
            sample_start: request.sample_start,
            sample_count: request.sample_count,
            seed: request.seed,
            frame_samples: request.frame_samples,
            threads: self.threads,
            resolution: request.resolution,
            output: utf8(&output)?,
        };
        self.output.begin_chunk();
        let sent = Instant::now();
        let reply = self.exchange(&message, id, &context).await?;
        let total = sent.elapsed().as_secs_f64();
        if !reply.ok {
            return Err(BlenderError::Blender {
                context,
                message: reply.error.unwrap_or_else(|| "unknown error".into()),
                output: self.output.tail(RECENT_LINES),
            });
        }
        let result = reply
            .result
            .ok_or_else(|| BlenderError::Protocol(format!("reply {id} has no result")))?;
        let first_sample = self
            .output
            .first_sample_at()
            .map(|at| at.saturating_duration_since(sent).as_secs_f64());
        let (sync_seconds, render_seconds) = split_timings(total, first_sample, &result);
        Ok(ChunkOutcome {
            samples: result.samples,
            loaded_scene: result.loaded_scene,
            sync_seconds,
            render_seconds,
            save_seconds: result.save_seconds,
            total_seconds: total,
        })
    }

    /// Asks Blender to exit and waits for it (killing it if it does not exit in time).
    pub async fn shutdown(mut self) -> Result<(), BlenderError> {
        if self.ended.is_some() {
            return Ok(());
        }
        self.next_id += 1;
        let line = to_line(&Request::Shutdown { id: self.next_id })?;
        // A failed write means Blender is already gone; its exit status says how.
        let _ = self.requests.write_all(line.as_bytes()).await;
        match tokio::time::timeout(EXIT_TIMEOUT, self.process.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => {
                self.process.drain().await;
                Err(BlenderError::Exited {
                    context: "Blender did not shut down cleanly".into(),
                    status: describe_status(status),
                    output: self.output.tail(RECENT_LINES),
                })
            }
            Ok(Err(source)) => Err(BlenderError::io("could not wait for Blender", source)),
            Err(_) => {
                tracing::warn!(
                    "Blender did not exit within {EXIT_TIMEOUT:?} of shutdown; killing it"
                );
                let _ = self.process.child.kill().await;
                Ok(())
            }
        }
    }

    /// Sends `message` and waits for the reply with the same id, or for Blender to die.
    async fn exchange(
        &mut self,
        message: &Request<'_>,
        id: u64,
        context: &str,
    ) -> Result<Reply, BlenderError> {
        let line = to_line(message)?;
        if self.requests.write_all(line.as_bytes()).await.is_err() {
            return Err(self.died(context, None).await);
        }
        loop {
            let event = tokio::select! {
                line = self.replies.next_line() => Event::Line(line),
                status = self.process.child.wait() => Event::Exited(status),
            };
            match event {
                Event::Line(Ok(Some(line))) => {
                    let reply: Reply = serde_json::from_str(&line)
                        .map_err(|_| BlenderError::Protocol(line.clone()))?;
                    // Replies to requests whose caller gave up are skipped.
                    if reply.id == Some(id) {
                        return Ok(reply);
                    }
                }
                Event::Line(_) => return Err(self.died(context, None).await),
                Event::Exited(status) => return Err(self.died(context, Some(status)).await),
            }
        }
    }

    /// The error for a Blender that died (or whose connection broke) during a request.
    async fn died(
        &mut self,
        context: &str,
        status: Option<std::io::Result<std::process::ExitStatus>>,
    ) -> BlenderError {
        let status = match status {
            Some(status) => Some(status),
            None => tokio::time::timeout(EXIT_TIMEOUT, self.process.child.wait())
                .await
                .ok(),
        };
        let status = match status {
            Some(Ok(status)) => describe_status(status),
            Some(Err(error)) => format!("could not be waited for ({error})"),
            None => {
                let _ = self.process.child.kill().await;
                "closed its connection and was killed".into()
            }
        };
        self.process.drain().await;
        self.ended = Some(status.clone());
        BlenderError::Exited {
            context: context.to_owned(),
            status,
            output: self.output.tail(RECENT_LINES),
        }
    }
}

async fn startup_failure(process: &mut Spawned, output: &OutputLog, message: &str) -> BlenderError {
    let _ = process.child.kill().await;
    process.drain().await;
    BlenderError::Startup {
        message: message.to_owned(),
        output: output.tail(RECENT_LINES),
    }
}
