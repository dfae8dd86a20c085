//! `dmq result`: one task's stored outcome.

use anyhow::bail;
use dmq_core::TaskOutcome;
use serde_json::{Value, json};

use super::admin::{Admin, maybe_time, print_json, task_id, time};
use crate::cli::ResultArgs;

/// Runs `dmq result`.
pub(crate) async fn run(args: ResultArgs) -> anyhow::Result<()> {
    let id = task_id(&args.id)?;
    let admin = Admin::connect(&args.broker).await?;
    let backend = admin.manager.backend();
    let outcome = match args.wait {
        Some(wait) => backend.wait(id, wait).await?,
        None => backend.get(id).await?,
    };
    let Some(outcome) = outcome else {
        let waited = match args.wait {
            Some(wait) => format!(" after waiting {}", humantime::format_duration(wait)),
            None => String::new(),
        };
        bail!(
            "no result stored for task {id} in namespace {:?}{waited}: it has not finished, \
             its result expired, or its task ignores results; --wait 30s waits for one",
            admin.namespace()
        );
    };
    let value = outcome.value.as_deref().map(decode_value);
    if admin.json {
        return print_json(&json!({
            "id": id.to_string(),
            "state": outcome.state.as_str(),
            "attempts": outcome.attempts,
            "started_at": outcome.started_at.map(time),
            "finished_at": time(outcome.finished_at),
            "failure": outcome.failure.as_ref().map(|f| json!({
                "kind": f.kind.as_str(),
                "message": f.message,
            })),
            "value": value.clone().map(|v| v.unwrap_or_else(Value::String)),
            "value_decodes": value.as_ref().map(Result::is_ok),
        }));
    }
    print_human(id, &outcome, value);
    Ok(())
}

/// Prints an outcome as `field: value` lines.
fn print_human(id: dmq_core::TaskId, outcome: &TaskOutcome, value: Option<Result<Value, String>>) {
    println!("id:          {id}");
    println!("state:       {}", outcome.state.as_str());
    println!("attempts:    {}", outcome.attempts);
    println!("started:     {}", maybe_time(outcome.started_at));
    println!("finished:    {}", time(outcome.finished_at));
    if let Some(failure) = &outcome.failure {
        println!("failure:     {}", failure.kind.as_str());
        println!("message:     {}", failure.message);
    }
    match value {
        Some(Ok(value)) => println!("value:       {value}"),
        Some(Err(why)) => println!("value:       ({why})"),
        None => {}
    }
}

/// A stored value, MessagePack, as JSON; or why it cannot be shown as JSON.
fn decode_value(bytes: &[u8]) -> Result<Value, String> {
    rmp_serde::from_slice::<Value>(bytes)
        .map_err(|e| format!("{} bytes of MessagePack that are not JSON-like: {e}", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_to_json() {
        let bytes = rmp_serde::to_vec(&("a", 1, vec![true])).unwrap();
        assert_eq!(decode_value(&bytes).unwrap(), json!(["a", 1, [true]]));
        assert!(decode_value(&[0xc1]).is_err());
    }
}
