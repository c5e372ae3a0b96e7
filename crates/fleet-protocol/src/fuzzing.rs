//! Property checks on hostile input, shared by the fuzz targets in
//! `tests/fuzz` and the corpus replay test (`tests/fuzz_corpus.rs`), which
//! runs them over every committed corpus file on stable Rust.
//!
//! Each check takes arbitrary bytes and panics when a property is violated;
//! input the parser refuses is fine.

use std::path::{Component, Path};

use crate::{validate_relative_path, JobSpec};

/// The task-spec parser: `serde_json` into a [`JobSpec`], then
/// [`JobSpec::normalized`].
///
/// - Whatever parses serialises back to JSON that parses to an equal spec.
/// - [`JobSpec::validate`] agrees with [`JobSpec::normalized`].
/// - When normalisation succeeds, every file key and the main file are in
///   normal form (see [`check_normal_path`]), the main file is one of the
///   files and a `.blend`, the main file is its original normalised, and
///   normalising again succeeds and changes nothing.
/// - The frame range names exactly `count()` frames, in order, inside it.
pub fn check_spec(data: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<JobSpec>(data) else {
        return;
    };
    check_json_round_trip(&spec);
    let normal = spec.clone().normalized();
    assert_eq!(
        spec.validate().as_ref().err(),
        normal.as_ref().err(),
        "validate() and normalized() disagree on {spec:?}"
    );
    let Ok(normal) = normal else {
        return;
    };
    for path in normal.files.keys() {
        check_normal_path(path);
    }
    check_normal_path(&normal.main_file);
    assert!(
        normal.files.contains_key(&normal.main_file),
        "main file {:?} is not one of the files of {normal:?}",
        normal.main_file
    );
    assert!(
        normal.main_file.to_ascii_lowercase().ends_with(".blend"),
        "main file {:?} is not a .blend",
        normal.main_file
    );
    assert_eq!(
        validate_relative_path(&spec.main_file).as_ref(),
        Ok(&normal.main_file),
        "the main file was not normalised like a file key"
    );
    assert_eq!(
        normal.files.len(),
        spec.files.len(),
        "normalisation lost or added files"
    );
    assert_eq!(
        normal.clone().normalized().as_ref(),
        Ok(&normal),
        "normalising twice changed the spec"
    );
    check_json_round_trip(&normal);
    check_frames(&normal);
    let name = normal.display_name();
    assert!(
        !name.is_empty() || normal.name.is_some(),
        "empty display name"
    );
}

/// A normalised project-relative path: accepted unchanged by
/// [`validate_relative_path`], no `..`, `.` or empty component, not absolute
/// (no leading `/`, no drive letter), no backslash, NUL or other control
/// character, no percent-encoded dot or separator, and made only of normal
/// components, so that joining it to a directory stays inside it.
pub fn check_normal_path(path: &str) {
    assert_eq!(
        validate_relative_path(path).as_deref(),
        Ok(path),
        "normal form is not idempotent"
    );
    assert!(!path.is_empty(), "empty path");
    assert!(!path.starts_with('/'), "absolute path {path:?}");
    assert!(!path.contains('\\'), "backslash in {path:?}");
    assert!(
        !path.chars().any(char::is_control),
        "control character in {path:?}"
    );
    let bytes = path.as_bytes();
    assert!(
        !(bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'),
        "drive letter in {path:?}"
    );
    for part in path.split('/') {
        assert!(
            !part.is_empty() && part != "." && part != "..",
            "traversal component {part:?} in {path:?}"
        );
    }
    let lower = path.to_ascii_lowercase();
    for code in ["%2e", "%2f", "%5c"] {
        assert!(!lower.contains(code), "{code} in {path:?}");
    }
    assert!(
        Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{path:?} has a component other than a plain name"
    );
}

fn check_json_round_trip(spec: &JobSpec) {
    let json = serde_json::to_vec(spec).expect("a spec serialises");
    let back: JobSpec = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "serialised spec does not parse back ({e}): {}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(&back, spec, "JSON round trip changed the spec");
}

fn check_frames(spec: &JobSpec) {
    let range = spec.frames;
    let mut count = 0_u64;
    let mut previous = None;
    for frame in range.frames() {
        assert!(
            (range.start..=range.end).contains(&frame),
            "frame {frame} outside {range:?}"
        );
        assert!(
            previous.is_none_or(|p| p < frame),
            "frames out of order in {range:?}"
        );
        previous = Some(frame);
        count += 1;
    }
    assert_eq!(
        count,
        range.count(),
        "count() disagrees with frames() for {range:?}"
    );
}
