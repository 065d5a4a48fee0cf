//! `rediss://` against a private TLS redis-server: CA, mutual TLS, insecure mode, a server
//! name other than the URL host (REDIS_TLS_SERVER_NAME, also across a restart), and
//! configuration from the REDIS_TLS_* variables.
#![cfg(all(feature = "tls", feature = "redis"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use cap_blob::{BlobStore, ErrorKind, RedisBlobStore, RedisConfig, RedisTlsConfig, conformance};
use common::outage;
use common::redis_server::{RedisServer, free_port};

/// Test certificates made with the openssl CLI: a CA, a server cert for localhost and
/// 127.0.0.1, a server cert for `redis.internal` only, a client cert, and an unrelated CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(
            d.join("internal.ext"),
            "subjectAltName=DNS:redis.internal\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=cap-blob test {ca}"),
                ],
            );
        }
        for leaf in ["server", "internal", "client"] {
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &format!("{leaf}.key"),
                    "-out",
                    &format!("{leaf}.csr"),
                    "-subj",
                    &format!("/CN=cap-blob test {leaf}"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{leaf}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{leaf}.pem"),
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{leaf}.ext"),
                ],
            );
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A TLS server (and a plain port for the readiness probe); `auth_clients`: "yes"/"no".
    fn server(&self, auth_clients: &str) -> (RedisServer, u16) {
        self.server_with_cert("server", auth_clients)
    }

    /// Like [`server`](Self::server), presenting `<cert>.pem`.
    fn server_with_cert(&self, cert: &str, auth_clients: &str) -> (RedisServer, u16) {
        let tls_port = free_port();
        let p = |n: &str| self.path(n).to_str().unwrap().to_owned();
        let args: Vec<String> = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            p(&format!("{cert}.pem")),
            "--tls-key-file".into(),
            p(&format!("{cert}.key")),
            "--tls-ca-cert-file".into(),
            p("ca.pem"),
            "--tls-auth-clients".into(),
            auth_clients.into(),
        ];
        (RedisServer::start_with(free_port(), &args), tls_port)
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("needs the openssl CLI: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tls(ca: Option<PathBuf>, cert: Option<(PathBuf, PathBuf)>) -> RedisTlsConfig {
    let mut t = RedisTlsConfig::default();
    t.ca = ca;
    if let Some((c, k)) = cert {
        t.cert = Some(c);
        t.key = Some(k);
    }
    t
}

async fn connect(url: &str, t: RedisTlsConfig) -> cap_blob::Result<RedisBlobStore> {
    RedisBlobStore::connect(RedisConfig::new(url).with_tls(t)).await
}

#[tokio::test]
#[ignore = "needs the redis-server binary with TLS and the openssl CLI: run by .ci/run"]
async fn tls_with_a_private_ca_passes_the_conformance_suite() {
    let pki = Pki::new();
    let (_server, port) = pki.server("no");
    let url = format!("rediss://127.0.0.1:{port}/0");
    let store = connect(&url, tls(Some(pki.path("ca.pem")), None))
        .await
        .unwrap();
    conformance::run(&store, "tls").await.unwrap();

    // By host name too: the certificate names localhost.
    let by_name = format!("rediss://localhost:{port}/0");
    let store = connect(&by_name, tls(Some(pki.path("ca.pem")), None))
        .await
        .unwrap();
    store
        .put("k", Bytes::from_static(b"v"), None)
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap(), "v");
}

#[tokio::test]
#[ignore = "needs the redis-server binary with TLS and the openssl CLI: run by .ci/run"]
async fn certificates_are_verified_unless_insecure() {
    let pki = Pki::new();
    let (_server, port) = pki.server("no");
    let url = format!("rediss://127.0.0.1:{port}/0");
    let err = connect(&url, tls(Some(pki.path("other-ca.pem")), None))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Backend),
        "{err}"
    );
    assert!(err.to_string().contains(&url), "{err}");

    let mut insecure = tls(Some(pki.path("other-ca.pem")), None);
    insecure.insecure = true;
    let store = connect(&url, insecure).await.unwrap();
    store
        .put("k", Bytes::from_static(b"v"), None)
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the redis-server binary with TLS and the openssl CLI: run by .ci/run"]
async fn mutual_tls_uses_the_client_certificate() {
    let pki = Pki::new();
    let (_server, port) = pki.server("yes");
    let url = format!("rediss://127.0.0.1:{port}/0");
    assert!(
        connect(&url, tls(Some(pki.path("ca.pem")), None))
            .await
            .is_err(),
        "server requires a client certificate"
    );
    let pair = (pki.path("client.pem"), pki.path("client.key"));
    let store = connect(&url, tls(Some(pki.path("ca.pem")), Some(pair)))
        .await
        .unwrap();
    store
        .put("k", Bytes::from_static(b"\x00\xff"), None)
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap(), &b"\x00\xff"[..]);
}

#[tokio::test]
#[ignore = "needs the redis-server binary with TLS and the openssl CLI: run by .ci/run"]
async fn configured_from_the_sdk_environment_variables() {
    let pki = Pki::new();
    let (_server, port) = pki.server("yes");
    let env: HashMap<&str, String> = HashMap::from([
        ("REDIS_URL", format!("rediss://localhost:{port}/0")),
        ("REDIS_TLS_CA", pki.path("ca.pem").display().to_string()),
        (
            "REDIS_TLS_CERT",
            pki.path("client.pem").display().to_string(),
        ),
        (
            "REDIS_TLS_KEY",
            pki.path("client.key").display().to_string(),
        ),
        ("REDIS_TLS_SERVER_NAME", "localhost".to_owned()),
    ]);
    let cfg = RedisConfig::from_lookup(|k| env.get(k).cloned());
    let store = RedisBlobStore::connect(cfg).await.unwrap();
    let ptr = store
        .put_result("job-tls", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(store.get_ptr(&ptr).await.unwrap(), "{}");
}

#[tokio::test]
async fn bad_tls_settings_are_configuration_errors() {
    let url = "rediss://127.0.0.1:1/0";
    let err = connect(url, tls(Some(PathBuf::from("/nonexistent/ca.pem")), None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("REDIS_TLS_CA"), "{err}");

    let mut half = RedisTlsConfig::default();
    half.cert = Some(PathBuf::from("/c.pem"));
    let err = connect(url, half).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(
        err.to_string().contains("REDIS_TLS_CERT and REDIS_TLS_KEY"),
        "{err}"
    );

    let mut bad_name = RedisTlsConfig::default();
    bad_name.server_name = Some("not a host name".into());
    let err = connect(url, bad_name).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("REDIS_TLS_SERVER_NAME"), "{err}");

    // A valid name other than the URL host is not a configuration error (it used to be):
    // the connection is attempted, to the URL's address, and nothing listens there.
    let mut other_name = RedisTlsConfig::default();
    other_name.server_name = Some("redis.internal".into());
    let err = connect(url, other_name).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains(url), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = connect(url, tls(Some(junk), None)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}

fn with_server_name(mut t: RedisTlsConfig, name: &str) -> RedisTlsConfig {
    t.server_name = Some(name.to_owned());
    t
}

/// A handshake that failed on the certificate: unavailable or refused, naming the URL and
/// saying why.
fn assert_certificate_rejected(err: &cap_blob::Error, url: &str) {
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Backend),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(url), "{err}");
    assert!(
        text.contains("certificate") && text.contains("not valid for name"),
        "not a certificate name error: {err}"
    );
}

#[tokio::test]
#[ignore = "needs the redis-server binary with TLS and the openssl CLI: run by .ci/run"]
async fn server_name_other_than_the_url_host_is_used_for_sni_and_verification() {
    let pki = Pki::new();
    // The certificate names only redis.internal, which does not resolve here.
    let (_server, port) = pki.server_with_cert("internal", "no");
    let url = format!("rediss://127.0.0.1:{port}/0");
    let ca = || tls(Some(pki.path("ca.pem")), None);

    // TCP to 127.0.0.1, TLS to redis.internal.
    let store = connect(&url, with_server_name(ca(), "redis.internal"))
        .await
        .unwrap();
    assert_eq!(store.location(), url);
    store.ping().await.unwrap();
    conformance::run(&store, "tls-server-name").await.unwrap();

    // Without the override the certificate does not match the URL host...
    let err = connect(&url, ca()).await.unwrap_err();
    assert_certificate_rejected(&err, &url);
    // ...nor with another name.
    let err = connect(&url, with_server_name(ca(), "other.internal"))
        .await
        .unwrap_err();
    assert_certificate_rejected(&err, &url);
    // The override changes the name checked, not what is trusted.
    let err = connect(
        &url,
        with_server_name(tls(Some(pki.path("other-ca.pem")), None), "redis.internal"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Backend),
        "{err}"
    );
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // From the SDK environment variables, with mutual TLS on a `localhost` URL.
    let (_mtls, mtls_port) = pki.server_with_cert("internal", "yes");
    let env_url = format!("rediss://localhost:{mtls_port}/0");
    let env: HashMap<&str, String> = HashMap::from([
        ("REDIS_URL", env_url.clone()),
        ("REDIS_TLS_CA", pki.path("ca.pem").display().to_string()),
        (
            "REDIS_TLS_CERT",
            pki.path("client.pem").display().to_string(),
        ),
        (
            "REDIS_TLS_KEY",
            pki.path("client.key").display().to_string(),
        ),
        ("REDIS_TLS_SERVER_NAME", "redis.internal".to_owned()),
    ]);
    let store = RedisBlobStore::connect(RedisConfig::from_lookup(|k| env.get(k).cloned()))
        .await
        .unwrap();
    let ptr = store
        .put_context("job-sni", Bytes::from_static(b"{\"x\":1}"))
        .await
        .unwrap();
    assert_eq!(store.get_ptr(&ptr).await.unwrap(), "{\"x\":1}");
    assert_eq!(store.location(), env_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server binary with TLS and the openssl CLI: run by .ci/run"]
async fn server_name_override_recovers_after_a_restart_without_a_new_client() {
    let pki = Pki::new();
    let (mut server, port) = pki.server_with_cert("internal", "no");
    let url = format!("rediss://127.0.0.1:{port}/0");
    let store = connect(
        &url,
        with_server_name(tls(Some(pki.path("ca.pem")), None), "redis.internal"),
    )
    .await
    .unwrap();
    let reader = store.clone();
    outage::write_before(&store, &reader).await;

    server.kill();

    // While it is down: typed, retryable errors naming the server, promptly.
    outage::assert_unavailable(&store, &reader, &url).await;
    // Many callers at once share one reconnection round rather than queue for their own.
    let started = Instant::now();
    let calls = (0..20).map(|i| {
        let s = store.clone();
        async move { s.exists(&format!("k{i}")).await }
    });
    for result in futures_util::future::join_all(calls).await {
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Unavailable);
    }
    assert!(
        started.elapsed() < outage::PROMPT,
        "20 concurrent calls took {:?}",
        started.elapsed()
    );

    server.restart(); // same ports and certificate, empty

    outage::assert_recovers(&store, &reader).await;
    reader.ping().await.unwrap();
}
