//! `dmq serve` as a client meets it: a real server process on the test Redis, a real
//! HTTP client, real tokens, JWTs, certificates and signals. Each test serves a fresh
//! namespace, deleted when it ends.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Namespace;
use common::served::Served;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A token with every scope.
const ADMIN: &str = "admin-token-0123456789abcdef";
/// A token that may only produce.
const PRODUCER: &str = "producer-token-0123456789abcdef";
/// A token that may only consume, and only queue `work`.
const WORKER: &str = "worker-token-0123456789abcdef";
/// A token for another namespace.
const ELSEWHERE: &str = "elsewhere-token-0123456789abcdef";
/// The HS256 secret.
const SECRET: &[u8] = b"an HS256 secret of at least thirty-two bytes";

/// Starts `dmq serve` on namespace `ns` with `extra` arguments, and the tokens file
/// and HS256 secret of [`files`] unless `extra` says `--insecure-no-auth` or
/// `--jwt-rs256-key`.
fn serve(ns: &str, extra: &[&str]) -> Served {
    let dir = Served::dir();
    let mut args: Vec<String> = Vec::new();
    if !extra.contains(&"--insecure-no-auth") && !extra.contains(&"--jwt-rs256-key") {
        let (tokens, secret) = files(&dir, ns);
        args.extend(["--tokens".to_owned(), tokens.display().to_string()]);
        args.extend(["--jwt-hs256-secret".to_owned(), secret.display().to_string()]);
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Served::start(ns, dir, &args, "debug,h2=info,hyper=info,rustls=info")
}

/// Writes the tokens file and the HS256 secret into `dir`.
fn files(dir: &Path, ns: &str) -> (PathBuf, PathBuf) {
    let tokens = json!({"tokens": [
        {"name": "ops", "token": ADMIN, "scopes": ["produce", "consume", "admin"]},
        {"name": "shop", "token": PRODUCER, "scopes": ["produce"], "namespaces": [ns]},
        {"name": "runner", "token": WORKER, "scopes": ["consume"], "queues": ["work"]},
        {"name": "other", "token": ELSEWHERE, "scopes": ["produce"], "namespaces": ["not-this-one"]},
    ]});
    let tokens_path = dir.join("tokens.json");
    std::fs::write(&tokens_path, tokens.to_string()).unwrap();
    let secret_path = dir.join("secret");
    std::fs::write(&secret_path, SECRET).unwrap();
    (tokens_path, secret_path)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// Sends `body` to `path` with `token` and returns the status and the JSON answer.
async fn post(
    served: &Served,
    token: Option<&str>,
    path: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let mut request = client().post(served.url(path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(request).await
}

async fn get(served: &Served, token: Option<&str>, path: &str) -> (StatusCode, Value) {
    let mut request = client().get(served.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(request).await
}

async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: the body is not JSON ({e}): {text}"));
    (status, value)
}

/// A JWT with `claims`, signed with HS256 by `secret`.
fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))
        .unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Asserts an error answer: its status, its code, and words of its message.
fn refused(answer: &(StatusCode, Value), status: StatusCode, code: &str, words: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(message.contains(words), "{words:?} not in {message:?}");
}

#[test]
fn tokens_and_jwts_are_checked_for_presence_expiry_signature_scope_namespace_and_queue() {
    let ns = Namespace::new();
    let served = serve(&ns.name, &[]);
    ns.rt.block_on(async {
        let job = json!({"task": "app.add", "args": [1, 2], "queue": "work"});
        // No credentials, unknown ones, a malformed header.
        refused(
            &post(&served, None, "/v1/jobs", &job).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Bearer",
        );
        refused(
            &post(&served, Some("not-a-known-token-at-all"), "/v1/jobs", &job).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "not known",
        );
        let basic =
            client().post(served.url("/v1/jobs")).header("authorization", "Basic YTpi").json(&job);
        refused(&answer(basic).await, StatusCode::UNAUTHORIZED, "unauthorized", "Bearer <token>");

        // Static tokens: the producer enqueues, but may not claim or administer.
        let (status, body) = post(&served, Some(PRODUCER), "/v1/jobs", &job).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        refused(
            &post(&served, Some(PRODUCER), "/v1/queues/work/claim", &json!({})).await,
            StatusCode::FORBIDDEN,
            "forbidden",
            "\"consume\" scope",
        );
        refused(
            &get(&served, Some(PRODUCER), "/v1/queues").await,
            StatusCode::FORBIDDEN,
            "forbidden",
            "\"admin\" scope",
        );
        // The consumer claims from its queue only.
        let (status, body) = post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["jobs"].as_array().unwrap().len(), 1, "{body}");
        refused(
            &post(&served, Some(WORKER), "/v1/queues/other/claim", &json!({})).await,
            StatusCode::FORBIDDEN,
            "forbidden",
            "queue \"other\"",
        );
        // A token limited to some queues reads nothing that spans every queue, and
        // learns nothing of jobs in queues it may not see.
        let narrow = hs256(
            SECRET,
            &json!({"exp": now() + 600, "scope": "produce admin", "queues": ["mine"]}),
        );
        for path in ["/v1/events", "/metrics", "/v1/workers", "/v1/schedules"] {
            refused(
                &get(&served, Some(&narrow), path).await,
                StatusCode::FORBIDDEN,
                "forbidden",
                "limited to some queues",
            );
        }
        let (_, elsewhere) = post(
            &served,
            Some(PRODUCER),
            "/v1/jobs",
            &json!({"task": "app.add", "queue": "theirs"}),
        )
        .await;
        let path = format!("/v1/jobs/{}", elsewhere["id"].as_str().unwrap());
        refused(
            &get(&served, Some(&narrow), &path).await,
            StatusCode::NOT_FOUND,
            "not_found",
            "no job",
        );
        let (status, _) = get(&served, Some(ADMIN), &path).await;
        assert_eq!(status, StatusCode::OK, "a token for every queue finds it");

        // A token of another namespace.
        refused(
            &post(&served, Some(ELSEWHERE), "/v1/jobs", &job).await,
            StatusCode::FORBIDDEN,
            "forbidden",
            "namespace",
        );

        // JWTs: scopes as OAuth's space-separated `scope`, or a `scopes` list.
        let good =
            hs256(SECRET, &json!({"sub": "svc", "exp": now() + 600, "scope": "produce admin"}));
        let (status, body) = post(&served, Some(&good), "/v1/jobs", &job).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = get(&served, Some(&good), "/v1/queues").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let listed = body["queues"].as_array().unwrap();
        assert!(listed.iter().any(|q| q["name"] == "work" && q["ready"] == 1), "{body}");
        let consumer =
            hs256(SECRET, &json!({"exp": now() + 600, "scopes": ["consume"], "queues": ["work"]}));
        refused(
            &post(&served, Some(&consumer), "/v1/jobs", &job).await,
            StatusCode::FORBIDDEN,
            "forbidden",
            "\"produce\" scope",
        );
        let expired = hs256(SECRET, &json!({"exp": now() - 120, "scope": "produce"}));
        refused(
            &post(&served, Some(&expired), "/v1/jobs", &job).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "expired",
        );
        let early =
            hs256(SECRET, &json!({"exp": now() + 600, "nbf": now() + 300, "scope": "produce"}));
        refused(
            &post(&served, Some(&early), "/v1/jobs", &job).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "not valid yet",
        );
        let forged = hs256(
            b"another secret, also thirty-two bytes long",
            &json!({"exp": now() + 600, "scope": "produce"}),
        );
        refused(
            &post(&served, Some(&forged), "/v1/jobs", &job).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "signature",
        );
        let endless = hs256(SECRET, &json!({"scope": "produce"}));
        refused(
            &post(&served, Some(&endless), "/v1/jobs", &job).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "exp",
        );
        let foreign = hs256(
            SECRET,
            &json!({"exp": now() + 600, "scope": "produce", "namespaces": ["billing"]}),
        );
        refused(
            &post(&served, Some(&foreign), "/v1/jobs", &job).await,
            StatusCode::FORBIDDEN,
            "forbidden",
            "namespace",
        );

        // Plain HTTP speaks HTTP/2 too, to a client that knows it (prior knowledge).
        let h2c = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
        let response = h2c.get(served.url("/health")).send().await.unwrap();
        assert_eq!(
            (response.version(), response.status()),
            (reqwest::Version::HTTP_2, StatusCode::OK)
        );

        // Health and the API's description need no token.
        let health = client().get(served.url("/health")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let (status, doc) = get(&served, None, "/v1/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc["paths"]["/v1/leases/ack"]["post"].is_object(), "{doc}");
        // Metrics need the admin scope.
        let metrics = client().get(served.url("/metrics")).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(metrics.status(), StatusCode::OK);
        refused(
            &get(&served, Some(PRODUCER), "/metrics").await,
            StatusCode::FORBIDDEN,
            "forbidden",
            "admin",
        );
    });
    // No token, static or signed, is ever logged.
    let log = served.log();
    assert!(log.contains("DEBUG") || log.contains("INFO"), "the log was written: {log}");
    for secret in [ADMIN, PRODUCER, WORKER, ELSEWHERE, std::str::from_utf8(SECRET).unwrap()] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[test]
fn rs256_jwts_verify_with_the_public_key_only() {
    let ns = Namespace::new();
    let dir = std::env::temp_dir().join(format!("dmq-rsa-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let rsa = |name: &str| {
        let key = dir.join(format!("{name}.pem"));
        let ok = Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&key)
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(ok.success());
        let public = dir.join(format!("{name}.pub.pem"));
        let ok = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap();
        assert!(ok.success());
        (std::fs::read(key).unwrap(), public)
    };
    let (private, public) = rsa("signer");
    let (other_private, _) = rsa("stranger");
    let served = serve(&ns.name, &["--jwt-rs256-key", public.to_str().unwrap()]);
    ns.rt.block_on(async {
        let claims = json!({"sub": "svc", "exp": now() + 600, "scope": "produce"});
        let sign = |pem: &[u8]| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::RS256),
                &claims,
                &EncodingKey::from_rsa_pem(pem).unwrap(),
            )
            .unwrap()
        };
        let job = json!({"task": "app.add", "args": [1, 2]});
        let (status, body) = post(&served, Some(&sign(&private)), "/v1/jobs", &job).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["queue"], "default", "{body}");
        refused(
            &post(&served, Some(&sign(&other_private)), "/v1/jobs", &job).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "signature",
        );
        // The public key used as an HS256 secret (algorithm confusion) is refused.
        let confused = hs256(&std::fs::read(&public).unwrap(), &claims);
        refused(
            &post(&served, Some(&confused), "/v1/jobs", &job).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "algorithm",
        );
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tls_serves_http2_and_http1_with_a_certificate_the_test_made() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ns = Namespace::new();
    let dir = std::env::temp_dir().join(format!("dmq-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let cert_path = dir.join("cert.pem").display().to_string();
    let key_path = dir.join("key.pem").display().to_string();
    let served = serve(&ns.name, &["--tls-cert", &cert_path, "--tls-key", &key_path]);
    assert!(served.url.starts_with("https://"), "{}", served.url);
    ns.rt.block_on(async {
        let root = reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap();
        let job = json!({"task": "app.add", "args": [1, 2], "queue": "tls"});
        for http1 in [false, true] {
            let mut builder = reqwest::Client::builder().tls_certs_only([root.clone()]);
            if http1 {
                builder = builder.http1_only();
            }
            let client = builder.build().unwrap();
            let response = client
                .post(served.url("/v1/jobs"))
                .bearer_auth(PRODUCER)
                .json(&job)
                .send()
                .await
                .unwrap();
            let expected = if http1 { reqwest::Version::HTTP_11 } else { reqwest::Version::HTTP_2 };
            assert_eq!(response.version(), expected);
            assert_eq!(response.status(), StatusCode::CREATED);
        }
        // A client that does not trust the certificate is refused by its own check; plain
        // HTTP to the TLS port gets no HTTP answer.
        let untrusting = reqwest::Client::builder().build().unwrap();
        assert!(untrusting.get(served.url("/health")).send().await.is_err());
        let plain = served.url.replacen("https://", "http://", 1);
        let answered = client().get(format!("{plain}/health")).send().await;
        assert!(answered.is_err() || answered.unwrap().status() != StatusCode::OK);
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rates_per_token_and_per_address_answer_429_with_retry_after() {
    let ns = Namespace::new();
    let served = serve(&ns.name, &["--rate-per-token", "5/m", "--rate-per-ip", "12/m"]);
    ns.rt.block_on(async {
        let job = json!({"task": "app.add", "args": [1, 2], "queue": "rated"});
        for _ in 0..5 {
            assert_eq!(
                post(&served, Some(PRODUCER), "/v1/jobs", &job).await.0,
                StatusCode::CREATED
            );
        }
        let response = client()
            .post(served.url("/v1/jobs"))
            .bearer_auth(PRODUCER)
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&after), "Retry-After: {after}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        // Another token has its own budget, until the address runs out of its own.
        let mut statuses = Vec::new();
        for _ in 0..8 {
            statuses.push(get(&served, Some(ADMIN), "/v1/queues").await.0);
        }
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        // 12 from this address: 6 went to the producer (the refused one counts too).
        assert_eq!(ok, 5, "{statuses:?}");
        assert_eq!(statuses[6], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
        // Unauthenticated requests count against the address too.
        refused(
            &post(&served, None, "/v1/jobs", &job).await,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "127.0.0.1",
        );
    });
}

#[test]
fn a_consumer_killed_mid_lease_loses_its_job_to_the_next_and_can_settle_nothing() {
    let ns = Namespace::new();
    let served = serve(&ns.name, &[]);
    let enqueued = ns.rt.block_on(async {
        let job = json!({"task": "remote.work", "args": ["x"], "queue": "work"});
        post(&served, Some(PRODUCER), "/v1/jobs", &job).await
    });
    assert_eq!(enqueued.0, StatusCode::CREATED, "{}", enqueued.1);
    let id = enqueued.1["id"].as_str().unwrap().to_owned();
    // A consumer process claims the job with a 4 s lease, then dies.
    let claim = format!(
        "curl -sS -X POST -H 'Authorization: Bearer {WORKER}' -H 'Content-Type: application/json' \
         -d '{{\"lease_ms\": 4000}}' {}/v1/queues/work/claim; echo; exec sleep 600",
        served.url
    );
    let mut consumer =
        Command::new("sh").args(["-c", &claim]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(consumer.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let first: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(first["jobs"][0]["id"], id.as_str(), "{first}");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(consumer.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = consumer.wait();
    let stale = first["jobs"][0]["lease"].clone();

    ns.rt.block_on(async {
        // Before the lease runs out, nobody else gets the job.
        let (_, none) = post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({})).await;
        assert_eq!(none["jobs"].as_array().unwrap().len(), 0, "{none}");
        // After it, the next claim does, alone and under a greater fence.
        let deadline = Instant::now() + Duration::from_secs(20);
        let second = loop {
            let (status, body) =
                post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({"wait_ms": 2000}))
                    .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if let Some(job) = body["jobs"].as_array().unwrap().first() {
                break job.clone();
            }
            assert!(Instant::now() < deadline, "the job never came back");
        };
        assert_eq!(second["id"], id.as_str());
        assert_eq!(second["isolated"], true, "{second}");
        assert!(second["lease"]["fence"].as_u64() > stale["fence"].as_u64(), "{second}");
        // The dead consumer's lease settles nothing: not an ack, a nack, a renewal or a release.
        refused(
            &post(
                &served,
                Some(WORKER),
                "/v1/leases/ack",
                &json!({"lease": stale, "result": "stale"}),
            )
            .await,
            StatusCode::CONFLICT,
            "lease_lost",
            "no longer yours",
        );
        refused(
            &post(
                &served,
                Some(WORKER),
                "/v1/leases/nack",
                &json!({"lease": stale, "error": "x", "retry": false}),
            )
            .await,
            StatusCode::CONFLICT,
            "lease_lost",
            "lease",
        );
        refused(
            &post(&served, Some(WORKER), "/v1/leases/renew", &json!({"lease": stale})).await,
            StatusCode::CONFLICT,
            "lease_lost",
            "lease",
        );
        refused(
            &post(&served, Some(WORKER), "/v1/leases/release", &json!({"lease": stale})).await,
            StatusCode::CONFLICT,
            "lease_lost",
            "lease",
        );
        // A live lease whose fence the client raised (to outrank a later run's result)
        // is refused too, as is a forged token.
        let mut raised = second["lease"].clone();
        raised["fence"] = json!(second["lease"]["fence"].as_u64().unwrap() + 1);
        refused(
            &post(
                &served,
                Some(WORKER),
                "/v1/leases/nack",
                &json!({"lease": raised, "error": "x", "retry": false}),
            )
            .await,
            StatusCode::CONFLICT,
            "lease_lost",
            "lease",
        );
        refused(
            &post(&served, Some(WORKER), "/v1/leases/ack", &json!({"lease": raised, "result": 1}))
                .await,
            StatusCode::CONFLICT,
            "lease_lost",
            "lease",
        );
        let mut forged = second["lease"].clone();
        forged["token"] = json!("1.1.1.forged@nobody");
        refused(
            &post(&served, Some(WORKER), "/v1/leases/ack", &json!({"lease": forged, "result": 1}))
                .await,
            StatusCode::CONFLICT,
            "lease_lost",
            "lease",
        );
        let (status, body) = post(
            &served,
            Some(WORKER),
            "/v1/leases/ack",
            &json!({"lease": second["lease"], "result": {"done": true}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, outcome) = get(&served, Some(ADMIN), &format!("/v1/jobs/{id}/result")).await;
        assert_eq!(status, StatusCode::OK, "{outcome}");
        assert_eq!(outcome["value"], json!({"done": true}), "{outcome}");
        assert_eq!(outcome["state"], "succeeded");
    });
}

#[test]
fn a_nack_retries_by_the_jobs_policy_then_dead_letters_and_an_operator_requeues_it() {
    let ns = Namespace::new();
    let served = serve(&ns.name, &[]);
    ns.rt.block_on(async {
        // Events first, so that the job's Queued event is among them.
        let mut events =
            client().get(served.url("/v1/events")).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(events.status(), StatusCode::OK);
        assert_eq!(events.headers()["content-type"], "text/event-stream");
        let job = json!({"task": "remote.flaky", "args": [], "queue": "work", "max_retries": 1});
        let (status, body) = post(&served, Some(PRODUCER), "/v1/jobs", &job).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let claim = |wait: u64| {
            let served = &served;
            async move {
                let (status, body) =
                    post(served, Some(WORKER), "/v1/queues/work/claim", &json!({"wait_ms": wait}))
                        .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                body["jobs"][0].clone()
            }
        };
        let first = claim(0).await;
        assert_eq!(first["attempt"], 1);
        let (status, body) = post(
            &served,
            Some(WORKER),
            "/v1/leases/nack",
            &json!({"lease": first["lease"], "error": "try later", "delay_ms": 200}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["outcome"], "retried", "{body}");
        assert_eq!(body["attempt"], 2, "{body}");
        let (_, view) = get(&served, Some(ADMIN), &format!("/v1/jobs/{id}")).await;
        assert_eq!(view["state"], "delayed", "{view}");
        let second = claim(5000).await;
        assert_eq!(second["attempt"], 2, "{second}");
        let (_, body) = post(
            &served,
            Some(WORKER),
            "/v1/leases/nack",
            &json!({"lease": second["lease"], "error": "still broken"}),
        )
        .await;
        assert_eq!(body["outcome"], "dead_lettered", "{body}");
        let (_, outcome) = get(&served, Some(ADMIN), &format!("/v1/jobs/{id}/result")).await;
        assert_eq!(outcome["state"], "failed", "{outcome}");
        assert_eq!(outcome["error"]["message"], "still broken", "{outcome}");
        let (_, letters) = get(&served, Some(ADMIN), "/v1/queues/work/dead-letters").await;
        assert_eq!(letters["dead_letters"][0]["id"], id.as_str(), "{letters}");
        assert!(letters["dead_letters"][0]["reason"].as_str().unwrap().contains("still broken"));
        let (status, body) = post(
            &served,
            Some(ADMIN),
            &format!("/v1/queues/work/dead-letters/{id}/requeue"),
            &json!(null),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let third = claim(0).await;
        assert_eq!(third["id"], id.as_str(), "{third}");
        let (_, body) =
            post(&served, Some(WORKER), "/v1/leases/release", &json!({"lease": third["lease"]}))
                .await;
        assert_eq!(body["outcome"], "released", "{body}");
        let (_, stats) = get(&served, Some(ADMIN), "/v1/queues/work").await;
        assert_eq!(
            (stats["ready"].as_u64(), stats["dead"].as_u64()),
            (Some(1), Some(0)),
            "{stats}"
        );
        assert_eq!(stats["paused_since"], Value::Null, "{stats}");

        // Paused, the queue hands out nothing over HTTP either; resumed, it does again.
        let (status, body) =
            post(&served, Some(ADMIN), "/v1/queues/work/pause", &json!(null)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!((&body["paused"], &body["changed"]), (&json!(true), &json!(true)), "{body}");
        let (_, refused) = post(&served, Some(WORKER), "/v1/queues/work/pause", &json!(null)).await;
        assert_eq!(
            refused["error"]["code"], "forbidden",
            "a worker's token cannot pause: {refused}"
        );
        let (_, stats) = get(&served, Some(ADMIN), "/v1/queues/work").await;
        assert!(stats["paused_since"].is_string(), "{stats}");
        let (_, none) = post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({})).await;
        assert_eq!(none["jobs"].as_array().map(Vec::len), Some(0), "{none}");
        let (_, body) = post(&served, Some(ADMIN), "/v1/queues/work/resume", &json!(null)).await;
        assert_eq!((&body["paused"], &body["changed"]), (&json!(false), &json!(true)), "{body}");
        assert_eq!(claim(0).await["id"], id.as_str());

        // The event stream carried the job's story.
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(seen.contains("event: dead_lettered") && seen.contains(&id)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, events.chunk()).await {
                Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                other => panic!("the events stopped ({other:?}); got:\n{seen}"),
            }
        }
        for kind in ["event: queued", "event: started", "event: retry", "event: failed"] {
            assert!(seen.contains(kind), "{kind} missing:\n{seen}");
        }
    });
}

#[test]
fn malformed_requests_get_a_json_4xx_and_a_refused_batch_adds_nothing() {
    let ns = Namespace::new();
    let served = serve(&ns.name, &["--max-body", "4096", "--max-batch", "3"]);
    ns.rt.block_on(async {
        let cases = [
            (json!({"task": "app.add", "args": [1], "queue": "q", "colour": "red"}), "unknown field `colour`"),
            (json!({"task": "app.add", "args": "1, 2", "queue": "q"}), "invalid type"),
            (json!({"task": "app.add", "priority": 12, "queue": "q"}), "priority 12"),
            (json!({"task": "app.add", "queue": "bad queue name!"}), "queue"),
            (json!({"task": "", "queue": "q"}), "task"),
            (json!({"args": []}), "missing field `task`"),
            (json!({"task": "app.add", "delay_ms": 10, "eta": "2030-01-01T00:00:00Z"}), "not both"),
            (json!({"task": "app.add", "queue": "q", "rate_limit": "lots"}), "rate_limit \"lots\" is not a rate"),
            (json!({"task": "app.add", "queue": "q", "concurrency": 0}), "at least 1"),
            (json!({"task": "app.add", "queue": "q", "rate_limit": "100/d"}), "not a rate"),
            (json!({"task": "app.add", "queue": "q", "rate_limit": "10/25h"}), "not a rate"),
            (json!({"task": "app.add", "queue": "q", "quota_key": "a\u{0}b"}), "without NUL"),
        ];
        for (body, words) in cases {
            let answer = post(&served, Some(PRODUCER), "/v1/jobs", &body).await;
            refused(&answer, StatusCode::BAD_REQUEST, "bad_request", words);
        }
        let broken = client().post(served.url("/v1/jobs")).bearer_auth(PRODUCER).header("content-type", "application/json").body("{\"task\": ");
        refused(&answer(broken).await, StatusCode::BAD_REQUEST, "bad_request", "EOF");
        let text = client().post(served.url("/v1/jobs")).bearer_auth(PRODUCER).body("{}");
        refused(&answer(text).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "application/json");
        let big = json!({"task": "app.add", "args": ["x".repeat(5000)], "queue": "q"});
        refused(&post(&served, Some(PRODUCER), "/v1/jobs", &big).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "--max-body");
        refused(&get(&served, Some(ADMIN), "/v1/jobs/not-a-uuid").await, StatusCode::BAD_REQUEST, "bad_request", "UUID");
        refused(&get(&served, Some(ADMIN), "/v1/nowhere").await, StatusCode::NOT_FOUND, "not_found", "/v1/openapi.json");
        // A claim's fields are all optional: no body at all is a claim of one job.
        let bare = client().post(served.url("/v1/queues/work/claim")).bearer_auth(WORKER);
        let (status, body) = answer(bare).await;
        assert_eq!((status, body["jobs"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{body}");
        let put = client().put(served.url("/v1/jobs")).bearer_auth(PRODUCER);
        refused(&answer(put).await, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method");
        refused(&post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({"max": 0})).await, StatusCode::BAD_REQUEST, "bad_request", "max");
        refused(&post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({"lease_ms": 5})).await, StatusCode::BAD_REQUEST, "bad_request", "lease_ms");
        refused(&post(&served, Some(WORKER), "/v1/leases/ack", &json!({"lease": {"id": "x", "queue": "work", "token": "t", "fence": 1}})).await, StatusCode::BAD_REQUEST, "bad_request", "UUID");

        // A batch over the limit, or with one bad job, adds nothing at all.
        let good = json!({"task": "app.add", "args": [1, 2], "queue": "batch"});
        let over = json!({"jobs": [good, good, good, good]});
        refused(&post(&served, Some(PRODUCER), "/v1/jobs/batch", &over).await, StatusCode::BAD_REQUEST, "bad_request", "--max-batch");
        let spoiled = json!({"jobs": [good, {"task": "app.add", "queue": "no good!"}, good]});
        refused(&post(&served, Some(PRODUCER), "/v1/jobs/batch", &spoiled).await, StatusCode::BAD_REQUEST, "bad_request", "queue");
        let keyed = json!({"jobs": [good, {"task": "app.add", "queue": "batch", "idempotency_key": "k"}]});
        refused(&post(&served, Some(PRODUCER), "/v1/jobs/batch", &keyed).await, StatusCode::BAD_REQUEST, "bad_request", "idempotency key");
        let (_, stats) = get(&served, Some(ADMIN), "/v1/queues/batch").await;
        assert_eq!(stats["ready"], 0, "nothing of a refused batch landed: {stats}");
        let (status, body) = post(&served, Some(PRODUCER), "/v1/jobs/batch", &json!({"jobs": [good, good, good]})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["ids"].as_array().unwrap().len(), 3);
        let (_, stats) = get(&served, Some(ADMIN), "/v1/queues/batch").await;
        assert_eq!(stats["ready"], 3, "{stats}");

        // A job that has not started can be cancelled; its waiters learn so.
        let later = json!({"task": "app.add", "args": [1, 2], "queue": "later", "delay_ms": 600_000});
        let (_, job) = post(&served, Some(PRODUCER), "/v1/jobs", &later).await;
        let id = job["id"].as_str().unwrap().to_owned();
        let cancel = |query: &'static str| {
            let url = served.url(&format!("/v1/jobs/{id}{query}"));
            async move { answer(client().delete(url).bearer_auth(PRODUCER)).await }
        };
        let (status, body) = cancel("").await;
        assert_eq!((status, &body["outcome"], &body["queue"]), (StatusCode::OK, &json!("cancelled"), &json!("later")), "{body}");
        let (_, outcome) = get(&served, Some(ADMIN), &format!("/v1/jobs/{id}/result")).await;
        assert_eq!(outcome["state"], "cancelled", "{outcome}");
        refused(&cancel("?queue=later").await, StatusCode::NOT_FOUND, "not_found", "no waiting job");
        refused(&cancel("").await, StatusCode::NOT_FOUND, "not_found", "no queue holds");
        let (_, job) = post(&served, Some(PRODUCER), "/v1/jobs", &json!({"task": "app.add", "queue": "work"})).await;
        let id = job["id"].as_str().unwrap().to_owned();
        let (_, claimed) = post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({})).await;
        assert_eq!(claimed["jobs"][0]["id"], id.as_str(), "{claimed}");
        let running = client().delete(served.url(&format!("/v1/jobs/{id}?queue=work"))).bearer_auth(PRODUCER);
        refused(&answer(running).await, StatusCode::CONFLICT, "running", "running on a worker");

        // An idempotency key makes the second enqueue answer with the first job.
        let keyed = json!({"task": "app.add", "args": [1, 2], "queue": "once", "idempotency_key": "order-7"});
        let (first, one) = post(&served, Some(PRODUCER), "/v1/jobs", &keyed).await;
        let (again, two) = post(&served, Some(PRODUCER), "/v1/jobs", &keyed).await;
        assert_eq!((first, again), (StatusCode::CREATED, StatusCode::OK));
        assert_eq!(one["id"], two["id"]);
        assert_eq!(two["existing"], true);

        // So does an id of the caller's choosing, which the job then has; in a batch,
        // a waiting job's id fails the batch, adding nothing.
        let id = uuid::Uuid::new_v4().to_string();
        let chosen = json!({"task": "app.add", "args": [1, 2], "queue": "chosen", "id": id});
        let (first, one) = post(&served, Some(PRODUCER), "/v1/jobs", &chosen).await;
        let (again, two) = post(&served, Some(PRODUCER), "/v1/jobs", &chosen).await;
        assert_eq!((first, again), (StatusCode::CREATED, StatusCode::OK), "{one} {two}");
        assert_eq!((&one["id"], &two["id"]), (&json!(id), &json!(id)));
        assert_eq!((&one["existing"], &two["existing"]), (&json!(false), &json!(true)));
        let fresh = json!({"task": "app.add", "args": [1, 2], "queue": "chosen"});
        let batch = json!({"jobs": [fresh, chosen]});
        let (status, body) = post(&served, Some(PRODUCER), "/v1/jobs/batch", &batch).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (_, stats) = get(&served, Some(ADMIN), "/v1/queues/chosen").await;
        assert_eq!(stats["ready"], 1, "one job, the first: {stats}");
        let not_uuid = json!({"task": "app.add", "queue": "chosen", "id": "order-7"});
        assert_eq!(post(&served, Some(PRODUCER), "/v1/jobs", &not_uuid).await.0, StatusCode::BAD_REQUEST);
    });
    assert!(!served.log().contains("panicked"), "{}", served.log());
}

#[test]
fn jwts_for_another_audience_or_issuer_are_refused_when_the_server_names_its_own() {
    let ns = Namespace::new();
    let served =
        serve(&ns.name, &["--jwt-audience", "dmq-api", "--jwt-issuer", "https://id.example"]);
    ns.rt.block_on(async {
        let job = json!({"task": "app.add", "args": [1, 2]});
        let claims = |extra: Value| {
            let mut claims = json!({"exp": now() + 600, "scope": "produce"});
            claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            hs256(SECRET, &claims)
        };
        let right = claims(json!({"aud": "dmq-api", "iss": "https://id.example"}));
        assert_eq!(post(&served, Some(&right), "/v1/jobs", &job).await.0, StatusCode::CREATED);
        let cases = [
            (json!({"iss": "https://id.example"}), "required claim"),
            (json!({"aud": "billing", "iss": "https://id.example"}), "audience"),
            (json!({"aud": "dmq-api", "iss": "https://evil.example"}), "issuer"),
            (json!({"aud": "dmq-api"}), "required claim"),
        ];
        for (extra, words) in cases {
            let token = claims(extra.clone());
            refused(
                &post(&served, Some(&token), "/v1/jobs", &job).await,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                words,
            );
        }
        // Static tokens are not JWTs: no claims to check.
        assert_eq!(post(&served, Some(PRODUCER), "/v1/jobs", &job).await.0, StatusCode::CREATED);
    });
}

#[test]
fn waits_on_the_broker_are_bounded_and_expired_jobs_are_never_handed_out() {
    let ns = Namespace::new();
    let served = serve(&ns.name, &["--max-waiting", "1"]);
    ns.rt.block_on(async {
        // One claim waits; a second that would wait is turned away, one that would not
        // is answered.
        // The long claim tries until it gets the one permit (a probe below may hold it
        // for a moment).
        let waiting = tokio::spawn({
            let url = served.url("/v1/queues/work/claim");
            async move {
                loop {
                    let body = json!({"wait_ms": 30_000});
                    let answered =
                        answer(client().post(&url).bearer_auth(WORKER).json(&body)).await;
                    if answered.0 != StatusCode::SERVICE_UNAVAILABLE {
                        return answered;
                    }
                }
            }
        });
        // Until the long claim holds the permit, a short waiting probe gets it and
        // answers empty; once it does, a probe is turned away (the probes run one at a
        // time, so only the long claim can hold it then).
        let deadline = Instant::now() + Duration::from_secs(20);
        let response = loop {
            let response = client()
                .post(served.url("/v1/queues/work/claim"))
                .bearer_auth(WORKER)
                .json(&json!({"wait_ms": 1}))
                .send()
                .await
                .unwrap();
            if response.status() != StatusCode::OK {
                break response;
            }
            assert!(Instant::now() < deadline, "the first claim never held its permit");
        };
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("--max-waiting"), "{body}");
        let (status, body) = post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        refused(
            &get(&served, Some(ADMIN), "/v1/events").await,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "--max-waiting",
        );
        // A job wakes the waiting claim, which takes it.
        let job = json!({"task": "remote.work", "queue": "work"});
        assert_eq!(post(&served, Some(PRODUCER), "/v1/jobs", &job).await.0, StatusCode::CREATED);
        let (status, body) = waiting.await.unwrap();
        assert_eq!(
            (status, body["jobs"].as_array().map(Vec::len)),
            (StatusCode::OK, Some(1)),
            "{body}"
        );
        // Once it answered, its permit is back.
        let (status, body) =
            post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({"wait_ms": 100})).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // A job whose expiry passed is dead-lettered, not handed out.
        let past = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
        let stale = json!({"task": "remote.work", "queue": "work", "expires_at": past});
        let (_, job) = post(&served, Some(PRODUCER), "/v1/jobs", &stale).await;
        let id = job["id"].as_str().unwrap().to_owned();
        let (_, none) = post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({})).await;
        assert_eq!(none["jobs"], json!([]), "{none}");
        let (_, outcome) = get(&served, Some(ADMIN), &format!("/v1/jobs/{id}/result")).await;
        assert_eq!(outcome["state"], "expired", "{outcome}");
        let (_, letters) = get(&served, Some(ADMIN), "/v1/queues/work/dead-letters").await;
        assert_eq!(letters["dead_letters"][0]["id"], id.as_str(), "{letters}");
    });
}

#[test]
fn an_ack_and_a_nack_of_one_lease_sent_at_once_settle_it_once_and_agree() {
    let ns = Namespace::new();
    let served = serve(&ns.name, &[]);
    ns.rt.block_on(async {
        for round in 0..20 {
            let (_, job) = post(
                &served,
                Some(PRODUCER),
                "/v1/jobs",
                &json!({"task": "remote.work", "queue": "race"}),
            )
            .await;
            let id = job["id"].as_str().unwrap().to_owned();
            let consumer = hs256(SECRET, &json!({"exp": now() + 600, "scope": "consume admin"}));
            let (_, claimed) =
                post(&served, Some(&consumer), "/v1/queues/race/claim", &json!({})).await;
            let lease = claimed["jobs"][0]["lease"].clone();
            let ack_body = json!({"lease": lease, "result": "done"});
            let nack_body = json!({"lease": lease, "error": "broken", "retry": false});
            let ack = post(&served, Some(&consumer), "/v1/leases/ack", &ack_body);
            let nack = post(&served, Some(&consumer), "/v1/leases/nack", &nack_body);
            let ((acked, _), (nacked, _)) = tokio::join!(ack, nack);
            let won: Vec<_> = [acked, nacked].into_iter().filter(StatusCode::is_success).collect();
            assert_eq!(
                won.len(),
                1,
                "round {round}: exactly one settles the job: {acked} {nacked}"
            );
            let (_, outcome) = get(&served, Some(ADMIN), &format!("/v1/jobs/{id}/result")).await;
            let (_, letters) = get(&served, Some(ADMIN), "/v1/queues/race/dead-letters").await;
            let dead =
                letters["dead_letters"].as_array().unwrap().iter().any(|l| l["id"] == id.as_str());
            if acked.is_success() {
                assert_eq!(
                    (outcome["state"].as_str(), dead),
                    (Some("succeeded"), false),
                    "round {round}: {outcome}"
                );
            } else {
                assert_eq!(
                    (outcome["state"].as_str(), dead),
                    (Some("failed"), true),
                    "round {round}: {outcome}"
                );
            }
        }
    });
}

#[test]
fn a_server_killed_mid_lease_leaves_the_lease_to_another_server_and_bad_bytes_hurt_no_job() {
    let ns = Namespace::new();
    let mut first = serve(&ns.name, &[]);
    // An entry dmq did not write, beside a good job: the claim hands out the good job
    // and dead-letters the other, saying why.
    let bad = dmq_core::TaskId::new();
    ns.rt.block_on(async {
        let junk = dmq_core::Job::new(bad, "work", 9, None, b"not an envelope".to_vec());
        ns.manager.broker().enqueue(junk).await.expect("the broker takes the bytes");
    });
    let claimed = ns.rt.block_on(async {
        let job = json!({"task": "remote.work", "args": [7], "queue": "work"});
        assert_eq!(post(&first, Some(PRODUCER), "/v1/jobs", &job).await.0, StatusCode::CREATED);
        let (status, body) =
            post(&first, Some(WORKER), "/v1/queues/work/claim", &json!({"max": 10})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    });
    let jobs = claimed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "only the good job: {claimed}");
    assert_eq!(jobs[0]["args"], json!([7]));
    // The server dies holding nothing: the lease is in Redis, and another server
    // settles it.
    first.kill();
    let second = serve(&ns.name, &[]);
    ns.rt.block_on(async {
        let (status, body) = post(
            &second,
            Some(WORKER),
            "/v1/leases/ack",
            &json!({"lease": jobs[0]["lease"], "result": 49}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let id = jobs[0]["id"].as_str().unwrap();
        let (_, outcome) = get(&second, Some(ADMIN), &format!("/v1/jobs/{id}/result")).await;
        assert_eq!(
            (&outcome["state"], &outcome["value"]),
            (&json!("succeeded"), &json!(49)),
            "{outcome}"
        );
        let (_, letters) = get(&second, Some(ADMIN), "/v1/queues/work/dead-letters").await;
        let letter = &letters["dead_letters"][0];
        assert_eq!(letter["id"], bad.to_string(), "{letters}");
        assert!(letter["reason"].as_str().unwrap().starts_with("undecodable"), "{letters}");
        assert_eq!(letter["task"], Value::Null, "its envelope does not decode: {letters}");
    });
}

#[test]
fn limits_given_over_http_hold_for_every_claimer() {
    let ns = Namespace::new();
    let served = serve(&ns.name, &[]);
    ns.rt.block_on(async {
        // Two jobs of one key with a concurrency of 1, one of another key.
        let job = |key: &str| {
            json!({"task": "app.add", "args": [1, 2], "queue": "work", "concurrency": 1,
                   "concurrency_key": key})
        };
        for key in ["t1", "t1", "t2"] {
            let (status, body) = post(&served, Some(PRODUCER), "/v1/jobs", &job(key)).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let claim = json!({"max": 10});
        let (_, first) = post(&served, Some(WORKER), "/v1/queues/work/claim", &claim).await;
        assert_eq!(first["jobs"].as_array().map(Vec::len), Some(2), "one per key: {first}");
        let (_, none) = post(&served, Some(WORKER), "/v1/queues/work/claim", &claim).await;
        assert_eq!(none["jobs"].as_array().map(Vec::len), Some(0), "t1's slot is taken: {none}");
        let (_, stats) = get(&served, Some(ADMIN), "/v1/queues/work").await;
        assert_eq!((&stats["ready"], &stats["gated"]), (&json!(1), &json!(1)), "{stats}");
        let (status, gates) = get(&served, Some(ADMIN), "/v1/queues/work/gates").await;
        assert_eq!(status, StatusCode::OK, "{gates}");
        let t1 = &gates["gates"][0];
        assert_eq!(
            (&t1["gate"], &t1["concurrency"], &t1["running"], &t1["waiting"]),
            (&json!("app.add[t1]"), &json!(1), &json!(1), &json!(1)),
            "{gates}"
        );
        assert_eq!(t1["holding_back"], "concurrency: 1 of 1 running", "{gates}");
        // Acknowledging t1's job frees its slot.
        for job in first["jobs"].as_array().into_iter().flatten() {
            let (status, body) =
                post(&served, Some(WORKER), "/v1/leases/ack", &json!({"lease": job["lease"]}))
                    .await;
            assert!(status.is_success(), "{body}");
        }
        let (_, next) = post(&served, Some(WORKER), "/v1/queues/work/claim", &claim).await;
        assert_eq!(next["jobs"].as_array().map(Vec::len), Some(1), "{next}");

        // Two tasks naming one gate share its concurrency.
        for task in ["app.add", "app.mul"] {
            let job = json!({"task": task, "args": [1, 2], "queue": "shared", "concurrency": 1,
                             "limit_gate": "math"});
            let (status, body) = post(&served, Some(PRODUCER), "/v1/jobs", &job).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let (_, got) = post(&served, Some(ADMIN), "/v1/queues/shared/claim", &claim).await;
        assert_eq!(got["jobs"].as_array().map(Vec::len), Some(1), "one gate, one slot: {got}");
    });
}

#[test]
fn an_enqueue_over_a_quota_is_answered_429_with_the_time_to_retry() {
    let ns = Namespace::new();
    ns.rt.block_on(async {
        let store = ns.manager.broker().quota_store().expect("quotas");
        store.set_quota(None, Some("2/m".parse().expect("a quota"))).await.expect("set");
    });
    let served = serve(&ns.name, &[]);
    ns.rt.block_on(async {
        let job = json!({"task": "app.add", "args": [1, 2], "queue": "work"});
        for _ in 0..2 {
            let (status, body) = post(&served, Some(PRODUCER), "/v1/jobs", &job).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let over = post(&served, Some(PRODUCER), "/v1/jobs", &job).await;
        refused(&over, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", "retry in");
        let (_, stats) = get(&served, Some(ADMIN), "/v1/queues/work").await;
        assert_eq!(stats["ready"], 2, "the refused job was not added: {stats}");
        let raw = client()
            .post(served.url("/v1/jobs"))
            .bearer_auth(PRODUCER)
            .json(&job)
            .send()
            .await
            .expect("a response");
        let wait: u64 = raw
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("a Retry-After in seconds");
        assert!((1..=60).contains(&wait), "{wait}");
    });
}

#[test]
fn unique_and_grouped_jobs_over_http() {
    let ns = Namespace::new();
    let served = serve(&ns.name, &[]);
    ns.rt.block_on(async {
        // Queued: the same work while the job waits is that job; once claimed, a new one.
        let queued = json!({"task": "app.add", "args": [1, 2], "queue": "work",
                            "unique": {"for": "queued"}});
        let (first, one) = post(&served, Some(PRODUCER), "/v1/jobs", &queued).await;
        let (again, two) = post(&served, Some(PRODUCER), "/v1/jobs", &queued).await;
        assert_eq!((first, again), (StatusCode::CREATED, StatusCode::OK), "{one} {two}");
        assert_eq!((&one["id"], &two["existing"]), (&two["id"], &json!(true)));
        let other = json!({"task": "app.add", "args": [2, 2], "queue": "work",
                           "unique": {"for": "queued"}});
        let (status, _) = post(&served, Some(PRODUCER), "/v1/jobs", &other).await;
        assert_eq!(status, StatusCode::CREATED, "other arguments are other work");
        let (_, claimed) =
            post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({"max": 10})).await;
        assert_eq!(claimed["jobs"].as_array().map(Vec::len), Some(2), "{claimed}");
        let (status, three) = post(&served, Some(PRODUCER), "/v1/jobs", &queued).await;
        assert_eq!(status, StatusCode::CREATED, "the job runs: a new one: {three}");
        assert_ne!(three["id"], one["id"]);

        // Debounce: a second enqueue, other arguments and all, is the waiting job.
        let debounced = |x: i64| {
            json!({"task": "app.add", "args": [x, 0], "queue": "deb",
                   "unique": {"for": "debounce", "ms": 60_000}})
        };
        let (first, one) = post(&served, Some(PRODUCER), "/v1/jobs", &debounced(1)).await;
        let (again, two) = post(&served, Some(PRODUCER), "/v1/jobs", &debounced(2)).await;
        assert_eq!((first, again), (StatusCode::CREATED, StatusCode::OK), "{one} {two}");
        assert_eq!((&one["id"], &two["existing"]), (&two["id"], &json!(true)));
        assert!(one["eta"].is_string() && two["eta"].as_str() >= one["eta"].as_str(), "{two}");
        let (_, stats) = get(&served, Some(ADMIN), "/v1/queues/deb").await;
        assert_eq!((&stats["delayed"], &stats["ready"]), (&json!(1), &json!(0)), "{stats}");

        // Refused, adding nothing: a debounce with a delay of its own, a unique batch
        // job, a ttl of 0.
        let mut delayed = debounced(3);
        delayed["delay_ms"] = json!(10);
        let refusals = [
            ("/v1/jobs", delayed),
            ("/v1/jobs/batch", json!({"jobs": [queued.clone()]})),
            (
                "/v1/jobs",
                json!({"task": "app.add", "queue": "work", "unique": {"for": "ttl", "ms": 0}}),
            ),
            (
                "/v1/jobs",
                json!({"task": "app.add", "queue": "work", "unique": {"for": "queued", "ms": 5}}),
            ),
        ];
        for (path, body) in refusals {
            let (status, said) = post(&served, Some(PRODUCER), path, &body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {said}");
        }
        let (_, stats) = get(&served, Some(ADMIN), "/v1/queues/deb").await;
        assert_eq!(stats["delayed"], 1, "{stats}");

        // Groups: a claim takes one job of each group in turn (six of a's, then two
        // of b's).
        let mut ids = std::collections::HashMap::new();
        for (group, n) in [("a", 6), ("b", 2)] {
            for _ in 0..n {
                let job =
                    json!({"task": "app.add", "args": [1, 2], "queue": "work", "group": group});
                let (status, body) = post(&served, Some(PRODUCER), "/v1/jobs", &job).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                ids.insert(body["id"].as_str().unwrap().to_owned(), group);
            }
        }
        let (_, claimed) =
            post(&served, Some(WORKER), "/v1/queues/work/claim", &json!({"max": 4})).await;
        let groups: Vec<&str> = claimed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|job| ids.get(job["id"].as_str()?).copied())
            .collect();
        // (Beside an ungrouped job left in the queue above, which takes its share.)
        assert_eq!(groups[..2], ["a", "b"], "b's turn comes second, before a's other five");
        let empty = json!({"task": "app.add", "queue": "work", "group": ""});
        assert_eq!(
            post(&served, Some(PRODUCER), "/v1/jobs", &empty).await.0,
            StatusCode::BAD_REQUEST
        );
    });
    assert!(!served.log().contains("panicked"), "{}", served.log());
}
