//! The user API: files, jobs, results, agents.

use std::path::Path;
use std::time::Duration;

use fleet_protocol::{
    paths, AgentId, AgentInfo, BlobHash, CreateJobResponse, CreateJoinTokenRequest, JobId, JobList,
    JobSpec, JobStatus, JoinToken, MissingBlobsRequest, MissingBlobsResponse, Secret, ServerInfo,
};
use fleet_tls::Fingerprint;

use crate::{http, ClientError};

/// How long an ordinary JSON call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the manager is and how to prove who we are.
#[derive(Clone, Debug)]
pub struct ConnectionSettings {
    /// `https://host:port`.
    pub url: String,
    /// Basic-auth user.
    pub user: String,
    /// Basic-auth password.
    pub password: Secret,
    /// SHA-256 fingerprint of the manager's CA certificate.
    pub ca_fingerprint: Fingerprint,
}

impl ConnectionSettings {
    /// The connection string: URL, user and fingerprint in one line that can be pasted,
    /// e.g. `https://admin@10.0.0.5:8443/#ca=sha256:…`. The password is never part of it.
    pub fn connection_string(&self) -> Result<String, ClientError> {
        let base = http::base_url(&self.url)?;
        let (scheme, rest) = base.split_once("://").unwrap_or(("https", &base));
        Ok(format!(
            "{scheme}://{}@{rest}/#ca={}",
            self.user, self.ca_fingerprint
        ))
    }

    /// Parses a connection string made by [`ConnectionSettings::connection_string`].
    pub fn from_connection_string(text: &str, password: Secret) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::Settings(format!("connection string `{text}`: {why}"));
        let (address, fragment) = text
            .trim()
            .split_once('#')
            .ok_or_else(|| bad("it has no `#ca=sha256:…` part"))?;
        let fingerprint = fragment
            .strip_prefix("ca=")
            .ok_or_else(|| bad("the part after `#` must be `ca=sha256:…`"))?
            .parse::<Fingerprint>()
            .map_err(|error| bad(&error.to_string()))?;
        let url = reqwest::Url::parse(address).map_err(|error| bad(&error.to_string()))?;
        if url.username().is_empty() {
            return Err(bad("it names no user (`https://USER@HOST:PORT/#ca=…`)"));
        }
        let host = url.host_str().ok_or_else(|| bad("it names no host"))?;
        let port = url
            .port()
            .map(|port| format!(":{port}"))
            .unwrap_or_default();
        Ok(Self {
            url: http::base_url(&format!("{}://{host}{port}", url.scheme()))?,
            user: url.username().to_owned(),
            password,
            ca_fingerprint: fingerprint,
        })
    }
}

/// A client of the manager's user API.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    user: String,
    password: Secret,
    call_timeout: Duration,
}

impl Client {
    /// Prepares a client; nothing is sent until the first call.
    pub fn new(settings: &ConnectionSettings) -> Result<Self, ClientError> {
        Ok(Self {
            http: http::build(settings.ca_fingerprint)?,
            base: http::base_url(&settings.url)?,
            user: settings.user.clone(),
            password: settings.password.clone(),
            call_timeout: CALL_TIMEOUT,
        })
    }

    /// Prepares a client that gives up on connecting, and on each JSON call, after
    /// `timeout`. File uploads and downloads are limited only in how long connecting takes.
    pub fn with_timeout(
        settings: &ConnectionSettings,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        if timeout.is_zero() {
            return Err(ClientError::Settings(
                "the timeout must be longer than zero".into(),
            ));
        }
        Ok(Self {
            http: http::build_with_connect_timeout(settings.ca_fingerprint, timeout)?,
            base: http::base_url(&settings.url)?,
            user: settings.user.clone(),
            password: settings.password.clone(),
            call_timeout: timeout,
        })
    }

    /// The user this client authenticates as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The manager's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(self.password.expose()))
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
            .timeout(self.call_timeout)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
            .timeout(self.call_timeout)
    }

    /// Who answers, and how many agents are online.
    pub async fn info(&self) -> Result<ServerInfo, ClientError> {
        http::json(&self.base, self.get(paths::INFO)).await
    }

    /// Which of `hashes` the manager does not have yet.
    pub async fn missing_blobs(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>, ClientError> {
        let body = MissingBlobsRequest {
            hashes: hashes.to_vec(),
        };
        let answer: MissingBlobsResponse =
            http::json(&self.base, self.post(paths::BLOBS_MISSING).json(&body)).await?;
        Ok(answer.missing)
    }

    /// Uploads a file under its hash; the manager checks the hash before keeping it.
    pub async fn upload_blob(&self, hash: &BlobHash, file: &Path) -> Result<(), ClientError> {
        self.upload_blob_with_progress(hash, file, |_| {}).await
    }

    /// Uploads a file under its hash like [`Client::upload_blob`], calling `progress` with
    /// the size of each piece of the file as it is handed to the connection.
    pub async fn upload_blob_with_progress(
        &self,
        hash: &BlobHash,
        file: &Path,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(), ClientError> {
        let (body, length) = http::file_body_with_progress(file, progress).await?;
        let request = self
            .request(reqwest::Method::PUT, &paths::blob(hash))
            .header(reqwest::header::CONTENT_LENGTH, length)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        http::send(&self.base, request).await.map(drop)
    }

    /// Submits a job.
    pub async fn create_job(&self, spec: &JobSpec) -> Result<CreateJobResponse, ClientError> {
        http::json(&self.base, self.post(paths::JOBS).json(spec)).await
    }

    /// Submits a job spec given as JSON, unchanged: the manager alone judges it, so a
    /// field this client does not know is refused (or accepted) by the manager, not here.
    pub async fn create_job_json(
        &self,
        spec: &serde_json::Value,
    ) -> Result<CreateJobResponse, ClientError> {
        http::json(&self.base, self.post(paths::JOBS).json(spec)).await
    }

    /// All jobs, newest first.
    pub async fn jobs(&self) -> Result<JobList, ClientError> {
        http::json(&self.base, self.get(paths::JOBS)).await
    }

    /// Cloud instances, spend and scaling events.
    pub async fn farm(&self) -> Result<fleet_protocol::FarmStatus, ClientError> {
        http::json(&self.base, self.get(paths::FARM)).await
    }

    /// One job in detail.
    pub async fn job(&self, id: JobId) -> Result<JobStatus, ClientError> {
        http::json(&self.base, self.get(&paths::job(id))).await
    }

    /// Queues a job created with `start: false`.
    pub async fn start_job(&self, id: JobId) -> Result<JobStatus, ClientError> {
        http::json(&self.base, self.post(&paths::job_start(id))).await
    }

    /// Stops a job; agents working on it are told at their next heartbeat.
    pub async fn cancel_job(&self, id: JobId) -> Result<JobStatus, ClientError> {
        http::json(&self.base, self.post(&paths::job_cancel(id))).await
    }

    /// Removes a job and its results.
    pub async fn delete_job(&self, id: JobId) -> Result<(), ClientError> {
        let request = self
            .request(reqwest::Method::DELETE, &paths::job(id))
            .timeout(self.call_timeout);
        http::send(&self.base, request).await.map(drop)
    }

    /// A single-use join credential for one agent, valid for `ttl`.
    pub async fn create_join_token(&self, ttl: Duration) -> Result<JoinToken, ClientError> {
        let body = CreateJoinTokenRequest {
            ttl_secs: Some(ttl.as_secs().max(1)),
        };
        http::json(&self.base, self.post(paths::JOIN_TOKENS).json(&body)).await
    }

    /// Removes an agent; its certificate is refused from then on.
    pub async fn remove_agent(&self, id: AgentId) -> Result<(), ClientError> {
        let request = self
            .request(reqwest::Method::DELETE, &paths::agent(id))
            .timeout(self.call_timeout);
        http::send(&self.base, request).await.map(drop)
    }

    /// The agents the manager knows.
    pub async fn agents(&self) -> Result<Vec<AgentInfo>, ClientError> {
        http::json(&self.base, self.get(paths::AGENTS)).await
    }

    /// Saves a finished frame's merged multilayer EXR to `dest`.
    pub async fn download_frame_exr(
        &self,
        id: JobId,
        frame: i32,
        dest: &Path,
    ) -> Result<(), ClientError> {
        self.download(&paths::frame_exr(id, frame), dest).await
    }

    /// Saves a finished frame's flat image to `dest`.
    pub async fn download_frame_image(
        &self,
        id: JobId,
        frame: i32,
        dest: &Path,
    ) -> Result<(), ClientError> {
        self.download(&paths::frame_image(id, frame), dest).await
    }

    /// The latest merged preview of a frame (PNG bytes).
    pub async fn frame_preview(&self, id: JobId, frame: i32) -> Result<Vec<u8>, ClientError> {
        let response = http::send(&self.base, self.get(&paths::frame_preview(id, frame))).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|error| ClientError::transport(&self.base, &error))?;
        Ok(bytes.to_vec())
    }

    async fn download(&self, path: &str, dest: &Path) -> Result<(), ClientError> {
        let request = self.request(reqwest::Method::GET, path);
        let response = http::send(&self.base, request).await?;
        http::save(&self.base, response, dest).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_string_round_trip() {
        let settings = ConnectionSettings {
            url: "https://10.0.0.5:8443".into(),
            user: "admin".into(),
            password: Secret::new("pw"),
            ca_fingerprint: Fingerprint::of_der(b"ca"),
        };
        let text = settings.connection_string().unwrap();
        assert!(
            text.starts_with("https://admin@10.0.0.5:8443/#ca=sha256:"),
            "{text}"
        );
        assert!(!text.contains("pw"));
        let parsed = ConnectionSettings::from_connection_string(&text, Secret::new("pw")).unwrap();
        assert_eq!(parsed.url, "https://10.0.0.5:8443");
        assert_eq!(parsed.user, "admin");
        assert_eq!(parsed.ca_fingerprint, settings.ca_fingerprint);
    }

    #[test]
    fn zero_timeout_is_refused() {
        let settings = ConnectionSettings {
            url: "https://127.0.0.1:1".into(),
            user: "admin".into(),
            password: Secret::new("pw"),
            ca_fingerprint: Fingerprint::of_der(b"ca"),
        };
        let error = Client::with_timeout(&settings, Duration::ZERO).unwrap_err();
        assert!(error.to_string().contains("timeout"), "{error}");
        let client = Client::with_timeout(&settings, Duration::from_millis(1500)).unwrap();
        assert_eq!(client.call_timeout, Duration::from_millis(1500));
        assert_eq!(client.user(), "admin");
        assert!(!format!("{client:?}").contains("pw\""));
    }

    #[test]
    fn connection_string_errors_say_what_is_missing() {
        let error = ConnectionSettings::from_connection_string("https://h:1", Secret::new("p"))
            .unwrap_err();
        assert!(error.to_string().contains("#ca="), "{error}");
        let error = ConnectionSettings::from_connection_string(
            "https://h:1/#ca=sha256:00",
            Secret::new("p"),
        )
        .unwrap_err();
        assert!(error.to_string().contains("fingerprint"), "{error}");
    }
}
