//! The Lua scripts in `lua/`, one per atomic operation, loaded once and run by SHA.

use redis::Script;

/// A script from `lua/`, with the helpers of `lua/lib.lua` it calls in front.
macro_rules! script {
    ($name:literal) => {
        Script::new(&with_helpers(
            include_str!("../lua/lib.lua"),
            include_str!(concat!("../lua/", $name, ".lua")),
        ))
    };
}

/// `body` with the helpers of `lib` it calls (and those they call) in front, in `lib`'s
/// order. Redis runs a script's whole text at every call, so every helper defined is
/// a closure made again each time: a hot script carries only what it uses.
///
/// A helper is a `local function NAME(` line with the comment lines right above it,
/// up to the next helper; it is called where `NAME(` follows no identifier character.
fn with_helpers(lib: &str, body: &str) -> String {
    // (name, text) of each helper: from its comments to its `end` at column 0.
    let mut helpers: Vec<(&str, String)> = Vec::new();
    let mut comments = String::new();
    let mut inside = false;
    for line in lib.lines() {
        let name = line.strip_prefix("local function ").and_then(|rest| rest.split('(').next());
        if let Some(name) = name {
            helpers.push((name, std::mem::take(&mut comments) + line + "\n"));
            inside = true;
        } else if let (true, Some((_, text))) = (inside, helpers.last_mut()) {
            text.push_str(line);
            text.push('\n');
            inside = line != "end";
        } else if line.starts_with("--") {
            comments.push_str(line);
            comments.push('\n');
        } else {
            comments.clear();
        }
    }
    let mut wanted = vec![false; helpers.len()];
    let mut queue = vec![body];
    while let Some(text) = queue.pop() {
        for (i, (name, helper)) in helpers.iter().enumerate() {
            if !wanted[i] && calls(text, name) {
                wanted[i] = true;
                queue.push(helper);
            }
        }
    }
    let mut out = String::new();
    for ((_, helper), wanted) in helpers.iter().zip(wanted) {
        if wanted {
            out.push_str(helper);
        }
    }
    out.push_str(body);
    out
}

/// Whether Lua `text` calls `name(` (not a longer name ending in it).
fn calls(text: &str, name: &str) -> bool {
    let call = format!("{name}(");
    text.match_indices(&call).any(|(at, _)| {
        !text[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    })
}

/// Every script the broker runs.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) claim: Script,
    pub(crate) ack: Script,
    pub(crate) retry: Script,
    pub(crate) release: Script,
    pub(crate) dead_letter: Script,
    pub(crate) renew: Script,
    pub(crate) reap: Script,
    pub(crate) reap_begin: Script,
    pub(crate) reap_end: Script,
    pub(crate) heartbeat: Script,
    pub(crate) deregister: Script,
    pub(crate) workers: Script,
    pub(crate) take_dead: Script,
    pub(crate) schedule_begin: Script,
    pub(crate) schedule_fire: Script,
    pub(crate) purge_dead: Script,
    pub(crate) purge: Script,
    pub(crate) delete_queue: Script,
    pub(crate) cancel: Script,
    pub(crate) recover: Script,
    pub(crate) doctor: Script,
    pub(crate) drop_bad: Script,
    pub(crate) quota_take: Script,
    pub(crate) quota_refund: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            enqueue: script!("enqueue"),
            claim: script!("claim"),
            ack: script!("ack"),
            retry: script!("retry"),
            release: script!("release"),
            dead_letter: script!("dead_letter"),
            renew: script!("renew"),
            reap: script!("reap"),
            reap_begin: script!("reap_begin"),
            reap_end: script!("reap_end"),
            heartbeat: script!("heartbeat"),
            deregister: script!("deregister"),
            workers: script!("workers"),
            take_dead: script!("take_dead"),
            schedule_begin: script!("schedule_begin"),
            schedule_fire: script!("schedule_fire"),
            purge_dead: script!("purge_dead"),
            purge: script!("purge"),
            delete_queue: script!("delete_queue"),
            cancel: script!("cancel"),
            recover: script!("recover"),
            doctor: script!("doctor"),
            drop_bad: script!("drop_bad"),
            quota_take: script!("quota_take"),
            quota_refund: script!("quota_refund"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &str = include_str!("../lua/lib.lua");

    #[test]
    fn a_script_gets_the_helpers_it_calls_and_theirs_and_no_others() {
        let script =
            with_helpers(LIB, "return checked(redis.pcall('GET', KEYS[1]), nil, 'string', 1)\n");
        assert!(script.contains("local function checked("), "{script}");
        assert!(script.contains("local function expect("), "checked calls expect: {script}");
        assert!(!script.contains("local function give_back("), "{script}");
        assert!(
            !script.contains("local function expect_counter("),
            "a longer name is not a call: {script}"
        );
        assert!(
            script.find("local function expect(") < script.find("local function checked("),
            "in lib's order, so a helper is defined before the one that calls it"
        );
        assert!(
            script.ends_with("return checked(redis.pcall('GET', KEYS[1]), nil, 'string', 1)\n")
        );
    }

    #[test]
    fn every_line_of_code_in_lib_belongs_to_a_helper() {
        let names: Vec<&str> = LIB
            .lines()
            .filter_map(|l| l.strip_prefix("local function ")?.split('(').next())
            .collect();
        let body: String = names.iter().map(|n| format!("{n}()\n")).collect();
        let script = with_helpers(LIB, &body);
        for line in LIB.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("--")) {
            assert!(script.contains(line), "lost from lib.lua: {line:?}");
        }
    }

    #[test]
    fn the_hot_scripts_carry_few_helpers() {
        let count = |name: &str, body: &str| {
            let script = with_helpers(LIB, body);
            let n =
                script.matches("local function ").count() - body.matches("local function ").count();
            (name.to_owned(), n)
        };
        for (name, n) in [
            count("enqueue", include_str!("../lua/enqueue.lua")),
            count("ack", include_str!("../lua/ack.lua")),
        ] {
            // The ack's gate helpers (gates_of, free_slots and theirs) are defined on
            // every run but called only on a queue with gates.
            assert!(n <= 10, "{name} carries {n} helpers");
        }
    }
}
