//! The one error type of this crate.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading, validating, folding or writing.
///
/// Messages are lowercase, name the file (or accumulator directory) involved and
/// say what is wrong with it, so they can be shown to a user as they are.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The operating system refused a read, write, rename or sync.
    #[error("`{}`: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The file does not start with the OpenEXR magic number.
    #[error("`{}` is not an OpenEXR file", path.display())]
    NotExr {
        /// The offending file.
        path: PathBuf,
    },

    /// The file ends before all of its pixel data.
    #[error("`{}` is truncated", path.display())]
    Truncated {
        /// The offending file.
        path: PathBuf,
    },

    /// The file is an OpenEXR file but its contents cannot be decoded.
    #[error("`{}` is damaged: {detail}", path.display())]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What the decoder found.
        detail: String,
    },

    /// A valid OpenEXR file of a kind this crate does not merge (multi-part,
    /// tiled, deep, subsampled).
    #[error("`{}` {detail}", path.display())]
    Unsupported {
        /// The offending file.
        path: PathBuf,
        /// For example "has 2 parts; only single-part files can be merged".
        detail: String,
    },

    /// A channel stores half floats or integers instead of 32-bit floats.
    #[error("`{}` stores channel `{channel}` as {found}, but only 32-bit float channels can be merged", path.display())]
    NotFloat {
        /// The offending file.
        path: PathBuf,
        /// The channel name.
        channel: String,
        /// The sample type found, for example "16-bit float".
        found: &'static str,
    },

    /// The partial's resolution (or data window) differs from the frame's.
    #[error("`{}` is {found} but the frame is {expected}", path.display())]
    SizeMismatch {
        /// The offending file.
        path: PathBuf,
        /// What the file holds, for example "32x32".
        found: String,
        /// What the frame holds, for example "64x48".
        expected: String,
    },

    /// A channel of the frame is missing from the partial.
    #[error("`{}` lacks channel `{channel}`", path.display())]
    MissingChannel {
        /// The offending file.
        path: PathBuf,
        /// The missing channel.
        channel: String,
    },

    /// The partial has a channel the frame does not have.
    #[error("`{}` has channel `{channel}`, which the frame does not have", path.display())]
    ExtraChannel {
        /// The offending file.
        path: PathBuf,
        /// The unexpected channel.
        channel: String,
    },

    /// A chunk claims to render zero samples: it cannot carry weight.
    #[error("chunk {id} rendered 0 samples; there is nothing to fold")]
    ZeroSamples {
        /// The chunk id.
        id: i64,
    },

    /// Two chunks claim to hold absolute sample 0.
    #[error("chunk {id} claims to hold sample 0, but chunk {holder} already did")]
    SampleZeroTwice {
        /// The chunk being folded.
        id: i64,
        /// The chunk that was folded earlier with sample 0.
        holder: i64,
    },

    /// The same chunk id was folded before with different sample information.
    #[error("chunk {id} was already folded with {before}, now offered with {now}")]
    ChunkConflict {
        /// The chunk id.
        id: i64,
        /// The earlier chunk information.
        before: String,
        /// The new, different chunk information.
        now: String,
    },

    /// The accumulator directory is not usable.
    #[error("accumulator `{}` {detail}", dir.display())]
    Accumulator {
        /// The accumulator directory.
        dir: PathBuf,
        /// What is wrong, for example "is locked by another process".
        detail: String,
    },

    /// The frame has nothing this operation needs (for example no Combined pass
    /// for a preview), or the inputs of a comparison do not match.
    #[error("{0}")]
    Invalid(String),
}

impl MergeError {
    /// Whether the partial (or the chunk information offered with it) is at
    /// fault rather than the accumulator or the machine: not an OpenEXR file,
    /// truncated, damaged, of an unsupported kind, non-float channels, the
    /// wrong size or channel set, zero samples, or sample information that
    /// conflicts with what was folded before. A caller serving uploads
    /// rejects such a partial (and has its chunk rendered again); any other
    /// error (I/O on the accumulator, an unusable accumulator directory) is
    /// its own problem.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::NotExr { .. }
            | Self::Truncated { .. }
            | Self::Corrupt { .. }
            | Self::Unsupported { .. }
            | Self::NotFloat { .. }
            | Self::SizeMismatch { .. }
            | Self::MissingChannel { .. }
            | Self::ExtraChannel { .. }
            | Self::ZeroSamples { .. }
            | Self::SampleZeroTwice { .. }
            | Self::ChunkConflict { .. } => true,
            Self::Io { .. } | Self::Accumulator { .. } | Self::Invalid(_) => false,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Translates an error of the `exr` crate met while reading `path`.
    pub(crate) fn from_exr(path: &Path, error: exr::error::Error) -> Self {
        use exr::error::Error as E;
        let path = path.to_path_buf();
        match error {
            E::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Self::Truncated { path },
            // How the `exr` crate reports an unexpected end of file.
            E::Invalid(what) if what == "reference to missing bytes" => Self::Truncated { path },
            E::Io(source) => Self::Io { path, source },
            E::NotSupported(what) => Self::Unsupported {
                path,
                detail: format!("uses an unsupported feature: {what}"),
            },
            E::Invalid(what) => Self::Corrupt {
                path,
                detail: what.into_owned(),
            },
            E::Aborted => Self::Corrupt {
                path,
                detail: "reading was aborted".to_owned(),
            },
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = MergeError> = std::result::Result<T, E>;
