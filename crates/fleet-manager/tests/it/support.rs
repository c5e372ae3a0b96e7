//! A manager on a free loopback port, clients for it, and synthetic partial renders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_client::{AgentClient, Client, ConnectionSettings};
use fleet_manager::{Limits, ManagerConfig, RunningManager};
use fleet_protocol::{
    BlobHash, ChunkPolicy, FrameRange, JobSpec, JoinRequest, OutputFormat, Resolution, Secret,
};

pub const PASSWORD: &str = "correct horse battery staple";

/// What a joined agent holds.
pub struct Identity {
    pub id: fleet_protocol::AgentId,
    pub certificate: String,
    pub key: String,
}

pub struct Farm {
    pub manager: RunningManager,
    pub dir: tempfile::TempDir,
}

impl Farm {
    pub async fn start() -> Self {
        Self::start_with(Limits::default()).await
    }

    pub async fn start_with(limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ManagerConfig::new(dir.path().join("state"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.password = Some(Secret::new(PASSWORD));
        config.limits = limits;
        let manager = fleet_manager::start(config).await.unwrap();
        Self { manager, dir }
    }

    pub fn settings(&self, password: &str) -> ConnectionSettings {
        ConnectionSettings {
            url: self.manager.url(),
            user: "admin".into(),
            password: Secret::new(password),
            ca_fingerprint: self.manager.fingerprint,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.settings(PASSWORD)).unwrap()
    }

    /// A fresh single-use join credential.
    pub fn token(&self) -> Secret {
        self.manager
            .create_join_token(std::time::Duration::from_secs(60))
            .unwrap()
            .token
    }

    /// Joins an agent; returns its client, with its certificate, and the key.
    pub async fn join(&self, name: &str) -> (AgentClient, Identity) {
        let (request, key) = fleet_tls::client_request(name).unwrap();
        let answer = self
            .anonymous_agent()
            .join(&JoinRequest {
                token: self.token(),
                name: name.into(),
                threads: 1,
                blender_version: "test".into(),
                certificate_request: request,
            })
            .await
            .unwrap();
        let identity = Identity {
            id: answer.agent_id,
            certificate: answer.certificate,
            key,
        };
        (self.agent_with(&identity), identity)
    }

    /// An agent client for a joined agent.
    pub async fn agent(&self, name: &str) -> AgentClient {
        self.join(name).await.0
    }

    /// An agent client with this identity.
    pub fn agent_with(&self, identity: &Identity) -> AgentClient {
        AgentClient::with_identity(
            &self.manager.url(),
            self.manager.fingerprint,
            &identity.certificate,
            &identity.key,
        )
        .unwrap()
    }

    /// An agent client without a certificate.
    pub fn anonymous_agent(&self) -> AgentClient {
        AgentClient::new(&self.manager.url(), self.manager.fingerprint).unwrap()
    }

    /// A raw reqwest client that trusts the manager, for checks below the typed client.
    pub fn raw(&self) -> reqwest::Client {
        let tls = fleet_tls::pinned_client_config(self.manager.fingerprint).unwrap();
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Uploads a small file standing in for a .blend and returns a spec that renders it.
    pub async fn uploaded_spec(&self, samples: u32) -> JobSpec {
        let blend = self.path("scene.blend");
        std::fs::write(&blend, b"BLENDER-v304 pretend").unwrap();
        let hash = fleet_client::hash_file(&blend).unwrap();
        self.client().upload_blob(&hash, &blend).await.unwrap();
        spec(hash, samples)
    }
}

pub fn spec(hash: BlobHash, samples: u32) -> JobSpec {
    JobSpec {
        name: Some("test job".into()),
        main_file: "scene.blend".into(),
        files: BTreeMap::from([("scene.blend".to_owned(), hash)]),
        frames: FrameRange::single(1),
        samples,
        resolution: Some(Resolution {
            width: 8,
            height: 6,
        }),
        output_format: OutputFormat::Png,
        seed: None,
        chunking: ChunkPolicy::default(),
        frame_mode: fleet_protocol::FrameMode::Auto,
        start: true,
    }
}

/// Writes a Blender-like multilayer EXR whose every pixel of channel `c` holds `value(c)`.
pub fn write_partial(path: &Path, width: usize, height: usize, value: impl Fn(usize) -> f32) {
    let names = [
        "ViewLayer.Combined.R",
        "ViewLayer.Combined.G",
        "ViewLayer.Combined.B",
        "ViewLayer.Combined.A",
        "ViewLayer.Depth.Z",
    ];
    write_exr(path, width, height, &names, value);
}

/// Writes a multilayer EXR with exactly these channels, all zero.
pub fn write_partial_channels(path: &Path, width: usize, height: usize, names: &[&str]) {
    write_exr(path, width, height, names, |_| 0.0);
}

fn write_exr(
    path: &Path,
    width: usize,
    height: usize,
    names: &[&str],
    value: impl Fn(usize) -> f32,
) {
    use exr::prelude::*;
    let channels: SmallVec<[AnyChannel<FlatSamples>; 4]> = names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            AnyChannel::new(*name, FlatSamples::F32(vec![value(index); width * height]))
        })
        .collect();
    let layer = Layer::new(
        (width, height),
        LayerAttributes::default(),
        Encoding::SMALL_LOSSLESS,
        AnyChannels::sort(channels),
    );
    Image::from_layer(layer).write().to_file(path).unwrap();
}

/// Polls until `check` holds or the time runs out.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
