//! The one error body every endpoint returns.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Machine-readable error category; each maps to exactly one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a value is out of range (400).
    BadRequest,
    /// Credentials are missing or wrong (401).
    Unauthorized,
    /// The caller is known but not allowed, e.g. an agent whose certificate was revoked (403).
    Forbidden,
    /// The thing named in the path does not exist (404).
    NotFound,
    /// The path exists but not with this HTTP method (405).
    MethodNotAllowed,
    /// The request conflicts with the current state, e.g. starting a finished job (409).
    Conflict,
    /// The lease or job is no longer valid for this caller (410).
    Gone,
    /// The body is larger than the endpoint accepts (413).
    PayloadTooLarge,
    /// The uploaded content does not match what it claims to be (422).
    Unprocessable,
    /// Too many requests from one client (429).
    TooManyRequests,
    /// Something went wrong on the server; details are in its log (500).
    Internal,
    /// The server is not ready yet (503).
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status code that goes with this error code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::Gone => 410,
            Self::PayloadTooLarge => 413,
            Self::Unprocessable => 422,
            Self::TooManyRequests => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }

    /// The code used when a response carries no parsable body.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            409 => Self::Conflict,
            410 => Self::Gone,
            413 => Self::PayloadTooLarge,
            422 => Self::Unprocessable,
            429 => Self::TooManyRequests,
            503 => Self::Unavailable,
            400..=499 => Self::BadRequest,
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

/// `{"code": "...", "message": "..."}`: the body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What kind of error this is.
    pub code: ErrorCode,
    /// A sentence for a human; names the offending value where there is one.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let body = ErrorBody::new(ErrorCode::NotFound, "job 7 not found");
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(json, r#"{"code":"not_found","message":"job 7 not found"}"#);
    }

    #[test]
    fn status_round_trip() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Conflict,
            ErrorCode::Gone,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Unprocessable,
            ErrorCode::TooManyRequests,
            ErrorCode::Internal,
            ErrorCode::Unavailable,
        ] {
            assert_eq!(ErrorCode::from_http_status(code.http_status()), code);
        }
        assert_eq!(ErrorCode::TooManyRequests.to_string(), "too_many_requests");
    }
}
