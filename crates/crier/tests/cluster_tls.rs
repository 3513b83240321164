//! The Redis broker over TLS: `rediss://` with a password, against a redis-server that
//! speaks only TLS on the port Crier is given, with a certificate from the test's own CA
//! (trusted through `SSL_CERT_FILE`, as an operator would add a private CA).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crier_protocol::signature;
use crier_testkit::{free_port, RedisServer};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod support;

use support::{crier, Crier};

const WAIT: Duration = Duration::from_secs(20);

fn pem_files(dir: &std::path::Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Crier test Redis CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("redis.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("redis.key"), key.serialize_pem()).unwrap();
}

fn signed(addr: &str, method: &str, path: &str, body: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let qs = signature::sign_request(
        "app-key",
        "app-secret",
        method,
        path,
        &[],
        body.as_bytes(),
        now,
    );
    format!("http://{addr}{path}?{qs}")
}

#[tokio::test]
async fn the_redis_broker_speaks_tls_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    pem_files(dir.path());
    let tls_port = free_port();
    let file = |name: &str| dir.path().join(name).display().to_string();
    let (cert, key, ca) = (file("redis.pem"), file("redis.key"), file("ca.pem"));
    let tls_port_arg = tls_port.to_string();
    let _redis = RedisServer::start_with(&[
        "--appendonly",
        "no",
        "--tls-port",
        &tls_port_arg,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
        "--user",
        "crier",
        "on",
        ">s3cret",
        "~*",
        "&*",
        "+@all",
    ]);
    let config = dir.path().join("crier.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[ingest.udp]\nlisten = \"\"\n\
             [broker]\nkind = \"redis\"\nurl = \"rediss://crier:s3cret@127.0.0.1:{tls_port}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut cmd = crier();
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env("SSL_CERT_FILE", &ca);
    let node = Crier::spawn(cmd);
    let addr = node.addr.clone();
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let ready: Value = http
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready, serde_json::json!({"status": "ready"}));
    let body = r#"{"name":"e","channel":"secure","data":"over tls"}"#;
    let res = http
        .post(signed(&addr, "POST", "/apps/1/events", body))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let history: Value = http
        .get(signed(&addr, "GET", "/apps/1/channels/secure/messages", ""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["messages"][0]["data"], "over tls", "{history}");
    drop(node);
}
