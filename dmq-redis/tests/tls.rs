//! `rediss://` and ACL users, as the README offers them: the broker and the result
//! backend against a redis-server of the test's own with a TLS port and certificates the
//! test generates, never the shared Redis.

use std::time::Duration;

use dmq_core::{BrokerAdmin, Error, Manager, TaskError, task};
use dmq_redis::{RedisBackend, RedisBroker};

#[path = "common/tls_redis.rs"]
mod tls_redis;

use tls_redis::{ClientCerts, TlsRedis};

#[task(queue = "tls")]
async fn double(n: i64) -> Result<i64, TaskError> {
    Ok(n * 2)
}

/// A job enqueued on `url` runs on a worker connected to `url`, and its result comes
/// back through the result backend's subscription: every kind of connection dmq opens
/// (shared, blocking wait, publish and subscribe) works there.
async fn round_trip(url: &str) {
    let broker = RedisBroker::connect(url).await.unwrap_or_else(|e| panic!("broker on {url}: {e}"));
    let backend =
        RedisBackend::connect(url).await.unwrap_or_else(|e| panic!("backend on {url}: {e}"));
    let manager = Manager::builder().broker(broker).backend(backend).build().expect("a manager");
    let worker = manager.worker().queues(["tls"]).concurrency(2).start();
    let handle = double::call(21).enqueue(&manager).await.expect("enqueues");
    let result = handle.result(Duration::from_secs(10)).await;
    worker.shutdown().await;
    assert_eq!(result.expect("the job ran and its result came back"), 42);
}

/// The message of a connect that must fail.
async fn refused(url: &str) -> Error {
    match RedisBroker::connect(url).await {
        Ok(broker) => panic!("{url} connected: {broker:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn broker_and_backend_work_over_tls_with_a_ca_file() {
    let redis = TlsRedis::start(ClientCerts::Optional);
    round_trip(&redis.ca_url()).await;
}

#[tokio::test]
async fn the_servers_certificate_is_checked() {
    let redis = TlsRedis::start(ClientCerts::Optional);

    // Signed by a CA the client was not told to trust: the system's roots, or another.
    let other_ca = redis.tls_url(&format!("?tls_ca={}", redis.pki.other_ca.display()));
    for url in [redis.tls_url(""), other_ca] {
        let e = refused(&url).await;
        let text = e.to_string();
        assert!(text.contains("TLS handshake failed") && text.contains("tls_ca"), "{text}");
        assert!(!e.is_transient(), "a certificate that is not trusted stays so: {text}");
    }
    // The same without a check, as tests may do.
    round_trip(&redis.tls_url("#insecure")).await;
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let redis = TlsRedis::start(ClientCerts::Required);
    round_trip(&redis.mtls_url()).await;

    let e = refused(&redis.ca_url()).await.to_string();
    assert!(e.contains("TLS handshake failed") && e.contains("tls_cert"), "{e}");
}

#[tokio::test]
async fn a_missing_certificate_file_is_named() {
    let url = "rediss://:hunter2@127.0.0.1:1/?tls_ca=/nonexistent/dmq/ca.pem";
    for e in [
        refused(url).await,
        RedisBackend::connect(url).await.expect_err("the backend refuses it too"),
    ] {
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("cannot read /nonexistent/dmq/ca.pem (tls_ca)"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[tokio::test]
async fn acl_users_authenticate() {
    let redis = TlsRedis::start(ClientCerts::Optional);
    redis.only_user("dmq-app", "s3cret-pw");

    // The user's password, on the plain port and over TLS.
    round_trip(&redis.plain_url("dmq-app:s3cret-pw@")).await;
    let tls = format!(
        "rediss://dmq-app:s3cret-pw@127.0.0.1:{}/?tls_ca={}",
        redis.tls_port,
        redis.pki.ca.display()
    );
    round_trip(&tls).await;

    // A wrong password, for the broker and the backend alike: refused, saying why,
    // without showing the password.
    let wrong = redis.plain_url("dmq-app:wrong-pw@");
    let backend = RedisBackend::connect(&wrong).await.expect_err("the backend is refused");
    for e in [refused(&wrong).await, backend] {
        let text = e.to_string();
        assert!(text.contains("authentication failed"), "{text}");
        assert!(text.contains("user name and password"), "{text}");
        assert!(!text.contains("wrong-pw"), "{text}");
    }

    // No user at all: the default user is off, so Redis refuses every command.
    let anonymous = RedisBroker::connect(&redis.plain_url("")).await;
    let e = match anonymous {
        Ok(broker) => broker.queue_stats("tls").await.expect_err("no command runs"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("NOAUTH"), "{e}");
}
