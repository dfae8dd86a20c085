//! `dmq serve` fuzzed from its own OpenAPI document: schemathesis generates requests
//! for every operation the document lists, valid and invalid, alone and in linked
//! sequences (enqueue, read, claim, settle, purge ...), and checks every answer: no
//! 5xx, only documented status codes and content types, bodies that match their
//! schemas, invalid requests refused and valid ones accepted.
//!
//! Needs a Redis at `REDIS_URL` (`scripts/ensure-redis`) and a Python with
//! schemathesis: `scripts/ensure-python` installs it in a virtual environment and
//! prints its interpreter, which `scripts/test` passes in `DMQ_PYTHON`; without it this
//! test runs that script itself. The run's seed is printed; `DMQ_FUZZ_SEED=<seed>`
//! replays it, `DMQ_FUZZ_EXAMPLES=<n>` (30 by default) goes deeper.

mod common;
#[path = "../../dmq-redis/tests/common/python.rs"]
mod python;

use std::path::Path;
use std::process::Command;

use common::Namespace;
use common::served::Served;
use python::python;
use serde_json::{Value, json};

/// Test cases per operation and phase: the run takes 20 to 60 s on two cores, the
/// longer while other tests keep Redis busy.
const EXAMPLES: &str = "30";

/// Starts `dmq serve` on namespace `ns`, with one token of every scope.
fn serve(ns: &str, token: &str) -> Served {
    let dir = Served::dir();
    let tokens = json!({"tokens": [
        {"name": "fuzz", "token": token, "scopes": ["produce", "consume", "admin"]},
    ]});
    std::fs::write(dir.join("tokens.json"), tokens.to_string()).expect("the tokens file");
    let args = ["--tokens".to_owned(), dir.join("tokens.json").display().to_string()];
    Served::start(ns, dir, &args, "warn")
}

/// How many operations (a path and a method) `document` lists.
fn operations(document: &Value) -> usize {
    let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    let paths = document["paths"].as_object().expect("the document lists paths");
    paths.values().map(|item| methods.iter().filter(|m| item.get(**m).is_some()).count()).sum()
}

#[test]
fn every_answer_of_the_api_is_what_its_openapi_document_says() {
    // Declared first, dropped last: the server stops before the namespace's keys go.
    let ns = Namespace::new();
    let token = format!("fuzz-{}", uuid::Uuid::new_v4().simple());
    let served = serve(&ns.name, &token);
    let document_url = format!("{}/v1/openapi.json", served.url);
    let document: Value = ns.rt.block_on(async {
        let response = reqwest::get(&document_url).await.expect("the document is served");
        response.json().await.expect("the document is JSON")
    });
    let expected = operations(&document);
    assert!(expected >= 20, "the document lists only {expected} operations: {document}");

    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/http_fuzz");
    let report = served.dir.join("report.json");
    let examples = std::env::var("DMQ_FUZZ_EXAMPLES").unwrap_or_else(|_| EXAMPLES.to_owned());
    let mut command = Command::new(python());
    command
        .args(["-m", "schemathesis.cli", "--no-color", "--config-file"])
        .arg(here.join("schemathesis.toml"))
        .args(["run", &document_url, "--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", &examples, "--request-timeout", "20"])
        .args(["--generation-database", "none", "--report", "json", "--report-json-path"])
        .arg(&report)
        .env("SCHEMATHESIS_HOOKS", here.join("hooks.py"))
        .current_dir(&served.dir);
    if let Ok(seed) = std::env::var("DMQ_FUZZ_SEED") {
        command.args(["--seed", &seed]);
    }
    let out = command.output().expect("run schemathesis");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !said.contains("No module named 'schemathesis'"),
        "schemathesis is not installed for {}; run scripts/ensure-python:\n{said}",
        python().display()
    );
    assert!(out.status.success(), "schemathesis found problems:\n{said}\n{}", served.log());

    // It ran, and ran every operation, many times over.
    let report: Value = serde_json::from_slice(&std::fs::read(&report).expect("the report"))
        .expect("the report is JSON");
    let (ran, cases) = (&report["operations"], &report["test_cases"]);
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(ran["selected"], expected, "{report}");
    assert_eq!(ran["tested"], expected, "{report}");
    let generated = cases["generated"].as_u64().unwrap_or(0);
    assert!(generated >= 10 * expected as u64, "only {generated} test cases: {report}");
    assert_eq!(report["failures"], json!([]), "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    assert!(!served.log().contains("panicked"), "{}", served.log());
    println!("{said}");
}
