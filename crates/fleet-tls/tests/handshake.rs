//! Real TLS handshakes over loopback between a server with one CA and pinned clients.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use fleet_tls::{pinned_client_config, server_config, CertificateAuthority, Fingerprint};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve_once(ca: &CertificateAuthority, names: &[&str]) -> std::net::SocketAddr {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let server = ca.issue_server(&names).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(ca, &server).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    address
}

async fn connect(
    address: std::net::SocketAddr,
    pin: Fingerprint,
    name: &str,
) -> Result<String, std::io::Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pinned_client_config(pin).unwrap()));
    let stream = TcpStream::connect(address).await?;
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = connector.connect(server_name, stream).await?;
    let mut text = String::new();
    tls.read_to_string(&mut text).await?;
    Ok(text)
}

#[tokio::test]
async fn pinned_client_connects_by_ip_and_name() {
    let ca = CertificateAuthority::generate("farm").unwrap();
    let address = serve_once(&ca, &["127.0.0.1", "localhost"]).await;
    assert_eq!(
        connect(address, ca.fingerprint(), "127.0.0.1")
            .await
            .unwrap(),
        "hello"
    );
    assert_eq!(
        connect(address, ca.fingerprint(), "localhost")
            .await
            .unwrap(),
        "hello"
    );
}

#[tokio::test]
async fn a_different_pin_fails_the_handshake_with_a_clear_error() {
    let ca = CertificateAuthority::generate("farm").unwrap();
    let other = CertificateAuthority::generate("other farm").unwrap();
    let address = serve_once(&ca, &["127.0.0.1"]).await;
    let error = connect(address, other.fingerprint(), "127.0.0.1")
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("not the pinned one"), "{text}");
    assert!(text.contains(&other.fingerprint().to_string()), "{text}");
    assert!(text.contains(&ca.fingerprint().to_string()), "{text}");
}

#[tokio::test]
async fn host_name_is_still_checked() {
    let ca = CertificateAuthority::generate("farm").unwrap();
    let address = serve_once(&ca, &["127.0.0.1"]).await;
    let error = connect(address, ca.fingerprint(), "manager.example")
        .await
        .unwrap_err();
    assert!(error.to_string().to_lowercase().contains("name"), "{error}");
}

#[tokio::test]
async fn a_server_signed_by_another_ca_carrying_the_pinned_ca_in_its_chain_is_refused() {
    // An attacker can copy the real CA certificate into its chain, but cannot sign with it.
    let real = CertificateAuthority::generate("farm").unwrap();
    let attacker = CertificateAuthority::generate("farm").unwrap();
    let forged = attacker.issue_server(&["127.0.0.1".to_owned()]).unwrap();
    let chain = vec![forged.cert_der.clone(), real.cert_der().clone()];
    let config = rustls::ServerConfig::builder_with_provider(fleet_tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, forged.key_der())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(stream).await;
    });
    assert!(connect(address, real.fingerprint(), "127.0.0.1")
        .await
        .is_err());
}

/// A server that answers with the fingerprint of the client's certificate, or `none`.
async fn serve_peer_fingerprints(ca: &CertificateAuthority) -> std::net::SocketAddr {
    let server = ca.issue_server(&["127.0.0.1".to_owned()]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(ca, &server).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map_or_else(
                            || "none".to_owned(),
                            |cert| Fingerprint::of_der(cert).to_string(),
                        );
                    let _ = tls.write_all(peer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    address
}

async fn connect_as(
    address: std::net::SocketAddr,
    pin: Fingerprint,
    cert_pem: &str,
    key_pem: &str,
) -> Result<String, std::io::Error> {
    let config = fleet_tls::pinned_client_config_with_identity(pin, cert_pem, key_pem).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(address).await?;
    let mut tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), stream)
        .await?;
    let mut text = String::new();
    tls.read_to_string(&mut text).await?;
    Ok(text)
}

#[tokio::test]
async fn client_certificates_are_optional_but_must_come_from_the_farm_ca() {
    let ca = CertificateAuthority::generate("farm").unwrap();
    let address = serve_peer_fingerprints(&ca).await;

    // Users connect without a certificate.
    assert_eq!(
        connect(address, ca.fingerprint(), "127.0.0.1")
            .await
            .unwrap(),
        "none"
    );

    // An agent with a certificate the farm signed is seen by it.
    let (request, key) = fleet_tls::client_request("agent").unwrap();
    let cert = ca
        .sign_client_request(&request, "blendfleet-agent-1")
        .unwrap();
    let seen = connect_as(address, ca.fingerprint(), &cert, &key)
        .await
        .unwrap();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(seen, Fingerprint::of_der(&der).to_string());

    // A certificate from another CA fails the handshake.
    let foreign = CertificateAuthority::generate("farm").unwrap();
    let (request, key) = fleet_tls::client_request("agent").unwrap();
    let cert = foreign
        .sign_client_request(&request, "blendfleet-agent-1")
        .unwrap();
    assert!(connect_as(address, ca.fingerprint(), &cert, &key)
        .await
        .is_err());
}
