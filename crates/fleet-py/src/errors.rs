//! How a failed call is reported to Python: which exception, with what message and code.
//!
//! The classification is plain Rust so that it is tested without an interpreter; the
//! `python` feature turns a [`Failure`] into the matching exception object.

use fleet_client::ClientError;
use fleet_protocol::ErrorCode;

/// The exception classes of the module, most specific first in the contract's tree:
/// `FleetError` > `ConnectionFailed` > `PinMismatch`, and the rest directly below `FleetError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `FleetError` itself: a local problem such as an unreadable file.
    Fleet,
    ConnectionFailed,
    PinMismatch,
    AuthenticationFailed,
    RateLimited,
    NotFound,
    InvalidRequest,
    ServerError,
}

/// A failure ready to be raised.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub kind: Kind,
    /// A sentence for people.
    pub message: String,
    /// The manager's error code (`not_found`, `bad_request`, …) when it sent one.
    pub code: Option<String>,
    /// Seconds to wait before trying again (`RateLimited` only).
    pub retry_after: Option<f64>,
}

impl Failure {
    /// A failure without a manager error code.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            code: None,
            retry_after: None,
        }
    }

    /// Bad arguments from the caller, found before anything was sent.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidRequest, message)
    }
}

impl From<&ClientError> for Failure {
    fn from(error: &ClientError) -> Self {
        match error {
            ClientError::Api {
                status,
                code,
                message,
            } => {
                let kind = kind_of(*code, *status);
                let message = if kind == Kind::ServerError {
                    format!("the manager answered {status} ({code}): {message}")
                } else {
                    message.clone()
                };
                Self {
                    kind,
                    message,
                    code: Some(code.to_string()),
                    retry_after: error.retry_after().map(|wait| wait.as_secs_f64()),
                }
            }
            ClientError::PinMismatch(_) => Self::new(Kind::PinMismatch, error.to_string()),
            ClientError::Connect { .. } => Self::new(Kind::ConnectionFailed, error.to_string()),
            ClientError::Settings(_) => Self::invalid(error.to_string()),
            ClientError::Protocol(_) | ClientError::HashMismatch(_) => {
                Self::new(Kind::ServerError, error.to_string())
            }
            ClientError::Io { .. } => Self::new(Kind::Fleet, chain(error)),
        }
    }
}

/// Which exception an error answer of the manager becomes.
fn kind_of(code: ErrorCode, status: u16) -> Kind {
    match code {
        ErrorCode::Unauthorized | ErrorCode::Forbidden => Kind::AuthenticationFailed,
        ErrorCode::TooManyRequests => Kind::RateLimited,
        ErrorCode::NotFound => Kind::NotFound,
        ErrorCode::BadRequest
        | ErrorCode::Conflict
        | ErrorCode::Gone
        | ErrorCode::PayloadTooLarge
        | ErrorCode::Unprocessable
        | ErrorCode::MethodNotAllowed => Kind::InvalidRequest,
        _ if (400..500).contains(&status) => Kind::InvalidRequest,
        _ => Kind::ServerError,
    }
}

/// The error and its causes, joined with `: `.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
    fn manager_answers_map_to_the_contract_tree() {
        let cases = [
            (ErrorCode::Unauthorized, Kind::AuthenticationFailed),
            (ErrorCode::Forbidden, Kind::AuthenticationFailed),
            (ErrorCode::TooManyRequests, Kind::RateLimited),
            (ErrorCode::NotFound, Kind::NotFound),
            (ErrorCode::BadRequest, Kind::InvalidRequest),
            (ErrorCode::Conflict, Kind::InvalidRequest),
            (ErrorCode::Unprocessable, Kind::InvalidRequest),
            (ErrorCode::PayloadTooLarge, Kind::InvalidRequest),
            (ErrorCode::Internal, Kind::ServerError),
            (ErrorCode::Unavailable, Kind::ServerError),
        ];
        for (code, kind) in cases {
            let failure = Failure::from(&api(code, "why"));
            assert_eq!(failure.kind, kind, "{code}");
            assert_eq!(failure.code.as_deref(), Some(code.to_string().as_str()));
        }
    }

    #[test]
    fn invalid_request_keeps_the_managers_message() {
        let failure = Failure::from(&api(ErrorCode::BadRequest, "samples must be 1 to 16777216"));
        assert_eq!(failure.message, "samples must be 1 to 16777216");
        assert_eq!(failure.code.as_deref(), Some("bad_request"));
        assert_eq!(failure.retry_after, None);
    }

    #[test]
    fn server_errors_name_the_status() {
        let failure = Failure::from(&api(ErrorCode::Internal, "internal error; see the log"));
        assert_eq!(
            failure.message,
            "the manager answered 500 (internal): internal error; see the log"
        );
    }

    #[test]
    fn rate_limits_carry_the_wait() {
        let failure = Failure::from(&api(
            ErrorCode::TooManyRequests,
            "too many failed attempts from 127.0.0.1; try again in 30 s",
        ));
        assert_eq!(failure.kind, Kind::RateLimited);
        assert_eq!(failure.retry_after, Some(30.0));
    }

    #[test]
    fn transport_and_local_errors() {
        let pin = ClientError::PinMismatch("not the pinned one".into());
        assert_eq!(Failure::from(&pin).kind, Kind::PinMismatch);
        let connect = ClientError::Connect {
            url: "https://127.0.0.1:1".into(),
            detail: "connection refused".into(),
        };
        let failure = Failure::from(&connect);
        assert_eq!(failure.kind, Kind::ConnectionFailed);
        assert!(failure.message.contains("https://127.0.0.1:1"));
        assert!(failure.message.contains("connection refused"));
        assert_eq!(failure.code, None);
        let settings = ClientError::Settings("`ftp://x` must use https".into());
        assert_eq!(Failure::from(&settings).kind, Kind::InvalidRequest);
        let protocol = ClientError::Protocol("expected value".into());
        assert_eq!(Failure::from(&protocol).kind, Kind::ServerError);
    }

    #[test]
    fn io_errors_name_the_file_and_the_cause() {
        let error = ClientError::Io {
            path: "/no/such/scene.blend".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"),
        };
        let failure = Failure::from(&error);
        assert_eq!(failure.kind, Kind::Fleet);
        assert!(
            failure.message.contains("/no/such/scene.blend"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains("No such file"),
            "{}",
            failure.message
        );
    }
}
