//! The one error type of this crate.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;

/// How many lines of Blender's output an error message shows (the error keeps more).
const SHOWN_LINES: usize = 12;

/// Something went wrong while finding, starting or talking to Blender.
///
/// Errors that come from Blender itself carry Blender's own text (the report of the
/// failing operator, e.g. `Error: Cannot render, no camera`), and errors from a process
/// that died carry the last lines it printed, so a message can be shown to a user as is.
#[derive(Debug, thiserror::Error)]
pub enum BlenderError {
    /// No Blender was found in any of the places [`crate::BlenderCommand::discover`] looks.
    #[error(
        "Blender was not found. Install it (`apt-get install blender`, or a build from \
         blender.org) and put `blender` on PATH, or set `BLENDFLEET_BLENDER` to the `blender` \
         executable, or set `BLENDFLEET_BPY_PYTHON` to a Python that has `pip install bpy`"
    )]
    NotFound,

    /// A configured Blender path does not name an executable file.
    #[error("`{}` (from {origin}) is not an executable file", path.display())]
    NotExecutable {
        /// The path as configured.
        path: PathBuf,
        /// Where the path came from: an argument or an environment variable.
        origin: String,
    },

    /// The Blender process could not be started at all.
    #[error("could not start `{}`", program.display())]
    Spawn {
        /// The program that was started.
        program: PathBuf,
        /// Why the operating system refused.
        #[source]
        source: io::Error,
    },

    /// A file or socket operation around Blender failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A request was refused before it reached Blender.
    #[error("invalid render request: {0}")]
    InvalidRequest(String),

    /// Blender ran and reported an error; `message` is Blender's own text.
    #[error("{context}: {message}")]
    Blender {
        /// What was asked of Blender, e.g. "Blender could not render frame 3 of `shot.blend`".
        context: String,
        /// Blender's error text.
        message: String,
        /// The last lines Blender printed.
        output: Vec<String>,
    },

    /// The Blender process ended when it should not have.
    #[error("{context}: Blender {status}{}", shown_tail(output))]
    Exited {
        /// What Blender was doing.
        context: String,
        /// How it ended, e.g. "was killed by signal 9 (SIGKILL)".
        status: String,
        /// The last lines Blender printed.
        output: Vec<String>,
    },

    /// Blender did not start the worker script in time.
    #[error("Blender did not start: {message}{}", shown_tail(output))]
    Startup {
        /// What went wrong.
        message: String,
        /// The last lines Blender printed.
        output: Vec<String>,
    },

    /// The worker script sent something this crate does not understand.
    #[error("unexpected message from the Blender worker: {0}")]
    Protocol(String),
}

impl BlenderError {
    /// The last lines Blender printed before the error, where there are any.
    pub fn output_tail(&self) -> &[String] {
        match self {
            Self::Blender { output, .. }
            | Self::Exited { output, .. }
            | Self::Startup { output, .. } => output,
            _ => &[],
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// The tail of Blender's output, as shown in a message: a few lines, indented.
fn shown_tail(output: &[String]) -> String {
    let lines: Vec<&str> = output
        .iter()
        .map(String::as_str)
        .filter(|line| !line.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let mut text = String::from("; its last output:");
    for line in &lines[lines.len().saturating_sub(SHOWN_LINES)..] {
        let _ = write!(text, "\n    {line}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_message_shows_the_last_lines() {
        let output: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
        let error = BlenderError::Exited {
            context: "Blender stopped while rendering frame 1 of `a.blend`".into(),
            status: "was killed by signal 9 (SIGKILL)".into(),
            output,
        };
        let text = error.to_string();
        assert!(text.starts_with(
            "Blender stopped while rendering frame 1 of `a.blend`: Blender was killed by signal 9"
        ));
        assert!(text.contains("\n    line 29"));
        assert!(text.contains("\n    line 18"));
        assert!(!text.contains("line 17\n"));
        assert_eq!(error.output_tail().len(), 30);
    }

    #[test]
    fn blender_message_is_kept_verbatim() {
        let error = BlenderError::Blender {
            context: "Blender could not render frame 2 of `x.blend`".into(),
            message: "Error: Cannot render, no camera".into(),
            output: vec![],
        };
        assert_eq!(
            error.to_string(),
            "Blender could not render frame 2 of `x.blend`: Error: Cannot render, no camera"
        );
    }
}
