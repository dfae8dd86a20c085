//! The `dmq` binary over `rediss://` and with an ACL user, as the README tells a user
//! to write its URL: against a redis-server of the test's own with a TLS port and
//! certificates the test generates, never the shared Redis.

use std::process::{Command, Output};

#[path = "../../dmq-redis/tests/common/tls_redis.rs"]
mod tls_redis;

use tls_redis::{ClientCerts, TlsRedis, tls_cluster, tls_sentinels};

/// Runs `dmq` with `args`, the broker URL in `DMQ_BROKER_URL`.
fn dmq(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmq"))
        .args(args)
        .env("DMQ_BROKER_URL", url)
        .env("DMQ_NAMESPACE", format!("dmq-test-{}", uuid::Uuid::new_v4()))
        .output()
        .expect("the dmq binary runs")
}

/// Runs `dmq`, expects success, and returns its stdout.
fn ok(url: &str, args: &[&str]) -> String {
    let out = dmq(url, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dmq {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Checks that `out` failed with one `error: ...` line containing each of `expected`.
fn assert_error(out: &Output, expected: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit status of a failure; stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for e in expected {
        assert!(stderr.contains(e), "expected {e:?} in: {stderr}");
    }
    stderr
}

#[test]
fn enqueue_and_queues_over_tls() {
    let redis = TlsRedis::start(ClientCerts::Required);
    let url = redis.mtls_url();
    // One namespace for both commands: --namespace wins over the environment.
    let ns = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let id = ok(&url, &["enqueue", "app.add", "[2, 3]", "--queue", "tls", "--namespace", &ns]);
    assert_eq!(id.trim().len(), 36, "a task id: {id}");
    let queues = ok(&url, &["queues", "--namespace", &ns]);
    let row = queues.lines().find(|l| l.starts_with("tls ")).unwrap_or_else(|| panic!("{queues}"));
    assert_eq!(row.split_whitespace().nth(1), Some("1"), "one job ready: {queues}");
    let job = ok(&url, &["job", id.trim(), "--namespace", &ns]);
    assert!(job.contains("app.add"), "{job}");

    // Without the client certificate the server hangs up, and dmq says why.
    let out = dmq(&redis.ca_url(), &["queues"]);
    assert_error(&out, &["TLS handshake failed", "tls_cert"]);
}

#[test]
fn a_missing_ca_file_is_one_clear_error() {
    let url = "rediss://app:hunter2@127.0.0.1:1/?tls_ca=/nonexistent/dmq/ca.pem";
    for args in [&["queues"][..], &["enqueue", "app.add", "[1, 2]"]] {
        let stderr =
            assert_error(&dmq(url, args), &["cannot read /nonexistent/dmq/ca.pem (tls_ca)"]);
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[test]
fn acl_users_log_in_from_the_command_line() {
    let redis = TlsRedis::start(ClientCerts::Optional);
    redis.only_user("dmq-cli", "s3cret-pw");

    // The user may touch the keys of namespace dmq only (this Redis is the test's own).
    let ns = "dmq".to_owned();
    let tls = format!(
        "rediss://dmq-cli:s3cret-pw@127.0.0.1:{}/?tls_ca={}",
        redis.tls_port,
        redis.pki.ca.display()
    );
    for url in [redis.plain_url("dmq-cli:s3cret-pw@"), tls] {
        ok(&url, &["enqueue", "app.add", "[2, 3]", "--queue", "acl", "--namespace", &ns]);
    }
    let queues = ok(&redis.plain_url("dmq-cli:s3cret-pw@"), &["queues", "--namespace", &ns]);
    let row = queues.lines().find(|l| l.starts_with("acl ")).unwrap_or_else(|| panic!("{queues}"));
    assert_eq!(row.split_whitespace().nth(1), Some("2"), "two jobs ready: {queues}");

    let out = dmq(&redis.plain_url("dmq-cli:wrong-pw@"), &["queues"]);
    let stderr = assert_error(&out, &["authentication failed", "redis://dmq-cli:***@"]);
    assert!(!stderr.contains("wrong-pw"), "{stderr}");
}

#[test]
fn enqueue_and_queues_on_a_tls_cluster_and_through_tls_sentinels() {
    let (cluster, ports) = tls_cluster();
    let pki = &cluster.pki;
    let hosts = ports.map(|p| format!("127.0.0.1:{p}")).join(",");
    let mtls = format!(
        "?tls_ca={}&tls_cert={}&tls_key={}",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let (sentinels, sentinel_ports) = tls_sentinels();
    let sentinel_hosts = sentinel_ports.map(|p| format!("127.0.0.1:{p}")).join(",");
    let through_sentinels = format!(
        "rediss+sentinel://{sentinel_hosts}/mymaster?tls_ca={}",
        sentinels.pki.ca.display()
    );
    for url in [format!("rediss+cluster://{hosts}{mtls}"), through_sentinels] {
        let ns = format!("dmq-test-{}", uuid::Uuid::new_v4());
        for queue in ["tls-a", "tls-b", "tls-a"] {
            ok(&url, &["enqueue", "app.add", "[2, 3]", "--queue", queue, "--namespace", &ns]);
        }
        let queues = ok(&url, &["queues", "--namespace", &ns]);
        let ready = |queue: &str| {
            let row = queues.lines().find(|l| l.starts_with(&format!("{queue} ")));
            row.and_then(|r| r.split_whitespace().nth(1).map(str::to_owned))
        };
        assert_eq!(
            (ready("tls-a"), ready("tls-b")),
            (Some("2".into()), Some("1".into())),
            "{queues}"
        );
    }
    // Without the client certificate the cluster's nodes hang up, and dmq says why.
    let out = dmq(&format!("rediss+cluster://{hosts}?tls_ca={}", pki.ca.display()), &["queues"]);
    assert_error(&out, &["TLS handshake failed", "tls_cert"]);
}
