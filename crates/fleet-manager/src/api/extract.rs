//! Request extractors: authentication, and JSON/path/query parsing with `{code, message}`
//! rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use fleet_protocol::{AgentId, ErrorCode};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::server::PeerCertificate;
use crate::store::agents::AgentLookup;
use crate::store::now_ms;

/// The address a request came from (`-` when unknown, as in handler tests).
pub fn client_address(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

/// The address a request came from, as an extractor.
pub struct ClientAddress(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(client_address(parts)))
    }
}

/// Refuses requests from an address that failed too often lately.
pub fn check_not_blocked(state: &AppState, address: Option<IpAddr>) -> Result<(), ApiError> {
    if let Some(address) = address {
        state
            .limiter
            .check(address)
            .map_err(|wait| ApiError::too_many_failures(&address.to_string(), wait))?;
    }
    Ok(())
}

/// Counts a failed attempt; the error to answer with (429 once the address is blocked).
pub fn failed_attempt(state: &AppState, address: Option<IpAddr>, error: ApiError) -> ApiError {
    match address.map(|address| (address, state.limiter.record_failure(address))) {
        Some((address, Err(wait))) => {
            tracing::warn!(%address, "blocking an address after repeated failed attempts");
            ApiError::too_many_failures(&address.to_string(), wait)
        }
        _ => error,
    }
}

/// A request carrying the user's basic-auth credentials.
pub struct User;

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let address = client_address(parts);
        check_not_blocked(state, address)?;
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        match header {
            None => Err(ApiError::unauthorized(
                "this endpoint needs basic-auth credentials",
            )),
            Some(header) if state.credentials.check_header(header) => {
                state.farm.touch(now_ms());
                Ok(Self)
            }
            Some(_) => {
                tracing::warn!(address = ?address, "rejected wrong user credentials");
                let wrong = ApiError::unauthorized("wrong user name or password");
                Err(failed_attempt(state, address, wrong))
            }
        }
    }
}

/// A request from a joined agent, identified by its client certificate.
pub struct Agent(pub AgentId);

impl FromRequestParts<AppState> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let fingerprint = parts
            .extensions
            .get::<PeerCertificate>()
            .and_then(|PeerCertificate(fingerprint)| fingerprint.clone())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "agent endpoints need the client certificate an agent receives when it joins",
                )
            })?;
        match state.store.touch_agent(&fingerprint, now_ms())? {
            AgentLookup::Active(id) => Ok(Self(id)),
            AgentLookup::Revoked(id) => Err(ApiError::forbidden(format!(
                "agent {id} was removed from this farm; its certificate is revoked"
            ))),
            AgentLookup::Unknown => Err(ApiError::unauthorized(
                "this certificate belongs to no agent of this farm; join again",
            )),
        }
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
