//! Uploading a project: hash every file, ask the manager which contents it lacks, send
//! only those.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fleet_client::{Client, ClientError};
use fleet_protocol::BlobHash;
use futures_util::{StreamExt, TryStreamExt};

/// Files hashed at once (each on a blocking thread).
const HASH_CONCURRENCY: usize = 4;
/// Files uploaded at once.
const UPLOAD_CONCURRENCY: usize = 3;
/// Hashes per `blobs/missing` question (the manager accepts up to 100,000).
const MISSING_BATCH: usize = 10_000;

/// What an upload sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// Entries in the file map.
    pub files_total: u64,
    /// Contents sent: one per distinct content the manager lacked.
    pub files_uploaded: u64,
    /// Bytes of file contents sent.
    pub bytes_uploaded: u64,
    /// Entries whose content was not sent: the manager had it already, or another entry
    /// with the same content carried it. Always `files_total - files_uploaded`.
    pub files_skipped: u64,
}

/// Upload progress, shared between the upload and whoever reports it.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// Bytes sent so far and bytes to send in all.
    pub fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// One local file and its content hash.
#[derive(Clone, Debug)]
pub struct Hashed {
    pub path: PathBuf,
    pub hash: BlobHash,
    pub size: u64,
}

/// The files to send: one per distinct missing content, in a stable order.
pub fn plan(hashed: &BTreeMap<String, Hashed>, missing: &[BlobHash]) -> Vec<Hashed> {
    let missing: HashSet<&BlobHash> = missing.iter().collect();
    let mut seen = HashSet::new();
    hashed
        .values()
        .filter(|file| missing.contains(&file.hash) && seen.insert(file.hash.clone()))
        .cloned()
        .collect()
}

/// The report for sending `sent` out of a map of `files_total` entries.
pub fn report(files_total: usize, sent: &[Hashed]) -> UploadReport {
    let files_total = files_total as u64;
    let files_uploaded = sent.len() as u64;
    UploadReport {
        files_total,
        files_uploaded,
        bytes_uploaded: sent.iter().map(|file| file.size).sum(),
        files_skipped: files_total - files_uploaded,
    }
}

/// Hashes every file of the map, a few at a time.
pub async fn hash_all(
    files: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<String, Hashed>, ClientError> {
    // Owned items: futures that borrow from the iterator would not be `Send` for every
    // lifetime, which spawning the whole upload requires.
    let owned: Vec<(String, PathBuf)> = files.clone().into_iter().collect();
    futures_util::stream::iter(owned.into_iter().map(|(name, path)| async move {
        let hashed = tokio::task::spawn_blocking(move || hash_one(path))
            .await
            .map_err(|error| ClientError::Protocol(format!("hashing stopped: {error}")))??;
        Ok::<_, ClientError>((name, hashed))
    }))
    .buffer_unordered(HASH_CONCURRENCY)
    .try_collect()
    .await
}

fn hash_one(path: PathBuf) -> Result<Hashed, ClientError> {
    let size = std::fs::metadata(&path)
        .map_err(|source| ClientError::Io {
            path: path.clone(),
            source,
        })?
        .len();
    let hash = fleet_client::hash_file(&path)?;
    Ok(Hashed { path, hash, size })
}

/// Uploads what the manager lacks of `files`; returns the report and the job path → hash map.
pub async fn upload(
    client: &Client,
    files: &BTreeMap<String, PathBuf>,
    progress: Arc<Progress>,
) -> Result<(UploadReport, BTreeMap<String, BlobHash>), ClientError> {
    let hashed = hash_all(files).await?;
    let mut distinct: Vec<BlobHash> = hashed.values().map(|file| file.hash.clone()).collect();
    distinct.sort();
    distinct.dedup();
    let mut missing = Vec::new();
    for batch in distinct.chunks(MISSING_BATCH) {
        missing.extend(client.missing_blobs(batch).await?);
    }
    let to_send = plan(&hashed, &missing);
    let total: u64 = to_send.iter().map(|file| file.size).sum();
    progress.total.store(total, Ordering::Relaxed);
    futures_util::stream::iter(to_send.clone().into_iter().map(|file| {
        let progress = Arc::clone(&progress);
        let client = client.clone();
        async move {
            client
                .upload_blob_with_progress(&file.hash, &file.path, move |bytes| {
                    progress.done.fetch_add(bytes, Ordering::Relaxed);
                })
                .await
        }
    }))
    .buffer_unordered(UPLOAD_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    let hashes = hashed
        .into_iter()
        .map(|(name, file)| (name, file.hash))
        .collect();
    Ok((report(files.len(), &to_send), hashes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, byte: u8, size: u64) -> (String, Hashed) {
        (
            name.to_owned(),
            Hashed {
                path: PathBuf::from(format!("/project/{name}")),
                hash: BlobHash::from_digest(&[byte; 32]),
                size,
            },
        )
    }

    #[test]
    fn only_missing_contents_are_sent_once_each() {
        let hashed = BTreeMap::from([
            file("a.blend", 1, 100),
            file("copy_of_a.blend", 1, 100),
            file("tex/b.png", 2, 20),
            file("tex/c.png", 3, 5),
        ]);
        let missing = [
            BlobHash::from_digest(&[1; 32]),
            BlobHash::from_digest(&[3; 32]),
        ];
        let sent = plan(&hashed, &missing);
        let names: Vec<_> = sent.iter().map(|file| file.path.clone()).collect();
        assert_eq!(
            names,
            [
                PathBuf::from("/project/a.blend"),
                PathBuf::from("/project/tex/c.png")
            ]
        );
        assert_eq!(
            report(hashed.len(), &sent),
            UploadReport {
                files_total: 4,
                files_uploaded: 2,
                bytes_uploaded: 105,
                files_skipped: 2,
            }
        );
    }

    #[test]
    fn nothing_missing_sends_nothing() {
        let hashed = BTreeMap::from([file("a.blend", 1, 100)]);
        let sent = plan(&hashed, &[]);
        assert!(sent.is_empty());
        assert_eq!(report(1, &sent).files_skipped, 1);
        assert_eq!(report(1, &sent).bytes_uploaded, 0);
    }

    #[test]
    fn hashing_reads_every_file_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"abc").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let files = BTreeMap::from([("a".to_owned(), a.clone())]);
        let hashed = runtime.block_on(hash_all(&files)).unwrap();
        assert_eq!(hashed["a"].size, 3);
        assert_eq!(
            hashed["a"].hash.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let files = BTreeMap::from([("gone".to_owned(), dir.path().join("gone"))]);
        let error = runtime.block_on(hash_all(&files)).unwrap_err();
        assert!(error.to_string().contains("gone"), "{error}");
    }
}
