//! GCP Compute Engine through the real google-cloud-compute-v1 client, against a local
//! HTTPS server (its own CA, trusted by the client) that speaks the REST calls the provider
//! uses and checks what it is sent.
#![cfg(feature = "gcp")]
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleet_cloud::config::GcpSettings;
use fleet_cloud::gcp::{GcpProvider, FINGERPRINT_ATTRIBUTE};
use fleet_cloud::{launch, sweep, InstanceRequest, Provider, Role};
use serde_json::{json, Value};

const PROJECT: &str = "test-project";

#[derive(Default)]
struct Fake {
    next: u64,
    /// (zone, name) → instance resource.
    instances: BTreeMap<(String, String), Value>,
    operations: HashMap<String, Value>,
    /// Zones whose quota is used up: insert answers 403 QUOTA_EXCEEDED.
    quota: HashSet<String>,
    /// Zones without spot capacity: the insert operation ends in ZONE_RESOURCE_POOL_EXHAUSTED.
    no_spot: HashSet<String>,
    /// Every insert body, with its zone.
    inserts: Vec<(String, Value)>,
    firewalls: Vec<Value>,
    guest_attributes: HashMap<String, String>,
    serial: HashMap<String, String>,
}

type Shared = Arc<Mutex<Fake>>;

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(
            json!({"error": {"code": status.as_u16(), "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "invalid"}]}}),
        ),
    )
        .into_response()
}

fn operation(fake: &mut Fake, zone: &str, kind: &str, error: Option<(&str, &str)>) -> Value {
    fake.next += 1;
    let name = format!("operation-{}", fake.next);
    let mut done = json!({
        "kind": "compute#operation",
        "id": fake.next.to_string(),
        "name": name,
        "operationType": kind,
        "zone": format!("https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{zone}"),
        "status": "DONE",
        "progress": 100,
    });
    if let Some((code, message)) = error {
        done["error"] = json!({"errors": [{"code": code, "message": message}]});
        done["httpErrorStatusCode"] = json!(503);
    }
    fake.operations.insert(name.clone(), done.clone());
    // The first answer is still running, as Compute Engine's is.
    let mut running = done;
    running["status"] = json!("RUNNING");
    running["progress"] = json!(0);
    running.as_object_mut().unwrap().remove("error");
    running
}

/// Checks an insert body the way Compute Engine would, plus what BlendFleet must send.
fn check_insert(zone: &str, body: &Value) -> Result<bool, String> {
    let text = |pointer: &str| {
        body.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let name = text("/name");
    if name.is_empty() || name.len() > 63 {
        return Err(format!("invalid name `{name}`"));
    }
    if name.starts_with("reject-") {
        return Err(format!("`{name}` refused by the test server"));
    }
    if !text("/machineType").starts_with(&format!("zones/{zone}/machineTypes/")) {
        return Err(format!(
            "machineType `{}` is not in zone {zone}",
            text("/machineType")
        ));
    }
    let labels = body.get("labels").cloned().unwrap_or_default();
    if labels.get("blendfleet-farm").is_none() || labels.get("blendfleet-role").is_none() {
        return Err(format!("labels lack blendfleet-farm/role: {labels}"));
    }
    let items = body
        .pointer("/metadata/items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !items.iter().any(|item| item["key"] == "startup-script") {
        return Err("metadata has no startup-script".into());
    }
    let spot = match text("/scheduling/provisioningModel").as_str() {
        "SPOT" => {
            if text("/scheduling/instanceTerminationAction") != "DELETE" {
                return Err("spot instances here must be deleted on termination".into());
            }
            true
        }
        "STANDARD" => false,
        other => return Err(format!("unknown provisioningModel `{other}`")),
    };
    if body
        .pointer("/disks/0/initializeParams/sourceImage")
        .is_none()
    {
        return Err("no boot disk image".into());
    }
    Ok(spot)
}

async fn insert(
    State(fake): State<Shared>,
    Path((project, zone)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    assert_eq!(project, PROJECT);
    let mut fake = fake.lock().unwrap();
    fake.inserts.push((zone.clone(), body.clone()));
    let spot = match check_insert(&zone, &body) {
        Ok(spot) => spot,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    if fake.quota.contains(&zone) {
        return error(
            StatusCode::FORBIDDEN,
            &format!("QUOTA_EXCEEDED: Quota 'CPUS' exceeded. Limit: 8.0 in region of {zone}."),
        );
    }
    if spot && fake.no_spot.contains(&zone) {
        let answer = operation(
            &mut fake,
            &zone,
            "insert",
            Some((
                "ZONE_RESOURCE_POOL_EXHAUSTED",
                "The zone does not have enough resources available to fulfill the request.",
            )),
        );
        return Json(answer).into_response();
    }
    let name = body["name"].as_str().unwrap().to_owned();
    if fake.instances.contains_key(&(zone.clone(), name.clone())) {
        return error(StatusCode::CONFLICT, "already exists");
    }
    let id = 1000 + fake.next;
    let mut instance = body.clone();
    instance["id"] = json!(id.to_string());
    instance["status"] = json!("RUNNING");
    instance["creationTimestamp"] = json!("2025-06-01T10:00:00.000-07:00");
    instance["zone"] = json!(format!(
        "https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{zone}"
    ));
    instance["machineType"] = json!(format!(
        "https://www.googleapis.com/compute/v1/projects/{PROJECT}/{}",
        body["machineType"].as_str().unwrap()
    ));
    instance["networkInterfaces"][0]["networkIP"] = json!(format!("10.128.0.{}", fake.next));
    instance["networkInterfaces"][0]["accessConfigs"][0]["natIP"] =
        json!(format!("203.0.113.{}", fake.next));
    fake.instances.insert((zone.clone(), name), instance);
    Json(operation(&mut fake, &zone, "insert", None)).into_response()
}

async fn list(
    State(fake): State<Shared>,
    Path((_project, zone)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let filter = query.get("filter").cloned().unwrap_or_default();
    // `labels.KEY = "VALUE"`: the only filter the provider sends.
    let (key, value) = filter
        .strip_prefix("labels.")
        .and_then(|rest| rest.split_once(" = "))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('"').to_owned()))
        .unwrap_or_else(|| panic!("unexpected filter `{filter}`"));
    let fake = fake.lock().unwrap();
    let items: Vec<&Value> = fake
        .instances
        .iter()
        .filter(|((z, _), instance)| *z == zone && instance["labels"][&key] == value.as_str())
        .map(|(_, instance)| instance)
        .collect();
    Json(json!({"kind": "compute#instanceList", "items": items})).into_response()
}

async fn get_instance(
    State(fake): State<Shared>,
    Path((_project, zone, name)): Path<(String, String, String)>,
) -> Response {
    let fake = fake.lock().unwrap();
    match fake.instances.get(&(zone, name)) {
        Some(instance) => Json(instance.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn delete_instance(
    State(fake): State<Shared>,
    Path((_project, zone, name)): Path<(String, String, String)>,
) -> Response {
    let mut fake = fake.lock().unwrap();
    if fake.instances.remove(&(zone.clone(), name)).is_none() {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    Json(operation(&mut fake, &zone, "delete", None)).into_response()
}

async fn wait_operation(
    State(fake): State<Shared>,
    Path((_project, _zone, name)): Path<(String, String, String)>,
) -> Response {
    let fake = fake.lock().unwrap();
    match fake.operations.get(&name) {
        Some(operation) => Json(operation.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such operation"),
    }
}

async fn guest_attributes(
    State(fake): State<Shared>,
    Path((_project, _zone, name)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    assert_eq!(
        query.get("variableKey").map(String::as_str),
        Some(FINGERPRINT_ATTRIBUTE)
    );
    let fake = fake.lock().unwrap();
    match fake.guest_attributes.get(&name) {
        Some(value) => Json(json!({"variableKey": FINGERPRINT_ATTRIBUTE, "variableValue": value}))
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "The resource 'guestAttributes' was not found",
        ),
    }
}

async fn serial_port(
    State(fake): State<Shared>,
    Path((_project, _zone, name)): Path<(String, String, String)>,
) -> Response {
    let fake = fake.lock().unwrap();
    let contents = fake.serial.get(&name).cloned().unwrap_or_default();
    Json(json!({"contents": contents, "start": "0", "next": contents.len().to_string()}))
        .into_response()
}

async fn insert_firewall(State(fake): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut fake = fake.lock().unwrap();
    if fake.firewalls.iter().any(|f| f["name"] == body["name"]) {
        return error(StatusCode::CONFLICT, "The resource already exists");
    }
    fake.firewalls.push(body);
    fake.next += 1;
    Json(json!({"name": format!("operation-{}", fake.next), "status": "RUNNING"})).into_response()
}

/// The server's TLS configuration: a certificate for 127.0.0.1 from a test CA, which the
/// client is made to trust (and nothing else) through `SSL_CERT_FILE`, read by the platform
/// verifier of the client's HTTP stack.
fn tls() -> tokio_rustls::TlsAcceptor {
    static CONFIG: OnceLock<Arc<tokio_rustls::rustls::ServerConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let ca = fleet_tls::CertificateAuthority::generate("GCP test CA").unwrap();
        let cert = ca.issue_server(&["127.0.0.1".to_owned()]).unwrap();
        let path =
            std::env::temp_dir().join(format!("blendfleet-gcp-test-ca-{}.pem", std::process::id()));
        std::fs::write(&path, ca.cert_pem()).unwrap();
        std::env::set_var("SSL_CERT_FILE", &path);
        fleet_tls::server_config(&ca, &cert).unwrap()
    });
    tokio_rustls::TlsAcceptor::from(Arc::clone(config))
}

async fn serve() -> (Shared, String) {
    let fake: Shared = Arc::default();
    let base = "/compute/v1/projects/{project}";
    let app = Router::new()
        .route(
            &format!("{base}/zones/{{zone}}/instances"),
            post(insert).get(list),
        )
        .route(
            &format!("{base}/zones/{{zone}}/instances/{{name}}"),
            get(get_instance).delete(delete_instance),
        )
        .route(
            &format!("{base}/zones/{{zone}}/instances/{{name}}/getGuestAttributes"),
            get(guest_attributes),
        )
        .route(
            &format!("{base}/zones/{{zone}}/instances/{{name}}/serialPort"),
            get(serial_port),
        )
        .route(
            &format!("{base}/zones/{{zone}}/operations/{{name}}/wait"),
            post(wait_operation),
        )
        .route(
            &format!("{base}/zones/{{zone}}/operations/{{name}}"),
            get(wait_operation),
        )
        .route(&format!("{base}/global/firewalls"), post(insert_firewall))
        .with_state(Arc::clone(&fake));
    let acceptor = tls();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (fake, url)
}

async fn provider(url: &str, zones: &[&str]) -> GcpProvider {
    GcpProvider::new(
        GcpSettings {
            project: PROJECT.into(),
            zones: zones.iter().map(|z| (*z).to_owned()).collect(),
            image: "projects/debian-cloud/global/images/family/debian-12".into(),
            disk_gb: 40,
            network: "global/networks/default".into(),
            manager_service_account: String::new(),
            endpoint: Some(url.to_owned()),
            anonymous: true,
        },
        8443,
        vec!["203.0.113.7/32".into()],
    )
    .await
    .unwrap()
}

fn request(name: &str, spot: bool) -> InstanceRequest {
    InstanceRequest {
        farm: "gfarm".into(),
        name: name.into(),
        role: Role::Agent,
        machine_type: "n2-highcpu-16".into(),
        spot,
        startup_script: "#!/bin/bash\necho agent\n".into(),
        settings: BTreeMap::from([
            ("BLENDFLEET_AGENT_NAME".into(), name.into()),
            ("BLENDFLEET_JOIN_TOKEN".into(), format!("token-{name}")),
            ("BLENDFLEET_PROVIDER".into(), "gcp".into()),
        ]),
    }
}

#[tokio::test]
async fn spot_agents_with_labels_and_metadata_then_a_sweep() {
    let (fake, url) = serve().await;
    let gcp = provider(&url, &["us-central1-a"]).await;
    gcp.prepare("gfarm").await.unwrap();
    gcp.prepare("gfarm").await.unwrap(); // an existing rule is fine
    {
        let fake = fake.lock().unwrap();
        assert_eq!(fake.firewalls.len(), 1);
        let rule = &fake.firewalls[0];
        assert_eq!(rule["sourceTags"], json!(["blendfleet-gfarm-agent"]));
        assert_eq!(rule["targetTags"], json!(["blendfleet-gfarm-manager"]));
        assert_eq!(rule["sourceRanges"], json!(["203.0.113.7/32"]));
        assert_eq!(rule["allowed"][0]["ports"], json!(["8443"]));
    }

    for index in 0..3 {
        let instance = launch(&gcp, &request(&format!("gfarm-agent-{index}"), true), false)
            .await
            .instance
            .unwrap();
        assert!(instance.spot);
        assert_eq!(instance.zone, "us-central1-a");
        assert_eq!(instance.machine_type, "n2-highcpu-16");
        assert_eq!(instance.created_at_ms, Some(1_748_797_200_000));
        assert!(instance.public_address.is_some() && instance.private_address.is_some());
    }
    {
        let fake = fake.lock().unwrap();
        assert_eq!(fake.inserts.len(), 3);
        for (zone, body) in &fake.inserts {
            assert_eq!(zone, "us-central1-a");
            assert_eq!(body["scheduling"]["provisioningModel"], "SPOT");
            assert_eq!(body["scheduling"]["instanceTerminationAction"], "DELETE");
            assert_eq!(body["labels"]["blendfleet-farm"], "gfarm");
            assert_eq!(body["labels"]["blendfleet-role"], "agent");
            let items: BTreeMap<String, String> = body["metadata"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| {
                    (
                        item["key"].as_str().unwrap().to_owned(),
                        item["value"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(items["startup-script"], "#!/bin/bash\necho agent\n");
            assert_eq!(
                items["BLENDFLEET_AGENT_NAME"],
                body["name"].as_str().unwrap()
            );
            assert_eq!(items["BLENDFLEET_PROVIDER"], "gcp");
        }
    }
    // Another farm is left alone by this farm's list and sweep.
    let mut other = request("other-agent", true);
    other.farm = "other".into();
    launch(&gcp, &other, false).await.instance.unwrap();

    let listed = gcp.list("gfarm").await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|i| i.role == Some(Role::Agent) && i.spot));
    let swept = sweep(&gcp, "gfarm", Duration::from_secs(30)).await.unwrap();
    assert_eq!(swept.len(), 3);
    assert!(gcp.list("gfarm").await.unwrap().is_empty());
    assert_eq!(gcp.list("other").await.unwrap().len(), 1);
    // Deleting what is gone already is not an error.
    gcp.terminate(&swept).await.unwrap();
}

#[tokio::test]
async fn quota_and_exhausted_zones_fall_back_to_the_next_zone_then_on_demand() {
    let (fake, url) = serve().await;
    {
        let mut fake = fake.lock().unwrap();
        fake.quota.insert("zone-a".into());
        fake.no_spot.insert("zone-b".into());
    }
    let gcp = provider(&url, &["zone-a", "zone-b", "zone-c"]).await;
    let launched = launch(&gcp, &request("fallback-1", true), true).await;
    let instance = launched.instance.unwrap();
    assert_eq!((instance.zone.as_str(), instance.spot), ("zone-c", true));
    let codes: Vec<(String, &str)> = launched
        .events
        .iter()
        .map(|e| {
            (
                e.zone.clone(),
                if e.refused.contains("QUOTA_EXCEEDED") {
                    "quota"
                } else if e.refused.contains("ZONE_RESOURCE_POOL_EXHAUSTED") {
                    "exhausted"
                } else {
                    "other"
                },
            )
        })
        .collect();
    assert_eq!(
        codes,
        vec![("zone-a".into(), "quota"), ("zone-b".into(), "exhausted")]
    );

    // No spot anywhere: on-demand in the first zone that has room.
    fake.lock().unwrap().no_spot.insert("zone-c".into());
    let launched = launch(&gcp, &request("fallback-2", true), true).await;
    let instance = launched.instance.unwrap();
    assert_eq!((instance.zone.as_str(), instance.spot), ("zone-b", false));
    assert_eq!(launched.events.len(), 4, "{:?}", launched.events);
    let last = fake.lock().unwrap().inserts.last().unwrap().1.clone();
    assert_eq!(last["scheduling"]["provisioningModel"], "STANDARD");

    // Without the fallback, the refusal is the answer.
    let launched = launch(&gcp, &request("fallback-3", true), false).await;
    assert!(launched.instance.unwrap_err().is_capacity());

    // Other errors are not retried elsewhere.
    let inserts_before = fake.lock().unwrap().inserts.len();
    let launched = launch(&gcp, &request("reject-me", true), true).await;
    let error = launched.instance.unwrap_err();
    assert!(!error.is_capacity(), "{error}");
    assert!(
        error.to_string().contains("refused by the test server"),
        "{error}"
    );
    assert!(launched.events.is_empty());
    assert_eq!(fake.lock().unwrap().inserts.len(), inserts_before + 1);
}

#[tokio::test]
async fn the_manager_fingerprint_comes_from_guest_attributes_or_the_serial_console() {
    let (fake, url) = serve().await;
    let gcp = provider(&url, &["zone-a"]).await;
    let mut manager = request("gfarm-manager", false);
    manager.role = Role::Manager;
    let instance = gcp.create("zone-a", &manager).await.unwrap();
    assert_eq!(gcp.ca_fingerprint(&instance).await.unwrap(), None);

    let hex = "c0".repeat(32);
    fake.lock().unwrap().serial.insert(
        instance.name.clone(),
        format!("boot…\nblendfleet[7]: BLENDFLEET-CA-FINGERPRINT sha256:{hex}\n"),
    );
    assert_eq!(
        gcp.ca_fingerprint(&instance).await.unwrap(),
        Some(format!("sha256:{hex}"))
    );

    let newer = "d1".repeat(32);
    fake.lock()
        .unwrap()
        .guest_attributes
        .insert(instance.name.clone(), format!("sha256:{newer}"));
    assert_eq!(
        gcp.ca_fingerprint(&instance).await.unwrap(),
        Some(format!("sha256:{newer}"))
    );
    let body = fake.lock().unwrap().inserts[0].1.clone();
    assert_eq!(body["serviceAccounts"][0]["email"], "default");
    assert_eq!(body["labels"]["blendfleet-role"], "manager");
    assert!(body["metadata"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|item| item["key"] == "enable-guest-attributes" && item["value"] == "TRUE"));
}
