//! Watching the cloud's metadata server for a preemption notice.
//!
//! A Spot VM is told shortly before it is taken away: GCP flips `instance/preempted` to
//! `TRUE` (about 30 s ahead), AWS publishes `spot/instance-action` (about 2 min ahead). The
//! watcher turns that notice into the agent's ordinary graceful stop: it cancels the same
//! token SIGTERM cancels, so Blender is stopped, the finished piece is uploaded with its exact
//! sample count and the rest of the lease is handed back within the stop deadline.
//!
//! Trouble reaching the metadata server is never fatal: it is logged at a low rate and the
//! watcher keeps trying.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// GCP's metadata server.
pub const GCP_METADATA_URL: &str = "http://metadata.google.internal";
/// AWS's instance metadata service (IMDS).
pub const AWS_METADATA_URL: &str = "http://169.254.169.254";

const GCP_PREEMPTED: &str = "/computeMetadata/v1/instance/preempted";
const AWS_TOKEN: &str = "/latest/api/token";
const AWS_INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";
/// Lifetime asked for an IMDSv2 session token; it is renewed at half of that.
const AWS_TOKEN_TTL_SECONDS: u64 = 21_600;
/// The largest metadata answer read.
const MAX_BODY: usize = 64 * 1024;
/// How long connecting to the metadata server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Which cloud's preemption notice to watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoticeSource {
    /// Watch nothing (local and LAN agents).
    #[default]
    None,
    /// GCP Spot and preemptible VMs: `instance/preempted`.
    Gcp,
    /// AWS Spot instances: `spot/instance-action` over IMDSv2.
    Aws,
}

impl FromStr for NoticeSource {
    type Err = PreemptionError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Self::None),
            "gcp" => Ok(Self::Gcp),
            "aws" => Ok(Self::Aws),
            _ => Err(PreemptionError::UnknownSource(value.to_owned())),
        }
    }
}

impl fmt::Display for NoticeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Gcp => "gcp",
            Self::Aws => "aws",
        })
    }
}

/// A watcher that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum PreemptionError {
    #[error("unknown preemption notice source `{0}`: use gcp, aws or none")]
    UnknownSource(String),
    #[error("metadata URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("a metadata URL was given but no preemption notice is watched (use gcp or aws)")]
    UrlWithoutSource,
}

/// How to watch.
#[derive(Clone, Debug)]
pub struct PreemptionWatch {
    pub source: NoticeSource,
    /// The metadata server's root; `None` uses the provider's own.
    pub metadata_url: Option<String>,
    /// Pause between AWS polls (AWS asks for every 5 s) and before retrying after an error.
    pub poll_interval: Duration,
    /// How long one GCP long-poll (`wait_for_change`) may be held by the server.
    pub wait: Duration,
    /// At most one warning about an unreachable or misbehaving metadata server this often.
    pub error_log_interval: Duration,
}

impl PreemptionWatch {
    /// A watch with the providers' recommended timings.
    pub fn new(source: NoticeSource, metadata_url: Option<String>) -> Self {
        Self {
            source,
            metadata_url,
            poll_interval: Duration::from_secs(5),
            wait: Duration::from_secs(60),
            error_log_interval: Duration::from_secs(60),
        }
    }
}

/// Starts watching in the background; cancels `stop` when a notice arrives, and ends when
/// `stop` is cancelled for any reason. `None` when there is nothing to watch.
pub fn spawn(
    watch: PreemptionWatch,
    stop: CancellationToken,
) -> Result<Option<JoinHandle<()>>, PreemptionError> {
    let default_url = match watch.source {
        NoticeSource::None if watch.metadata_url.is_some() => {
            return Err(PreemptionError::UrlWithoutSource)
        }
        NoticeSource::None => return Ok(None),
        NoticeSource::Gcp => GCP_METADATA_URL,
        NoticeSource::Aws => AWS_METADATA_URL,
    };
    let server = Server::parse(watch.metadata_url.as_deref().unwrap_or(default_url))?;
    tracing::info!(provider = %watch.source, server = %server.root, "watching for a preemption notice");
    Ok(Some(tokio::spawn(async move {
        let notice = async {
            match watch.source {
                NoticeSource::Gcp => watch_gcp(&server, &watch).await,
                NoticeSource::Aws => watch_aws(&server, &watch).await,
                NoticeSource::None => std::future::pending().await,
            }
        };
        tokio::select! {
            notice = notice => {
                tracing::warn!(
                    provider = %watch.source, %notice,
                    "preemption notice: stopping as on SIGTERM"
                );
                stop.cancel();
            }
            () = stop.cancelled() => {}
        }
    })))
}

/// Waits for GCP's `preempted` to read `TRUE`: one plain read, then long-polls that return
/// as soon as the value changes (or the wait ends).
async fn watch_gcp(server: &Server, watch: &PreemptionWatch) -> String {
    let mut errors = ErrorLog::new(watch.error_log_interval);
    let mut etag: Option<String> = None;
    let headers = [("Metadata-Flavor", "Google")];
    loop {
        let began = Instant::now();
        let path = match &etag {
            Some(etag) => format!(
                "{GCP_PREEMPTED}?wait_for_change=true&timeout_sec={}&last_etag={etag}",
                watch.wait.as_secs().max(1)
            ),
            None => GCP_PREEMPTED.to_owned(),
        };
        let timeout = watch.wait + Duration::from_secs(10);
        match server.call(Method::GET, &path, &headers, timeout).await {
            Ok(answer) if answer.status == StatusCode::OK => {
                errors.recovered("gcp");
                if answer.body.trim().eq_ignore_ascii_case("TRUE") {
                    return "GCP instance/preempted is TRUE".to_owned();
                }
                // Without an ETag a long-poll could miss the change: poll plainly instead.
                etag = answer.etag.filter(|tag| {
                    tag.bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                });
                // A server that answers a long-poll at once must not make this spin.
                let gap = if etag.is_some() {
                    Duration::from_secs(1).min(watch.poll_interval)
                } else {
                    watch.poll_interval
                };
                tokio::time::sleep(gap.saturating_sub(began.elapsed())).await;
                continue;
            }
            Ok(answer) => errors.report(
                "gcp",
                &format!(
                    "metadata server answered {}: {}",
                    answer.status,
                    answer.snippet()
                ),
            ),
            Err(error) => errors.report("gcp", &error),
        }
        etag = None;
        tokio::time::sleep(watch.poll_interval).await;
    }
}

/// Polls AWS's `spot/instance-action` with an IMDSv2 session token; 404 means no notice.
/// Without a token nothing is asked (IMDSv2 refuses such requests anyway).
async fn watch_aws(server: &Server, watch: &PreemptionWatch) -> String {
    let mut errors = ErrorLog::new(watch.error_log_interval);
    let mut token: Option<(String, Instant)> = None;
    let renew_after = Duration::from_secs(AWS_TOKEN_TTL_SECONDS / 2);
    let timeout = Duration::from_secs(5);
    let mut refused_in_a_row = 0u32;
    loop {
        if token
            .as_ref()
            .is_none_or(|(_, got)| got.elapsed() >= renew_after)
        {
            let ttl = AWS_TOKEN_TTL_SECONDS.to_string();
            let headers = [("X-aws-ec2-metadata-token-ttl-seconds", ttl.as_str())];
            match server.call(Method::PUT, AWS_TOKEN, &headers, timeout).await {
                Ok(answer) if answer.status == StatusCode::OK && !answer.body.trim().is_empty() => {
                    token = Some((answer.body.trim().to_owned(), Instant::now()));
                }
                Ok(answer) => {
                    errors.report(
                        "aws",
                        &format!(
                            "no IMDSv2 token: metadata server answered {}: {}",
                            answer.status,
                            answer.snippet()
                        ),
                    );
                    tokio::time::sleep(watch.poll_interval).await;
                    continue;
                }
                Err(error) => {
                    errors.report("aws", &format!("no IMDSv2 token: {error}"));
                    tokio::time::sleep(watch.poll_interval).await;
                    continue;
                }
            }
        }
        let Some((secret, _)) = token.as_ref() else {
            continue;
        };
        let headers = [("X-aws-ec2-metadata-token", secret.as_str())];
        match server
            .call(Method::GET, AWS_INSTANCE_ACTION, &headers, timeout)
            .await
        {
            Ok(answer) if answer.status == StatusCode::OK => {
                return describe_instance_action(&answer.body);
            }
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => {
                errors.recovered("aws");
                refused_in_a_row = 0;
            }
            Ok(answer) if answer.status == StatusCode::UNAUTHORIZED => {
                // The token expired or was revoked: get a new one, at once the first time.
                token = None;
                refused_in_a_row += 1;
                if refused_in_a_row == 1 {
                    continue;
                }
                errors.report(
                    "aws",
                    &"the metadata server keeps refusing fresh IMDSv2 tokens",
                );
            }
            Ok(answer) => errors.report(
                "aws",
                &format!(
                    "metadata server answered {}: {}",
                    answer.status,
                    answer.snippet()
                ),
            ),
            Err(error) => errors.report("aws", &error),
        }
        tokio::time::sleep(watch.poll_interval).await;
    }
}

/// What an AWS interruption notice says, for the log.
fn describe_instance_action(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|value| value.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    match (field("action"), field("time")) {
        (Some(action), Some(time)) => format!("AWS spot instance-action: {action} at {time}"),
        (Some(action), None) => format!("AWS spot instance-action: {action}"),
        _ => format!(
            "AWS spot instance-action published: {}",
            body.chars().take(200).collect::<String>()
        ),
    }
}

/// Warns about metadata errors at most once per interval; the rest go to debug.
struct ErrorLog {
    interval: Duration,
    last_warned: Option<Instant>,
    quiet: u32,
    failing: bool,
}

impl ErrorLog {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_warned: None,
            quiet: 0,
            failing: false,
        }
    }

    fn report(&mut self, provider: &str, error: &dyn fmt::Display) {
        self.failing = true;
        if self
            .last_warned
            .is_some_and(|last| last.elapsed() < self.interval)
        {
            self.quiet += 1;
            tracing::debug!(provider, %error, "metadata server error; retrying");
            return;
        }
        tracing::warn!(
            provider, %error, similar_errors_not_shown = self.quiet,
            "cannot read the preemption notice from the metadata server; retrying"
        );
        self.last_warned = Some(Instant::now());
        self.quiet = 0;
    }

    fn recovered(&mut self, provider: &str) {
        if self.failing {
            tracing::info!(provider, "metadata server answers again");
            self.failing = false;
        }
    }
}

/// A metadata server reached over plain HTTP/1.1.
#[derive(Clone, Debug)]
struct Server {
    root: String,
    host: String,
    port: u16,
    authority: String,
    prefix: String,
}

/// An answer, small enough to hold in memory.
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: String,
}

impl Answer {
    fn snippet(&self) -> String {
        self.body.trim().chars().take(200).collect()
    }
}

/// Why a metadata request failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("no answer from {0} in time")]
    Timeout(String),
    #[error("HTTP error talking to {0}: {1}")]
    Http(String, String),
}

impl Server {
    fn parse(url: &str) -> Result<Self, PreemptionError> {
        let bad = |reason: &str| PreemptionError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: hyper::Uri = url
            .trim()
            .parse()
            .map_err(|error: hyper::http::uri::InvalidUri| bad(&error.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad(
                "must start with http:// (metadata servers speak plain HTTP on a link-local address)",
            ));
        }
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        Ok(Self {
            root: url.trim().trim_end_matches('/').to_owned(),
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        match tokio::time::timeout(timeout, self.call_now(method, path, headers)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout(self.root.clone())),
        }
    }

    async fn call_now(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, CallError> {
        let http = |error: &dyn fmt::Display| CallError::Http(self.root.clone(), error.to_string());
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| CallError::Timeout(self.root.clone()))?
        .map_err(|error| CallError::Connect(self.root.clone(), error))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| http(&error))?;
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, &self.authority)
            .header(
                hyper::header::USER_AGENT,
                concat!("blendfleet/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|error| http(&error))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|error| http(&error))?;
            let status = response.status();
            let etag = response
                .headers()
                .get(hyper::header::ETAG)
                .and_then(|value| value.to_str().ok())
                .map(|value| value.trim_matches('"').to_owned());
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|error| http(&error))?
                .to_bytes();
            Ok(Answer {
                status,
                etag,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }
        .await;
        driver.abort();
        result
    }
}

#[cfg(test)]
mod tests;
