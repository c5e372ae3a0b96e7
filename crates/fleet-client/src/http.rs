//! The HTTP plumbing shared by the user and agent clients.

use std::path::Path;
use std::time::Duration;

use fleet_protocol::{ErrorBody, ErrorCode};
use fleet_tls::Fingerprint;
use futures_util::StreamExt;
use reqwest::{RequestBuilder, Response};
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;

use crate::ClientError;

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A reqwest client that trusts only the pinned CA.
pub(crate) fn build(pin: Fingerprint) -> Result<reqwest::Client, ClientError> {
    build_with_connect_timeout(pin, CONNECT_TIMEOUT)
}

/// A reqwest client that trusts only the pinned CA and gives up on establishing a
/// connection (TCP and TLS handshake) after `connect_timeout`.
pub(crate) fn build_with_connect_timeout(
    pin: Fingerprint,
    connect_timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    let tls = fleet_tls::pinned_client_config(pin)
        .map_err(|error| ClientError::Settings(error.to_string()))?;
    with_tls(tls, connect_timeout)
}

/// A reqwest client that trusts only the pinned CA and presents a client certificate.
pub(crate) fn build_with_identity(
    pin: Fingerprint,
    cert_pem: &str,
    key_pem: &str,
) -> Result<reqwest::Client, ClientError> {
    let tls = fleet_tls::pinned_client_config_with_identity(pin, cert_pem, key_pem)
        .map_err(|error| ClientError::Settings(error.to_string()))?;
    with_tls(tls, CONNECT_TIMEOUT)
}

fn with_tls(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .no_proxy()
        .user_agent(concat!("blendfleet/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| ClientError::Settings(error.to_string()))
}

/// Normalises a manager URL: `https://` scheme, no trailing slash.
pub(crate) fn base_url(url: &str) -> Result<String, ClientError> {
    let trimmed = url.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    };
    let parsed = reqwest::Url::parse(&with_scheme)
        .map_err(|error| ClientError::Settings(format!("`{url}` is not a URL: {error}")))?;
    if parsed.scheme() != "https" {
        return Err(ClientError::Settings(format!(
            "`{url}` must use https; the manager speaks TLS only"
        )));
    }
    let host = parsed
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| ClientError::Settings(format!("`{url}` has no host")))?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let port = parsed
        .port()
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    Ok(format!("https://{host}{port}"))
}

/// Sends a request and turns error statuses into [`ClientError::Api`].
pub(crate) async fn send(base: &str, request: RequestBuilder) -> Result<Response, ClientError> {
    let response = request
        .send()
        .await
        .map_err(|error| ClientError::transport(base, &error))?;
    check(response).await
}

async fn check(response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let bytes = response.bytes().await.unwrap_or_default();
    let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => (body.code, body.message),
        Err(_) => (
            ErrorCode::from_http_status(status.as_u16()),
            format!(
                "the manager answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ),
        ),
    };
    Err(ClientError::Api {
        status: status.as_u16(),
        code,
        message,
    })
}

/// Sends a request and parses its JSON answer.
pub(crate) async fn json<T: DeserializeOwned>(
    base: &str,
    request: RequestBuilder,
) -> Result<T, ClientError> {
    let response = send(base, request).await?;
    let bytes = response
        .bytes()
        .await
        .map_err(|error| ClientError::transport(base, &error))?;
    serde_json::from_slice(&bytes).map_err(|error| ClientError::Protocol(error.to_string()))
}

/// A streaming request body that reads `path` as it is sent.
pub(crate) async fn file_body(path: &Path) -> Result<(reqwest::Body, u64), ClientError> {
    file_body_with_progress(path, |_| {}).await
}

/// A streaming request body that reads `path` as it is sent and calls `progress` with the
/// size of each piece as it is handed to the connection.
pub(crate) async fn file_body_with_progress(
    path: &Path,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<(reqwest::Body, u64), ClientError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| ClientError::io(path, source))?;
    let length = file
        .metadata()
        .await
        .map_err(|source| ClientError::io(path, source))?
        .len();
    let stream =
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |piece| {
            if let Ok(piece) = piece {
                progress(piece.len() as u64);
            }
        });
    Ok((reqwest::Body::wrap_stream(stream), length))
}

/// Streams a response body into `dest`, atomically: written beside it, then renamed.
/// Returns the SHA-256 of what was written.
pub(crate) async fn save(
    base: &str,
    response: Response,
    dest: &Path,
) -> Result<[u8; 32], ClientError> {
    use sha2::{Digest, Sha256};
    let partial = dest.with_extension("part");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|source| ClientError::io(&partial, source))?;
    let mut hasher = Sha256::new();
    let mut stream = response.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|error| ClientError::transport(base, &error))?;
        hasher.update(&piece);
        file.write_all(&piece)
            .await
            .map_err(|source| ClientError::io(&partial, source))?;
    }
    file.flush()
        .await
        .map_err(|source| ClientError::io(&partial, source))?;
    drop(file);
    tokio::fs::rename(&partial, dest)
        .await
        .map_err(|source| ClientError::io(dest, source))?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_forms() {
        assert_eq!(
            base_url("127.0.0.1:8443").unwrap(),
            "https://127.0.0.1:8443"
        );
        assert_eq!(base_url("https://h:1/").unwrap(), "https://h:1");
        assert!(base_url("http://h:1")
            .unwrap_err()
            .to_string()
            .contains("https"));
        assert!(base_url("https://").is_err());
        assert_eq!(base_url("https://[::1]:9/x").unwrap(), "https://[::1]:9");
    }
}
