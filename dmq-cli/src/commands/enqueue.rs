//! `dmq enqueue`: a job by task name, with JSON arguments.

use anyhow::{Context as _, bail};
use dmq_core::Envelope;
use serde_json::{Value, json};

use super::admin::{Admin, print_json, time};
use crate::cli::EnqueueArgs;

/// The queue of a task that is not registered in this binary.
const DEFAULT_QUEUE: &str = "default";

/// Runs `dmq enqueue`.
pub(crate) async fn run(args: EnqueueArgs) -> anyhow::Result<()> {
    let payload = encode_args(&args.args)?;
    let admin = Admin::connect(&args.broker).await?;
    let queue = match &args.queue {
        Some(queue) => queue.clone(),
        None => admin
            .manager
            .registry()
            .task(&args.task)
            .map_or_else(|| DEFAULT_QUEUE.to_owned(), |info| info.queue.to_owned()),
    };
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
    let eta = envelope.eta;
    let id = admin.manager.enqueue_envelope(envelope).await?;
    // The Queued event goes to the event stream before this process exits.
    admin.manager.flush_events(crate::commands::admin::FLUSH_EVENTS).await;
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

/// The task's arguments, a JSON array, as the MessagePack tuple a worker decodes.
fn encode_args(text: &str) -> anyhow::Result<Vec<u8>> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
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
        let bytes = encode_args(r#"["ann", 3]"#).unwrap();
        let (name, n): (String, u32) = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!((name.as_str(), n), ("ann", 3));
        assert!(encode_args("[]").is_ok());
        let error = encode_args(r#"{"a": 1}"#).unwrap_err().to_string();
        assert!(error.contains("must be a JSON array") && error.contains("an object"), "{error}");
        let error = encode_args("[1,").unwrap_err().to_string();
        assert!(error.contains("not valid JSON"), "{error}");
    }
}
