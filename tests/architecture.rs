//! The shape of dmq-core, checked from its sources: its top-level modules import one
//! another without a cycle, the engine (worker, scheduler, bus, metrics) never names
//! the `Manager`, and the task model imports nothing else of dmq.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code without its unit tests and comments.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read a source file");
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The top-level modules of dmq-core (`lib.rs` and the test-only conformance suite
/// left out), each with the code of its files.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dmq-core/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a component");
        let name = first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
        if name == "lib" || name == "conformance" {
            continue;
        }
        let code = code_of(&file);
        modules.entry(name).or_default().push_str(&code);
    }
    modules
}

/// What each module imports of the others: the `crate::<module>` paths it names.
fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    modules
        .iter()
        .map(|(name, code)| {
            let named = code
                .split("crate::")
                .skip(1)
                .filter_map(|rest| {
                    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
                    Some(rest[..end].to_owned())
                })
                .filter(|other| other != name && modules.contains_key(other))
                .collect();
            (name.clone(), named)
        })
        .collect()
}

#[test]
fn dmq_cores_modules_import_one_another_without_a_cycle() {
    let graph = imports(&modules());
    assert!(graph.len() > 10, "found too few modules: {graph:?}");
    // Depth-first search for a back edge.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|n| *n == node) {
            panic!("an import cycle: {} -> {node}", path[at..].join(" -> "));
        }
        path.push(node);
        for next in &graph[node] {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node);
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_engine_never_names_the_manager_and_the_task_model_stands_alone() {
    let modules = modules();
    let graph = imports(&modules);
    for engine in ["worker", "core", "metrics"] {
        assert!(!graph[engine].contains("manager"), "{engine} imports the manager");
        assert!(!modules[engine].contains("Manager"), "{engine} names Manager");
    }
    assert!(graph["task"].is_empty(), "the task model imports {:?}", graph["task"]);
}
