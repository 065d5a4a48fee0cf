//! TLS and mTLS (feature `tls`): certificates are made with the `openssl` command line.
//! Run with `cargo test -p cap-safety --features tls --test tls`.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cap_safety::server::{self, ServeOptions, TlsFiles};
use cap_safety::{ClientTls, ErrorKind, GrpcClientOptions, GrpcSafetyClient, Kernel, SafetyClient};
use std::path::Path;
use std::process::Command;

const POLICY: &str =
    "rules:\n  - id: deny-admin\n    match: { topics: [\"job.admin.*\"] }\n    decision: deny\n";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("the tls test needs the openssl command line: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cap test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let pem = format!("{who}.pem");
        let ext = format!("{who}.ext");
        let subj = format!("/CN={who}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

#[tokio::test]
async fn mtls_admits_clients_with_a_certificate_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let kernel = Kernel::from_text(POLICY, "mem", Default::default()).unwrap();
    let h = server::spawn(
        kernel,
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            tls: Some(TlsFiles {
                cert: d.join("server.pem"),
                key: d.join("server.key"),
                client_ca: Some(d.join("ca.pem")),
            }),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap();
    let url = format!("https://127.0.0.1:{}", h.local_addr().port());
    let options = |identity: bool| {
        let mut o = GrpcClientOptions::new(url.clone());
        o.retries = 0;
        o.tls = Some(ClientTls {
            ca: d.join("ca.pem"),
            identity: identity.then(|| (d.join("client.pem"), d.join("client.key"))),
            domain: Some("localhost".into()),
        });
        o
    };
    let req = cap_proto::v1::PolicyCheckRequest {
        topic: "job.admin.x".into(),
        ..Default::default()
    };

    let good = GrpcSafetyClient::connect(options(true)).await.unwrap();
    let r = good.check(&req).await.unwrap();
    assert_eq!(r.rule_id, "deny-admin");

    let anonymous = GrpcSafetyClient::new(options(false)).unwrap();
    let err = anonymous.check(&req).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Transport | ErrorKind::Status),
        "{err}"
    );

    let mut plain = GrpcClientOptions::new(format!("http://127.0.0.1:{}", h.local_addr().port()));
    plain.retries = 0;
    let plain = GrpcSafetyClient::new(plain).unwrap();
    assert!(plain.check(&req).await.is_err());

    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn tls_without_client_ca_serves_any_client_that_trusts_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let kernel = Kernel::from_text(POLICY, "mem", Default::default()).unwrap();
    let h = server::spawn(
        kernel,
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            tls: Some(TlsFiles {
                cert: d.join("server.pem"),
                key: d.join("server.key"),
                client_ca: None,
            }),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap();
    let mut o = GrpcClientOptions::new(format!("127.0.0.1:{}", h.local_addr().port()));
    o.tls = Some(ClientTls {
        ca: d.join("ca.pem"),
        identity: None,
        domain: Some("localhost".into()),
    });
    let c = GrpcSafetyClient::connect(o).await.unwrap();
    let req = cap_proto::v1::PolicyCheckRequest {
        topic: "job.x".into(),
        ..Default::default()
    };
    assert_eq!(c.check(&req).await.unwrap().decision, 1);
    h.shutdown().await.unwrap();

    // Missing certificate files are typed errors.
    let kernel = Kernel::from_text(POLICY, "mem", Default::default()).unwrap();
    let err = server::spawn(
        kernel,
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            tls: Some(TlsFiles {
                cert: d.join("nope.pem"),
                key: d.join("server.key"),
                client_ca: None,
            }),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}
