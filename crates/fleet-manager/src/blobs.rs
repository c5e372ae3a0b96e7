//! The content-addressed store of uploaded project files.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use fleet_protocol::BlobHash;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Why a body could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than the {limit} bytes this endpoint accepts")]
    TooLarge { limit: u64 },
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    #[error("failed to write `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a blob upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("the uploaded bytes hash to `{actual}`, not `{expected}`")]
    HashMismatch {
        expected: BlobHash,
        actual: BlobHash,
    },
}

/// Files stored under their SHA-256: `root/ab/abcdef…`.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// A store rooted at `root` (created if missing).
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("incoming"))?;
        Ok(Self { root })
    }

    /// Where the blob with this hash lives (whether or not it exists).
    pub fn path(&self, hash: &BlobHash) -> PathBuf {
        let text = hash.as_str();
        self.root.join(&text[..2]).join(text)
    }

    /// Whether the blob is stored.
    pub fn contains(&self, hash: &BlobHash) -> bool {
        self.path(hash).is_file()
    }

    /// Streams `body` into the store, keeping it only if it hashes to `expected`.
    pub async fn put<S, E>(&self, expected: &BlobHash, body: S, limit: u64) -> Result<(), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let incoming = self.root.join("incoming").join(unique_name("blob"));
        let digest = match write_stream(&incoming, body, limit).await {
            Ok(digest) => digest,
            Err(error) => {
                let _ = tokio::fs::remove_file(&incoming).await;
                return Err(error.into());
            }
        };
        let actual = BlobHash::from_digest(&digest);
        if &actual != expected {
            let _ = tokio::fs::remove_file(&incoming).await;
            return Err(BlobError::HashMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let dest = self.path(expected);
        let io = |source| BodyError::Io {
            path: dest.clone(),
            source,
        };
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        tokio::fs::rename(&incoming, &dest).await.map_err(io)?;
        Ok(())
    }
}

/// A file name that no other request uses at the same time.
pub fn unique_name(prefix: &str) -> String {
    let random: u64 = rand::random();
    format!("{prefix}-{}-{random:016x}", std::process::id())
}

/// Writes a body stream to `path`, failing once it exceeds `limit` bytes, and returns the
/// SHA-256 of what was written. The file is synced before returning.
pub async fn write_stream<S, E>(path: &Path, mut body: S, limit: u64) -> Result<[u8; 32], BodyError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let io = |source| BodyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|error| BodyError::Interrupted(error.to_string()))?;
        written += piece.len() as u64;
        if written > limit {
            return Err(BodyError::TooLarge { limit });
        }
        hasher.update(&piece);
        file.write_all(&piece).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|part| Ok(Bytes::from_static(part)))
                .collect::<Vec<_>>(),
        )
    }

    fn sha(bytes: &[u8]) -> BlobHash {
        BlobHash::from_digest(&Sha256::digest(bytes).into())
    }

    #[tokio::test]
    async fn stores_verified_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().to_owned()).unwrap();
        let hash = sha(b"hello world");
        assert!(!store.contains(&hash));
        store
            .put(&hash, stream(&[b"hello ", b"world"]), 100)
            .await
            .unwrap();
        assert!(store.contains(&hash));
        assert_eq!(std::fs::read(store.path(&hash)).unwrap(), b"hello world");
    }

    #[tokio::test]
    async fn wrong_hash_and_oversized_bodies_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().to_owned()).unwrap();
        let hash = sha(b"expected");
        let error = store
            .put(&hash, stream(&[b"other"]), 100)
            .await
            .unwrap_err();
        assert!(matches!(error, BlobError::HashMismatch { .. }), "{error}");
        let error = store
            .put(&hash, stream(&[b"expe", b"cted"]), 5)
            .await
            .unwrap_err();
        assert!(
            matches!(error, BlobError::Body(BodyError::TooLarge { limit: 5 })),
            "{error}"
        );
        assert!(!store.contains(&hash));
        let leftovers = std::fs::read_dir(dir.path().join("incoming"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0);
    }
}
