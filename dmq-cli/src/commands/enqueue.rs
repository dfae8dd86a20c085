//! `dmq enqueue`: a job by task name, with JSON arguments.

use anyhow::{Context as _, bail, ensure};
use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use dmq_core::{Envelope, Manager, PartitionBy, Registry, is_partition_of};
use serde_json::{Value, json};

use super::admin::{Admin, print_json, time};
use crate::cli::EnqueueArgs;

/// The most JSON `-` or `@FILE` may give, in bytes: the job's MessagePack is held to the
/// broker's size limit (1 MiB by default) at enqueue, and its JSON text may well be
/// larger (escapes, spaces, numbers as text), so this only stops a runaway input such
/// as `@/dev/zero` from filling the memory.
const MAX_ARGS_TEXT: u64 = 16 * dmq_core::DEFAULT_MAX_MESSAGE_SIZE as u64;

/// Runs `dmq enqueue`.
pub(crate) async fn run(args: EnqueueArgs) -> anyhow::Result<()> {
    let text = args_text(&args.args, || std::io::stdin().lock())?;
    let payload = encode_args(&text)?;
    // A task of this binary: its arguments are checked against its parameter types
    // now, before anything is enqueued, and its queue is known.
    let registry = Registry::from_linked()?;
    let known = registry.task(&args.task);
    if known.is_some() {
        registry.check_args(&args.task, &payload)?;
    }
    let queue = match (&args.queue, known) {
        (Some(queue), _) => queue.clone(),
        (None, Some(info)) => info.queue.to_owned(),
        (None, None) => dmq_core::DEFAULT_QUEUE.to_owned(),
    };
    let admin = Admin::connect(&args.broker).await?;
    let mut envelope = Envelope::new(args.task.clone(), queue.clone(), payload);
    envelope.eta = match (args.eta, args.delay) {
        (Some(eta), _) => Some(eta),
        (None, Some(delay)) => Some(
            envelope.created_at
                + chrono::Duration::from_std(delay)
                    .with_context(|| format!("--delay {delay:?} is too long"))?,
        ),
        (None, None) => None,
    };
    if let Some(priority) = args.priority {
        envelope.priority = priority;
    }
    if let Some(id) = args.id {
        envelope.choose_id(id);
    }
    let eta = envelope.eta;
    // A queue this binary does not know as partitioned, but whose partitions the queue
    // registry lists (a worker of it registered them): a manager that knows them picks
    // one, as the task's own binary would.
    let listed = admin.admin()?.queues().await?;
    let partitions = listed.iter().filter(|q| is_partition_of(q, &queue)).count();
    let manager = match u16::try_from(partitions) {
        Ok(count) if count > 1 && admin.manager.partitions_of(&queue).is_none() => {
            let by = if args.partition_key.is_some() {
                PartitionBy::RoundRobin
            } else {
                PartitionBy::TaskId
            };
            Manager::builder()
                .shared_broker(Arc::clone(admin.manager.broker()))
                .shared_backend(Arc::clone(admin.manager.backend()))
                .partitions_by(queue.clone(), count, by)
                .build()?
        }
        _ => admin.manager.clone(),
    };
    let id = manager.enqueue_envelope_with_key(envelope, args.partition_key.as_deref()).await?;
    // The Queued event goes to the event stream before this process exits.
    manager.flush_events(crate::commands::admin::FLUSH_EVENTS).await;
    if admin.json {
        return print_json(&json!({
            "id": id.to_string(),
            "task": args.task,
            "queue": queue,
            "eta": eta.map(time),
        }));
    }
    println!("{id}");
    Ok(())
}

/// The JSON text of the arguments: `arg` itself, what `stdin` gives for `-`, or the
/// contents of the file `FILE` for `@FILE`. A command line holds at most 128 KiB in
/// one argument (on Linux), so larger arguments come from a file or a pipe.
fn args_text<R: Read>(arg: &str, stdin: impl FnOnce() -> R) -> anyhow::Result<Cow<'_, [u8]>> {
    if arg == "-" {
        return read_capped(stdin(), "standard input").map(Cow::Owned);
    }
    let Some(path) = arg.strip_prefix('@') else {
        return Ok(Cow::Borrowed(arg.as_bytes()));
    };
    ensure!(!path.is_empty(), "`@` must name the file that holds the arguments, as in @args.json");
    let file = std::fs::File::open(path)
        .with_context(|| format!("could not read the arguments from {path}"))?;
    read_capped(file, path).map(Cow::Owned)
}

/// Everything `from` gives, up to [`MAX_ARGS_TEXT`] bytes.
fn read_capped(from: impl Read, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut text = Vec::new();
    from.take(MAX_ARGS_TEXT + 1)
        .read_to_end(&mut text)
        .with_context(|| format!("could not read the arguments from {name}"))?;
    ensure!(
        text.len() as u64 <= MAX_ARGS_TEXT,
        "the arguments from {name} are over {MAX_ARGS_TEXT} bytes of JSON; pass large data \
         by reference (a key or URL) instead"
    );
    Ok(text)
}

/// The task's arguments, a JSON array, as the MessagePack tuple a worker decodes.
fn encode_args(text: &[u8]) -> anyhow::Result<Vec<u8>> {
    let value: Value = serde_json::from_slice(text).map_err(|e| {
        anyhow::anyhow!(
            "the arguments are not valid JSON ({e}); pass a JSON array such as '[\"ann\", 3]'"
        )
    })?;
    if !value.is_array() {
        bail!(
            "the arguments must be a JSON array, one element per task parameter \
             (e.g. '[\"ann\", 3]', or '[]' for none), not {}",
            kind(&value)
        );
    }
    rmp_serde::to_vec(&value).context("could not encode the arguments as MessagePack")
}

/// What kind of JSON value `value` is, with an article.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_a_json_array_sent_as_a_messagepack_tuple() {
        let bytes = encode_args(br#"["ann", 3]"#).unwrap();
        let (name, n): (String, u32) = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!((name.as_str(), n), ("ann", 3));
        assert!(encode_args(b"[]").is_ok());
        let error = encode_args(br#"{"a": 1}"#).unwrap_err().to_string();
        assert!(error.contains("must be a JSON array") && error.contains("an object"), "{error}");
        let error = encode_args(b"[1,").unwrap_err().to_string();
        assert!(error.contains("not valid JSON"), "{error}");
    }

    #[test]
    fn arguments_come_from_the_command_line_stdin_or_a_file() {
        let no_stdin = || -> &[u8] { panic!("stdin is read only for -") };
        assert_eq!(&*args_text("[1]", no_stdin).unwrap(), b"[1]");
        assert_eq!(&*args_text("-", || &b"[2]"[..]).unwrap(), b"[2]");
        let big = vec![b' '; usize::try_from(MAX_ARGS_TEXT).unwrap() + 1];
        let error = args_text("-", || &big[..]).unwrap_err().to_string();
        assert!(error.contains("standard input are over 16777216 bytes"), "{error}");
        let error = format!("{:#}", args_text("@/nonexistent/args.json", no_stdin).unwrap_err());
        assert!(
            error.starts_with("could not read the arguments from /nonexistent/args.json: "),
            "{error}"
        );
        let error = args_text("@", no_stdin).unwrap_err().to_string();
        assert!(error.contains("must name the file"), "{error}");
    }
}
