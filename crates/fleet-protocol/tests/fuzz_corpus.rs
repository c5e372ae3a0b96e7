//! Replays the committed fuzz corpus of the `spec` target (`tests/fuzz/corpus/spec`) through
//! the same checks the fuzz target runs, on stable Rust and without libFuzzer.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Every file of a target's corpus, sorted; fails when the directory is missing or empty, so
/// that the replay cannot pass by checking nothing.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz/corpus")
        .join(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus `{}` is unreadable: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "fuzz corpus `{}` holds no files",
        dir.display()
    );
    files
}

#[test]
fn spec_corpus_passes_the_fuzz_checks() {
    let files = corpus("spec");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = fs::read(path).expect("read corpus file");
            catch_unwind(AssertUnwindSafe(|| {
                fleet_protocol::fuzzing::check_spec(&data)
            }))
            .is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} corpus files fail (messages above): {failed:#?}",
        failed.len(),
        files.len()
    );
}
