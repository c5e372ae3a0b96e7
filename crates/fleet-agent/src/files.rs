//! The agent's file cache: blobs by hash, and per-job project trees made of hard links.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fleet_client::AgentClient;
use fleet_protocol::{validate_relative_path, BlobHash, JobId};

use crate::AgentError;

/// The work directory: `blobs/` (by hash), `jobs/<id>/` (project trees), `out/` (renders).
#[derive(Clone, Debug)]
pub struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    /// Creates the directory layout under `root`.
    pub fn create(root: PathBuf) -> Result<Self, AgentError> {
        for sub in ["blobs", "jobs", "out"] {
            let path = root.join(sub);
            std::fs::create_dir_all(&path).map_err(|source| AgentError::Io { path, source })?;
        }
        Ok(Self { root })
    }

    /// Where partial renders are written.
    pub fn output(&self, name: &str) -> PathBuf {
        self.root.join("out").join(name)
    }

    fn blob(&self, hash: &BlobHash) -> PathBuf {
        self.root.join("blobs").join(hash.as_str())
    }

    fn job(&self, job: JobId) -> PathBuf {
        self.root.join("jobs").join(job.to_string())
    }

    /// Makes sure `jobs/<job>/` holds every file of the project, downloading only blobs
    /// that are not cached yet. Returns the job's project root.
    pub async fn prepare_job(
        &self,
        client: &AgentClient,
        job: JobId,
        files: &BTreeMap<String, BlobHash>,
    ) -> Result<PathBuf, AgentError> {
        let root = self.job(job);
        let complete = root.join(".complete");
        if complete.exists() {
            return Ok(root);
        }
        self.remove_other_jobs(job);
        for (relative, hash) in files {
            let cached = self.blob(hash);
            if !cached.exists() {
                tracing::info!(file = %relative, %hash, "downloading");
                client.download_blob(hash, &cached).await?;
            }
            // The manager validated the paths already; check again before touching disk.
            let relative = validate_relative_path(relative).map_err(|reason| AgentError::Io {
                path: PathBuf::from(relative),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, reason.to_string()),
            })?;
            let target = root.join(&relative);
            link_or_copy(&cached, &target)?;
        }
        std::fs::write(&complete, b"").map_err(|source| AgentError::Io {
            path: complete.clone(),
            source,
        })?;
        Ok(root)
    }

    /// Project trees of other jobs are only links; drop them when a new job starts.
    fn remove_other_jobs(&self, keep: JobId) {
        let Ok(entries) = std::fs::read_dir(self.root.join("jobs")) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy() != keep.to_string() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn link_or_copy(source: &Path, target: &Path) -> Result<(), AgentError> {
    let io = |source| AgentError::Io {
        path: target.to_owned(),
        source,
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let _ = std::fs::remove_file(target);
    if std::fs::hard_link(source, target).is_err() {
        std::fs::copy(source, target).map_err(io)?;
    }
    Ok(())
}
