//! What the enqueue paths accept and refuse: a task without arguments takes the empty
//! array the wire format documents, and names no queue or task can have are refused
//! before anything reaches the broker.

use std::time::Duration;

use dmq_core::{Envelope, Error, TaskError, TaskId, task};

mod common;
use common::{Backing, WAIT, encode_args, failure, queue_counts};

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
    names_no_queue_or_task_can_have_are_refused_at_enqueue;
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

async fn names_no_queue_or_task_can_have_are_refused_at_enqueue(backing: Backing) {
    let manager = backing.manager().await;
    let refused = |result: dmq_core::Result<TaskId>, expected: &str| match result {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains(expected), "expected {expected:?} in: {message}");
        }
        other => panic!("expected {expected:?} refused, got {other:?}"),
    };
    for queue in ["", "  ", "a b", "{q}", "q}", "a,b", "bell\u{7}", &"q".repeat(256)] {
        let call = echo::call("x".into()).queue(queue);
        refused(call.enqueue(&manager).await.map(|h| h.id()), "queue name");
        let envelope = Envelope::new(echo::NAME, queue, encode_args(&("x",)));
        refused(manager.enqueue_envelope(envelope).await, "queue name");
    }
    for task in ["", " input.echo", "a,b", "new\nline", "{t}"] {
        let envelope = Envelope::new(task, "input", encode_args(&("x",)));
        refused(manager.enqueue_envelope(envelope).await, "task name");
    }
    // A batch with one bad name enqueues nothing.
    let batch = [echo::call("a".into()), echo::call("b".into()).queue("")];
    let result = manager.enqueue_batch(batch).await;
    assert!(matches!(result, Err(Error::InvalidArgument(_))), "{result:?}");
    // Nor does a requeue of a dead letter to a bad queue.
    let id = manager
        .enqueue_envelope(Envelope::new("input.unknown", "input", encode_args(&())))
        .await
        .expect("enqueues");
    let worker = manager.worker().queues(["input"]).start();
    let deadline = std::time::Instant::now() + WAIT;
    while manager.dead_letters("input", 0, 10).await.expect("reads").is_empty() {
        assert!(std::time::Instant::now() < deadline, "the unknown task was not dead-lettered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await;
    let requeued = manager.requeue_dead_letter("input", id, Some("")).await;
    assert!(matches!(requeued, Err(Error::InvalidArgument(_))), "{requeued:?}");
    assert_eq!(queue_counts(&manager, "input").await, (0, 0, 0, 1));
    assert_eq!(queue_counts(&manager, "").await, (0, 0, 0, 0));
    // The longest name there may be, and names with dots, dashes, colons and
    // non-ASCII letters, are fine.
    for queue in ["q".repeat(255), "emails.high-priority".into(), "team:a".into(), "écrits".into()]
    {
        let handle = echo::call("x".into()).queue(queue.clone()).enqueue(&manager).await;
        handle.unwrap_or_else(|e| panic!("{queue:?} refused: {e}"));
        assert_eq!(queue_counts(&manager, &queue).await.0, 1, "{queue:?}");
    }
}
