//! Content hashes of local files.

use std::io::Read;
use std::path::Path;

use fleet_protocol::BlobHash;
use sha2::{Digest, Sha256};

use crate::ClientError;

/// SHA-256 of a file's contents, read in 1 MiB pieces.
pub fn hash_file(path: &Path) -> Result<BlobHash, ClientError> {
    let mut file = std::fs::File::open(path).map_err(|source| ClientError::io(path, source))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|source| ClientError::io(path, source))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(BlobHash::from_digest(&hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            hash_file(&path).unwrap().as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let error = hash_file(Path::new("/nonexistent/file.blend")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/file.blend"));
    }
}
