//! Post-processing each finished frame once, on the manager: the scene's denoiser,
//! compositor and output format, run by [`fleet_blender::postprocess`] on the merged EXR.
//!
//! What happened is recorded beside the frame's results in `post.json` (the image written,
//! and notes for the job status). The record is written last, so a manager stopped in the
//! middle of post-processing does it again after its restart. Post-processing never fails a
//! job: without a Blender, or when Blender fails, the frame keeps the merged image as
//! rendered and the record says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleet_blender::{BlenderCommand, PostRequest};
use fleet_protocol::{JobId, JobSpec};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::api::AppState;

/// The record's file name in a frame's directory.
const RECORD: &str = "post.json";
/// The post-processed image's name in a frame's directory, before its extension.
const IMAGE_STEM: &str = "final";

/// Runs Blender for post-processing, one frame at a time.
#[derive(Clone)]
pub struct PostProcessor {
    blender: Option<BlenderCommand>,
    permits: Arc<Semaphore>,
}

impl PostProcessor {
    /// Post-processes with `blender`; `None` delivers merged frames as they are, with a note.
    pub fn new(blender: Option<BlenderCommand>) -> Self {
        Self {
            blender,
            permits: Arc::new(Semaphore::new(1)),
        }
    }
}

/// What post-processing did for one frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostRecord {
    /// The post-processed image's file name in the frame's directory; `None` when the frame
    /// is delivered as merged (the PNG of its Combined pass).
    pub image: Option<String>,
    /// Whether the image is denoised.
    pub denoised: bool,
    /// Whether the scene's compositor ran.
    pub composited: bool,
    /// What a user should know: denoising unavailable, post-processing failed, ...
    pub notes: Vec<String>,
}

/// The record of a frame, if it was post-processed.
pub fn record(frame_dir: &Path) -> Option<PostRecord> {
    let text = std::fs::read_to_string(frame_dir.join(RECORD)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The flat image to deliver for a finished frame, and its extension.
pub fn image(frame_dir: &Path) -> (PathBuf, String) {
    match record(frame_dir).and_then(|record| record.image) {
        Some(name) => {
            let path = frame_dir.join(&name);
            let extension = path
                .extension()
                .and_then(|extension| extension.to_str())
                .unwrap_or("bin")
                .to_ascii_lowercase();
            (path, extension)
        }
        None => (frame_dir.join("result.png"), "png".to_owned()),
    }
}

/// The MIME type of an image extension Blender writes.
pub fn content_type(extension: &str) -> &'static str {
    match extension {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "exr" => "image/x-exr",
        "tif" | "tiff" => "image/tiff",
        "bmp" => "image/bmp",
        "webp" => "image/webp",
        "hdr" => "image/vnd.radiance",
        _ => "application/octet-stream",
    }
}

/// Adds what post-processing recorded to a job's status: each finished frame's image
/// format, and the notes of all frames (each once).
pub(crate) fn annotate(
    state: &AppState,
    status: &mut fleet_protocol::JobStatus,
) -> Result<(), crate::store::StoreError> {
    let delivers_images = state
        .store
        .job_spec(status.summary.id)?
        .is_some_and(|spec| spec.output_format == fleet_protocol::OutputFormat::Png);
    if !delivers_images {
        return Ok(());
    }
    for frame in &mut status.frames {
        if frame.state != fleet_protocol::FrameState::Done {
            continue;
        }
        let dir = state.frames.frame_dir(status.summary.id, frame.frame);
        frame.image_format = Some(image(&dir).1);
        for note in record(&dir).map(|record| record.notes).unwrap_or_default() {
            if !status.notes.contains(&note) {
                status.notes.push(note);
            }
        }
    }
    Ok(())
}

/// Post-processes a frame whose merged EXR is written, unless that was done before.
pub(crate) async fn finish(state: &AppState, job: JobId, frame: i32) {
    let dir = state.frames.frame_dir(job, frame);
    if dir.join(RECORD).exists() {
        return;
    }
    let record = match &state.post.blender {
        None => PostRecord {
            notes: vec![
                "no Blender on the manager: frames are delivered as merged, without the \
                 scene's denoising, compositing or output format"
                    .into(),
            ],
            ..PostRecord::default()
        },
        Some(blender) => {
            let _permit = state.post.permits.acquire().await;
            match run(state, blender, job, frame, &dir).await {
                Ok(record) => record,
                Err(message) => {
                    tracing::warn!(job = %job, frame, %message, "post-processing failed");
                    PostRecord {
                        notes: vec![format!(
                            "post-processing frame {frame} failed, so it is delivered as \
                             merged: {message}"
                        )],
                        ..PostRecord::default()
                    }
                }
            }
        }
    };
    if let Err(error) = write_record(&dir, &record) {
        tracing::error!(job = %job, frame, %error, "cannot record post-processing");
    }
}

async fn run(
    state: &AppState,
    blender: &BlenderCommand,
    job: JobId,
    frame: i32,
    dir: &Path,
) -> Result<PostRecord, String> {
    let spec = state
        .store
        .job_spec(job)
        .map_err(|error| error.to_string())?
        .ok_or("the job is gone")?;
    let blend = materialize(state, job, &spec).map_err(|error| error.to_string())?;
    let merged = dir.join("result.exr");
    let layout = fleet_merge::read_layout(&merged).map_err(|error| error.to_string())?;
    let request = PostRequest {
        blend,
        merged,
        resolution: (layout.width, layout.height),
        frame,
        output_stem: dir.join(IMAGE_STEM),
    };
    let started = std::time::Instant::now();
    let outcome = fleet_blender::postprocess(blender, &request)
        .await
        .map_err(|error| error.to_string())?;
    let image = match &outcome.output {
        None => None,
        Some(output) => Some(
            output
                .file_name()
                .and_then(|name| name.to_str())
                .map(str::to_owned)
                .ok_or("Blender named no image")?,
        ),
    };
    tracing::info!(
        job = %job, frame, image = image.as_deref().unwrap_or("(the merged EXR)"), denoised = outcome.denoised, composited = outcome.composited,
        seconds = started.elapsed().as_secs_f64(), "frame post-processed"
    );
    Ok(PostRecord {
        image,
        denoised: outcome.denoised,
        composited: outcome.composited,
        notes: outcome.notes,
    })
}

/// Recreates the job's file tree from the blob store (hard links where possible) and
/// returns the main .blend in it. The compositor may read images the scene uses.
fn materialize(state: &AppState, job: JobId, spec: &JobSpec) -> std::io::Result<PathBuf> {
    let root = state.frames.job_dir(job).join("files");
    for (relative, hash) in &spec.files {
        // Specs are normalised when the job is created: plain relative paths only.
        let target = root.join(relative);
        if target.exists() {
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let source = state.blobs.path(hash);
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(root.join(&spec.main_file))
}

fn write_record(dir: &Path, record: &PostRecord) -> std::io::Result<()> {
    let temporary = dir.join(format!("{RECORD}.partial"));
    std::fs::write(&temporary, serde_json::to_vec_pretty(record)?)?;
    std::fs::rename(&temporary, dir.join(RECORD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_without_a_record_deliver_the_merged_png() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(record(dir.path()), None);
        assert_eq!(
            image(dir.path()),
            (dir.path().join("result.png"), "png".to_owned())
        );
        let failed = PostRecord {
            notes: vec!["post-processing failed".into()],
            ..PostRecord::default()
        };
        write_record(dir.path(), &failed).unwrap();
        assert_eq!(record(dir.path()), Some(failed));
        assert_eq!(image(dir.path()).0, dir.path().join("result.png"));
    }

    #[test]
    fn a_post_processed_frame_delivers_its_image_in_the_scene_format() {
        let dir = tempfile::tempdir().unwrap();
        let done = PostRecord {
            image: Some("final.JPG".into()),
            denoised: true,
            composited: false,
            notes: vec![],
        };
        write_record(dir.path(), &done).unwrap();
        let (path, extension) = image(dir.path());
        assert_eq!(path, dir.path().join("final.JPG"));
        assert_eq!(extension, "jpg");
        assert_eq!(content_type(&extension), "image/jpeg");
        assert_eq!(content_type("exr"), "image/x-exr");
        assert!(!dir.path().join("post.json.partial").exists());
    }
}
