//! One-shot Blender runs: inspecting a scene, a plain reference render, the demo scene.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chunk::{absolute, utf8};
use crate::command::BlenderCommand;
use crate::error::BlenderError;
use crate::process::{self, describe_status, OutputLog, RECENT_LINES};
use crate::scripts::{self, Script};

/// What a .blend file holds, as far as rendering it is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneInfo {
    /// Render engine of the active scene, e.g. `CYCLES` or `BLENDER_EEVEE`.
    pub engine: String,
    /// Render samples (Cycles samples; EEVEE's render samples for EEVEE).
    pub samples: u32,
    /// First frame.
    pub frame_start: i32,
    /// Last frame.
    pub frame_end: i32,
    /// Frame step.
    pub frame_step: u32,
    /// The frame the file was saved on.
    pub frame_current: i32,
    /// Output size in pixels, resolution percentage applied.
    pub resolution: (u32, u32),
    /// View layers that render (`use` is on).
    pub view_layers: Vec<String>,
    /// Render passes of those view layers, named as in the EXR (`Combined`, `Depth`,
    /// `DiffDir`, ...), in Blender's order, without duplicates.
    pub passes: Vec<String>,
    /// The scene camera, if there is one (Blender cannot render without it).
    pub camera: Option<String>,
    /// The Blender that read the file, e.g. `3.4.1`.
    pub blender_version: String,
    /// Absolute paths of the external files the .blend uses (images, libraries, caches),
    /// packed files left out.
    pub dependencies: Vec<PathBuf>,
}

/// A plain single-process render of a whole frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceRender {
    /// The .blend file.
    pub blend: PathBuf,
    /// The frame.
    pub frame: i32,
    /// All samples of the frame.
    pub samples: u32,
    /// Seed; `None` keeps the scene's seed.
    pub seed: Option<u32>,
    /// Render threads; 0 lets Blender use every core.
    pub threads: u32,
    /// Width and height at 100 %, overriding the scene's resolution.
    pub resolution: Option<(u32, u32)>,
    /// Where the multilayer EXR goes.
    pub output: PathBuf,
}

/// Describes `blend` (one Blender process, started and ended here).
pub async fn inspect(cmd: &BlenderCommand, blend: &Path) -> Result<SceneInfo, BlenderError> {
    let blend = absolute(blend)?;
    let request = serde_json::json!({ "blend": utf8(&blend)? });
    let context = format!("Blender could not read `{}`", blend.display());
    let result = run_worker_mode(cmd, "inspect", &request, context).await?;
    serde_json::from_value(result.clone()).map_err(|_| BlenderError::Protocol(result.to_string()))
}

/// Renders a frame the plain way: one process, every sample from 0, the same settings
/// as a chunk but without persistent data. This is what a split render must equal, and
/// the "plain `blender -b`" baseline for overhead measurements.
pub async fn render_reference(
    cmd: &BlenderCommand,
    job: &ReferenceRender,
) -> Result<(), BlenderError> {
    reference_with(cmd, job, false).await
}

/// A reference render; `finished` keeps the scene's denoiser, compositor and file format.
pub(crate) async fn reference_with(
    cmd: &BlenderCommand,
    job: &ReferenceRender,
    finished: bool,
) -> Result<(), BlenderError> {
    let blend = absolute(&job.blend)?;
    let output = absolute(&job.output)?;
    if job.samples == 0 {
        return Err(BlenderError::InvalidRequest(
            "`samples` must be at least 1".into(),
        ));
    }
    if let Some(parent) = output.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|source| {
            BlenderError::io(format!("could not create `{}`", parent.display()), source)
        })?;
    }
    let request = serde_json::json!({
        "blend": utf8(&blend)?,
        "frame": job.frame,
        "sample_start": 0,
        "sample_count": job.samples,
        // The frame's own total: the scene keeps its sampling pattern, as chunks that carry
        // `frame_samples` do.
        "frame_samples": job.samples,
        "seed": job.seed,
        "threads": job.threads,
        "resolution": job.resolution,
        "output": utf8(&output)?,
        "finished": finished,
    });
    let context = format!(
        "Blender could not render frame {} of `{}`",
        job.frame,
        blend.display()
    );
    run_worker_mode(cmd, "reference", &request, context).await?;
    Ok(())
}

/// Generates the demo scene (Cycles, several materials, frames 1–6 with motion) at `out`.
pub async fn make_demo_scene(cmd: &BlenderCommand, out: &Path) -> Result<(), BlenderError> {
    let out = absolute(out)?;
    let dir = scripts::temp_dir()?;
    let script = Script::MakeDemo.write_to(dir.path())?;
    let result = dir.path().join("result.json");
    let args = [OsString::from(&out), OsString::from(&result)];
    let context = format!(
        "Blender could not create the demo scene `{}`",
        out.display()
    );
    run_to_result(cmd, &script, &args, &result, context).await?;
    Ok(())
}

/// Runs a one-shot mode of the worker script with a JSON request; returns its result.
pub(crate) async fn run_worker_mode(
    cmd: &BlenderCommand,
    mode: &str,
    request: &serde_json::Value,
    context: String,
) -> Result<serde_json::Value, BlenderError> {
    let dir = scripts::temp_dir()?;
    let script = Script::Worker.write_to(dir.path())?;
    let request_path = dir.path().join("request.json");
    let result_path = dir.path().join("result.json");
    fs_err::write(&request_path, request.to_string())
        .map_err(|source| BlenderError::io("could not write the request for Blender", source))?;
    let args = [
        OsString::from(mode),
        request_path.into(),
        result_path.clone().into(),
    ];
    run_to_result(cmd, &script, &args, &result_path, context).await
}

#[derive(Deserialize)]
struct Outcome {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    result: serde_json::Value,
}

/// Runs `script` to completion; its answer is the JSON object it wrote to `result_path`.
pub(crate) async fn run_to_result(
    cmd: &BlenderCommand,
    script: &Path,
    args: &[OsString],
    result_path: &Path,
    context: String,
) -> Result<serde_json::Value, BlenderError> {
    let output = OutputLog::new();
    let mut spawned = process::spawn(
        cmd.script_command(script, args, &[]),
        cmd.program(),
        &output,
    )
    .await?;
    let status = spawned.wait().await?;
    let outcome = match fs_err::read_to_string(result_path) {
        Ok(text) => {
            serde_json::from_str::<Outcome>(&text).map_err(|_| BlenderError::Protocol(text))?
        }
        Err(_) => {
            return Err(BlenderError::Exited {
                context,
                status: describe_status(status),
                output: output.tail(RECENT_LINES),
            })
        }
    };
    if outcome.ok {
        Ok(outcome.result)
    } else {
        Err(BlenderError::Blender {
            context,
            message: outcome.error.unwrap_or_else(|| "unknown error".into()),
            output: output.tail(RECENT_LINES),
        })
    }
}
