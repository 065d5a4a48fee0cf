//! Authentication options reach the server: a private nats-server that requires a
//! user/password (then a token) accepts the right credentials and refuses others with a
//! typed error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use cap_bus::{
    Bus, ErrorKind, NatsBus, NatsOptions,
    nats::{Auth, ReconnectOptions},
};
use common::*;
use futures_util::StreamExt;
use std::time::Duration;

fn opts(url: &str, auth: Auth) -> NatsOptions {
    let mut o = NatsOptions::new(url)
        .without_jetstream()
        .auth(auth)
        .reconnect(
            ReconnectOptions::new(Duration::from_millis(50), Duration::from_millis(200))
                .max_attempts(Some(1)),
        );
    o.connect_timeout = Duration::from_secs(2);
    o
}

async fn roundtrip(bus: &NatsBus) {
    let mut sub = bus.subscribe("auth.check").await.unwrap();
    bus.publish("auth.check", Bytes::from_static(b"ok"))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload(), "ok");
}

#[tokio::test]
#[ignore = "needs the nats-server binary: run by .ci/run"]
async fn user_and_password_are_sent_and_checked() {
    let server = PrivateNats::start_with(&["--user", "capuser", "--pass", "s3cret"]);
    let good = Auth::UserPassword {
        user: "capuser".into(),
        password: "s3cret".into(),
    };
    let bus = NatsBus::connect(opts(&server.url(), good)).await.unwrap();
    roundtrip(&bus).await;
    bus.close().await.unwrap();

    let bad = Auth::UserPassword {
        user: "capuser".into(),
        password: "wrong".into(),
    };
    let err = NatsBus::connect(opts(&server.url(), bad))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
    assert!(!format!("{err:?}").contains("wrong"), "no secret in errors");
    let err = NatsBus::connect(opts(&server.url(), Auth::None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
}

#[tokio::test]
#[ignore = "needs the nats-server binary: run by .ci/run"]
async fn a_token_is_sent_and_checked() {
    let server = PrivateNats::start_with(&["--auth", "tok-123"]);
    let bus = NatsBus::connect(opts(&server.url(), Auth::Token("tok-123".into())))
        .await
        .unwrap();
    roundtrip(&bus).await;
    bus.close().await.unwrap();
    let err = NatsBus::connect(opts(&server.url(), Auth::Token("nope".into())))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
}

#[tokio::test]
#[ignore = "needs the nats-server binary: run by .ci/run"]
async fn an_nkey_seed_signs_the_server_nonce() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let conf_dir = std::env::temp_dir().join(format!(
        "capbus-nkey-{}",
        cap_bus::conformance::unique_token()
    ));
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conf = conf_dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let server = PrivateNats::start_with(&["-c", &conf.to_string_lossy()]);
    let bus = NatsBus::connect(opts(&server.url(), Auth::NKey(seed)))
        .await
        .unwrap();
    roundtrip(&bus).await;
    bus.close().await.unwrap();
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let err = NatsBus::connect(opts(&server.url(), Auth::NKey(stranger)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(&conf_dir);
}

#[tokio::test]
async fn a_missing_creds_file_is_a_config_error() {
    let o = opts(
        "nats://127.0.0.1:1",
        Auth::CredsFile("/nonexistent/cap.creds".into()),
    );
    let err = NatsBus::connect(o).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_connection_lost_and_a_bad_url_is_config() {
    let err = NatsBus::connect(opts("nats://127.0.0.1:1", Auth::None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
    assert_eq!(err.code(), cap_proto::ErrorCode::TRANSPORT_CONNECTION_LOST);
    let err = NatsBus::connect(opts("nats://[bad", Auth::None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}
