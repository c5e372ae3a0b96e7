//! Which Blenders to test against, shared demo scenes, and EXR helpers.
//!
//! `BLENDFLEET_TEST_BLENDER` names the `blender` executable (default `blender`) and
//! `BLENDFLEET_TEST_BPY_PYTHON` a Python with pip `bpy`. A missing one skips its tests
//! with a message, unless `CI` is set, where it fails them.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use fleet_blender::BlenderCommand;
use tokio::sync::OnceCell;

/// The two ways of running Blender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Executable,
    PythonBpy,
}

/// A Blender to test with, and its demo scene.
pub struct Variant {
    pub kind: Kind,
    pub cmd: BlenderCommand,
    pub version: String,
    /// The demo scene, made once per test run; tests must not modify it.
    pub demo: PathBuf,
}

impl Variant {
    /// A directory for one test's files.
    pub fn scratch(&self) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("fleet-blender-test-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("scratch dir")
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0")
}

fn command(kind: Kind) -> Result<BlenderCommand, String> {
    match kind {
        Kind::Executable => {
            let path =
                std::env::var_os("BLENDFLEET_TEST_BLENDER").unwrap_or_else(|| "blender".into());
            match BlenderCommand::discover(Some(Path::new(&path))) {
                Ok(cmd @ BlenderCommand::Executable(_)) => Ok(cmd),
                Ok(other) => Err(format!("BLENDFLEET_TEST_BLENDER names a Python: {other:?}")),
                Err(error) => Err(format!(
                    "no Blender executable `{}`: {error}",
                    path.to_string_lossy()
                )),
            }
        }
        Kind::PythonBpy => {
            let path = std::env::var_os("BLENDFLEET_TEST_BPY_PYTHON")
                .filter(|path| !path.is_empty())
                .ok_or_else(|| "BLENDFLEET_TEST_BPY_PYTHON is not set".to_owned())?;
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(format!(
                    "BLENDFLEET_TEST_BPY_PYTHON `{}` does not exist",
                    path.display()
                ));
            }
            Ok(BlenderCommand::PythonBpy(path))
        }
    }
}

static EXECUTABLE: OnceCell<Option<(BlenderCommand, String, PathBuf)>> = OnceCell::const_new();
static PYTHON_BPY: OnceCell<Option<(BlenderCommand, String, PathBuf)>> = OnceCell::const_new();

/// The Blender of `kind`, or `None` (after saying why) when it is not installed here.
pub async fn variant(kind: Kind, test: &str) -> Option<Variant> {
    let cell = match kind {
        Kind::Executable => &EXECUTABLE,
        Kind::PythonBpy => &PYTHON_BPY,
    };
    let found = cell
        .get_or_init(|| async move {
            let cmd = match command(kind) {
                Ok(cmd) => cmd,
                Err(reason) => {
                    assert!(!in_ci(), "CI is set but {reason}");
                    return None;
                }
            };
            let version = cmd.version().await.expect("Blender version");
            let dir =
                Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fleet-blender-{kind:?}"));
            fs_err::create_dir_all(&dir).expect("demo dir");
            let demo = dir.join("demo.blend");
            fleet_blender::make_demo_scene(&cmd, &demo)
                .await
                .expect("demo scene");
            Some((cmd, version, demo))
        })
        .await
        .clone();
    match found {
        Some((cmd, version, demo)) => Some(Variant {
            kind,
            cmd,
            version,
            demo,
        }),
        None => {
            eprintln!(
                "SKIPPED {test} ({kind:?}): {}; set BLENDFLEET_TEST_BLENDER / BLENDFLEET_TEST_BPY_PYTHON",
                command(kind).err().unwrap_or_default()
            );
            None
        }
    }
}

/// Runs `body` against both Blenders, as two tests named after the function.
macro_rules! both_blenders {
    ($name:ident) => {
        mod $name {
            use crate::common::{variant, Kind};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn blender_executable() {
                if let Some(v) = variant(Kind::Executable, stringify!($name)).await {
                    super::$name(v).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn python_bpy() {
                if let Some(v) = variant(Kind::PythonBpy, stringify!($name)).await {
                    super::$name(v).await;
                }
            }
        }
    };
}
pub(crate) use both_blenders;

/// Makes a variant of the demo scene with a few lines of Python run on it, e.g. to
/// remove the camera. `edit` sees `scene` and `bpy`.
pub async fn edited_demo(v: &Variant, dir: &Path, name: &str, edit: &str) -> PathBuf {
    let out = dir.join(format!("{name}.blend"));
    let script = dir.join(format!("{name}.py"));
    let indented: String = edit.lines().map(|line| format!("    {line}\n")).collect();
    let source = format!(
        "import bpy, os, sys, traceback\n\
         args = sys.argv[sys.argv.index('--') + 1:] if '--' in sys.argv else sys.argv[1:]\n\
         code = 0\n\
         try:\n\
         \x20   bpy.ops.wm.open_mainfile(filepath=args[0])\n\
         \x20   scene = bpy.context.scene\n\
         {indented}\
         \x20   bpy.ops.wm.save_as_mainfile(filepath=args[1], check_existing=False)\n\
         except Exception:\n\
         \x20   traceback.print_exc()\n\
         \x20   code = 1\n\
         sys.stdout.flush(); sys.stderr.flush()\n\
         os._exit(code)\n"
    );
    fs_err::write(&script, source).expect("write script");
    let args = [OsString::from(&v.demo), OsString::from(&out)];
    let (status, output) = v
        .cmd
        .run_script(&script, &args)
        .await
        .expect("run edit script");
    assert!(
        status.success(),
        "editing the demo failed:\n{}",
        output.join("\n")
    );
    out
}

/// Channel names and the `cycles.<layer>.samples` header of a multilayer EXR.
pub struct ExrInfo {
    pub channels: BTreeSet<String>,
    pub size: (usize, usize),
    pub samples: Option<String>,
}

pub fn exr_info(path: &Path) -> ExrInfo {
    let meta = exr::meta::MetaData::read_from_file(path, false).expect("read EXR header");
    let header = &meta.headers[0];
    let samples = header
        .own_attributes
        .other
        .iter()
        .find(|(name, _)| **name == *"cycles.ViewLayer.samples")
        .map(|(_, value)| match value {
            exr::meta::attribute::AttributeValue::Text(text) => text.to_string(),
            other => format!("{other:?}"),
        });
    ExrInfo {
        channels: header
            .channels
            .list
            .iter()
            .map(|c| c.name.to_string())
            .collect(),
        size: (header.layer_size.width(), header.layer_size.height()),
        samples,
    }
}

/// The float samples of one channel.
pub fn exr_channel(path: &Path, name: &str) -> Vec<f32> {
    let image = exr::prelude::read_all_flat_layers_from_file(path).expect("read EXR");
    let channel = image.layer_data[0]
        .channel_data
        .list
        .iter()
        .find(|channel| channel.name.to_string() == name)
        .unwrap_or_else(|| panic!("no channel {name} in {}", path.display()));
    match &channel.sample_data {
        exr::prelude::FlatSamples::F32(values) => values.clone(),
        other => panic!("channel {name} is not f32: {:?}", other.len()),
    }
}
