//! The resident Blender worker: one Blender process that keeps a .blend loaded and
//! renders many sample chunks of it.
//!
//! Protocol: the worker script connects to a Unix socket this side listens on (its path
//! is the script's argument) and the two exchange JSON objects, one per line. Blender's
//! own chatter stays on stdout/stderr, where it is kept for error reports and read for
//! progress (`Sample N/M` lines).
//!
//! ```text
//! worker → {"event":"ready","pid":4242,"blender_version":"3.4.1","python_version":"3.11.2","stdlib_ok":true}
//!        ← {"id":1,"op":"render","blend":"/abs/shot.blend","frame":1,"sample_start":0,"sample_count":16,
//!           "seed":7,"threads":4,"resolution":[640,360],"output":"/abs/chunk.exr"}
//! worker → {"id":1,"ok":true,"result":{"samples":16,"loaded_scene":true,"prepare_seconds":0.4,
//!           "render_seconds":2.1,"save_seconds":0.1}}
//!        ← {"id":2,"op":"shutdown"}
//! worker → {"id":2,"ok":true}
//! ```
//!
//! A failed request is answered with `{"id":N,"ok":false,"error":"<Blender's message>"}`
//! and the worker stays usable. When the socket closes the worker exits at once, even
//! in the middle of a render.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::command::BlenderCommand;
use crate::error::BlenderError;
use crate::process::{self, describe_status, OutputLog, Spawned, RECENT_LINES};
use crate::scripts::{self, Script};

/// How long Blender may take to start and connect.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a worker may take to exit after `shutdown` or after its connection broke.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Cycles' largest sample count and sample offset.
const MAX_SAMPLES: u32 = 1 << 24;
/// Blender's largest render resolution.
const MAX_RESOLUTION: u32 = 65_536;
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

/// One chunk of a frame: samples `[sample_start, sample_start + sample_count)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The .blend file to render (opened only if it is not the loaded one, or changed).
    pub blend: PathBuf,
    /// The frame.
    pub frame: i32,
    /// The first sample (Cycles `sample_offset`).
    pub sample_start: u32,
    /// How many samples.
    pub sample_count: u32,
    /// The seed shared by every chunk of the frame; `None` keeps the scene's seed.
    pub seed: Option<u32>,
    /// Width and height at 100 %, overriding the scene's resolution.
    pub resolution: Option<(u32, u32)>,
    /// Where the multilayer EXR goes (its directory is created if needed).
    pub output: PathBuf,
}

/// What rendering a chunk took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkOutcome {
    /// Samples rendered.
    pub samples: u32,
    /// Whether this chunk had to open the .blend (false: it was already loaded).
    pub loaded_scene: bool,
    /// From the request to the first sample: opening the .blend when needed, applying
    /// the settings, evaluating the frame, and Cycles' scene synchronisation.
    pub sync_seconds: f64,
    /// Path tracing, from the first sample to the end of the render.
    pub render_seconds: f64,
    /// Writing the EXR.
    pub save_seconds: f64,
    /// The whole request as seen from here.
    pub total_seconds: f64,
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

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request<'a> {
    Render {
        id: u64,
        blend: &'a str,
        frame: i32,
        sample_start: u32,
        sample_count: u32,
        seed: Option<u32>,
        threads: u32,
        resolution: Option<(u32, u32)>,
        output: &'a str,
    },
    Shutdown {
        id: u64,
    },
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    result: Option<RenderReply>,
}

#[derive(Debug, Deserialize)]
struct RenderReply {
    samples: u32,
    loaded_scene: bool,
    prepare_seconds: f64,
    render_seconds: f64,
    save_seconds: f64,
}

#[derive(Deserialize)]
struct Ready {
    event: String,
    #[serde(flatten)]
    info: WorkerInfo,
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

/// Splits a chunk's time into scene sync and path tracing.
///
/// The worker measures its own phases (`prepare`: opening and configuring; the render
/// operator; saving). Cycles' scene synchronisation happens inside the render operator,
/// so the first `Sample` line Blender prints, timed here, marks where path tracing
/// starts. Without it, the worker's own split is used.
fn split_timings(total: f64, first_sample: Option<f64>, reply: &RenderReply) -> (f64, f64) {
    let prepare = reply.prepare_seconds.max(0.0);
    let operator = reply.render_seconds.max(0.0);
    match first_sample {
        Some(first) if first <= total => {
            let sync = first.max(prepare).min(prepare + operator);
            (sync, (operator - (sync - prepare)).max(0.0))
        }
        _ => (prepare, operator),
    }
}

fn validate(request: &ChunkRequest) -> Result<(), BlenderError> {
    let invalid = |message: String| Err(BlenderError::InvalidRequest(message));
    if request.sample_count == 0 || request.sample_count > MAX_SAMPLES {
        return invalid(format!(
            "`sample_count` must be between 1 and {MAX_SAMPLES}, got {}",
            request.sample_count
        ));
    }
    if request.sample_start > MAX_SAMPLES {
        return invalid(format!(
            "`sample_start` must be at most {MAX_SAMPLES}, got {}",
            request.sample_start
        ));
    }
    if let Some(seed) = request.seed {
        if i32::try_from(seed).is_err() {
            return invalid(format!("`seed` must be at most {}, got {seed}", i32::MAX));
        }
    }
    if let Some((width, height)) = request.resolution {
        let fits = |v: u32| (1..=MAX_RESOLUTION).contains(&v);
        if !fits(width) || !fits(height) {
            return invalid(format!(
                "resolution must be between 1 and {MAX_RESOLUTION}, got {width}x{height}"
            ));
        }
    }
    Ok(())
}

pub(crate) fn absolute(path: &Path) -> Result<PathBuf, BlenderError> {
    std::path::absolute(path).map_err(|source| {
        BlenderError::io(
            format!("could not make `{}` absolute", path.display()),
            source,
        )
    })
}

pub(crate) fn utf8(path: &Path) -> Result<&str, BlenderError> {
    path.to_str().ok_or_else(|| {
        BlenderError::InvalidRequest(format!("path `{}` is not valid UTF-8", path.display()))
    })
}

fn to_line(message: &impl Serialize) -> Result<String, BlenderError> {
    let mut line =
        serde_json::to_string(message).map_err(|e| BlenderError::Protocol(e.to_string()))?;
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(prepare: f64, render: f64) -> RenderReply {
        RenderReply {
            samples: 8,
            loaded_scene: false,
            prepare_seconds: prepare,
            render_seconds: render,
            save_seconds: 0.01,
        }
    }

    #[test]
    fn timings_split_at_the_first_sample() {
        // Prepared in 0.1 s, Cycles synced until 0.3 s, path tracing until 1.1 s.
        let (sync, render) = split_timings(1.2, Some(0.3), &reply(0.1, 1.0));
        assert!(
            (sync - 0.3).abs() < 1e-9 && (render - 0.8).abs() < 1e-9,
            "{sync} {render}"
        );
        // No progress line: the worker's own split.
        assert_eq!(split_timings(1.2, None, &reply(0.1, 1.0)), (0.1, 1.0));
        // A progress line timed oddly never makes a phase negative.
        let (sync, render) = split_timings(1.2, Some(1.15), &reply(0.1, 1.0));
        assert!(
            (sync - 1.1).abs() < 1e-9 && render.abs() < 1e-9,
            "{sync} {render}"
        );
    }

    #[test]
    fn requests_are_checked() {
        let mut request = ChunkRequest {
            blend: "a.blend".into(),
            frame: 1,
            sample_start: 0,
            sample_count: 4,
            seed: Some(3),
            resolution: Some((64, 48)),
            output: "a.exr".into(),
        };
        assert!(validate(&request).is_ok());
        request.sample_count = 0;
        assert!(validate(&request).is_err());
        request.sample_count = 4;
        request.seed = Some(u32::MAX);
        assert!(validate(&request).unwrap_err().to_string().contains("seed"));
        request.seed = None;
        request.resolution = Some((0, 48));
        assert!(validate(&request).is_err());
    }

    #[test]
    fn render_request_wire_format() {
        let message = Request::Render {
            id: 3,
            blend: "/a.blend",
            frame: 2,
            sample_start: 5,
            sample_count: 7,
            seed: None,
            threads: 1,
            resolution: Some((64, 48)),
            output: "/o.exr",
        };
        let value: serde_json::Value =
            serde_json::from_str(&to_line(&message).expect("json")).expect("parse");
        assert_eq!(
            value,
            serde_json::json!({"op": "render", "id": 3, "blend": "/a.blend", "frame": 2, "sample_start": 5,
                "sample_count": 7, "seed": null, "threads": 1, "resolution": [64, 48], "output": "/o.exr"})
        );
    }
}
