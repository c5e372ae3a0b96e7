//! Test support: a `moto_server` (the EC2 API of PyPI `moto[server]`) on a free loopback
//! port, killed when dropped. Used by this crate's and the manager's AWS tests.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// A running moto_server.
pub struct MotoServer {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// Where moto_server is: `BLENDFLEET_MOTO_SERVER`, else the virtual environment
/// scripts/test-cloud.sh installs under `${BLENDFLEET_CACHE:-$HOME/.cache/blendfleet}/moto`.
pub fn moto_server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("BLENDFLEET_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("BLENDFLEET_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/blendfleet"),
        PathBuf::from,
    );
    cache.join("moto/bin/moto_server")
}

impl MotoServer {
    /// Starts moto_server and waits until it answers. Panics with what to do when it is
    /// not installed: these tests must not pass without it.
    pub async fn start() -> Self {
        let path = moto_server_path();
        assert!(
            path.exists(),
            "moto_server not found at `{}`: run scripts/test-cloud.sh, which installs it",
            path.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        let child = tokio::process::Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start `{}`: {error}", path.display()));
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                // Credentials for the SDK's default chain; moto accepts any.
                for (key, value) in [
                    ("AWS_ACCESS_KEY_ID", "testing"),
                    ("AWS_SECRET_ACCESS_KEY", "testing"),
                    ("AWS_EC2_METADATA_DISABLED", "true"),
                ] {
                    std::env::set_var(key, value);
                }
                return Self { child, url };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not listen on port {port} within 30 s");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[cfg(feature = "aws")]
impl MotoServer {
    /// Settings that point the AWS provider at this server: region us-east-1, these zones
    /// in order, this image, the default VPC, 30 GB disks.
    pub fn aws_settings(&self, zones: &[&str], ami: &str) -> crate::config::AwsSettings {
        crate::config::AwsSettings {
            region: "us-east-1".into(),
            zones: zones.iter().map(|zone| (*zone).to_owned()).collect(),
            ami: ami.into(),
            subnets: std::collections::BTreeMap::new(),
            vpc_id: String::new(),
            disk_gb: 30,
            manager_instance_profile: String::new(),
            endpoint_url: Some(self.url.clone()),
        }
    }

    /// The id of an image in moto's catalogue of public images.
    pub async fn image_id(&self) -> String {
        let probe =
            crate::aws::AwsProvider::new(self.aws_settings(&[], "ami-00000000"), 8443, vec![])
                .await;
        let images = probe
            .client()
            .describe_images()
            .send()
            .await
            .unwrap_or_else(|error| panic!("moto_server lists no images: {error}"));
        images
            .images()
            .first()
            .and_then(|image| image.image_id())
            .expect("moto's catalogue has an image")
            .to_owned()
    }
}
