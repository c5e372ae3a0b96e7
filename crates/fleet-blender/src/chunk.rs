//! What a chunk is: the request, its checks, and the outcome.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::BlenderError;

/// Cycles' largest sample count (4.x renders a chunk as a subset of `start + count`).
const MAX_SAMPLES: u32 = 1 << 24;
/// Blender's largest render resolution.
const MAX_RESOLUTION: u32 = 65_536;

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
    /// The frame's total sample count. Blender 4.2+'s default (blue-noise) sampling pattern
    /// depends on it, so every chunk of a frame must pass the same total to keep the scene's
    /// pattern; `None` switches to the count-independent Tabulated Sobol pattern (4.x).
    pub frame_samples: Option<u32>,
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

pub(crate) fn validate(request: &ChunkRequest) -> Result<(), BlenderError> {
    let invalid = |message: String| Err(BlenderError::InvalidRequest(message));
    if request.sample_count == 0 || request.sample_count > MAX_SAMPLES {
        return invalid(format!(
            "`sample_count` must be between 1 and {MAX_SAMPLES}, got {}",
            request.sample_count
        ));
    }
    if request.sample_start.saturating_add(request.sample_count) > MAX_SAMPLES {
        return invalid(format!(
            "samples must end by {MAX_SAMPLES}, got {} + {}",
            request.sample_start, request.sample_count
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        let mut request = ChunkRequest {
            blend: "a.blend".into(),
            frame: 1,
            sample_start: 0,
            sample_count: 4,
            seed: Some(3),
            frame_samples: None,
            resolution: Some((64, 48)),
            output: "a.exr".into(),
        };
        assert!(validate(&request).is_ok());
        request.sample_count = 0;
        assert!(validate(&request).is_err());
        request.sample_count = 4;
        request.sample_start = MAX_SAMPLES - 2;
        assert!(validate(&request).is_err());
        request.sample_start = 0;
        request.sample_count = 4;
        request.seed = Some(u32::MAX);
        assert!(validate(&request).unwrap_err().to_string().contains("seed"));
        request.seed = None;
        request.resolution = Some((0, 48));
        assert!(validate(&request).is_err());
    }
}
