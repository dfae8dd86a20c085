//! docs/http-api.md is true: its walkthrough runs, block by block, against a real
//! `dmq serve` on Redis, and each block prints what the page says it prints.
//!
//! The page's opening HTML comment states the marking convention this test reads:
//! ```sh blocks whose first line is `# walkthrough` run in order in one bash (`set -euo
//! pipefail`) in a scratch directory; the block marked `# walkthrough: serve` holds the
//! `dmq serve` command, which this test runs itself (as `dmq-test-cli serve`, on a free
//! port instead of `127.0.0.1:8080`, in a fresh namespace) once the blocks before it
//! have run, then sets DMQ_URL for the blocks after it; a ```text block right after a
//! walkthrough block lists lines its output must hold, in order, `...` standing for any
//! text.
//!
//! It needs bash, curl and jq, and the Python of `scripts/ensure-python` (with
//! `requests`) for the client's example. The namespace's keys are removed and the
//! server killed at the end, passed or failed.

mod common;
mod http_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Backing;
use http_common::{Scratch, python, repo_root, serve};

/// The longest the whole walkthrough may take: generous, never a performance bound.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// The marker a block's output starts with in the script's stdout.
const MARK: &str = "@@walkthrough-block ";

/// A fenced block of the page.
#[derive(Debug)]
struct Fenced {
    /// Its language, as written after the opening fence.
    lang: String,
    /// Its lines, without the fences.
    lines: Vec<String>,
    /// The page's line its opening fence is on, from 1.
    at: usize,
    /// Whether only blank lines separate it from the block before it.
    follows: bool,
}

/// A walkthrough block: its code and the output lines the page shows for it.
#[derive(Debug)]
struct Step {
    /// The page it is on.
    page: &'static str,
    at: usize,
    code: String,
    expected: Vec<String>,
}

/// The page's walkthrough: the steps before `dmq serve`, its arguments, the steps after.
#[derive(Debug)]
struct Walkthrough {
    before: Vec<Step>,
    serve_args: Vec<String>,
    after: Vec<Step>,
}

fn fenced_blocks(page: &str, name: &str) -> Vec<Fenced> {
    let mut blocks = Vec::new();
    let mut open: Option<Fenced> = None;
    let mut blank_since_last = true;
    for (n, line) in page.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Fenced {
                    lang: lang.trim().to_owned(),
                    lines: Vec::new(),
                    at: n + 1,
                    follows: blank_since_last && !blocks.is_empty(),
                });
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                blocks.push(open.take().expect("an open block"));
                blank_since_last = true;
            }
            (Some(block), _) => block.lines.push(line.to_owned()),
            (None, None) => blank_since_last &= line.trim().is_empty(),
        }
    }
    assert!(open.is_none(), "{name} ends inside a fenced block");
    blocks
}

fn walkthrough(page: &str, name: &'static str) -> Walkthrough {
    let blocks = fenced_blocks(page, name);
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut serve_args = None;
    for (i, block) in blocks.iter().enumerate() {
        if block.lang == "text" {
            // Every output the page shows belongs to a block this test runs.
            let shown_for = i.checked_sub(1).map(|j| &blocks[j]).filter(|_| block.follows);
            let runs = shown_for.is_some_and(|b| {
                b.lang == "sh" && b.lines.first().is_some_and(|l| l.trim() == "# walkthrough")
            });
            assert!(
                runs,
                "the ```text block at {name}:{} does not follow a walkthrough block",
                block.at
            );
        }
        if block.lang != "sh" {
            continue;
        }
        match block.lines.first().map(|l| l.trim()) {
            Some("# walkthrough") => {}
            Some("# walkthrough: serve") => {
                assert!(serve_args.is_none(), "a second serve block at line {}", block.at);
                serve_args = Some(serve_line(block));
                continue;
            }
            _ => continue,
        }
        let expected = match blocks.get(i + 1) {
            Some(next) if next.lang == "text" && next.follows => next.lines.clone(),
            _ => Vec::new(),
        };
        let step = Step { page: name, at: block.at, code: block.lines[1..].join("\n"), expected };
        if serve_args.is_none() { before.push(step) } else { after.push(step) }
    }
    let serve_args = serve_args.expect("a ```sh block marked `# walkthrough: serve`");
    assert!(!before.is_empty() && !after.is_empty(), "walkthrough blocks before and after serve");
    Walkthrough { before, serve_args, after }
}

/// The arguments of the serve block's `dmq serve` line after `serve`, less its
/// `--listen 127.0.0.1:8080` (the test picks a free port) and a trailing `&`.
fn serve_line(block: &Fenced) -> Vec<String> {
    let line =
        block.lines.iter().find(|l| l.starts_with("dmq serve ")).unwrap_or_else(|| {
            panic!("no `dmq serve` line in the serve block at line {}", block.at)
        });
    let mut words: Vec<&str> = line.split_whitespace().skip(2).collect();
    if words.last() == Some(&"&") {
        words.pop();
    }
    let listen = words.iter().position(|w| *w == "--listen").expect("--listen in dmq serve");
    assert_eq!(words.get(listen + 1), Some(&"127.0.0.1:8080"), "the address the page says");
    words.drain(listen..listen + 2);
    for own in ["--broker", "--namespace"] {
        assert!(!words.contains(&own), "the test sets {own} itself: {line}");
    }
    words.into_iter().map(str::to_owned).collect()
}

/// Whether `line` matches `pattern`, where `...` stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let pieces: Vec<&str> = pattern.split("...").collect();
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if pieces.len() == 1 {
        return line == pattern;
    }
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// Runs `steps` as one bash script in `dir` with `env`, and checks each step's exit and
/// output; `phase` names them in messages.
fn run_steps(phase: &str, steps: &[Step], dir: &Path, env: &[(&str, String)]) {
    let mut script = String::from("set -euo pipefail\n");
    for (n, step) in steps.iter().enumerate() {
        script.push_str(&format!("printf '\\n{MARK}{n}\\n'\n{}\n", step.code));
    }
    script.push_str(&format!("printf '\\n{MARK}end\\n'\n"));
    let path = dir.join(format!("{phase}.sh"));
    std::fs::write(&path, script).expect("write the walkthrough script");
    let out_path = dir.join(format!("{phase}.out"));
    let err_path = dir.join(format!("{phase}.err"));
    let mut command = Command::new("bash");
    command
        .arg(&path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("create the output file"))
        .stderr(std::fs::File::create(&err_path).expect("create the error file"));
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("run bash");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            eprintln!("the walkthrough ran over {RUN_LIMIT:?}: killing it");
            let _ = child.kill();
            break child.wait().expect("reap bash");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();

    // Each step's output: the lines after its marker, up to the next.
    let mut outputs: Vec<Vec<&str>> = Vec::new();
    let mut finished = false;
    for line in stdout.lines() {
        match line.strip_prefix(MARK) {
            Some("end") => finished = true,
            Some(_) => outputs.push(Vec::new()),
            None => {
                if let Some(current) = outputs.last_mut() {
                    if !line.trim().is_empty() {
                        current.push(line);
                    }
                }
            }
        }
    }
    if !status.success() || !finished {
        let n = outputs.len().saturating_sub(1);
        let (page, at) = steps.get(n).map_or(("the page", 0), |s| (s.page, s.at));
        panic!(
            "the walkthrough block at {page}:{at} failed ({status}):\n--- its \
             output ---\n{}\n--- stderr ---\n{stderr}",
            outputs.get(n).map(|o| o.join("\n")).unwrap_or_default()
        );
    }
    for (step, output) in steps.iter().zip(&outputs) {
        let mut lines = output.iter();
        for expected in step.expected.iter().filter(|l| !l.trim().is_empty()) {
            assert!(
                lines.any(|line| matches(expected, line)),
                "the walkthrough block at {}:{} does not print {expected:?} \
                 (in its place):\n--- its output ---\n{}\n--- stderr ---\n{stderr}",
                step.page,
                step.at,
                output.join("\n")
            );
        }
    }
}

#[test]
fn the_pattern_of_an_output_line_matches_as_the_page_says() {
    assert!(matches("ok", "ok"));
    assert!(!matches("ok", "ok!"));
    assert!(matches(r#"{"id":"...","existing":false}"#, r#"{"id":"a-b","existing":false}"#));
    assert!(!matches(r#"{"id":"...","existing":false}"#, r#"{"id":"a-b","existing":true}"#));
    assert!(matches("...200", "     52 200"));
    assert!(matches("a...b...c", "a1b2c"));
    assert!(!matches("a...b...c", "a1c2b"));
    assert!(!matches("ab...ba", "aba"), "the ends may not overlap");
}

#[test]
fn the_http_api_walkthrough_runs_as_written() {
    for tool in ["bash", "curl", "jq"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "the walkthrough needs {tool} on PATH; install it (apt-get install {tool})");
    }
    common::run_on_redis(|backing| run_walkthrough(backing, "docs/http-api.md", None));
}

/// The README's own walkthrough, in its "HTTP API" section, runs as written too.
#[test]
fn the_readme_http_api_section_runs_as_written() {
    common::run_on_redis(|backing| run_walkthrough(backing, "README.md", Some("## HTTP API")));
}

/// Runs the walkthrough of page `name`, or of its `section` alone (from that heading
/// to the next of its level; the lines outside it are blanked, so line numbers hold).
async fn run_walkthrough(backing: Backing, name: &'static str, section: Option<&str>) {
    let Backing::Redis { namespace } = &backing else { unreachable!("run_on_redis") };
    let root = repo_root();
    let mut page = std::fs::read_to_string(root.join(name)).expect("read the page");
    if let Some(heading) = section {
        let mut inside = false;
        let lines: Vec<&str> = page
            .lines()
            .map(|line| {
                if line.starts_with("## ") {
                    inside = line == heading;
                }
                if inside { line } else { "" }
            })
            .collect();
        assert!(lines.contains(&heading), "no section {heading:?} in {name}");
        page = lines.join("\n");
    }
    let walk = walkthrough(&page, name);
    let scratch = Scratch::new();
    let python = python();
    let python_dir = python.parent().expect("the interpreter's directory").to_owned();
    let path = std::env::join_paths(
        std::iter::once(python_dir)
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("a PATH");
    let mut env = vec![
        ("PATH", path.to_string_lossy().into_owned()),
        ("PYTHONPATH", root.join("clients/python").display().to_string()),
    ];
    let dir = scratch.0.clone();
    let before = walk.before;
    let env_before = env.clone();
    let dir_before = dir.clone();
    let ran =
        tokio::task::spawn_blocking(move || run_steps("before", &before, &dir_before, &env_before))
            .await;
    if let Err(e) = ran {
        std::panic::resume_unwind(e.into_panic());
    }

    // Killed when it drops, after the steps, passed or failed (printing its log then).
    let (_server, url) = serve(&dir, &common::redis_url(), namespace, &walk.serve_args);
    env.push(("DMQ_URL", url));
    let after = walk.after;
    let ran = tokio::task::spawn_blocking(move || run_steps("after", &after, &dir, &env)).await;
    if let Err(e) = ran {
        std::panic::resume_unwind(e.into_panic());
    }
}
