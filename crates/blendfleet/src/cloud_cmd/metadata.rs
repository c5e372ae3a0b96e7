//! `blendfleet manager --cloud-config-from-metadata gcp|aws`: a cloud manager reads the cloud
//! config `blendfleet cloud up` gave its instance (setting `BLENDFLEET_CLOUD_CONFIG`, base64
//! TOML) and its own private address (where agents reach it) from the metadata server.

use anyhow::{bail, Context};
use base64::Engine;
use fleet_cloud::CloudConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The metadata server both clouds answer on; `BLENDFLEET_METADATA_URL` replaces it (tests).
const METADATA: &str = "http://169.254.169.254";
/// GCP's name for it.
const GCP_METADATA: &str = "http://metadata.google.internal";

/// What the manager learns about itself.
#[derive(Debug)]
pub struct FromMetadata {
    pub config: CloudConfig,
    /// `https://<private address>:<port>`.
    pub agent_url: String,
}

/// Reads the settings for `provider` (`gcp` or `aws`).
pub async fn read(provider: &str) -> anyhow::Result<FromMetadata> {
    let base = std::env::var("BLENDFLEET_METADATA_URL").ok();
    let (encoded, address) = match provider {
        "gcp" => {
            let base = base.as_deref().unwrap_or(GCP_METADATA);
            let header = [("Metadata-Flavor", "Google")];
            let path = "/computeMetadata/v1/instance";
            let config = get(
                base,
                "GET",
                &format!("{path}/attributes/BLENDFLEET_CLOUD_CONFIG"),
                &header,
            )
            .await?;
            let address = get(
                base,
                "GET",
                &format!("{path}/network-interfaces/0/ip"),
                &header,
            )
            .await?;
            (String::from_utf8(config)?, String::from_utf8(address)?)
        }
        "aws" => {
            let base = base.as_deref().unwrap_or(METADATA);
            let token = get(
                base,
                "PUT",
                "/latest/api/token",
                &[("X-aws-ec2-metadata-token-ttl-seconds", "300")],
            )
            .await?;
            let token = String::from_utf8(token)?;
            let header = [("X-aws-ec2-metadata-token", token.trim())];
            let user_data = get(base, "GET", "/latest/user-data", &header).await?;
            let address = get(base, "GET", "/latest/meta-data/local-ipv4", &header).await?;
            (
                export_value(&user_data_text(&user_data)?, "BLENDFLEET_CLOUD_CONFIG")?,
                String::from_utf8(address)?,
            )
        }
        other => bail!("--cloud-config-from-metadata takes `gcp` or `aws`, not `{other}`"),
    };
    let text = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .context("BLENDFLEET_CLOUD_CONFIG is not base64")?;
    let config = CloudConfig::parse(&String::from_utf8(text)?)?;
    let address = address.trim();
    if address.parse::<std::net::IpAddr>().is_err() {
        bail!("the metadata server gave `{address}` as this instance's private address");
    }
    let agent_url = if config.manager.url.is_empty() {
        format!("https://{address}:{}", config.manager.port)
    } else {
        config.manager.url.clone()
    };
    Ok(FromMetadata { config, agent_url })
}

#[cfg(feature = "aws")]
fn user_data_text(bytes: &[u8]) -> anyhow::Result<String> {
    fleet_cloud::aws::decode_user_data(bytes)
        .context("the user data is neither text nor gzip'd text")
}

#[cfg(not(feature = "aws"))]
fn user_data_text(_bytes: &[u8]) -> anyhow::Result<String> {
    bail!("this blendfleet was built without AWS support (`--features aws`)")
}

/// The value of an `export KEY='value'` line.
fn export_value(script: &str, key: &str) -> anyhow::Result<String> {
    let prefix = format!("export {key}=");
    let line = script
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .with_context(|| format!("the user data sets no {key}"))?;
    // Values are single-quoted, with `'` written as `'\''`.
    Ok(line.trim_matches('\'').replace(r"'\''", "'"))
}

/// A plain HTTP/1.1 request to the metadata server; the body of a 200 answer.
async fn get(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Vec<u8>> {
    let authority = base
        .strip_prefix("http://")
        .context("the metadata URL must be http://HOST[:PORT]")?
        .trim_end_matches('/');
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(&address),
    )
    .await
    .with_context(|| format!("connecting to the metadata server {address}"))??;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .context("the metadata server did not answer")??;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed answer from the metadata server")?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!("metadata server: {method} {path} answered {status}");
    }
    let body = answer[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(&body));
    }
    Ok(body)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..end]).trim(), 16).unwrap_or(0);
        if size == 0 || body.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[(end + 4 + size).min(body.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;
    use axum::routing::{get as route_get, put};
    use axum::Router;

    use super::*;

    const CONFIG: &str =
        "provider = \"gcp\"\nfarm = \"meta\"\n[gcp]\nproject = \"p\"\nzones = [\"z\"]\n";

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn reads_gcp_metadata_and_aws_user_data() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(CONFIG);
        let gcp_value = encoded.clone();
        let app = Router::new()
            .route(
                "/computeMetadata/v1/instance/attributes/BLENDFLEET_CLOUD_CONFIG",
                route_get(move |headers: HeaderMap| async move {
                    assert_eq!(headers["metadata-flavor"], "Google");
                    gcp_value
                }),
            )
            .route("/computeMetadata/v1/instance/network-interfaces/0/ip", route_get(|| async { "10.1.2.3" }))
            .route("/latest/api/token", put(|| async { "tok" }))
            .route(
                "/latest/user-data",
                route_get(move |headers: HeaderMap| async move {
                    assert_eq!(headers["x-aws-ec2-metadata-token"], "tok");
                    format!("#!/bin/bash\nexport BLENDFLEET_CLOUD_CONFIG='{encoded}'\nexport X='a'\\''b'\necho\n")
                }),
            )
            .route("/latest/meta-data/local-ipv4", route_get(|| async { "10.9.8.7" }));
        let url = serve(app).await;
        std::env::set_var("BLENDFLEET_METADATA_URL", &url);
        let gcp = read("gcp").await.unwrap();
        assert_eq!(gcp.config.farm, "meta");
        assert_eq!(gcp.agent_url, "https://10.1.2.3:8443");
        #[cfg(feature = "aws")]
        {
            let aws = read("aws").await.unwrap();
            assert_eq!(aws.agent_url, "https://10.9.8.7:8443");
        }
        assert!(read("azure")
            .await
            .unwrap_err()
            .to_string()
            .contains("`gcp` or `aws`"));
        assert_eq!(export_value("export X='a'\\''b'\n", "X").unwrap(), "a'b");
        assert!(export_value("echo\n", "X").is_err());
    }
}
