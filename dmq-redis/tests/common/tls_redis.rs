//! A redis-server of a test's own with a TLS port, certificates the test generates
//! (rcgen) and a plain port beside it; killed, and its files removed, when dropped,
//! also when the test fails. Also a Redis Cluster and a Sentinel set that speak TLS
//! only ([`tls_cluster`], [`tls_sentinels`]). dmq-cli's TLS test includes this file too (`#[path]`).

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

/// Certificate and key files, in PEM, written to a directory of the test's own.
pub struct Pki {
    /// The authority that signed the server's and the client's certificates.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate the server trusts (signed by `ca`).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Another authority, which signed nothing the server shows.
    pub other_ca: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Self {
        let (ca_pem, issuer) = authority("dmq test CA");
        let (other_ca, _) = authority("some other CA");
        let (server_cert, server_key) = leaf(&issuer, "localhost", true);
        let (client_cert, client_key) = leaf(&issuer, "dmq-test-client", false);
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        Pki {
            ca: write("ca.pem", ca_pem),
            server_cert: write("server.pem", server_cert),
            server_key: write("server.key", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client.key", client_key),
            other_ca: write("other-ca.pem", other_ca),
        }
    }
}

fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("a CA key");
    let cert = params.self_signed(&key).expect("a CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

/// A certificate signed by `issuer`, for `name` (and 127.0.0.1, for a server).
fn leaf(issuer: &Issuer<'static, KeyPair>, name: &str, server: bool) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_owned()]).expect("leaf params");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    if server {
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    let key = KeyPair::generate().expect("a key");
    let cert = params.signed_by(&key, issuer).expect("a signed certificate");
    (cert.pem(), key.serialize_pem())
}

/// Whether the server asks clients for a certificate (`--tls-auth-clients`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    Optional,
    Required,
}

pub struct TlsRedis {
    /// The plain (non-TLS) port.
    pub port: u16,
    pub tls_port: u16,
    pub pki: Pki,
    dir: PathBuf,
    child: Child,
}

impl TlsRedis {
    /// Starts a redis-server with a TLS port and a plain port, each free, and waits
    /// until both accept connections.
    pub fn start(client_certs: ClientCerts) -> Self {
        let dir = std::env::temp_dir().join(format!("dmq-tls-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a directory for the test's Redis");
        let pki = Pki::generate(&dir);
        let (port, tls_port) = (free_port(), free_port());
        let log = dir.join("redis.log");
        let auth_clients = match client_certs {
            ClientCerts::Optional => "optional",
            ClientCerts::Required => "yes",
        };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--tls-port", &tls_port.to_string()])
            .arg("--tls-cert-file")
            .arg(&pki.server_cert)
            .arg("--tls-key-file")
            .arg(&pki.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .args(["--tls-auth-clients", auth_clients])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/ensure-redis installs it)");
        let mut redis = TlsRedis { port, tls_port, pki, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in [port, tls_port] {
            while TcpStream::connect(("127.0.0.1", p)).is_err() {
                if let Ok(Some(status)) = redis.child.try_wait() {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!(
                        "redis-server exited ({status}) before it listened on {p}; it needs TLS \
                         support (Debian's redis-server has it). Its log:\n{log}"
                    );
                }
                assert!(Instant::now() < deadline, "redis-server never listened on port {p}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        redis
    }

    /// `rediss://127.0.0.1:<tls port>/` followed by `rest` (a query, a fragment).
    pub fn tls_url(&self, rest: &str) -> String {
        format!("rediss://127.0.0.1:{}/{rest}", self.tls_port)
    }

    /// The TLS URL trusting the test's CA.
    pub fn ca_url(&self) -> String {
        self.tls_url(&format!("?tls_ca={}", self.pki.ca.display()))
    }

    /// The TLS URL trusting the test's CA and presenting its client certificate.
    pub fn mtls_url(&self) -> String {
        self.tls_url(&format!(
            "?tls_ca={}&tls_cert={}&tls_key={}",
            self.pki.ca.display(),
            self.pki.client_cert.display(),
            self.pki.client_key.display()
        ))
    }

    /// The plain URL, with `credentials` (`user:password@`) before the host.
    pub fn plain_url(&self, credentials: &str) -> String {
        format!("redis://{credentials}127.0.0.1:{}", self.port)
    }

    /// Runs one command on the plain port as the default user (before a test turns it off).
    pub fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.plain_url("")).expect("a plain URL");
        let mut conn = client.get_connection().expect("connect to the test's redis-server");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Adds an ACL user with every command but only the keys and channel of the
    /// namespace `dmq`, as the README tells, and turns the default user off, so that
    /// only a connection that authenticates gets in.
    pub fn only_user(&self, user: &str, password: &str) {
        let password = format!(">{password}");
        self.command(&[
            "ACL",
            "SETUSER",
            user,
            "on",
            &password,
            "~{dmq:*",
            "~{dmq}:*",
            "~dmq:result:*",
            "&dmq:results",
            "+@all",
        ]);
        self.command(&["ACL", "SETUSER", "default", "off"]);
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The TLS flags every server here starts with: TLS only, for clients, replication and
/// the cluster bus alike; clients must present a certificate when `clients_need_certs`.
pub fn tls_args(pki: &Pki, clients_need_certs: bool) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    vec![
        "--port".into(),
        "0".into(),
        "--tls-cert-file".into(),
        path(&pki.server_cert),
        "--tls-key-file".into(),
        path(&pki.server_key),
        "--tls-ca-cert-file".into(),
        path(&pki.ca),
        "--tls-auth-clients".into(),
        (if clients_need_certs { "yes" } else { "no" }).into(),
        "--tls-replication".into(),
        "yes".into(),
    ]
}

/// `redis-cli` over TLS to `port`, with the test's CA and client certificate.
pub fn cli(pki: &Pki, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&pki.ca)
        .arg("--cert")
        .arg(&pki.client_cert)
        .arg("--key")
        .arg(&pki.client_key)
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Waits up to a minute for `done`, checking every 100 ms.
pub fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `N` distinct free ports, found together (each listener is held until all are).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> =
        (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("an address").port())
}

/// Servers of a test's own, killed and their directory removed when dropped.
pub struct Servers {
    pub pki: Pki,
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl Servers {
    pub fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dmq-{what}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a directory for the test's servers");
        let pki = Pki::generate(&dir);
        Servers { pki, dir, children: Vec::new() }
    }

    /// Starts `redis-server` with `args` (a configuration file first, for a sentinel)
    /// and waits until it answers on `port` over TLS.
    pub fn start(&mut self, port: u16, args: &[String]) {
        let log = self.dir.join(format!("redis-{port}.log"));
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/ensure-redis installs it)");
        self.children.push(child);
        let pki = &self.pki;
        wait(&format!("redis-server on {port} to answer over TLS"), || {
            cli(pki, port, &["ping"]).contains("PONG")
        });
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("the servers' logs and configuration are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Three masters speaking TLS only, with the cluster bus over TLS, made a cluster with
/// `redis-cli --tls --cluster create`. They ask clients for certificates.
pub fn tls_cluster() -> (Servers, [u16; 3]) {
    let mut servers = Servers::new("tls-cluster");
    let [p1, p2, p3, b1, b2, b3] = free_ports();
    let ports = [p1, p2, p3];
    for (port, bus) in ports.into_iter().zip([b1, b2, b3]) {
        let mut args = tls_args(&servers.pki, true);
        args.extend(
            [
                "--tls-port",
                &port.to_string(),
                "--cluster-enabled",
                "yes",
                "--tls-cluster",
                "yes",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .map(str::to_owned),
        );
        servers.start(port, &args);
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(nodes.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let created = cli(&servers.pki, ports[0], &args);
    assert!(created.contains("All 16384 slots covered"), "cluster create: {created}");
    for port in ports {
        wait("the cluster to be ok on every node", || {
            cli(&servers.pki, port, &["cluster", "info"]).contains("cluster_state:ok")
        });
    }
    (servers, ports)
}

/// A master and its replica speaking TLS only, watched by three sentinels that speak
/// TLS only and reach the master over TLS.
pub fn tls_sentinels() -> (Servers, [u16; 3]) {
    let mut servers = Servers::new("tls-sentinel");
    let [master, replica, s1, s2, s3] = free_ports();
    let plain = ["--save", "", "--appendonly", "no"].map(str::to_owned);
    let mut args = tls_args(&servers.pki, false);
    args.extend(["--tls-port".to_owned(), master.to_string()]);
    args.extend(plain.clone());
    servers.start(master, &args);
    let mut args = tls_args(&servers.pki, false);
    args.extend(["--tls-port".to_owned(), replica.to_string()]);
    args.extend(["--replicaof", "127.0.0.1", &master.to_string()].map(str::to_owned));
    args.extend(plain);
    servers.start(replica, &args);
    wait("the replica to sync over TLS", || {
        cli(&servers.pki, replica, &["info", "replication"]).contains("master_link_status:up")
    });
    let sentinels = [s1, s2, s3];
    for port in sentinels {
        let conf = servers.dir.join(format!("sentinel-{port}.conf"));
        let text = format!(
            "sentinel monitor mymaster 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 5000\n"
        );
        std::fs::write(&conf, text).expect("write a sentinel's configuration");
        let mut args = vec![conf.display().to_string(), "--sentinel".to_owned()];
        args.extend(tls_args(&servers.pki, false));
        args.extend(["--tls-port".to_owned(), port.to_string()]);
        servers.start(port, &args);
    }
    for port in sentinels {
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            let info = cli(&servers.pki, port, &["sentinel", "master", "mymaster"]);
            let lines: Vec<&str> = info.lines().collect();
            let field = |name: &str| {
                lines.iter().position(|l| *l == name).and_then(|i| lines.get(i + 1)).copied()
            };
            if field("num-slaves") == Some("1") && field("num-other-sentinels") == Some("2") {
                break;
            }
            assert!(
                Instant::now() < give_up,
                "sentinel {port} never knew the replica and the other sentinels: {info}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    (servers, sentinels)
}
