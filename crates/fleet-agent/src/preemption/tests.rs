//! The watcher against fake metadata servers on loopback that behave like GCP's and like
//! AWS's IMDSv2 in what the watcher relies on.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use tokio::sync::watch;

use super::*;

/// Quick timings for tests.
fn watch_with(source: NoticeSource, url: String) -> PreemptionWatch {
    PreemptionWatch {
        poll_interval: Duration::from_millis(50),
        wait: Duration::from_secs(30),
        error_log_interval: Duration::from_secs(60),
        ..PreemptionWatch::new(source, Some(url))
    }
}

async fn serve(router: Router) -> SocketAddr {
    serve_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        router,
    )
}

fn serve_on(listener: tokio::net::TcpListener, router: Router) -> SocketAddr {
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

/// Waits up to `limit` for `stop`; true when it fired.
async fn stopped_within(stop: &CancellationToken, limit: Duration) -> bool {
    tokio::time::timeout(limit, stop.cancelled()).await.is_ok()
}

// ---- GCP ----

/// GCP's metadata server: needs `Metadata-Flavor: Google`, answers `TRUE`/`FALSE` with an
/// ETag, and holds `wait_for_change` requests whose `last_etag` is current until the value
/// changes or `timeout_sec` passes.
#[derive(Clone)]
struct FakeGcp {
    preempted: watch::Sender<bool>,
    requests: Arc<AtomicU32>,
    long_polls: Arc<AtomicU32>,
    without_flavor: Arc<AtomicU32>,
    /// Answer this many requests with 503 first.
    fail_first: Arc<AtomicU32>,
}

impl FakeGcp {
    fn new(preempted: bool) -> Self {
        Self {
            preempted: watch::channel(preempted).0,
            requests: Arc::default(),
            long_polls: Arc::default(),
            without_flavor: Arc::default(),
            fail_first: Arc::default(),
        }
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/computeMetadata/v1/instance/preempted", get(gcp_preempted))
            .with_state(self.clone())
    }
}

fn gcp_etag(preempted: bool) -> &'static str {
    if preempted {
        "5b2d7c0e9a11f3e8"
    } else {
        "0e4a9d1c7b3f2a60"
    }
}

async fn gcp_preempted(
    State(fake): State<FakeGcp>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    let failing = fake
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        });
    if failing.is_ok() {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
    }
    if headers.get("Metadata-Flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        fake.without_flavor.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    let mut changes = fake.preempted.subscribe();
    if query.get("wait_for_change").map(String::as_str) == Some("true") {
        fake.long_polls.fetch_add(1, Ordering::SeqCst);
        let timeout: u64 = query
            .get("timeout_sec")
            .and_then(|value| value.parse().ok())
            .unwrap_or(3600);
        let current = gcp_etag(*changes.borrow_and_update());
        if query.get("last_etag").map(String::as_str) == Some(current) {
            let _ = tokio::time::timeout(Duration::from_secs(timeout), changes.changed()).await;
        }
    }
    let value = *fake.preempted.borrow();
    (
        [("ETag", gcp_etag(value)), ("Metadata-Flavor", "Google")],
        if value { "TRUE" } else { "FALSE" },
    )
        .into_response()
}

#[tokio::test]
async fn gcp_without_a_notice_nothing_stops() {
    let fake = FakeGcp::new(false);
    let address = serve(fake.router()).await;
    let stop = CancellationToken::new();
    let task = spawn(
        watch_with(NoticeSource::Gcp, format!("http://{address}")),
        stop.clone(),
    )
    .unwrap()
    .unwrap();
    assert!(!stopped_within(&stop, Duration::from_millis(1500)).await);
    assert!(!task.is_finished(), "the watcher keeps watching");
    assert!(fake.long_polls.load(Ordering::SeqCst) >= 1, "it long-polls");
    assert_eq!(fake.without_flavor.load(Ordering::SeqCst), 0);
    // A stop from elsewhere (SIGTERM) ends the watcher too.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn gcp_preempted_true_requests_the_stop_as_soon_as_it_changes() {
    let fake = FakeGcp::new(false);
    let address = serve(fake.router()).await;
    let stop = CancellationToken::new();
    let mut watch = watch_with(NoticeSource::Gcp, format!("http://{address}"));
    // Polling alone would take 30 s: only the long-poll can deliver the change in time.
    watch.poll_interval = Duration::from_secs(30);
    spawn(watch, stop.clone()).unwrap();
    // Let it settle into a long-poll first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!stop.is_cancelled());
    let requests = fake.requests.load(Ordering::SeqCst);
    assert!(
        requests <= 3,
        "it waits for changes instead of polling: {requests} requests"
    );
    fake.preempted.send_replace(true);
    assert!(
        stopped_within(&stop, Duration::from_secs(2)).await,
        "no stop after the notice"
    );
}

#[tokio::test]
async fn gcp_already_preempted_at_start_stops_at_once() {
    let fake = FakeGcp::new(true);
    let address = serve(fake.router()).await;
    let stop = CancellationToken::new();
    spawn(
        watch_with(NoticeSource::Gcp, format!("http://{address}")),
        stop.clone(),
    )
    .unwrap();
    assert!(stopped_within(&stop, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn metadata_server_down_is_retried_and_never_stops_the_agent() {
    // A port with nothing behind it: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stop = CancellationToken::new();
    let task = spawn(
        watch_with(NoticeSource::Gcp, format!("http://127.0.0.1:{port}")),
        stop.clone(),
    )
    .unwrap()
    .unwrap();
    assert!(!stopped_within(&stop, Duration::from_millis(800)).await);
    assert!(!task.is_finished(), "errors are not fatal");
    // The server comes up (already saying TRUE): the watcher was still trying.
    let fake = FakeGcp::new(true);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    serve_on(listener, fake.router());
    assert!(
        stopped_within(&stop, Duration::from_secs(3)).await,
        "the watcher gave up on the metadata server"
    );
}

#[tokio::test]
async fn gcp_server_errors_are_retried() {
    let fake = FakeGcp::new(true);
    fake.fail_first.store(3, Ordering::SeqCst);
    let address = serve(fake.router()).await;
    let stop = CancellationToken::new();
    spawn(
        watch_with(NoticeSource::Gcp, format!("http://{address}")),
        stop.clone(),
    )
    .unwrap();
    assert!(stopped_within(&stop, Duration::from_secs(3)).await);
    assert_eq!(fake.fail_first.load(Ordering::SeqCst), 0);
    assert_eq!(
        fake.requests.load(Ordering::SeqCst),
        4,
        "three 503s, then the answer"
    );
}

// ---- AWS ----

/// IMDSv2: `PUT /latest/api/token` with a TTL header issues a token; every other request
/// without a valid token gets 401. `spot/instance-action` is 404 until a notice is set.
#[derive(Clone, Default)]
struct FakeAws {
    tokens: Arc<Mutex<HashSet<String>>>,
    issued: Arc<AtomicU32>,
    notice: Arc<Mutex<Option<String>>>,
    token_endpoint_broken: Arc<Mutex<bool>>,
    gets: Arc<AtomicU32>,
    unauthorized: Arc<AtomicU32>,
}

impl FakeAws {
    fn router(&self) -> Router {
        Router::new()
            .route("/latest/api/token", put(aws_token))
            .route(
                "/latest/meta-data/spot/instance-action",
                get(aws_instance_action),
            )
            .with_state(self.clone())
    }

    fn set_notice(&self, body: &str) {
        *self.notice.lock().unwrap() = Some(body.to_owned());
    }
}

async fn aws_token(State(fake): State<FakeAws>, headers: HeaderMap) -> Response {
    if *fake.token_endpoint_broken.lock().unwrap() {
        return (StatusCode::FORBIDDEN, "Forbidden").into_response();
    }
    let ttl: Option<u64> = headers
        .get("X-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if !matches!(ttl, Some(1..=21600)) {
        return (StatusCode::BAD_REQUEST, "Bad Request").into_response();
    }
    let number = fake.issued.fetch_add(1, Ordering::SeqCst);
    let token = format!("AQAEAfake-token-{number}==");
    fake.tokens.lock().unwrap().insert(token.clone());
    token.into_response()
}

async fn aws_instance_action(State(fake): State<FakeAws>, headers: HeaderMap) -> Response {
    fake.gets.fetch_add(1, Ordering::SeqCst);
    let token = headers
        .get("X-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !fake.tokens.lock().unwrap().contains(token) {
        fake.unauthorized.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    match fake.notice.lock().unwrap().clone() {
        Some(body) => ([("Content-Type", "text/plain")], body).into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

const AWS_NOTICE: &str = r#"{"action": "terminate", "time": "2026-03-01T08:22:00Z"}"#;

#[tokio::test]
async fn aws_without_a_notice_polls_with_a_token_and_nothing_stops() {
    let fake = FakeAws::default();
    let address = serve(fake.router()).await;
    let stop = CancellationToken::new();
    let task = spawn(
        watch_with(NoticeSource::Aws, format!("http://{address}")),
        stop.clone(),
    )
    .unwrap()
    .unwrap();
    assert!(!stopped_within(&stop, Duration::from_millis(800)).await);
    assert!(!task.is_finished());
    assert!(fake.gets.load(Ordering::SeqCst) >= 3, "it polls");
    assert_eq!(
        fake.unauthorized.load(Ordering::SeqCst),
        0,
        "every poll had a token"
    );
    assert_eq!(
        fake.issued.load(Ordering::SeqCst),
        1,
        "one token serves many polls"
    );
}

#[tokio::test]
async fn aws_instance_action_requests_the_stop() {
    let fake = FakeAws::default();
    let address = serve(fake.router()).await;
    let stop = CancellationToken::new();
    spawn(
        watch_with(NoticeSource::Aws, format!("http://{address}")),
        stop.clone(),
    )
    .unwrap();
    assert!(!stopped_within(&stop, Duration::from_millis(300)).await);
    fake.set_notice(AWS_NOTICE);
    assert!(stopped_within(&stop, Duration::from_secs(2)).await);
    assert_eq!(fake.unauthorized.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn aws_never_asks_without_a_token() {
    let fake = FakeAws::default();
    *fake.token_endpoint_broken.lock().unwrap() = true;
    // A notice is there, but only for callers with a token.
    fake.set_notice(AWS_NOTICE);
    let address = serve(fake.router()).await;
    let stop = CancellationToken::new();
    let task = spawn(
        watch_with(NoticeSource::Aws, format!("http://{address}")),
        stop.clone(),
    )
    .unwrap()
    .unwrap();
    assert!(!stopped_within(&stop, Duration::from_millis(800)).await);
    assert!(!task.is_finished(), "a missing token is retried, not fatal");
    assert_eq!(
        fake.gets.load(Ordering::SeqCst),
        0,
        "no request went out without a token"
    );
    // Once tokens are issued again, the notice is read.
    *fake.token_endpoint_broken.lock().unwrap() = false;
    assert!(stopped_within(&stop, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn aws_expired_token_is_replaced() {
    let fake = FakeAws::default();
    let address = serve(fake.router()).await;
    let stop = CancellationToken::new();
    spawn(
        watch_with(NoticeSource::Aws, format!("http://{address}")),
        stop.clone(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.issued.load(Ordering::SeqCst), 1);
    // Every token is revoked, and the notice arrives.
    fake.tokens.lock().unwrap().clear();
    fake.set_notice(AWS_NOTICE);
    assert!(stopped_within(&stop, Duration::from_secs(2)).await);
    assert!(fake.unauthorized.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        fake.issued.load(Ordering::SeqCst),
        2,
        "a fresh token was fetched"
    );
}

#[test]
fn instance_action_is_described() {
    assert_eq!(
        describe_instance_action(AWS_NOTICE),
        "AWS spot instance-action: terminate at 2026-03-01T08:22:00Z"
    );
    assert!(describe_instance_action("garbage").contains("garbage"));
}

// ---- settings ----

#[test]
fn sources_parse_and_unknown_ones_are_explained() {
    assert_eq!("gcp".parse::<NoticeSource>().unwrap(), NoticeSource::Gcp);
    assert_eq!("AWS".parse::<NoticeSource>().unwrap(), NoticeSource::Aws);
    assert_eq!("none".parse::<NoticeSource>().unwrap(), NoticeSource::None);
    let error = "azure".parse::<NoticeSource>().unwrap_err().to_string();
    assert!(
        error.contains("azure") && error.contains("gcp, aws or none"),
        "{error}"
    );
}

#[tokio::test]
async fn bad_metadata_urls_are_refused() {
    for (url, expected) in [
        ("https://169.254.169.254", "http://"),
        ("169.254.169.254", "http://"),
        ("http://", "URL"),
        ("http://host/x?y=1", "query"),
    ] {
        let error = spawn(
            PreemptionWatch::new(NoticeSource::Aws, Some(url.to_owned())),
            CancellationToken::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(expected) && error.contains(url),
            "{url}: {error}"
        );
    }
    let error = spawn(
        PreemptionWatch::new(NoticeSource::None, Some("http://127.0.0.1:1".into())),
        CancellationToken::new(),
    )
    .unwrap_err();
    assert!(matches!(error, PreemptionError::UrlWithoutSource));
    assert!(spawn(
        PreemptionWatch::new(NoticeSource::None, None),
        CancellationToken::new()
    )
    .unwrap()
    .is_none());
}

#[test]
fn a_path_prefix_is_kept() {
    let server = Server::parse("http://[::1]:8080/prefix/").unwrap();
    assert_eq!(server.host, "::1");
    assert_eq!(server.port, 8080);
    assert_eq!(server.prefix, "/prefix");
    assert_eq!(server.authority, "[::1]:8080");
}
