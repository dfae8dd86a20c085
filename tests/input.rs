//! What the enqueue paths accept and refuse: a task without arguments takes the empty
//! array the wire format documents, and names no queue or task can have are refused
//! before anything reaches the broker.

use dmq_core::{Envelope, TaskError, task};

mod common;
use common::{Backing, WAIT, encode_args, failure};

#[task(name = "input.ping", queue = "input")]
async fn ping() -> Result<String, TaskError> {
    Ok("pong".to_owned())
}

#[task(name = "input.echo", queue = "input")]
async fn echo(text: String) -> Result<String, TaskError> {
    Ok(text)
}

common::on_both_brokers! {
    a_task_without_arguments_takes_an_empty_array_or_nil;
}

/// An envelope of `ping` whose `args` are these bytes.
fn ping_with(args: Vec<u8>) -> Envelope {
    Envelope::new(ping::NAME, ping::QUEUE, args)
}

async fn a_task_without_arguments_takes_an_empty_array_or_nil(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["input"]).start();
    let mut ids = Vec::new();
    // `[]` as the wire format says, in its short and its 16- and 32-bit forms, and
    // nil, what dmq's own producers write for no arguments.
    for args in [vec![0x90], vec![0xdc, 0, 0], vec![0xdd, 0, 0, 0, 0], vec![0xc0]] {
        ids.push(manager.enqueue_envelope(ping_with(args)).await.expect("enqueues"));
    }
    ids.push(ping::call().enqueue(&manager).await.expect("enqueues").id());
    for id in ids {
        let value = manager.result::<String>(id).wait(WAIT).await;
        assert_eq!(value.expect("ran"), "pong", "job {id}");
    }
    // Something else is no argument list.
    for args in [encode_args(&(1u8,)), encode_args(&"x"), vec![0x80], vec![0x91, 0xc0]] {
        let id = manager.enqueue_envelope(ping_with(args.clone())).await.expect("enqueues");
        let (kind, message) = failure(manager.result::<String>(id).wait(WAIT).await);
        assert_eq!(kind, "bad_args", "{args:?}");
        assert!(message.contains("takes no arguments"), "{args:?}: {message}");
    }
    worker.shutdown().await;
}
