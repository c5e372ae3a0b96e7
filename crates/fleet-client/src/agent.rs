//! The agent API: join, lease, heartbeat, upload, fetch project files.

use std::path::Path;
use std::time::Duration;

use fleet_protocol::{
    paths, BlobHash, FailRequest, HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse,
    Lease, LeaseId, LeaseRequest, UploadResponse,
};
use fleet_tls::Fingerprint;

use crate::{http, ClientError};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of the manager's agent API.
///
/// Before it joins, an agent has no identity and may only call [`AgentClient::join`]. The
/// manager answers with a client certificate for the key the agent generated; every other
/// call is made over mutual TLS with it ([`AgentClient::with_identity`]).
#[derive(Clone, Debug)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
}

impl AgentClient {
    /// A client without identity, for the manager at `url` whose CA has fingerprint `ca`.
    pub fn new(url: &str, ca: Fingerprint) -> Result<Self, ClientError> {
        Ok(Self {
            http: http::build(ca)?,
            base: http::base_url(url)?,
        })
    }

    /// A client that presents the agent's certificate (PEM) and private key (PEM).
    pub fn with_identity(
        url: &str,
        ca: Fingerprint,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            http: http::build_with_identity(ca, cert_pem, key_pem)?,
            base: http::base_url(url)?,
        })
    }

    /// The manager's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Joins the manager with a join credential and a certificate signing request; the
    /// answer carries the agent's certificate.
    pub async fn join(&self, request: &JoinRequest) -> Result<JoinResponse, ClientError> {
        let call = self
            .request(reqwest::Method::POST, paths::AGENT_JOIN)
            .timeout(CALL_TIMEOUT)
            .json(request);
        http::json(&self.base, call).await
    }

    /// Asks for a chunk, waiting up to `wait` for one. `None`: no work right now.
    pub async fn lease(&self, wait: Duration) -> Result<Option<Lease>, ClientError> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let call = self
            .request(reqwest::Method::POST, paths::AGENT_LEASE)
            .timeout(wait + CALL_TIMEOUT)
            .json(&LeaseRequest { wait_ms });
        let response = http::send(&self.base, call).await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|error| ClientError::transport(&self.base, &error))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| ClientError::Protocol(error.to_string()))
    }

    /// Keeps a lease alive. A [`fleet_protocol::ErrorCode::Gone`] error means: stop working on it.
    pub async fn heartbeat(
        &self,
        lease: LeaseId,
        samples_done: Option<u32>,
    ) -> Result<HeartbeatResponse, ClientError> {
        let call = self
            .request(reqwest::Method::POST, &paths::lease_heartbeat(lease))
            .timeout(CALL_TIMEOUT)
            .json(&HeartbeatRequest { samples_done });
        http::json(&self.base, call).await
    }

    /// Uploads the whole rest of a lease at once (one partial EXR of `samples` samples).
    pub async fn upload_result(
        &self,
        lease: LeaseId,
        samples: u32,
        exr: &Path,
    ) -> Result<UploadResponse, ClientError> {
        self.upload_piece(lease, None, samples, None, exr).await
    }

    /// Uploads a rendered piece of a lease: samples `[start, start + samples)` (`start`
    /// defaults to where the lease's rest begins), rendered in `seconds`.
    pub async fn upload_piece(
        &self,
        lease: LeaseId,
        start: Option<u32>,
        samples: u32,
        seconds: Option<f64>,
        exr: &Path,
    ) -> Result<UploadResponse, ClientError> {
        let (body, length) = http::file_body(exr).await?;
        let mut query = vec![("samples", samples.to_string())];
        if let Some(start) = start {
            query.push(("start", start.to_string()));
        }
        if let Some(seconds) = seconds {
            query.push(("seconds", format!("{seconds:.3}")));
        }
        let call = self
            .request(reqwest::Method::PUT, &paths::lease_result(lease))
            .query(&query)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .header(reqwest::header::CONTENT_TYPE, "image/x-exr")
            .body(body);
        http::json(&self.base, call).await
    }

    /// Gives the rest of a lease back (the agent is stopping).
    pub async fn release(&self, lease: LeaseId) -> Result<(), ClientError> {
        let call = self
            .request(reqwest::Method::POST, &paths::lease_release(lease))
            .timeout(CALL_TIMEOUT);
        http::send(&self.base, call).await.map(drop)
    }

    /// Reports that a chunk could not be rendered.
    pub async fn fail(&self, lease: LeaseId, message: &str) -> Result<(), ClientError> {
        let call = self
            .request(reqwest::Method::POST, &paths::lease_fail(lease))
            .timeout(CALL_TIMEOUT)
            .json(&FailRequest {
                message: message.to_owned(),
            });
        http::send(&self.base, call).await.map(drop)
    }

    /// Downloads a project file into `dest`, checking its hash.
    pub async fn download_blob(&self, hash: &BlobHash, dest: &Path) -> Result<(), ClientError> {
        let call = self.request(reqwest::Method::GET, &paths::agent_blob(hash));
        let response = http::send(&self.base, call).await?;
        let digest = http::save(&self.base, response, dest).await?;
        if BlobHash::from_digest(&digest) != *hash {
            let _ = tokio::fs::remove_file(dest).await;
            return Err(ClientError::HashMismatch(hash.clone()));
        }
        Ok(())
    }
}
