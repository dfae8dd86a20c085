//! Redis URLs, read in one place for the broker, the result backend and the `dmq`
//! command: `redis://`, `rediss://` (TLS) with dmq's TLS options, ACL users, and how to
//! show a URL without its password.

use std::fmt;
use std::path::Path;

use dmq_core::{Error, Result};
use redis::{Client, ClientTlsConfig, TlsCertificates, TlsMode};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The query parameters dmq reads from a `rediss://` URL (and takes out of it before
/// redis-rs sees it).
const TLS_CA: &str = "tls_ca";
const TLS_CERT: &str = "tls_cert";
const TLS_KEY: &str = "tls_key";

/// How a Redis URL is written, for error messages.
const FORMS: &str = "write it as redis://[[user]:password@]host[:port][/db], \
                     rediss://[[user]:password@]host[:port][/db][?tls_ca=FILE][&tls_cert=FILE&tls_key=FILE] \
                     redis+cluster://[[user]:password@]host:port[,host:port...] \
                     or redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db] \
                     (rediss+cluster:// and rediss+sentinel:// for TLS, with the same options as rediss://)";

/// How a Sentinel URL is written, for error messages.
const SENTINEL_FORM: &str = "write it as redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db], \
                             naming the sentinels and the name they monitor the master by \
                             (rediss+sentinel://...[?tls_ca=FILE][&tls_cert=FILE&tls_key=FILE] for TLS)";

/// How a Redis Cluster URL is written, for error messages.
const CLUSTER_FORM: &str = "write it as redis+cluster://[[user]:password@]host:port[,host:port...], \
                            naming one or more of the cluster's nodes \
                            (rediss+cluster://...[?tls_ca=FILE][&tls_cert=FILE&tls_key=FILE] for TLS)";

/// A Redis URL, read and checked: the redis-rs client it makes, and the URL as it may
/// be shown (without its password).
///
/// [`RedisBroker::connect`](crate::RedisBroker::connect) and
/// [`RedisBackend::connect`](crate::RedisBackend::connect) read their URL through this;
/// tools that need a plain connection to the same Redis use it too, so that every
/// option below works everywhere.
///
/// | URL | meaning |
/// | --- | --- |
/// | `redis://host:6379/0` | plain TCP, database 0 |
/// | `redis://user:password@host:6379` | authenticate as the ACL user `user` (`redis://:password@host` for the `default` user) |
/// | `rediss://host:6380` | TLS, checking the server's certificate against the system's trusted roots |
/// | `rediss://host:6380?tls_ca=/etc/dmq/ca.pem` | TLS, trusting the certificate authorities in this PEM file instead |
/// | `rediss://host:6380?tls_ca=ca.pem&tls_cert=client.pem&tls_key=client.key` | mutual TLS: also present this client certificate and its private key (PEM) |
/// | `rediss://host:6380/#insecure` | TLS without checking the server's certificate at all: for tests only |
/// | `redis+cluster://host1:7000,host2:7001` | a Redis Cluster, found through any of the nodes named (the others are discovered) |
/// | `redis+cluster://user:password@host1:7000,host2:7001` | a Redis Cluster whose nodes share these credentials |
/// | `redis+sentinel://host1:26379,host2:26379/mymaster` | the master the sentinels know as `mymaster`, found through them and followed through a failover |
/// | `redis+sentinel://user:password@host1:26379/mymaster/2` | its database 2, logging in to the master (and, after a failover, to the new one) with these credentials |
/// | `rediss+cluster://host1:7000,host2:7001?tls_ca=ca.pem` | a Redis Cluster over TLS: every node, found or named, is reached over TLS with these options |
/// | `rediss+sentinel://host1:26379/mymaster?tls_ca=ca.pem` | the sentinels and the master, both over TLS with these options |
///
/// A cluster has database 0 only, so a cluster URL names none. A plain `redis://` (or
/// `rediss://`) URL that reaches a node of a cluster works too: the broker and the
/// backend see `cluster_enabled:1` when they connect and speak to the whole cluster,
/// over TLS with the URL's options when it is `rediss://`. The TLS options and
/// `#insecure` mean the same on every TLS scheme.
///
/// Paths may be relative to the working directory; percent-encode characters such as
/// `&`, `#` or spaces in them, and in passwords.
///
/// ```
/// let url = dmq_redis::RedisUrl::parse("redis://app:secret@127.0.0.1:6379/0")?;
/// assert_eq!(url.shown(), "redis://app:***@127.0.0.1:6379/0");
/// # Ok::<(), dmq_core::Error>(())
/// ```
pub struct RedisUrl {
    shown: String,
    /// The server's client; for a cluster, the first node's.
    client: Client,
    insecure: bool,
    /// For a cluster: every node the URL names, as `redis://` URLs with the credentials.
    cluster: Option<Vec<String>>,
    /// For Sentinel: the sentinels, the master's name, and how to log in to it.
    sentinel: Option<SentinelSpec>,
    /// For a TLS URL: how the servers' certificates are checked.
    tls: Option<Tls>,
}

/// The TLS settings of a URL: whether the servers' certificates go unchecked
/// (`#insecure`), and the certificates its options name.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) insecure: bool,
    pub(crate) certificates: Option<TlsCertificates>,
}

impl Tls {
    /// redis-rs's name for how certificates are checked.
    pub(crate) fn mode(&self) -> TlsMode {
        if self.insecure { TlsMode::Insecure } else { TlsMode::Secure }
    }
}

/// What a `redis+sentinel://` URL names.
#[derive(Clone)]
pub(crate) struct SentinelSpec {
    /// The sentinels' addresses.
    pub(crate) sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master by.
    pub(crate) master: String,
    pub(crate) db: i64,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    /// TLS to the sentinels and to the master (`rediss+sentinel://`).
    pub(crate) tls: Option<Tls>,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("url", &self.shown)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl RedisUrl {
    /// Reads `url`, and the certificate and key files its TLS options name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a URL that does not parse, an unknown `tls_*`
    /// option, TLS options on a URL that is not `rediss://`, `tls_cert` without
    /// `tls_key` (or the reverse), and a file that cannot be read or holds no PEM
    /// certificate or key; each message names the option and the file.
    pub fn parse(url: &str) -> Result<Self> {
        let shown = redact(url);
        let invalid = |what: String| Error::InvalidArgument(format!("{shown}: {what}"));
        if let Some((scheme, rest)) = url.split_once("://") {
            if scheme.ends_with("+cluster") {
                return parse_cluster(scheme, rest, shown.clone()).map_err(invalid);
            }
            if scheme.ends_with("+sentinel") {
                return parse_sentinel(scheme, rest, shown.clone()).map_err(invalid);
            }
        }
        let parsed =
            url::Url::parse(url).map_err(|e| invalid(format!("not a Redis URL ({e}); {FORMS}")))?;
        let tls = scheme_is_tls(parsed.scheme());
        let insecure = tls && parsed.fragment() == Some("insecure");

        let mut options = TlsOptions::default();
        let mut others = Vec::new();
        for (key, value) in parsed.query_pairs() {
            let slot = match key.as_ref() {
                TLS_CA => &mut options.ca,
                TLS_CERT => &mut options.cert,
                TLS_KEY => &mut options.key,
                unknown if unknown.starts_with("tls_") => {
                    return Err(invalid(format!(
                        "unknown TLS option {unknown:?}; dmq reads {TLS_CA}, {TLS_CERT} and {TLS_KEY}"
                    )));
                }
                _ => {
                    others.push((key.into_owned(), value.into_owned()));
                    continue;
                }
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(invalid(format!("{key} is given twice")));
            }
        }

        let mut certificates = None;
        let client = if options.is_empty() {
            Client::open(url)
        } else {
            if !tls {
                return Err(invalid(format!(
                    "TLS options ({}) need a rediss:// URL; this one is {}://",
                    options.names(),
                    parsed.scheme()
                )));
            }
            let read = options.read().map_err(&invalid)?;
            certificates = Some(read.clone());
            // redis-rs ignores query parameters it does not know; take dmq's out anyway,
            // so that none of them can ever mean something else to it.
            let mut stripped = parsed.clone();
            if others.is_empty() {
                stripped.set_query(None);
            } else {
                stripped.query_pairs_mut().clear().extend_pairs(&others);
            }
            Client::build_with_tls(stripped.as_str(), read)
        }
        .map_err(|e| invalid(format!("not a Redis URL ({e}); {FORMS}")))?;

        let tls = tls.then_some(Tls { insecure, certificates });
        started_tls(tls.as_ref(), &shown);
        Ok(RedisUrl { shown, client, insecure, cluster: None, sentinel: None, tls })
    }

    /// The redis-rs client for this URL, with its TLS settings.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The redis-rs client for this URL.
    #[must_use]
    pub fn into_client(self) -> Client {
        self.client
    }

    /// The URL as it may be shown in logs and messages: its password is `***`.
    #[must_use]
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether the URL names a Redis Cluster (`redis+cluster://`).
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// What a Sentinel URL names.
    pub(crate) fn sentinel(&self) -> Option<&SentinelSpec> {
        self.sentinel.as_ref()
    }

    /// Whether the URL names a master through Sentinel (`redis+sentinel://`).
    #[must_use]
    pub fn is_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }

    /// The TLS settings of a TLS URL (`rediss://`, `rediss+cluster://`,
    /// `rediss+sentinel://`).
    pub(crate) fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The nodes of a cluster URL, as `redis://` (or `rediss://`) URLs with their
    /// credentials.
    pub(crate) fn cluster_nodes(&self) -> Option<&[String]> {
        self.cluster.as_deref()
    }

    /// Whether the server's certificate goes unchecked (`rediss://...#insecure`).
    #[must_use]
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }
}

/// Reads the part after `scheme://` of a cluster URL:
/// `[[user]:password@]host:port[,host:port...][/0][?tls options][#insecure]`.
fn parse_cluster(scheme: &str, rest: &str, shown: String) -> std::result::Result<RedisUrl, String> {
    let tls = match scheme {
        "redis+cluster" | "valkey+cluster" => false,
        "rediss+cluster" | "valkeys+cluster" => true,
        other => return Err(format!("unknown scheme {other}://; {CLUSTER_FORM}")),
    };
    let (credentials, rest) = split_credentials(rest);
    let (rest, query, fragment) = split_options(rest);
    let tls = tls_of(scheme, tls, query, fragment, CLUSTER_FORM)?;
    let end = rest.find('/').unwrap_or(rest.len());
    let (hosts, tail) = rest.split_at(end);
    match tail {
        "" | "/" | "/0" => {}
        _ => {
            return Err(format!(
                "a Redis Cluster has database 0 only, so its URL names none (not {tail}); \
                 {CLUSTER_FORM}"
            ));
        }
    }
    // Each node's URL carries the credentials, encoded again for it.
    let userinfo = match credentials.map(user_and_password) {
        None => String::new(),
        Some((user, password)) => {
            let encode = |text: &str| {
                percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            let user = user.as_deref().map(encode).unwrap_or_default();
            match password {
                Some(password) => format!("{user}:{}@", encode(&password)),
                None => format!("{user}@"),
            }
        }
    };
    let (node_scheme, node_fragment) = match &tls {
        None => ("redis", ""),
        Some(tls) if tls.insecure => ("rediss", "/#insecure"),
        Some(_) => ("rediss", ""),
    };
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        let port = host.rsplit_once(':').map(|(_, port)| port);
        if host.is_empty() || port.is_none_or(|p| p.parse::<u16>().is_err()) {
            return Err(format!("{host:?} is not a host:port; {CLUSTER_FORM}"));
        }
        nodes.push(format!("{node_scheme}://{userinfo}{host}{node_fragment}"));
    }
    let client = Client::open(nodes[0].as_str())
        .map_err(|e| format!("not a Redis Cluster URL ({e}); {CLUSTER_FORM}"))?;
    // Each node's URL must also read as one, for the cluster client.
    for node in &nodes[1..] {
        Client::open(node.as_str())
            .map_err(|e| format!("not a Redis Cluster URL ({e}); {CLUSTER_FORM}"))?;
    }
    started_tls(tls.as_ref(), &shown);
    let insecure = tls.as_ref().is_some_and(|tls| tls.insecure);
    Ok(RedisUrl { shown, client, insecure, cluster: Some(nodes), sentinel: None, tls })
}

/// Reads the part after `scheme://` of a Sentinel URL:
/// `[[user]:password@]host:port[,host:port...]/MASTER[/db][?tls options][#insecure]`.
fn parse_sentinel(
    scheme: &str,
    rest: &str,
    shown: String,
) -> std::result::Result<RedisUrl, String> {
    let tls = match scheme {
        "redis+sentinel" | "valkey+sentinel" => false,
        "rediss+sentinel" | "valkeys+sentinel" => true,
        other => return Err(format!("unknown scheme {other}://; {SENTINEL_FORM}")),
    };
    let (credentials, rest) = split_credentials(rest);
    let (rest, query, fragment) = split_options(rest);
    let client_certificate = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(key, _)| key == TLS_CERT);
    if tls && fragment == Some("insecure") && client_certificate {
        // redis-rs presents no client certificate through Sentinel without checks.
        return Err(format!(
            "#insecure with {TLS_CERT} and {TLS_KEY}: through Sentinel, a connection that \
             skips the certificate checks presents no client certificate; give {TLS_CA} \
             instead of #insecure"
        ));
    }
    let tls = tls_of(scheme, tls, query, fragment, SENTINEL_FORM)?;
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (username, password) = credentials.map(user_and_password).unwrap_or_default();
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        let parsed = host.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)));
        // An IPv6 address is written in brackets, which a socket address has not.
        let parsed = parsed
            .map(|(h, p)| (h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h), p));
        match parsed {
            Some((h, port)) if !h.is_empty() => sentinels.push((h.to_owned(), port)),
            _ => return Err(format!("{host:?} is not a host:port; {SENTINEL_FORM}")),
        }
    }
    let mut parts = path.split('/');
    let master = parts.next().unwrap_or_default();
    if master.is_empty() {
        return Err(format!("the URL names no master; {SENTINEL_FORM}"));
    }
    let db = match parts.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse::<i64>()
            .map_err(|_| format!("{db:?} is not a database number; {SENTINEL_FORM}"))?,
    };
    if parts.next().is_some() {
        return Err(format!("too many parts after the master's name; {SENTINEL_FORM}"));
    }
    let (host, port) = &sentinels[0];
    let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let client = Client::open(format!("redis://{host}:{port}"))
        .map_err(|e| format!("not a Sentinel URL ({e}); {SENTINEL_FORM}"))?;
    let master = percent_encoding::percent_decode_str(master).decode_utf8_lossy().into_owned();
    started_tls(tls.as_ref(), &shown);
    let insecure = tls.as_ref().is_some_and(|tls| tls.insecure);
    let spec = SentinelSpec { sentinels, master, db, username, password, tls: tls.clone() };
    Ok(RedisUrl { shown, client, insecure, cluster: None, sentinel: Some(spec), tls })
}

/// `rest` (after the user information) split at its options: what comes before them,
/// the query (after `?`) and the fragment (after `#`).
fn split_options(rest: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query), fragment),
        None => (rest, None, fragment),
    }
}

/// The TLS settings of a cluster or Sentinel URL: with a TLS `scheme`, its options
/// (`tls_ca`, `tls_cert`, `tls_key`) read and their files checked, and `#insecure`;
/// without, none may be given. `form` says how the URL is written.
fn tls_of(
    scheme: &str,
    tls: bool,
    query: Option<&str>,
    fragment: Option<&str>,
    form: &str,
) -> std::result::Result<Option<Tls>, String> {
    // Nothing of the query or the fragment is repeated in a message: a password with
    // an unencoded `?` or `#` would continue there.
    let query = query.unwrap_or_default();
    let fragment = fragment.unwrap_or_default();
    if !tls {
        if query.is_empty() && fragment.is_empty() {
            return Ok(None);
        }
        let secure = scheme.replacen("+", "s+", 1);
        return Err(format!(
            "a {scheme}:// URL takes no options (after ? or #); TLS and its options need \
             {secure}:// (percent-encode a ? or # in a password); {form}"
        ));
    }
    let insecure = match fragment {
        "" => false,
        "insecure" => true,
        _ => {
            return Err(
                "unknown fragment after #; #insecure (skip the certificate checks, for tests \
                 only) is the one there is (percent-encode a # in a password)"
                    .to_owned(),
            );
        }
    };
    let mut options = TlsOptions::default();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            TLS_CA => &mut options.ca,
            TLS_CERT => &mut options.cert,
            TLS_KEY => &mut options.key,
            other => {
                let named =
                    if other.starts_with("tls_") { format!(" {other:?}") } else { String::new() };
                return Err(format!(
                    "unknown option{named}; a {scheme}:// URL takes {TLS_CA}, {TLS_CERT} and \
                     {TLS_KEY} (percent-encode a ? in a password)"
                ));
            }
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(format!("{key} is given twice"));
        }
    }
    let certificates = if options.is_empty() { None } else { Some(options.read()?) };
    Ok(Some(Tls { insecure, certificates }))
}

/// Readies rustls for a URL with TLS, and warns about one without certificate checks.
fn started_tls(tls: Option<&Tls>, shown: &str) {
    let Some(tls) = tls else { return };
    install_crypto_provider();
    if tls.insecure {
        tracing::warn!(
            url = %shown,
            "TLS without certificate checks (#insecure): anyone on the network path can \
             read and change the traffic; use it for tests only"
        );
    }
}

/// `rest` (after `scheme://`) split into its user information, the text before the
/// last `@` ahead of any `?` or `#` (so that a password may hold `/`, even unencoded),
/// and what follows.
fn split_credentials(rest: &str) -> (Option<&str>, &str) {
    match userinfo_end(rest) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    }
}

/// Where the user information of `rest` (after `scheme://`) ends: the last `@` ahead
/// of any `?` or `#`, or else, for a password holding an unencoded `?` or `#`, the
/// first `@` when neither `/` nor `=` comes before it (an `@` in an option's value,
/// `?tls_ca=ca@x.pem`, has an `=` before it).
fn userinfo_end(rest: &str) -> Option<usize> {
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    rest[..end].rfind('@').or_else(|| {
        let at = rest.find('@')?;
        (!rest[..at].contains(['/', '='])).then_some(at)
    })
}

/// User information `[user][:password]`, percent-decoded: the user (none when empty)
/// and the password.
fn user_and_password(userinfo: &str) -> (Option<String>, Option<String>) {
    let decode =
        |text: &str| percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned();
    match userinfo.split_once(':') {
        Some((user, password)) => {
            ((!user.is_empty()).then(|| decode(user)), Some(decode(password)))
        }
        None => (None, Some(decode(userinfo))),
    }
}

/// `rediss://` and its Valkey spelling, as redis-rs reads them.
fn scheme_is_tls(scheme: &str) -> bool {
    matches!(scheme, "rediss" | "valkeys")
}

/// The paths a URL's TLS options name.
#[derive(Default)]
struct TlsOptions {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl TlsOptions {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    fn names(&self) -> String {
        [(TLS_CA, &self.ca), (TLS_CERT, &self.cert), (TLS_KEY, &self.key)]
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads the files, checking that each holds what its option says.
    fn read(&self) -> std::result::Result<TlsCertificates, String> {
        let root_cert = match &self.ca {
            Some(path) => Some(read_certificates(
                TLS_CA,
                path,
                "the certificate of the authority that signed the Redis server's certificate",
            )?),
            None => None,
        };
        let client_tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read_certificates(
                    TLS_CERT,
                    cert,
                    "this client's certificate (and any intermediates)",
                )?,
                client_key: read_key(key)?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(format!(
                    "{TLS_CERT} needs {TLS_KEY}, the file of the client certificate's private key"
                ));
            }
            (None, Some(_)) => {
                return Err(format!(
                    "{TLS_KEY} needs {TLS_CERT}, the file of the client certificate it belongs to"
                ));
            }
        };
        Ok(TlsCertificates { client_tls, root_cert })
    }
}

fn read_file(option: &str, path: &str, holding: &str) -> std::result::Result<Vec<u8>, String> {
    std::fs::read(Path::new(path)).map_err(|e| {
        format!("cannot read {path} ({option}): {e}; give the path of a PEM file holding {holding}")
    })
}

/// The PEM file at `path`, checked to hold at least one certificate.
fn read_certificates(
    option: &str,
    path: &str,
    holding: &str,
) -> std::result::Result<Vec<u8>, String> {
    let pem = read_file(option, path, holding)?;
    let found = CertificateDer::pem_slice_iter(&pem).collect::<std::result::Result<Vec<_>, _>>();
    match found {
        Ok(certificates) if !certificates.is_empty() => Ok(pem),
        Ok(_) => Err(format!(
            "{path} ({option}) holds no PEM certificate (-----BEGIN CERTIFICATE-----); it \
             should hold {holding}"
        )),
        Err(e) => Err(format!(
            "{path} ({option}) is not a valid PEM file ({e}); it should hold {holding}"
        )),
    }
}

/// The PEM file at `path`, checked to hold a private key.
fn read_key(path: &str) -> std::result::Result<Vec<u8>, String> {
    let holding = "the private key of the client certificate (PKCS#8, PKCS#1 or SEC1)";
    let pem = read_file(TLS_KEY, path, holding)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(_) => Ok(pem),
        Err(e) => Err(format!(
            "{path} ({TLS_KEY}) holds no PEM private key ({e}); it should hold {holding}"
        )),
    }
}

/// rustls needs a process-wide crypto provider. It picks one by itself when exactly
/// one is built in; an application that also links another (aws-lc-rs, say) would
/// panic at the first TLS connection, so dmq installs aws-lc-rs (rustls's default) unless one was installed.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // An error means another thread installed one first, which serves as well.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// `url` with any password replaced by `***`, for logs and messages: `redis://user:***@host`.
/// User information without a `:` is hidden whole, in case it was meant as a password.
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    // A `password=` in the query (as some clients take it) is hidden too.
    let hidden;
    let rest = match rest.find("password=") {
        Some(at) => {
            let value = at + "password=".len();
            let end = rest[value..].find(['&', '#']).map_or(rest.len(), |end| value + end);
            hidden = format!("{}***{}", &rest[..value], &rest[end..]);
            hidden.as_str()
        }
        None => rest,
    };
    // The user information ends at the last `@` ahead of the query: a password may
    // hold a `/` that was not percent-encoded, and must stay hidden then too.
    match userinfo_end(rest) {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => format!("{scheme}://***{}", &rest[at..]),
        },
        None => format!("{scheme}://{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that `url` is refused with a message holding each of `expected`.
    fn refused_saying(url: &str, expected: &[&str]) {
        let message = refused(url);
        for e in expected {
            assert!(message.contains(e), "{url}: expected {e:?} in {message}");
        }
    }

    fn refused(url: &str) -> String {
        match RedisUrl::parse(url) {
            Ok(parsed) => panic!("{url} was accepted: {parsed:?}"),
            Err(Error::InvalidArgument(message)) => message,
            Err(other) => panic!("{url}: not an InvalidArgument: {other}"),
        }
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("redis://:secret@db:6379/0"), "redis://:***@db:6379/0");
        assert_eq!(redact("rediss://app:secret@db:6379"), "rediss://app:***@db:6379");
        assert_eq!(redact("redis://me:s@cret@host"), "redis://me:***@host");
        assert_eq!(redact("redis://secret@host"), "redis://***@host");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact("rediss://a:pw@h:1/0?tls_ca=/x@y/ca.pem#insecure"),
            "rediss://a:***@h:1/0?tls_ca=/x@y/ca.pem#insecure"
        );
        assert_eq!(redact("rediss://h:1?tls_ca=/x@y"), "rediss://h:1?tls_ca=/x@y");
        assert_eq!(redact("redis://h:1/?password=s3cret&x=1"), "redis://h:1/?password=***&x=1");
        assert_eq!(redact("redis+cluster://:p#ss?w@h:1,h:2"), "redis+cluster://:***@h:1,h:2");
    }

    #[test]
    fn plain_and_tls_urls_parse() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "redis://app:secret@127.0.0.1:6379",
            "rediss://127.0.0.1:6380",
            "rediss://127.0.0.1:6380/#insecure",
            "redis+unix:///tmp/redis.sock",
        ] {
            let parsed = RedisUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(parsed.is_insecure(), url.ends_with("#insecure"), "{url}");
        }
    }

    #[test]
    fn acl_users_reach_the_client() {
        let url = RedisUrl::parse("redis://app%40x:p%40ss@127.0.0.1:6379").expect("parses");
        let info = url.client().get_connection_info().redis_settings();
        assert_eq!(info.username(), Some("app@x"));
        assert_eq!(info.password(), Some("p@ss"));
        assert!(!format!("{url:?}").contains("p%40ss"), "{url:?}");
    }

    #[test]
    fn cluster_urls_name_their_nodes() {
        let url = RedisUrl::parse("redis+cluster://app:pw@10.0.0.1:7000,10.0.0.2:7001").unwrap();
        assert!(url.is_cluster());
        assert_eq!(
            url.cluster_nodes(),
            Some(
                &[
                    "redis://app:pw@10.0.0.1:7000".to_owned(),
                    "redis://app:pw@10.0.0.2:7001".to_owned()
                ][..]
            )
        );
        assert_eq!(url.shown(), "redis+cluster://app:***@10.0.0.1:7000,10.0.0.2:7001");
        assert!(!format!("{url:?}").contains("pw"), "{url:?}");
        assert!(!RedisUrl::parse("redis://127.0.0.1:6379").unwrap().is_cluster());
        for (bad, expected) in [
            ("redis+cluster://h1:7000,,h2:7001", "is not a host:port"),
            ("redis+cluster://h1", "is not a host:port"),
            ("redis+cluster://h1:7000/3", "database 0 only"),
            ("redis+cluster://h1:7000?tls_ca=x", "need rediss+cluster://"),
            ("redis+cluster://h1:7000#insecure", "takes no options"),
        ] {
            refused_saying(bad, &[expected, "redis+cluster://"]);
        }
    }

    #[test]
    fn sentinel_urls_name_their_sentinels_and_master() {
        let url =
            RedisUrl::parse("redis+sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2:26380/mymaster/2")
                .unwrap();
        assert!(url.is_sentinel() && !url.is_cluster());
        let spec = url.sentinel().expect("a sentinel spec");
        assert_eq!(
            spec.sentinels,
            [("10.0.0.1".to_owned(), 26379), ("10.0.0.2".to_owned(), 26380)]
        );
        assert_eq!((spec.master.as_str(), spec.db), ("mymaster", 2));
        assert_eq!(
            (spec.username.as_deref(), spec.password.as_deref()),
            (Some("app"), Some("p@ss"))
        );
        assert_eq!(
            url.shown(),
            "redis+sentinel://app:***@10.0.0.1:26379,10.0.0.2:26380/mymaster/2"
        );
        let bare = RedisUrl::parse("redis+sentinel://127.0.0.1:26379/m").unwrap();
        assert_eq!(bare.sentinel().map(|s| s.db), Some(0));
        for (bad, expected) in [
            ("redis+sentinel://h1:26379", "names no master"),
            ("redis+sentinel://h1:26379/", "names no master"),
            ("redis+sentinel://h1/m", "is not a host:port"),
            ("redis+sentinel://h1:26379/m/x", "not a database number"),
            ("redis+sentinel://h1:26379/m/0/more", "too many parts"),
            ("redis+sentinel://h1:26379/m?x=1", "takes no options"),
            ("redis+sentinel://h1:26379/m?tls_ca=x", "need rediss+sentinel://"),
        ] {
            refused_saying(bad, &[expected, "redis+sentinel://"]);
        }
    }

    #[test]
    fn tls_cluster_and_sentinel_urls_take_the_tls_options() {
        let url = RedisUrl::parse("rediss+cluster://app:pw@h1:7000,h2:7001").unwrap();
        assert!(url.is_cluster() && !url.is_insecure());
        assert!(url.tls().is_some_and(|tls| !tls.insecure && tls.certificates.is_none()));
        assert_eq!(
            url.cluster_nodes().map(<[String]>::to_vec),
            Some(vec!["rediss://app:pw@h1:7000".to_owned(), "rediss://app:pw@h2:7001".to_owned()])
        );
        let url = RedisUrl::parse("rediss+cluster://h1:7000/#insecure").unwrap();
        assert!(url.is_insecure());
        assert_eq!(
            url.cluster_nodes().map(|n| n[0].clone()).as_deref(),
            Some("rediss://h1:7000/#insecure")
        );
        let url = RedisUrl::parse("rediss+sentinel://:pw@h1:26379/m/1#insecure").unwrap();
        let spec = url.sentinel().expect("a sentinel spec");
        assert!(spec.tls.as_ref().is_some_and(|tls| tls.insecure));
        assert_eq!((spec.master.as_str(), spec.db), ("m", 1));
        assert!(RedisUrl::parse("redis+sentinel://h1:26379/m").unwrap().tls().is_none());

        let dir = std::env::temp_dir().join(format!("dmq-url-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "no certificate here").unwrap();
        for (bad, expected) in [
            ("rediss+cluster://h1:7000?tls_cafile=x", "unknown option \"tls_cafile\""),
            ("rediss+cluster://:pw@h1:7000?password=hunter2", "unknown option;"),
            ("redis+cluster://:pw@h1:7000?password=hunter2", "takes no options"),
            (
                "rediss+sentinel://h1:26379/m?tls_cert=c&tls_key=k#insecure",
                "presents no client certificate",
            ),
            ("rediss+cluster://h1:7000?tls_ca=a&tls_ca=b", "tls_ca is given twice"),
            ("rediss+cluster://h1:7000#secure", "unknown fragment after #"),
            (
                "rediss+cluster://h1:7000?tls_ca=/nonexistent/dmq/ca.pem",
                "cannot read /nonexistent/dmq/ca.pem (tls_ca)",
            ),
            ("rediss+sentinel://:hunter2@h1:26379/m?tls_cert=c.pem", "tls_cert needs tls_key"),
            (
                &format!("rediss+sentinel://h1:26379/m?tls_ca={}", not_pem.display()),
                "holds no PEM certificate",
            ),
        ] {
            let message = refused(bad);
            assert!(message.contains(expected), "{bad}: expected {expected:?} in {message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn passwords_with_url_characters_stay_whole_and_hidden() {
        // Unencoded ? and # in a password: still the password, and never shown.
        let url = RedisUrl::parse("redis+sentinel://:p?ss#w@h1:26379/m").unwrap();
        assert_eq!(url.sentinel().and_then(|s| s.password.clone()).as_deref(), Some("p?ss#w"));
        assert_eq!(url.shown(), "redis+sentinel://:***@h1:26379/m");
        let url = RedisUrl::parse("redis+cluster://app:p#w@h1:7000").unwrap();
        assert!(!format!("{url:?}").contains("p#w"), "{url:?}");
        // An `@` in an option's value is no user information (`userinfo_end`).
        assert_eq!(
            redact("rediss+cluster://h1:7000?tls_ca=ca@x.pem"),
            "rediss+cluster://h1:7000?tls_ca=ca@x.pem"
        );
        let url = RedisUrl::parse("redis+sentinel://:p&ss@h1:26379/m").unwrap();
        assert_eq!(url.sentinel().and_then(|s| s.password.clone()).as_deref(), Some("p&ss"));
        let url = RedisUrl::parse("redis+sentinel://app:sec/ret@h1:26379/m").unwrap();
        assert_eq!(url.sentinel().and_then(|s| s.password.clone()).as_deref(), Some("sec/ret"));
        assert!(!url.shown().contains("sec"), "{}", url.shown());
        let url = RedisUrl::parse("redis+cluster://:sec/r%40t@h1:7000,h2:7001").unwrap();
        let node = url.cluster_nodes().map(|n| n[0].clone()).unwrap_or_default();
        let info =
            Client::open(node.as_str()).unwrap().get_connection_info().redis_settings().clone();
        assert_eq!(info.password(), Some("sec/r@t"));
        assert!(!url.shown().contains("sec"), "{}", url.shown());
        for bad in ["redis+cluster://:sec/ret@h1:7000/3", "redis+sentinel://:sec/ret@h1/m"] {
            let message = refused(bad);
            assert!(!message.contains("sec"), "{message}");
        }
        assert_eq!(redact("redis://:sec/ret@h:1/0"), "redis://:***@h:1/0");
    }

    #[test]
    fn ipv6_sentinels_lose_their_brackets() {
        let url = RedisUrl::parse("redis+sentinel://[::1]:26379,[fe80::2]:26380/m").unwrap();
        let hosts: Vec<&str> = url
            .sentinel()
            .map(|s| s.sentinels.iter().map(|(h, _)| h.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(hosts, ["::1", "fe80::2"]);
    }

    #[test]
    fn missing_files_are_named() {
        let message = refused("rediss://:pw@127.0.0.1:6380?tls_ca=/nonexistent/ca.pem");
        assert!(message.contains("/nonexistent/ca.pem") && message.contains("tls_ca"), "{message}");
        assert!(message.contains("give the path of a PEM file"), "{message}");
        assert!(!message.contains("pw@"), "{message}");
    }

    #[test]
    fn nonsense_is_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("dmq-url-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").expect("writes");
        let not_pem = not_pem.display();

        let cases = [
            (format!("rediss://h:1?tls_ca={not_pem}"), "holds no PEM certificate"),
            (
                format!("rediss://h:1?tls_cert={not_pem}&tls_key={not_pem}"),
                "holds no PEM certificate",
            ),
            (format!("rediss://h:1?tls_cert={not_pem}"), "tls_cert needs tls_key"),
            (format!("rediss://h:1?tls_key={not_pem}"), "tls_key needs tls_cert"),
            (format!("redis://h:1?tls_ca={not_pem}"), "need a rediss:// URL"),
            ("rediss://h:1?tls_cafile=x".to_owned(), "unknown TLS option \"tls_cafile\""),
            ("rediss://h:1?tls_ca=a&tls_ca=b".to_owned(), "tls_ca is given twice"),
            ("rediss://h:1/#secure".to_owned(), "#insecure"),
            ("nonsense".to_owned(), "redis://"),
        ];
        for (url, expected) in cases {
            let message = refused(&url);
            assert!(message.contains(expected), "{url}: expected {expected:?} in {message}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
