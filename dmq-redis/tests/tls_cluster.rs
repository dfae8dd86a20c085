//! TLS past one Redis, as the README offers it: `rediss+cluster://` to a Redis Cluster
//! whose nodes speak TLS only (and ask for client certificates), and
//! `rediss+sentinel://` to sentinels and a master that speak TLS only. Every server is
//! the test's own, on free ports, with certificates the test generates; none is the
//! shared Redis.

use std::time::Duration;

use dmq_core::{Error, Manager, TaskError, task};
use dmq_redis::{RedisBackend, RedisBroker};

#[path = "common/tls_redis.rs"]
mod tls_redis;

use tls_redis::{tls_cluster, tls_sentinels};

#[task(queue = "tls-a")]
async fn double(n: i64) -> Result<i64, TaskError> {
    Ok(n * 2)
}

#[task(queue = "tls-b")]
async fn triple(n: i64) -> Result<i64, TaskError> {
    Ok(n * 3)
}

/// Jobs of two queues (on a cluster, two slots) enqueued on `url` run on a worker
/// connected to `url`, and their results come back through the backend's
/// subscription: every kind of connection dmq opens works there.
async fn round_trip(url: &str) {
    let broker = RedisBroker::connect(url).await.unwrap_or_else(|e| panic!("broker on {url}: {e}"));
    let backend =
        RedisBackend::connect(url).await.unwrap_or_else(|e| panic!("backend on {url}: {e}"));
    let manager = Manager::builder().broker(broker).backend(backend).build().expect("a manager");
    let worker = manager.worker().queues(["tls-a", "tls-b"]).concurrency(2).start();
    // Idle first, so that the jobs wake a blocked worker.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = double::call(21).enqueue(&manager).await.expect("enqueues");
    let b = triple::call(14).enqueue(&manager).await.expect("enqueues");
    let results =
        (a.result(Duration::from_secs(20)).await, b.result(Duration::from_secs(20)).await);
    worker.shutdown().await;
    let (a, b) = results;
    assert_eq!((a.expect("the first job's result"), b.expect("the second's")), (42, 42));
}

/// The message of a connect that must fail.
async fn refused(url: &str) -> Error {
    match RedisBroker::connect(url).await {
        Ok(broker) => panic!("{url} connected: {broker:?}"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_speaking_tls_only_is_reached_with_rediss_cluster() {
    let (servers, ports) = tls_cluster();
    let pki = &servers.pki;
    let hosts = ports.map(|p| format!("127.0.0.1:{p}")).join(",");
    let (ca, cert, key) = (pki.ca.display(), pki.client_cert.display(), pki.client_key.display());
    let mtls = format!("?tls_ca={ca}&tls_cert={cert}&tls_key={key}");

    // Named as a cluster, and as one node of it (found a cluster when connecting).
    round_trip(&format!("rediss+cluster://{hosts}{mtls}")).await;
    round_trip(&format!("rediss://127.0.0.1:{}/{mtls}", ports[1])).await;

    // The servers' certificates are checked: signed by a CA the URL does not trust
    // (the system's roots, or another), they are refused; without checks they pass.
    let other = pki.other_ca.display();
    for url in [
        format!("rediss+cluster://{hosts}?tls_cert={cert}&tls_key={key}"),
        format!("rediss+cluster://{hosts}?tls_ca={other}&tls_cert={cert}&tls_key={key}"),
    ] {
        let e = refused(&url).await;
        let text = e.to_string();
        assert!(text.contains("TLS handshake failed") && text.contains("UnknownIssuer"), "{text}");
        assert!(!e.is_transient(), "a certificate that is not trusted stays so: {text}");
    }
    round_trip(&format!("rediss+cluster://{hosts}/?tls_cert={cert}&tls_key={key}#insecure")).await;

    // The nodes ask for a client certificate: without one, no connection.
    let e = refused(&format!("rediss+cluster://{hosts}?tls_ca={ca}")).await.to_string();
    assert!(e.contains("TLS handshake failed") && e.contains("CertificateRequired"), "{e}");
    assert!(e.contains("tls_cert"), "the message says what to give: {e}");
    // Plain TCP to a TLS port gets nowhere either.
    let plain = refused(&format!("redis+cluster://{hosts}")).await.to_string();
    assert!(plain.contains("connection failed"), "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_behind_sentinels_speaking_tls_only_is_reached_with_rediss_sentinel() {
    let (servers, sentinels) = tls_sentinels();
    let hosts = sentinels.map(|p| format!("127.0.0.1:{p}")).join(",");
    let ca = servers.pki.ca.display();
    round_trip(&format!("rediss+sentinel://{hosts}/mymaster?tls_ca={ca}")).await;
    round_trip(&format!("rediss+sentinel://{hosts}/mymaster#insecure")).await;

    // The sentinels' and the master's certificates are checked.
    let other = servers.pki.other_ca.display();
    let e = refused(&format!("rediss+sentinel://{hosts}/mymaster?tls_ca={other}")).await;
    let text = e.to_string();
    assert!(text.contains("TLS handshake failed") && text.contains("UnknownIssuer"), "{text}");
    assert!(!e.is_transient(), "{text}");
    // Plain TCP to the sentinels' TLS ports gets nowhere.
    let e = refused(&format!("redis+sentinel://{hosts}/mymaster")).await.to_string();
    assert!(e.contains("connection failed"), "{e}");
}
