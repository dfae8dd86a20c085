//! The rule every queue and task name follows, checked wherever a job is enqueued.
//!
//! A queue name becomes part of every Redis key of its queue (`{<namespace>:<queue>}:ready:5`,
//! where the braces are Redis Cluster's hash tag; a partition's tag adds `,<k>`), and both kinds of name are typed on
//! command lines, listed in tables and given as comma-separated lists (`--queues a,b`).
//! A name that breaks any of these would strand its jobs where the admin commands cannot
//! see them, so it is refused at enqueue.

use crate::error::{Error, Result};

/// The longest queue or task name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// What every name must be, for the error messages.
const RULE: &str = "a queue or task name is 1 to 255 bytes without whitespace, control \
                    characters, braces or commas";

/// Checks that `queue` can name a queue.
///
/// A queue or task name is 1 to [`MAX_NAME_LEN`] bytes of UTF-8 without whitespace or
/// control characters (they do not survive command lines, tables and logs), braces
/// (`{` and `}` delimit the Redis Cluster hash tag in a queue's keys) or commas (they
/// separate the names in `--queues`, `--task` and `--queue` lists). Dots, dashes,
/// colons, underscores and letters of any script are fine: `emails`, `reports.daily`,
/// `billing:eu-west`.
///
/// # Errors
///
/// [`Error::InvalidArgument`] saying what is wrong with the name and what is allowed.
pub fn check_queue_name(queue: &str) -> Result<()> {
    check("queue", queue, "\"emails\" or \"reports.daily\"")?;
    if let (logical, Some(partition)) = crate::partition::split_partition(queue) {
        return Err(Error::InvalidArgument(format!(
            "queue name {} is not usable: a name ending in #<number> names partition \
             {partition} of a partitioned queue {logical:?}; name the queue itself, and \
             declare its partitions (#[task(partitions = ..)] or ManagerBuilder::partitions)",
            shown(queue)
        )));
    }
    Ok(())
}

/// Checks that `task` can name a task: the rule of [`check_queue_name`], so a name
/// that works for one works for the other.
///
/// # Errors
///
/// [`Error::InvalidArgument`] saying what is wrong with the name and what is allowed.
pub fn check_task_name(task: &str) -> Result<()> {
    check("task", task, "\"emails.send\" or \"add\"")
}

fn check(kind: &str, name: &str, examples: &str) -> Result<()> {
    let problem = if name.is_empty() {
        "it is empty".to_owned()
    } else if name.len() > MAX_NAME_LEN {
        format!("it is {} bytes long", name.len())
    } else if let Some(c) = name.chars().find(|&c| !allowed(c)) {
        if c.is_whitespace() {
            "it holds whitespace".to_owned()
        } else if c.is_control() {
            format!("it holds a control character (U+{:04X})", u32::from(c))
        } else {
            format!("it holds {c:?}")
        }
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument(format!(
        "{kind} name {} is not usable: {problem}; {RULE}, like {examples}",
        shown(name)
    )))
}

fn allowed(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || matches!(c, '{' | '}' | ','))
}

/// `name` quoted for an error message, cut short when long.
fn shown(name: &str) -> String {
    const SHOWN: usize = 40;
    if name.chars().count() <= SHOWN {
        return format!("{name:?}");
    }
    let head: String = name.chars().take(SHOWN).collect();
    format!("{head:?}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(name: &str) -> String {
        match check_queue_name(name) {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("{name:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn unusable_names_are_refused_saying_why() {
        for (name, why) in [
            ("", "it is empty"),
            (" ", "it holds whitespace"),
            ("a b", "it holds whitespace"),
            ("emails\n", "it holds whitespace"),
            ("\u{a0}x", "it holds whitespace"),
            ("bell\u{7}", "it holds a control character (U+0007)"),
            ("{emails}", "it holds '{'"),
            ("em}ails", "it holds '}'"),
            ("a,b", "it holds ','"),
        ] {
            let message = refused(name);
            assert!(message.starts_with(&format!("queue name {name:?} is not usable: {why}; ")));
            assert!(message.contains(RULE), "{message}");
        }
        let long = "q".repeat(MAX_NAME_LEN + 1);
        let message = refused(&long);
        assert!(message.contains("it is 256 bytes long"), "{message}");
        assert!(message.starts_with(&format!("queue name \"{}\"... ", &long[..40])), "{message}");
        let Err(Error::InvalidArgument(message)) = check_task_name("") else { panic!() };
        assert!(message.starts_with("task name \"\" is not usable: it is empty; "), "{message}");
        assert!(message.ends_with("like \"emails.send\" or \"add\""), "{message}");
    }

    #[test]
    fn ordinary_names_pass() {
        for name in
            ["emails", "reports.daily", "billing:eu-west", "dmq-bench", "a_b", "écrits", "队列"]
        {
            assert!(check_queue_name(name).is_ok(), "{name:?}");
            assert!(check_task_name(name).is_ok(), "{name:?}");
        }
        let longest = "é".repeat(MAX_NAME_LEN / 2) + "q";
        assert_eq!(longest.len(), MAX_NAME_LEN);
        assert!(check_queue_name(&longest).is_ok());
        assert!(check_queue_name(&format!("{longest}q")).is_err(), "bytes count, not chars");
    }
}
