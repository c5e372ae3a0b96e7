//! The task spec a client submits, and the rules it must satisfy.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::BlobHash;

/// The most samples one frame may ask for (Cycles' own upper bound).
pub const MAX_SAMPLES: u32 = 16_777_216;
/// The most frames one job may hold.
pub const MAX_FRAMES_PER_JOB: u32 = 100_000;
/// The most files one job may reference.
pub const MAX_FILES_PER_JOB: usize = 100_000;
/// Blender's frame number limit.
const MAX_FRAME: i32 = 1_048_574;
/// Blender's resolution limits.
const MIN_RESOLUTION: u32 = 4;
const MAX_RESOLUTION: u32 = 65_536;
const MAX_NAME_LEN: usize = 200;
const MAX_PATH_LEN: usize = 1024;

/// What to render: the project files, the frames, the samples.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A display name; defaults to the main file's stem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The .blend to open, as a key of [`JobSpec::files`].
    pub main_file: String,
    /// Every file the render needs: relative path → content hash. Agents recreate this tree.
    pub files: BTreeMap<String, BlobHash>,
    /// Which frames to render.
    pub frames: FrameRange,
    /// Samples per pixel of each frame, split across agents.
    pub samples: u32,
    /// Output size in pixels; the scene's own size when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// The flat image written beside each frame's merged multilayer EXR.
    #[serde(default)]
    pub output_format: OutputFormat,
    /// Cycles seed shared by every chunk of a frame; the scene's own seed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
    /// Bounds on the size of the sample chunks handed to agents.
    #[serde(default)]
    pub chunking: ChunkPolicy,
    /// How frames of an animation are spread over agents.
    #[serde(default)]
    pub frame_mode: FrameMode,
    /// Queue the job at once (`true`, the default) or leave it created until started.
    #[serde(default = "default_true")]
    pub start: bool,
}

fn default_true() -> bool {
    true
}

/// An inclusive frame range with a step, as in Blender's frame start/end/step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameRange {
    /// First frame.
    pub start: i32,
    /// Last frame (inclusive).
    pub end: i32,
    /// Distance between rendered frames.
    #[serde(default = "default_step")]
    pub step: u32,
}

fn default_step() -> u32 {
    1
}

impl FrameRange {
    /// A single frame.
    pub fn single(frame: i32) -> Self {
        Self {
            start: frame,
            end: frame,
            step: 1,
        }
    }

    /// The frames this range names, in order. Empty when `end < start` or `step == 0`.
    pub fn frames(&self) -> impl Iterator<Item = i32> {
        let step = usize::try_from(self.step).unwrap_or(usize::MAX).max(1);
        let count = if self.step == 0 { 0 } else { usize::MAX };
        (self.start..=self.end).step_by(step).take(count)
    }

    /// How many frames this range names.
    pub fn count(&self) -> u64 {
        if self.end < self.start || self.step == 0 {
            return 0;
        }
        let span = u64::try_from(i64::from(self.end) - i64::from(self.start)).unwrap_or(0);
        span / u64::from(self.step) + 1
    }
}

impl fmt::Display for FrameRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else if self.step == 1 {
            write!(f, "{}-{}", self.start, self.end)
        } else {
            write!(f, "{}-{}x{}", self.start, self.end, self.step)
        }
    }
}

impl FromStr for FrameRange {
    type Err = SpecError;

    /// Parses `7`, `1-10` or `1-10x2` (step 2).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SpecError::FrameSyntax(text.to_owned());
        let (range, step) = match text.split_once(['x', ':']) {
            Some((range, step)) => (range, step.trim().parse().map_err(|_| bad())?),
            None => (text, 1),
        };
        let range = range.trim();
        // A leading '-' is a negative start frame, not a separator.
        let split_at = range
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == '-')
            .map(|(index, _)| index);
        let (start, end) = match split_at {
            Some(index) => (&range[..index], &range[index + 1..]),
            None => (range, range),
        };
        let start = start.trim().parse().map_err(|_| bad())?;
        let end = end.trim().parse().map_err(|_| bad())?;
        Ok(Self { start, end, step })
    }
}

/// Output size in pixels (resolution percentage is always 100 %).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl FromStr for Resolution {
    type Err = SpecError;

    /// Parses `1920x1080`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SpecError::ResolutionSyntax(text.to_owned());
        let (width, height) = text.split_once(['x', 'X']).ok_or_else(bad)?;
        Ok(Self {
            width: width.trim().parse().map_err(|_| bad())?,
            height: height.trim().parse().map_err(|_| bad())?,
        })
    }
}

/// The flat image the manager writes next to each frame's merged multilayer EXR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// The merged multilayer EXR plus an 8-bit sRGB PNG of the Combined pass.
    #[default]
    Png,
    /// The merged multilayer EXR only.
    Exr,
}

impl FromStr for OutputFormat {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "png" => Ok(Self::Png),
            "exr" => Ok(Self::Exr),
            _ => Err(SpecError::OutputFormat(text.to_owned())),
        }
    }
}

/// How the frames of a job are handed out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameMode {
    /// Whole frames while there are at least as many untouched frames as agents, then the
    /// remaining frames' samples are split, so that no agent idles at the end.
    #[default]
    Auto,
    /// Every frame's samples are split across agents, one frame after the other.
    Split,
    /// Every agent renders whole frames.
    Whole,
}

impl FromStr for FrameMode {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "split" => Ok(Self::Split),
            "whole" => Ok(Self::Whole),
            _ => Err(SpecError::FrameMode(text.to_owned())),
        }
    }
}

/// Limits on how many samples one chunk may hold. Unset bounds are chosen by the manager.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkPolicy {
    /// No chunk (except a frame's last) is smaller than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u32>,
    /// No chunk is larger than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_samples: Option<u32>,
}

/// Why a task spec was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("`samples` must be between 1 and {MAX_SAMPLES}, got {0}")]
    Samples(u32),
    #[error("`frames`: {0}")]
    Frames(String),
    #[error("`{0}` is not a frame range (use `7`, `1-10` or `1-10x2`)")]
    FrameSyntax(String),
    #[error("`{0}` is not a resolution (use `WIDTHxHEIGHT`, e.g. `1920x1080`)")]
    ResolutionSyntax(String),
    #[error("`resolution` must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels per side, got {width}x{height}")]
    Resolution { width: u32, height: u32 },
    #[error("`{0}` is not an output format (use `png` or `exr`)")]
    OutputFormat(String),
    #[error("`{0}` is not a frame mode (use `auto`, `split` or `whole`)")]
    FrameMode(String),
    #[error("`seed` must be at most 2147483647, got {0}")]
    Seed(u32),
    #[error("`chunking`: {0}")]
    Chunking(String),
    #[error("`name` must be 1 to {MAX_NAME_LEN} printable characters")]
    Name,
    #[error("`files` must list between 1 and {MAX_FILES_PER_JOB} files, got {0}")]
    FileCount(usize),
    #[error("`main_file` `{0}` is not one of `files`")]
    MainFileMissing(String),
    #[error("`main_file` `{0}` is not a .blend file")]
    MainFileNotBlend(String),
    #[error("file paths `{first}` and `{second}` name the same file `{normalised}`")]
    DuplicatePath {
        first: String,
        second: String,
        normalised: String,
    },
    #[error("file path `{path}`: {reason}")]
    Path { path: String, reason: PathError },
}

/// Why a relative file path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("contains a NUL or control character")]
    ControlCharacter,
    #[error("is absolute; paths must be relative to the project root")]
    Absolute,
    #[error("contains percent-encoded dots or separators (`%2e`, `%2f`, `%5c`)")]
    Encoded,
    #[error("contains `..`, `.` or an empty component")]
    Traversal,
}

impl JobSpec {
    /// Checks every field against its allowed range, without changing anything.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.clone().normalized().map(drop)
    }

    /// Checks every field against its allowed range and returns the spec with its file
    /// paths in normal form: forward slashes (a Windows client's `tex\wood.png` becomes
    /// `tex/wood.png`), relative, confined to the project.
    pub fn normalized(mut self) -> Result<Self, SpecError> {
        if self.samples == 0 || self.samples > MAX_SAMPLES {
            return Err(SpecError::Samples(self.samples));
        }
        self.validate_frames()?;
        if let Some(Resolution { width, height }) = self.resolution {
            let in_range = |side: u32| (MIN_RESOLUTION..=MAX_RESOLUTION).contains(&side);
            if !in_range(width) || !in_range(height) {
                return Err(SpecError::Resolution { width, height });
            }
        }
        if let Some(seed) = self.seed {
            if i32::try_from(seed).is_err() {
                return Err(SpecError::Seed(seed));
            }
        }
        self.validate_chunking()?;
        if let Some(name) = &self.name {
            let printable = name.chars().all(|c| !c.is_control());
            if name.trim().is_empty() || name.chars().count() > MAX_NAME_LEN || !printable {
                return Err(SpecError::Name);
            }
        }
        if self.files.is_empty() || self.files.len() > MAX_FILES_PER_JOB {
            return Err(SpecError::FileCount(self.files.len()));
        }
        let mut files = BTreeMap::new();
        let mut original_of: BTreeMap<String, String> = BTreeMap::new();
        for (path, hash) in std::mem::take(&mut self.files) {
            let normalised = validate_relative_path(&path).map_err(|reason| SpecError::Path {
                path: path.clone(),
                reason,
            })?;
            if let Some(first) = original_of.insert(normalised.clone(), path.clone()) {
                return Err(SpecError::DuplicatePath {
                    first,
                    second: path,
                    normalised,
                });
            }
            files.insert(normalised, hash);
        }
        self.files = files;
        let main_file =
            validate_relative_path(&self.main_file).map_err(|reason| SpecError::Path {
                path: self.main_file.clone(),
                reason,
            })?;
        if !self.files.contains_key(&main_file) {
            return Err(SpecError::MainFileMissing(self.main_file));
        }
        if !main_file.to_ascii_lowercase().ends_with(".blend") {
            return Err(SpecError::MainFileNotBlend(self.main_file));
        }
        self.main_file = main_file;
        Ok(self)
    }

    fn validate_frames(&self) -> Result<(), SpecError> {
        let FrameRange { start, end, step } = self.frames;
        let frame_ok = |frame: i32| (-MAX_FRAME..=MAX_FRAME).contains(&frame);
        if !frame_ok(start) || !frame_ok(end) {
            return Err(SpecError::Frames(format!(
                "frames must lie between -{MAX_FRAME} and {MAX_FRAME}, got {start}..{end}"
            )));
        }
        if end < start {
            return Err(SpecError::Frames(format!(
                "end frame {end} is before start frame {start}"
            )));
        }
        if step == 0 || step > 2 * MAX_FRAME.unsigned_abs() {
            return Err(SpecError::Frames(format!(
                "step must be at least 1, got {step}"
            )));
        }
        if self.frames.count() > u64::from(MAX_FRAMES_PER_JOB) {
            return Err(SpecError::Frames(format!(
                "{} frames is more than the {MAX_FRAMES_PER_JOB} one job may hold",
                self.frames.count()
            )));
        }
        Ok(())
    }

    fn validate_chunking(&self) -> Result<(), SpecError> {
        let ChunkPolicy {
            min_samples,
            max_samples,
        } = self.chunking;
        for (field, value) in [("min_samples", min_samples), ("max_samples", max_samples)] {
            if let Some(value) = value {
                if value == 0 || value > MAX_SAMPLES {
                    return Err(SpecError::Chunking(format!(
                        "`{field}` must be between 1 and {MAX_SAMPLES}, got {value}"
                    )));
                }
            }
        }
        if let (Some(min), Some(max)) = (min_samples, max_samples) {
            if min > max {
                return Err(SpecError::Chunking(format!(
                    "`min_samples` {min} is larger than `max_samples` {max}"
                )));
            }
        }
        Ok(())
    }

    /// The display name: the explicit one, or the main file's stem.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let file = self.main_file.rsplit('/').next().unwrap_or(&self.main_file);
        file.strip_suffix(".blend").unwrap_or(file).to_owned()
    }
}

/// Brings a project-relative file path into normal form, or says why it cannot be one.
///
/// Backslashes become forward slashes, so that paths from a Windows client work. Refused:
/// empty or overlong paths, control characters (NUL included), absolute paths (`/etc`,
/// `C:\x`, `C:x`, `\\server\share`), percent-encoded dots and separators, and `.`, `..`
/// or empty components. The result can be joined to a directory without leaving it.
pub fn validate_relative_path(path: &str) -> Result<String, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c"]
        .iter()
        .any(|code| lower.contains(code))
    {
        return Err(PathError::Encoded);
    }
    let path = path.replace('\\', "/");
    let bytes = path.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if path.starts_with('/') || drive {
        return Err(PathError::Absolute);
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(PathError::Traversal);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> BlobHash {
        "0".repeat(64).parse().unwrap()
    }

    fn spec() -> JobSpec {
        JobSpec {
            name: None,
            main_file: "shots/demo.blend".into(),
            files: BTreeMap::from([("shots/demo.blend".into(), hash())]),
            frames: FrameRange::single(1),
            samples: 48,
            resolution: None,
            output_format: OutputFormat::Png,
            seed: None,
            chunking: ChunkPolicy::default(),
            frame_mode: FrameMode::Auto,
            start: true,
        }
    }

    #[test]
    fn minimal_json_gets_defaults() {
        let json = format!(
            r#"{{"main_file":"a.blend","files":{{"a.blend":"{}"}},"frames":{{"start":1,"end":3}},"samples":16}}"#,
            "0".repeat(64)
        );
        let parsed: JobSpec = serde_json::from_str(&json).unwrap();
        assert!(parsed.start);
        assert_eq!(parsed.frames.step, 1);
        assert_eq!(parsed.output_format, OutputFormat::Png);
        parsed.validate().unwrap();
        assert_eq!(parsed.display_name(), "a");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let json = r#"{"main_file":"a.blend","files":{},"frames":{"start":1,"end":1},"samples":1,"sampels":2}"#;
        let error = serde_json::from_str::<JobSpec>(json).unwrap_err();
        assert!(error.to_string().contains("sampels"), "{error}");
    }

    #[test]
    fn valid_spec_passes() {
        spec().validate().unwrap();
        assert_eq!(spec().display_name(), "demo");
    }

    #[test]
    fn out_of_range_numbers() {
        let mut bad = spec();
        bad.samples = 0;
        assert_eq!(bad.validate(), Err(SpecError::Samples(0)));
        bad.samples = MAX_SAMPLES + 1;
        assert!(bad.validate().is_err());

        let mut bad = spec();
        bad.resolution = Some(Resolution {
            width: 100_000,
            height: 10,
        });
        assert!(matches!(bad.validate(), Err(SpecError::Resolution { .. })));

        let mut bad = spec();
        bad.frames = FrameRange {
            start: 5,
            end: 1,
            step: 1,
        };
        assert!(matches!(bad.validate(), Err(SpecError::Frames(_))));

        let mut bad = spec();
        bad.frames = FrameRange {
            start: 1,
            end: 1_000_000,
            step: 1,
        };
        assert!(matches!(bad.validate(), Err(SpecError::Frames(_))));

        let mut bad = spec();
        bad.seed = Some(u32::MAX);
        assert_eq!(bad.validate(), Err(SpecError::Seed(u32::MAX)));

        let mut bad = spec();
        bad.chunking = ChunkPolicy {
            min_samples: Some(10),
            max_samples: Some(5),
        };
        assert!(matches!(bad.validate(), Err(SpecError::Chunking(_))));
    }

    #[test]
    fn main_file_must_be_listed_blend() {
        let mut bad = spec();
        bad.main_file = "other.blend".into();
        assert!(matches!(bad.validate(), Err(SpecError::MainFileMissing(_))));
        let mut bad = spec();
        bad.files.insert("tex.png".into(), hash());
        bad.main_file = "tex.png".into();
        assert!(matches!(
            bad.validate(),
            Err(SpecError::MainFileNotBlend(_))
        ));
    }

    #[test]
    fn hostile_paths() {
        for path in [
            "../x.blend",
            "a/../../x",
            "/etc/passwd",
            "C:/x",
            "C:\\..",
            "C:x",
            "\\\\server\\share\\x",
            "..\\..\\x",
            "a\0b",
            "",
            "a//b",
            "./a",
            "%2e%2e/x",
            "a%2Fb",
            "a%5c..",
        ] {
            assert!(validate_relative_path(path).is_err(), "{path:?} accepted");
        }
        assert_eq!(
            validate_relative_path("tex/wood.png").unwrap(),
            "tex/wood.png"
        );
        assert_eq!(
            validate_relative_path("tex\\wood 1.png").unwrap(),
            "tex/wood 1.png"
        );
        assert_eq!(validate_relative_path("a..b/c").unwrap(), "a..b/c");
    }

    #[test]
    fn windows_paths_are_normalised_and_collisions_refused() {
        let mut windows = spec();
        windows.files = BTreeMap::from([
            ("shots\\demo.blend".into(), hash()),
            ("tex\\wood.png".into(), hash()),
        ]);
        windows.main_file = "shots\\demo.blend".into();
        let normal = windows.normalized().unwrap();
        assert_eq!(normal.main_file, "shots/demo.blend");
        assert!(normal.files.contains_key("tex/wood.png"));

        let mut twice = spec();
        twice.files.insert("shots\\demo.blend".into(), hash());
        assert!(matches!(
            twice.normalized(),
            Err(SpecError::DuplicatePath { .. })
        ));
    }

    #[test]
    fn frame_range_syntax() {
        assert_eq!("7".parse::<FrameRange>().unwrap(), FrameRange::single(7));
        let range: FrameRange = "1-10x3".parse().unwrap();
        assert_eq!(range.frames().collect::<Vec<_>>(), vec![1, 4, 7, 10]);
        assert_eq!(range.count(), 4);
        let negative: FrameRange = "-5--3".parse().unwrap();
        assert_eq!(negative.frames().collect::<Vec<_>>(), vec![-5, -4, -3]);
        assert!("a-b".parse::<FrameRange>().is_err());
        assert_eq!(range.to_string(), "1-10x3");
    }

    #[test]
    fn resolution_syntax() {
        let res: Resolution = "64x48".parse().unwrap();
        assert_eq!((res.width, res.height), (64, 48));
        assert!("64".parse::<Resolution>().is_err());
    }
}
