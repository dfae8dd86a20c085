//! One listening connection per broker or backend: `LISTEN` on the schema's channels,
//! and wake-ups handed to whoever waits in this process, however many they are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use dmq_core::{Result, TaskId};
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::pg_error;
use crate::schema::Schema;

/// What the listening connection wakes.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    /// A job was enqueued or became ready (channel `<schema>.jobs`).
    pub(crate) jobs: Notify,
    /// Events were published (`<schema>.events`).
    pub(crate) events: Notify,
    /// Jobs were written to the outbox (`<schema>.outbox`).
    pub(crate) outbox: Notify,
    /// A result was stored (`<schema>.results`, the task id as payload): its waiters.
    results: Mutex<HashMap<TaskId, Arc<Notify>>>,
}

impl Wakeups {
    fn results(&self) -> MutexGuard<'_, HashMap<TaskId, Arc<Notify>>> {
        self.results.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What wakes the waiters for `id`'s result; hand it back with
    /// [`done_waiting`](Wakeups::done_waiting).
    pub(crate) fn result_waiter(&self, id: TaskId) -> Arc<Notify> {
        Arc::clone(self.results().entry(id).or_default())
    }

    /// Forgets `id`'s waiters once the last of them is done.
    pub(crate) fn done_waiting(&self, id: TaskId, waiter: Arc<Notify>) {
        let mut results = self.results();
        drop(waiter);
        if results.get(&id).is_some_and(|n| Arc::strong_count(n) == 1) {
            results.remove(&id);
        }
    }

    /// Wakes everyone: after the connection was lost, a notification may have been.
    fn wake_all(&self) {
        self.jobs.notify_waiters();
        self.events.notify_waiters();
        self.outbox.notify_waiters();
        for waiter in self.results().values() {
            waiter.notify_waiters();
        }
    }
}

/// The listening connection's task; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) wakeups: Arc<Wakeups>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Listens on `schema`'s channels for `topics`, over a connection of `pool`'s
    /// options (not one of its connections: this one stays in `LISTEN`).
    pub(crate) async fn start(pool: &PgPool, schema: &Schema, topics: &[&str]) -> Result<Self> {
        let context = format!("could not listen for schema {}'s notifications", schema.name());
        let mut listener =
            PgListener::connect_with(pool).await.map_err(|e| pg_error(&context, e))?;
        let channels: Vec<String> = topics.iter().map(|t| schema.channel(t)).collect();
        listener
            .listen_all(channels.iter().map(String::as_str))
            .await
            .map_err(|e| pg_error(&context, e))?;
        let wakeups = Arc::new(Wakeups::default());
        let task = tokio::spawn(relay(listener, Arc::clone(&wakeups), schema.clone()));
        Ok(Listener { wakeups, task })
    }
}

/// Hands every notification to its waiters. `PgListener` reconnects on its own after
/// a lost connection (and listens again); what was sent meanwhile is lost, so then
/// everyone is woken to look again.
async fn relay(mut listener: PgListener, wakeups: Arc<Wakeups>, schema: Schema) {
    let (jobs, events, outbox, results) = (
        schema.channel("jobs"),
        schema.channel("events"),
        schema.channel("outbox"),
        schema.channel("results"),
    );
    loop {
        match listener.try_recv().await {
            Ok(Some(note)) => {
                let channel = note.channel();
                if channel == jobs {
                    wakeups.jobs.notify_waiters();
                } else if channel == events {
                    wakeups.events.notify_waiters();
                } else if channel == outbox {
                    wakeups.outbox.notify_waiters();
                } else if channel == results {
                    if let Ok(id) = note.payload().parse::<TaskId>() {
                        if let Some(waiter) = wakeups.results().get(&id) {
                            waiter.notify_waiters();
                        }
                    }
                }
            }
            Ok(None) => {
                tracing::warn!(
                    schema = schema.name(),
                    "lost the PostgreSQL listening connection; reconnecting"
                );
                wakeups.wake_all();
            }
            Err(e) => {
                tracing::warn!(schema = schema.name(), error = %e, "the PostgreSQL listening connection failed; retrying in 1 s");
                wakeups.wake_all();
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}
