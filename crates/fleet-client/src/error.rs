//! Errors a client call can end with.

use std::path::PathBuf;

use fleet_protocol::{BlobHash, ErrorCode};

/// Why a call to the manager failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The manager answered with an error body.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error category.
        code: ErrorCode,
        /// The manager's explanation.
        message: String,
    },
    /// The manager's certificate authority is not the pinned one.
    #[error("{0}")]
    PinMismatch(String),
    /// The manager could not be reached (refused, timed out, TLS failure).
    #[error("cannot reach the manager at {url}: {detail}")]
    Connect {
        /// Where the client tried to connect.
        url: String,
        /// What went wrong, with its causes.
        detail: String,
    },
    /// The manager answered something this client does not understand.
    #[error("unexpected answer from the manager: {0}")]
    Protocol(String),
    /// A local file could not be read or written.
    #[error("failed to access `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A downloaded file does not have the content hash it was asked for by.
    #[error("downloaded file does not match its hash `{0}`")]
    HashMismatch(BlobHash),
    /// The connection settings are not usable.
    #[error("invalid connection settings: {0}")]
    Settings(String),
}

impl ClientError {
    /// The API error code, when the manager sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// How long the manager asked the client to wait before trying again (429). The
    /// manager states the wait in its message (`… try again in N s`), the same number it
    /// sends as `Retry-After`.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        let Self::Api {
            code: ErrorCode::TooManyRequests,
            message,
            ..
        } = self
        else {
            return None;
        };
        let (_, rest) = message.rsplit_once("try again in ")?;
        let seconds: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(std::time::Duration::from_secs(seconds))
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Turns a transport error into the most helpful variant.
    pub(crate) fn transport(url: &str, error: &reqwest::Error) -> Self {
        let detail = chain(error);
        if let Some(start) =
            detail.find("the manager's certificate authority is not the pinned one")
        {
            let end = detail[start..]
                .find(')')
                .map_or(detail.len(), |offset| start + offset + 1);
            return Self::PinMismatch(detail[start..end].to_owned());
        }
        Self::Connect {
            url: url.to_owned(),
            detail,
        }
    }
}

/// The error and its causes, joined with `: `, without repeated text.
fn chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&dyn std::error::Error> = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: ErrorCode, message: &str) -> ClientError {
        ClientError::Api {
            status: code.http_status(),
            code,
            message: message.into(),
        }
    }

    #[test]
    fn retry_after_is_read_from_a_rate_limit_answer() {
        let limited = api(
            ErrorCode::TooManyRequests,
            "too many failed attempts from 127.0.0.1; try again in 42 s",
        );
        assert_eq!(
            limited.retry_after(),
            Some(std::time::Duration::from_secs(42))
        );
        let without_wait = api(ErrorCode::TooManyRequests, "slow down");
        assert_eq!(without_wait.retry_after(), None);
        let other = api(ErrorCode::BadRequest, "try again in 5 s");
        assert_eq!(other.retry_after(), None);
    }
}
