//! Writes that arrive together go to PostgreSQL together.
//!
//! A worker acknowledges jobs and stores results from hundreds of tasks at once. One
//! statement and one commit each would cost a WAL flush each, and for results a
//! `NOTIFY` each, which PostgreSQL serialises at commit under one database-wide lock:
//! on the 2-core development machine that capped results near 2,000 a second. A
//! [`Coalescer`] instead hands each write to a task that sends, in one statement,
//! every write that queued up while the previous statement was on its way. An idle
//! caller's write still goes at once, alone, so latency is unchanged; under load a
//! statement carries up to [`MAX_BATCH`] writes.
//!
//! Each write names a row by its id; a statement never carries two writes for the
//! same id (the second waits for the next statement), so every write keeps the effect
//! it would have alone, and its caller learns whether its own row changed.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use dmq_core::{Error, Result};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::PostgresFailure;

/// The most writes one statement carries.
pub(crate) const MAX_BATCH: usize = 512;

/// How many statements of one coalescer may be in flight at once: while one commits,
/// the next is already being built and sent.
const IN_FLIGHT: usize = 2;

/// One write: the id of the row it changes.
pub(crate) trait Write: Send + 'static {
    fn id(&self) -> Uuid;
}

/// Sends one statement for `writes` (no two with the same id) and returns the ids
/// whose rows it changed.
pub(crate) type WriteAll<W> = Arc<
    dyn Fn(Vec<W>) -> Pin<Box<dyn Future<Output = Result<HashSet<Uuid>, PostgresFailure>> + Send>>
        + Send
        + Sync,
>;

type Request<W> = (W, oneshot::Sender<Result<bool>>);

/// Queues writes and sends them in batches; see the module's documentation.
pub(crate) struct Coalescer<W> {
    requests: mpsc::UnboundedSender<Request<W>>,
    sender: JoinHandle<()>,
}

impl<W> std::fmt::Debug for Coalescer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

impl<W> Drop for Coalescer<W> {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

impl<W: Write> Coalescer<W> {
    /// A coalescer that sends its batches with `write_all`.
    pub(crate) fn start(write_all: WriteAll<W>) -> Self {
        let (requests, queued) = mpsc::unbounded_channel();
        let sender = tokio::spawn(send_batches(queued, write_all));
        Coalescer { requests, sender }
    }

    /// Writes `write` with the writes queued beside it; true when its row changed.
    ///
    /// # Errors
    ///
    /// The statement's error, when the statement that carried this write failed.
    pub(crate) async fn write(&self, write: W) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.requests.send((write, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::backend("the PostgreSQL writer stopped: its broker or backend was dropped", false)
}

/// Takes what is queued, up to [`MAX_BATCH`] and never two writes of one id, and sends
/// it as one statement, with at most [`IN_FLIGHT`] statements on their way.
async fn send_batches<W: Write>(
    mut queued: mpsc::UnboundedReceiver<Request<W>>,
    write_all: WriteAll<W>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    // A write whose id was already in the batch being built: it opens the next one.
    let mut held_back: Option<Request<W>> = None;
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else { return };
        let first = match held_back.take() {
            Some(request) => request,
            None => match queued.recv().await {
                Some(request) => request,
                None => return,
            },
        };
        let mut ids = HashSet::from([first.0.id()]);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(request) = queued.try_recv() else { break };
            if !ids.insert(request.0.id()) {
                held_back = Some(request);
                break;
            }
            batch.push(request);
        }
        // In the order of their ids, so that two statements in flight that touch the
        // same rows lock them in the same order and cannot deadlock.
        batch.sort_unstable_by_key(|(write, _)| write.id());
        let write_all = Arc::clone(&write_all);
        tokio::spawn(async move {
            let (writes, replies): (Vec<W>, Vec<_>) = batch.into_iter().unzip();
            let wrote: Vec<Uuid> = writes.iter().map(Write::id).collect();
            match write_all(writes).await {
                Ok(changed) => {
                    for (id, reply) in wrote.into_iter().zip(replies) {
                        let _ = reply.send(Ok(changed.contains(&id)));
                    }
                }
                Err(failure) => {
                    let mut errors = failure.shared(replies.len());
                    for reply in replies {
                        let _ = reply.send(Err(errors.pop().unwrap_or_else(stopped)));
                    }
                }
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    struct Row(Uuid);

    impl Write for Row {
        fn id(&self) -> Uuid {
            self.0
        }
    }

    /// A writer that records each batch, changes every row but `refused`, and takes
    /// a moment, so that writes queue up behind it.
    fn recording(batches: Arc<Mutex<Vec<Vec<Uuid>>>>, refused: Uuid) -> Coalescer<Row> {
        Coalescer::start(Arc::new(move |writes: Vec<Row>| {
            let batches = Arc::clone(&batches);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let ids: Vec<Uuid> = writes.iter().map(|w| w.0).collect();
                batches.lock().unwrap().push(ids.clone());
                Ok(ids.into_iter().filter(|id| *id != refused).collect())
            })
        }))
    }

    #[tokio::test]
    async fn writes_queued_together_share_statements_and_each_learns_its_own_answer() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let refused = Uuid::new_v4();
        let coalescer = Arc::new(recording(Arc::clone(&batches), refused));
        let mut ids: Vec<Uuid> = (0..300).map(|_| Uuid::new_v4()).collect();
        ids.push(refused);
        let answers = futures::future::join_all(ids.iter().map(|id| {
            let coalescer = Arc::clone(&coalescer);
            let id = *id;
            async move { (id, coalescer.write(Row(id)).await.unwrap()) }
        }))
        .await;
        for (id, changed) in answers {
            assert_eq!(changed, id != refused, "the answer for {id}");
        }
        let batches = batches.lock().unwrap();
        let written: usize = batches.iter().map(Vec::len).sum();
        assert_eq!(written, 301, "every write was sent once");
        assert!(batches.len() < 20, "301 concurrent writes took {} statements", batches.len());
    }

    #[tokio::test]
    async fn two_writes_of_one_id_never_share_a_statement() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let coalescer = Arc::new(recording(Arc::clone(&batches), Uuid::nil()));
        let twice = Uuid::new_v4();
        let ids = [Uuid::new_v4(), twice, Uuid::new_v4(), twice, twice, Uuid::new_v4()];
        let answers = futures::future::join_all(ids.iter().map(|id| {
            let coalescer = Arc::clone(&coalescer);
            let id = *id;
            async move { coalescer.write(Row(id)).await.unwrap() }
        }))
        .await;
        assert!(answers.iter().all(|changed| *changed));
        let batches = batches.lock().unwrap();
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 6);
        for batch in batches.iter() {
            let distinct: HashSet<&Uuid> = batch.iter().collect();
            assert_eq!(distinct.len(), batch.len(), "a statement carried one id twice: {batch:?}");
        }
    }

    #[tokio::test]
    async fn a_failed_statement_fails_every_write_it_carried_with_the_same_advice() {
        let coalescer: Coalescer<Row> = Coalescer::start(Arc::new(|_writes: Vec<Row>| {
            Box::pin(async {
                Err(PostgresFailure::new("store results", sqlx::Error::PoolTimedOut))
            })
        }));
        let coalescer = Arc::new(coalescer);
        let errors = futures::future::join_all((0..5).map(|_| {
            let coalescer = Arc::clone(&coalescer);
            async move { coalescer.write(Row(Uuid::new_v4())).await.unwrap_err() }
        }))
        .await;
        for e in errors {
            assert!(e.is_transient(), "{e}");
            assert!(e.to_string().contains("store results"), "{e}");
        }
    }
}
