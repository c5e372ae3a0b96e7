//! Post-processing a merged frame once: denoise, the scene's compositor, its output format.
//!
//! Denoisers and compositors are not linear, so they must not run on the chunks; they run
//! here, once per frame, on the merged multilayer EXR (see `python/postprocess.py`). Every
//! Render Layers node of the scene's compositor is replaced by an Image node reading the
//! merged passes, so nothing is rendered again. A Blender without OpenImageDenoise (Debian's
//! 3.4) still composites and writes the scene's format; the outcome then carries a note that
//! the image is not denoised.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::chunk::{absolute, utf8};
use crate::command::BlenderCommand;
use crate::error::BlenderError;
use crate::oneshot::{run_to_result, ReferenceRender};
use crate::scripts::{self, Script};

/// A merged frame to finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRequest {
    /// The job's .blend, whose active scene says what to do.
    pub blend: PathBuf,
    /// The merged multilayer EXR of the frame.
    pub merged: PathBuf,
    /// Its width and height in pixels.
    pub resolution: (u32, u32),
    /// The frame number (for scenes whose compositor depends on it).
    pub frame: i32,
    /// Where the image goes, without extension: Blender adds the one of the scene's format.
    pub output_stem: PathBuf,
}

/// What post-processing did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostOutcome {
    /// The image written, with the extension of the scene's format; `None` when the scene
    /// writes EXR and asks for no denoising or compositing: the merged EXR is its output.
    pub output: Option<PathBuf>,
    /// Blender's name of the format, e.g. `PNG`, `JPEG`, `OPEN_EXR`.
    pub file_format: String,
    /// Whether the Combined pass was denoised (OIDN, with the merged albedo and normal).
    pub denoised: bool,
    /// Whether the scene's own compositor ran.
    pub composited: bool,
    /// Things a user should know, e.g. that denoising was asked for but is unavailable.
    pub notes: Vec<String>,
    /// The Blender that did it.
    pub blender_version: String,
}

/// Denoises, composites and writes `request.merged` as the scene asks (one Blender process).
pub async fn postprocess(
    cmd: &BlenderCommand,
    request: &PostRequest,
) -> Result<PostOutcome, BlenderError> {
    let blend = absolute(&request.blend)?;
    let merged = absolute(&request.merged)?;
    let stem = absolute(&request.output_stem)?;
    let body = serde_json::json!({
        "blend": utf8(&blend)?,
        "merged": utf8(&merged)?,
        "resolution": [request.resolution.0, request.resolution.1],
        "frame": request.frame,
        "output_stem": utf8(&stem)?,
    });
    let dir = scripts::temp_dir()?;
    let script = Script::PostProcess.write_to(dir.path())?;
    let request_path = dir.path().join("request.json");
    let result_path = dir.path().join("result.json");
    fs_err::write(&request_path, body.to_string())
        .map_err(|source| BlenderError::io("could not write the request for Blender", source))?;
    let args = [OsString::from(&request_path), result_path.clone().into()];
    let context = format!(
        "Blender could not post-process frame {} of `{}`",
        request.frame,
        blend.display()
    );
    let result = run_to_result(cmd, &script, &args, &result_path, context).await?;
    serde_json::from_value(result.clone()).map_err(|_| BlenderError::Protocol(result.to_string()))
}

/// Renders a frame as the scene itself would deliver it: all samples in one process, then
/// the scene's denoiser, compositor and output format. What a post-processed split render
/// is compared with. `job.output` must carry the extension of the scene's format.
pub async fn render_finished_reference(
    cmd: &BlenderCommand,
    job: &ReferenceRender,
) -> Result<(), BlenderError> {
    crate::oneshot::reference_with(cmd, job, true).await
}
