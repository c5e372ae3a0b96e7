//! Replays the committed fuzz corpus of the `partial_exr` target
//! (`tests/fuzz/corpus/partial_exr`) through the same checks the fuzz target
//! runs, on stable Rust and without libFuzzer.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Every file of a target's corpus, sorted; fails when the directory is
/// missing or empty, so that the replay cannot pass by checking nothing.
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
fn partial_exr_corpus_passes_the_fuzz_checks() {
    let files = corpus("partial_exr");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = fs::read(path).expect("read corpus file");
            catch_unwind(AssertUnwindSafe(|| {
                fleet_merge::fuzzing::check_partial(&data)
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

/// The valid seeds are generated; this checks that the generator still
/// produces partials the merge accepts. Run with `--ignored` and
/// `FUZZ_SEED_DIR=<dir>` to write the seeds there.
#[test]
fn generated_seeds_pass_the_fuzz_checks() {
    let seeds = fleet_merge::fuzzing::seed_partials();
    assert!(seeds.iter().any(|(name, _)| name.starts_with("valid_")));
    for (name, bytes) in &seeds {
        let passed = catch_unwind(AssertUnwindSafe(|| {
            fleet_merge::fuzzing::check_partial(bytes)
        }));
        assert!(passed.is_ok(), "generated seed {name} fails the checks");
    }
}

#[test]
#[ignore = "writes the generated seeds to $FUZZ_SEED_DIR"]
fn write_generated_seeds() {
    let dir = PathBuf::from(std::env::var_os("FUZZ_SEED_DIR").expect("FUZZ_SEED_DIR is set"));
    fs::create_dir_all(&dir).expect("create the seed directory");
    for (name, bytes) in fleet_merge::fuzzing::seed_partials() {
        fs::write(dir.join(name), bytes).expect("write a seed");
    }
}
