//! The Python scripts Blender runs, embedded so the binary is self-contained.

use std::path::{Path, PathBuf};

use crate::error::BlenderError;

/// A script from `python/`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Script {
    /// The resident worker and the one-shot modes (`inspect`, `reference`, `version`).
    Worker,
    /// Builds the demo scene.
    MakeDemo,
    /// Denoises, composites and writes a merged frame.
    PostProcess,
}

impl Script {
    fn file_name(self) -> &'static str {
        match self {
            Self::Worker => "blendfleet_worker.py",
            Self::MakeDemo => "blendfleet_make_demo.py",
            Self::PostProcess => "blendfleet_postprocess.py",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Self::Worker => include_str!("../python/worker.py"),
            Self::MakeDemo => include_str!("../python/make_demo.py"),
            Self::PostProcess => include_str!("../python/postprocess.py"),
        }
    }

    /// Writes the script into `dir` and returns its path.
    pub(crate) fn write_to(self, dir: &Path) -> Result<PathBuf, BlenderError> {
        let path = dir.join(self.file_name());
        fs_err::write(&path, self.source())
            .map_err(|source| BlenderError::io("could not write Blender's script", source))?;
        Ok(path)
    }
}

/// A private temporary directory for scripts, requests and the control socket. Unix
/// socket paths are limited to about 100 bytes, so a long `TMPDIR` falls back to `/tmp`.
pub(crate) fn temp_dir() -> Result<tempfile::TempDir, BlenderError> {
    let error = |source| BlenderError::io("could not create a temporary directory", source);
    let dir = tempfile::Builder::new()
        .prefix("blendfleet-")
        .tempdir()
        .map_err(error)?;
    if dir.path().as_os_str().len() <= 80 {
        return Ok(dir);
    }
    tempfile::Builder::new()
        .prefix("blendfleet-")
        .tempdir_in("/tmp")
        .map_err(error)
}
