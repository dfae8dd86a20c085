//! Group commit: calls that arrive while an earlier batch is on its way to Redis are
//! sent together in the next one, so a busy worker settles many jobs per round trip
//! while a lone call still goes out at once.

use std::future::Future;

use dmq_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

/// One call waiting for its batch.
type Pending<T> = (T, oneshot::Sender<Result<()>>);

/// Feeds items to a background task that writes them in batches of up to `max`.
#[derive(Debug)]
pub(crate) struct Batcher<T> {
    tx: mpsc::UnboundedSender<Pending<T>>,
}

impl<T: Send + 'static> Batcher<T> {
    /// Starts the writer task on the current runtime. `write` gets a batch and returns
    /// one result per item, in order. The task ends when the batcher is dropped.
    pub(crate) fn spawn<F, Fut>(max: usize, mut write: F) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Result<()>>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending<T>>();
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
        Batcher { tx }
    }

    /// Writes `item` with the next batch and returns its result.
    ///
    /// # Cancel safety
    ///
    /// Once called, the write happens even if the returned future is dropped.
    pub(crate) async fn submit(&self, item: T) -> Result<()> {
        let (reply, result) = oneshot::channel();
        self.tx.send((item, reply)).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Backend {
        message: "the redis writer task stopped (its runtime is shutting down)".to_owned(),
        transient: true,
    }
}
