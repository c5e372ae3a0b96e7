//! Request extractors: authentication, and JSON/path/query parsing with `{code, message}`
//! rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use fleet_protocol::{AgentId, ErrorCode};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::auth::secret_hash;
use crate::store::now_ms;

/// A request carrying the user's basic-auth credentials.
pub struct User;

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        match header {
            None => Err(ApiError::unauthorized(
                "this endpoint needs basic-auth credentials",
            )),
            Some(header) if state.credentials.check_header(header) => Ok(Self),
            Some(_) => {
                tracing::warn!("rejected wrong user credentials");
                Err(ApiError::unauthorized("wrong user name or password"))
            }
        }
    }
}

/// A request from a joined agent (bearer secret).
pub struct Agent(pub AgentId);

impl FromRequestParts<AppState> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("this endpoint is for agents that joined"))?;
        state
            .store
            .touch_agent(&secret_hash(secret.trim()), now_ms())?
            .map(Self)
            .ok_or_else(|| ApiError::unauthorized("unknown agent credential; join again"))
    }
}

/// A JSON body; malformed or unknown fields give 400, oversized bodies 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(ErrorCode::PayloadTooLarge, "the JSON body is too large");
    }
    ApiError::bad_request(rejection.body_text())
}

/// Path parameters; unparsable ones give 400.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection: PathRejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// Query parameters; missing or unparsable ones give 400.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| ApiError::bad_request(rejection.body_text()))
    }
}
