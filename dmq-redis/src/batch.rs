//! Group commit: calls that arrive while an earlier batch is on its way to Redis are
//! sent together in the next one, so a busy worker settles many jobs per round trip
//! while a lone call still goes out at once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use dmq_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

/// One call waiting for its batch.
type Pending<T, R> = (T, oneshot::Sender<Result<R>>);

/// Writes a batch; returns one result per item, in order.
type Write<T, R> =
    Arc<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = Vec<Result<R>>> + Send>> + Send + Sync>;

/// Feeds items to a background task that writes them in batches of up to `max`, each
/// item's write answering with an `R`.
///
/// The task starts with the first item, on the caller's runtime, and starts again on
/// the next caller's runtime if the one it ran on has shut down.
pub(crate) struct Batcher<T, R = ()> {
    max: usize,
    write: Write<T, R>,
    tx: Mutex<Option<mpsc::UnboundedSender<Pending<T, R>>>>,
}

impl<T, R> fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher").field("max", &self.max).finish_non_exhaustive()
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// A batcher that writes with `write`.
    pub(crate) fn new<F, Fut>(max: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R>>> + Send + 'static,
    {
        let write: Write<T, R> = Arc::new(move |batch| Box::pin(write(batch)));
        Batcher { max, write, tx: Mutex::new(None) }
    }

    /// Writes `item` with the next batch and returns its result.
    ///
    /// # Cancel safety
    ///
    /// Once called, the write happens even if the returned future is dropped.
    pub(crate) async fn submit(&self, item: T) -> Result<R> {
        let (reply, result) = oneshot::channel();
        self.sender().send((item, reply)).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }

    /// The writer task's channel, starting the task when none runs.
    fn sender(&self) -> mpsc::UnboundedSender<Pending<T, R>> {
        let mut tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = tx.as_ref().filter(|running| !running.is_closed()) {
            return running.clone();
        }
        let (sender, mut rx) = mpsc::unbounded_channel::<Pending<T, R>>();
        let write = Arc::clone(&self.write);
        let max = self.max;
        tokio::spawn(async move {
            let mut pending = Vec::with_capacity(max);
            while rx.recv_many(&mut pending, max).await > 0 {
                let (items, replies): (Vec<T>, Vec<_>) = pending.drain(..).unzip();
                let results = write(items).await;
                for (reply, result) in replies.into_iter().zip(results) {
                    // The caller may have stopped waiting; the write happened anyway.
                    let _ = reply.send(result);
                }
            }
        });
        *tx = Some(sender.clone());
        sender
    }
}

fn stopped() -> Error {
    Error::backend(
        "the redis writer task stopped (its runtime shut down); try again".to_owned(),
        true,
    )
}
