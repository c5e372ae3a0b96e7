//! The error type every handler returns, rendered as `{code, message}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleet_protocol::{ErrorBody, ErrorCode};

use crate::store::StoreError;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    body: ErrorBody,
    /// Seconds a rate-limited client should wait (`Retry-After`).
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code and a message for the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            body: ErrorBody::new(code, message),
            retry_after: None,
        }
    }

    /// 429: too many failures from this address; try again after `wait`.
    pub fn too_many_failures(address: &str, wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs().max(1);
        Self {
            body: ErrorBody::new(
                ErrorCode::TooManyRequests,
                format!("too many failed attempts from {address}; try again in {seconds} s"),
            ),
            retry_after: Some(seconds),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// A server-side failure: the detail goes to the log, the client learns only that it
    /// happened.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        let detail = super::error_chain(error);
        tracing::error!(error = %detail, "request failed");
        Self::new(ErrorCode::Internal, "internal error; see the manager's log")
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.body.code
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::internal(&error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.body.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, Json(self.body)).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"BlendFleet\", charset=\"UTF-8\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
