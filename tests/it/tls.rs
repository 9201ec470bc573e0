//! `wss://` and `https://` with a certificate: wscat, boto3 and a Rust client over TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use switchboard::config::TlsFiles;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for 127.0.0.1, made with the openssl command.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=switchboard test",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    (cert, key)
}

async fn tls_server(dir: &Path) -> (TestServer, PathBuf) {
    let (cert, key) = certificate(dir);
    let mut cfg = config();
    cfg.tls = Some(TlsFiles {
        cert: cert.clone(),
        key,
    });
    (TestServer::start(cfg).await, cert)
}

#[tokio::test]
async fn wss_and_https_work_with_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = tls_server(dir.path()).await;
    let wss = format!("wss://{}/dev", server.addr);

    // A Rust client trusting only our certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&cert).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake with the server");
    let (mut ws, _) = tokio_tungstenite::client_async(wss.as_str(), tls)
        .await
        .unwrap();

    // wscat trusting the certificate with --ca (it exits when its stdin closes, so keep it open).
    let mut wscat = tokio::process::Command::new("wscat")
        .args(["--ca"])
        .arg(&cert)
        .args([
            "-c",
            &wss,
            "-x",
            r#"{"action":"sendmessage","data":"over tls"}"#,
            "-w",
            "1",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("wscat runs");
    let _stdin = wscat.stdin.take();
    let mut printed = String::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_string(&mut wscat.stdout.take().unwrap(), &mut printed),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(wscat.wait().await.unwrap().success());
    assert!(printed.contains("over tls"), "{printed}");
    let frame = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(frame, Message::text("over tls"));

    // boto3 over https, verifying the certificate.
    ws.send(Message::text(r#"{"action":"whoami"}"#))
        .await
        .unwrap();
    let reply = match tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        Message::Text(t) => t.to_string(),
        other => panic!("{other:?}"),
    };
    let info: serde_json::Value =
        serde_json::from_str(reply.split("Your info: ").nth(1).unwrap()).unwrap();
    let id = info["connectionID"].as_str().unwrap();
    let script = format!(
        "import boto3; boto3.client('apigatewaymanagementapi', endpoint_url='https://{}/dev', region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x', verify='{}').post_to_connection(ConnectionId='{id}', Data=b'via https')",
        server.addr,
        cert.display()
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    assert_success(&out);
    let frame = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(frame, Message::text("via https"));
}

#[tokio::test]
async fn plain_text_on_a_tls_port_is_dropped_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _cert) = tls_server(dir.path()).await;
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(upgrade_request(server.addr, "/dev", &[]).as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut buf),
    )
    .await;
    assert!(!String::from_utf8_lossy(&buf).contains("101"));
    assert_eq!(server.gateway.registry.local_count(), 0);
}

#[test]
fn unusable_files_are_start_up_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = TlsFiles {
        cert: dir.path().join("nope.pem"),
        key: dir.path().join("nope.key"),
    };
    assert!(
        missing
            .acceptor()
            .err()
            .unwrap()
            .to_string()
            .contains("nope.pem")
    );
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let empty = TlsFiles {
        cert: dir.path().join("empty.pem"),
        key: dir.path().join("empty.pem"),
    };
    assert!(
        empty
            .acceptor()
            .err()
            .unwrap()
            .to_string()
            .contains("no certificate")
    );
}
