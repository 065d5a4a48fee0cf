//! TLS options reach the server: a private nats-server with mutual TLS (certificates
//! made by `openssl` for this test) accepts a client with the CA and a client
//! certificate, and refuses one without the client certificate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use cap_bus::{
    Bus, NatsBus, NatsOptions,
    conformance::unique_token,
    nats::{ReconnectOptions, TlsOptions},
};
use common::*;
use futures_util::StreamExt;
use std::{path::Path, process::Command, time::Duration};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("this test needs the openssl command: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=cap-bus test CA",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, pem, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
        );
        openssl(
            dir,
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ]
            .concat(),
        );
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
                "1",
                "-extfile",
                &ext,
            ],
        );
    }
}

fn opts(url: &str, tls: TlsOptions) -> NatsOptions {
    let mut o = NatsOptions::new(url)
        .without_jetstream()
        .tls(tls)
        .reconnect(
            ReconnectOptions::new(Duration::from_millis(50), Duration::from_millis(200))
                .max_attempts(Some(1)),
        );
    o.connect_timeout = Duration::from_secs(3);
    o
}

#[tokio::test]
#[ignore = "needs the nats-server and openssl binaries: run by .ci/run"]
async fn mutual_tls_with_ca_and_client_certificate() {
    let certs = std::env::temp_dir().join(format!("capbus-tls-{}", unique_token()));
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let p = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let server = PrivateNats::start_with(&[
        "--tls",
        "--tlscert",
        &p("server.pem"),
        "--tlskey",
        &p("server.key"),
        "--tlscacert",
        &p("ca.pem"),
        "--tlsverify",
    ]);
    let mut tls = TlsOptions::default();
    tls.ca = Some(certs.join("ca.pem"));
    tls.cert = Some(certs.join("client.pem"));
    tls.key = Some(certs.join("client.key"));
    tls.required = true;
    let result = NatsBus::connect(opts(&server.url(), tls.clone())).await;
    let bus = result.unwrap_or_else(|e| panic!("mutual TLS connect failed: {e:?}"));
    let mut sub = bus.subscribe("tls.check").await.unwrap();
    bus.publish("tls.check", Bytes::from_static(b"secure"))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload(), "secure");
    bus.close().await.unwrap();

    // Without the client certificate the server refuses the handshake.
    let mut no_client_cert = tls.clone();
    no_client_cert.cert = None;
    no_client_cert.key = None;
    assert!(
        NatsBus::connect(opts(&server.url(), no_client_cert))
            .await
            .is_err()
    );
    // Without our CA the client does not trust the server.
    let mut no_ca = tls;
    no_ca.ca = None;
    assert!(NatsBus::connect(opts(&server.url(), no_ca)).await.is_err());
    drop(server);
    let _ = std::fs::remove_dir_all(&certs);
}
