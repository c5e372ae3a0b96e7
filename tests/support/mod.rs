//! Shared helpers for the end-to-end tests: which Blenders to test with, running the
//! `blendfleet` binary, comparing renders.

#![allow(dead_code)]

pub mod farm;
pub mod jobs;
pub mod reference;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleet_blender::BlenderCommand;

/// The binary under test.
pub fn blendfleet() -> Command {
    blendfleet_via(&[])
}

/// The binary under test, started through `wrapper` (e.g. `ip netns exec NAME`).
pub fn blendfleet_via(wrapper: &[&str]) -> Command {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(env!("CARGO_BIN_EXE_blendfleet"));
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_blendfleet")),
    };
    // A configured manager in the environment would turn `render` into a remote render.
    command
        .env_remove("BLENDFLEET_MANAGER")
        .env_remove("BLENDFLEET_PASSWORD")
        .env("XDG_CONFIG_HOME", "/nonexistent-blendfleet-test-config");
    command
}

/// Debian's Blender 3.4 (`BLENDFLEET_TEST_BLENDER`, default `blender` on PATH).
pub fn blender_34() -> Option<BlenderCommand> {
    let path = std::env::var("BLENDFLEET_TEST_BLENDER").unwrap_or_else(|_| "blender".into());
    required(
        "BLENDFLEET_TEST_BLENDER",
        BlenderCommand::discover(Some(Path::new(&path))).ok(),
    )
}

/// A Python with pip `bpy` 4.5 (`BLENDFLEET_TEST_BPY_PYTHON`).
pub fn bpy_45() -> Option<BlenderCommand> {
    let found = std::env::var("BLENDFLEET_TEST_BPY_PYTHON")
        .ok()
        .map(|path| BlenderCommand::PythonBpy(PathBuf::from(path)));
    required("BLENDFLEET_TEST_BPY_PYTHON", found)
}

/// In CI every Blender must be present; elsewhere a missing one skips the test, loudly.
fn required(variable: &str, found: Option<BlenderCommand>) -> Option<BlenderCommand> {
    if found.is_none() {
        let in_ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false");
        assert!(
            !in_ci,
            "{variable} names no usable Blender, and CI must test with every Blender"
        );
        eprintln!("SKIPPED: {variable} names no usable Blender here");
    }
    found
}

/// Runs a command and returns its output, failing with everything it printed if it failed.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Makes the bundled demo scene with `blender` in `dir`.
pub async fn demo_scene(blender: &BlenderCommand, dir: &Path) -> PathBuf {
    let path = dir.join("demo.blend");
    fleet_blender::make_demo_scene(blender, &path)
        .await
        .expect("demo scene");
    path
}

/// Renders the single-machine reference: the same samples in one plain Blender run.
pub async fn reference(
    blender: &BlenderCommand,
    blend: &Path,
    samples: u32,
    resolution: (u32, u32),
    output: &Path,
) {
    let job = fleet_blender::ReferenceRender {
        blend: blend.to_owned(),
        frame: 1,
        samples,
        seed: None,
        threads: 1,
        resolution: Some(resolution),
        output: output.to_owned(),
    };
    fleet_blender::render_reference(blender, &job)
        .await
        .expect("reference render");
}

/// The tolerance of the DESIGN: per channel, `|a-b| <= 1e-5 * max(|a|, |b|, 0.1 * peak)`.
pub const TOLERANCE: f64 = 1e-5;

/// Compares a merged frame with a single render. Blender 4.x CPU renders are not bit
/// repeatable even single-threaded (differences up to ~3e-5 on a glossy pixel were seen),
/// so a caller may re-render the reference once before calling a channel wrong; a merge
/// bug fails against every reference.
pub fn compare(merged: &Path, reference: &Path) -> fleet_merge::compare::Report {
    let report = fleet_merge::compare::compare(merged, reference).expect("comparable EXRs");
    eprintln!("{}", report.table());
    report
}

/// Merged chunks of the frame, from the manager's SQLite database: (start, count).
pub fn merged_chunks(state_db: &Path) -> Vec<(u32, u32)> {
    let connection = rusqlite::Connection::open(state_db).expect("state database");
    let mut query = connection
        .prepare("SELECT sample_start, sample_count FROM chunks WHERE state = 'merged' ORDER BY sample_start")
        .unwrap();
    query
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every sample of a frame of `samples` was merged exactly once: the merged chunks tile
/// `0..samples` without gap or overlap.
pub fn assert_tiled_once(state_db: &Path, samples: u32) {
    let chunks = merged_chunks(state_db);
    let mut next = 0;
    for &(start, count) in &chunks {
        assert_eq!(start, next, "no sample merged twice or missed: {chunks:?}");
        next += count;
    }
    assert_eq!(next, samples, "{chunks:?}");
}

/// A temporary directory that is kept, and named, when the test fails, so that the
/// manager's and agents' logs in it can be read.
pub struct TestDir(Option<tempfile::TempDir>);

impl TestDir {
    pub fn new() -> Self {
        Self(Some(tempfile::tempdir().expect("a temporary directory")))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("present until dropped").path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!("test files kept in {}", dir.keep().display());
            }
        }
    }
}

/// Writes a copy of `source` at `dest` after running `python` (with `bpy` imported and the
/// file open) in Blender.
pub async fn edit_scene(blender: &BlenderCommand, source: &Path, dest: &Path, python: &str) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("edit.py");
    let body = python
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect::<String>();
    std::fs::write(
        &script,
        format!(
            "import os, sys, bpy\n\
             args = sys.argv[sys.argv.index('--') + 1:] if '--' in sys.argv else sys.argv[1:]\n\
             bpy.ops.wm.open_mainfile(filepath=args[0])\n\
             def edit():\n{body}\n\
             edit()\n\
             bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(args[1]))\n\
             sys.stdout.flush()\n\
             os._exit(0)\n"
        ),
    )
    .unwrap();
    let (status, output) = blender
        .run_script(&script, &[source.into(), dest.into()])
        .await
        .unwrap();
    assert!(status.success(), "editing the scene failed: {output:?}");
    assert!(dest.is_file());
}

/// How many leases each frame of the manager's database was handed out in: (frame, leases).
pub fn leases_per_frame(state_db: &Path) -> Vec<(i32, u32)> {
    let connection = rusqlite::Connection::open(state_db).expect("state database");
    let mut query = connection
        .prepare(
            "SELECT f.frame, COUNT(l.id) FROM leases l JOIN chunks c ON c.id = l.chunk_id
             JOIN frames f ON f.id = c.frame_id GROUP BY f.frame ORDER BY f.frame",
        )
        .unwrap();
    query
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}
