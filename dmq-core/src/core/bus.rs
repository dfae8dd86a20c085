//! The bus between the places events happen and the callbacks (and the broker's
//! event stream) that receive them.
//!
//! Emitting never waits: each listener has a bounded queue, and an event its queue
//! has no room for is dropped and counted. A listener's task starts with the first
//! event it is sent, on the runtime of whoever sends it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::events::{Callback, Event, EventObserver, ListenerStats, Rules};

/// At most this many events go to the broker's event stream in one write.
const STREAM_BATCH: usize = 512;

/// How many events wait for the event stream at most (unless callbacks get more).
const STREAM_ROOM: usize = 65_536;

/// At most this many writes to the event stream are in flight at once.
const STREAM_WRITES: usize = 4;

/// How often a listener that keeps failing or dropping logs it, at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Where a listener's events go.
enum Sink {
    Callback(Arc<dyn Callback>),
    /// The broker's event stream, written in batches.
    Stream(Arc<dyn Broker>),
}

struct Listener {
    name: String,
    rules: Rules,
    sender: mpsc::Sender<Arc<Event>>,
    /// Taken by the task that serves the listener, when the first event comes.
    receiver: Mutex<Option<mpsc::Receiver<Arc<Event>>>>,
    /// Whether that task has started: read on every event, so no lock is taken then.
    started: AtomicBool,
    sink: Mutex<Option<Sink>>,
    delivered: AtomicU64,
    /// Events its task has finished with (handled, or failed to write).
    handled: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    /// When `send` last warned of a drop, in milliseconds after `created`
    /// ([`NEVER`] before the first): drops are logged at most every [`WARN_EVERY`].
    warned_at: AtomicU64,
    created: Instant,
}

/// `warned_at` before any warning.
const NEVER: u64 = u64::MAX;

/// The listeners of one manager.
pub(crate) struct Bus {
    listeners: Vec<Listener>,
    /// Sees every event first (the metrics).
    observer: Option<Arc<dyn EventObserver>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.listeners.iter().map(|l| l.name.as_str()).collect();
        f.debug_struct("Bus").field("listeners", &names).finish_non_exhaustive()
    }
}

impl Bus {
    /// A bus for `callbacks`, each with a queue of `buffer` events, and for the
    /// broker's event stream when `stream` is given.
    pub(crate) fn new(
        callbacks: Vec<Arc<dyn Callback>>,
        stream: Option<Arc<dyn Broker>>,
        buffer: usize,
        observer: Option<Arc<dyn EventObserver>>,
    ) -> Self {
        let buffer = buffer.max(1);
        let mut listeners: Vec<Listener> = callbacks
            .into_iter()
            .map(|callback| {
                let (name, rules) = (callback.name(), callback.rules());
                Listener::new(name, rules, buffer, Sink::Callback(callback))
            })
            .collect();
        if let Some(broker) = stream {
            // Room for a burst of batch enqueues (a few hundred thousand jobs a second
            // emit as many Queued events) while the writer drains it in batches: a
            // few megabytes at most.
            let room = buffer.max(STREAM_ROOM);
            listeners.push(Listener::new(
                "event-stream".to_owned(),
                Rules::all(),
                room,
                Sink::Stream(broker),
            ));
        }
        Bus { listeners, observer }
    }

    /// Whether anything listens: when nothing does, events are not even built.
    pub(crate) fn is_listened(&self) -> bool {
        !self.listeners.is_empty() || self.observer.is_some()
    }

    /// Hands the event `make` builds to the metrics and to every listener whose rules
    /// select it; builds nothing when nobody listens. Never waits.
    pub(crate) fn emit(&self, make: impl FnOnce() -> Event) {
        if !self.is_listened() {
            return;
        }
        let event = Arc::new(make());
        if let Some(observer) = &self.observer {
            observer.observe(&event);
        }
        let kind = event.event_type();
        for listener in &self.listeners {
            if listener.rules.selects(kind, &event.task, &event.queue) {
                listener.send(Arc::clone(&event));
            }
        }
    }

    /// Waits up to `timeout` for every listener to finish with the events queued for
    /// it so far; whether they all did.
    pub(crate) async fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        for listener in &self.listeners {
            listener.start();
            let queued = listener.delivered.load(Ordering::Relaxed);
            // A listener whose task ended with its runtime handles nothing more.
            while listener.handled.load(Ordering::Relaxed) < queued && !listener.sender.is_closed()
            {
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        true
    }

    /// What each listener has received and dropped.
    pub(crate) fn stats(&self) -> Vec<ListenerStats> {
        self.listeners
            .iter()
            .map(|l| ListenerStats {
                name: l.name.clone(),
                delivered: l.delivered.load(Ordering::Relaxed),
                dropped: l.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl Listener {
    fn new(name: String, rules: Rules, buffer: usize, sink: Sink) -> Self {
        let (sender, receiver) = mpsc::channel(buffer);
        Listener {
            name,
            rules,
            sender,
            receiver: Mutex::new(Some(receiver)),
            started: AtomicBool::new(false),
            sink: Mutex::new(Some(sink)),
            delivered: AtomicU64::new(0),
            handled: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            warned_at: AtomicU64::new(NEVER),
            created: Instant::now(),
        }
    }

    /// Queues `event` for this listener, starting its task with the first event.
    fn send(&self, event: Arc<Event>) {
        self.start();
        match self.sender.try_send(event) {
            Ok(()) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(refused) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if !self.time_to_warn() {
                    return;
                }
                match refused {
                    mpsc::error::TrySendError::Full(_) => tracing::warn!(
                        listener = %self.name,
                        dropped,
                        "an event listener's queue is full; dropping the events it has no room for (counted in its stats)"
                    ),
                    mpsc::error::TrySendError::Closed(_) => tracing::warn!(
                        listener = %self.name,
                        dropped,
                        "an event listener's task ended with the tokio runtime that started it; its events are dropped (counted in its stats): use one manager per runtime"
                    ),
                }
            }
        }
    }

    /// Whether a drop now should be logged: the first, then one every [`WARN_EVERY`]
    /// at most. Takes no lock: it runs on the job's path.
    fn time_to_warn(&self) -> bool {
        let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(NEVER - 1);
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == NEVER || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        due && self
            .warned_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Starts the task that serves this listener, once, on the current runtime.
    /// Outside a runtime nothing starts and the events queue up (then drop).
    fn start(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let mut receiver = self.receiver.lock().unwrap_or_else(|p| p.into_inner());
        if receiver.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let sink = self.sink.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (Some(events), Some(sink)) = (receiver.take(), sink) else {
            return;
        };
        self.started.store(true, Ordering::Release);
        let (name, handled) = (self.name.clone(), Arc::clone(&self.handled));
        match sink {
            Sink::Callback(callback) => {
                runtime.spawn(serve_callback(name, callback, events, handled));
            }
            Sink::Stream(broker) => {
                let dropped = Arc::clone(&self.dropped);
                runtime.spawn(serve_stream(broker, events, handled, dropped));
            }
        }
    }
}

/// Hands a callback its events one at a time; a panic in it is logged and the next
/// event is handed over as usual.
async fn serve_callback(
    name: String,
    callback: Arc<dyn Callback>,
    mut events: mpsc::Receiver<Arc<Event>>,
    handled: Arc<AtomicU64>,
) {
    let mut last_warning: Option<Instant> = None;
    let mut panics = 0u64;
    while let Some(event) = events.recv().await {
        let outcome = AssertUnwindSafe(callback.on_event(&event)).catch_unwind().await;
        if let Err(panic) = outcome {
            panics += 1;
            if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                last_warning = Some(Instant::now());
                tracing::error!(
                    callback = %name,
                    panic = crate::error::panic_message(&*panic),
                    event = %event.event_type(),
                    id = %event.id,
                    panics,
                    "an event callback panicked; it goes on receiving events"
                );
            }
        }
        handled.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes events to the broker's event stream, as many as are waiting (up to
/// [`STREAM_BATCH`]) in one write, with up to [`STREAM_WRITES`] writes in flight so
/// that a burst of enqueues does not outrun it. Events a write fails for are dropped
/// and counted.
async fn serve_stream(
    broker: Arc<dyn Broker>,
    mut events: mpsc::Receiver<Arc<Event>>,
    handled: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
) {
    let mut writes = FuturesUnordered::new();
    let mut last_warning: Option<Instant> = None;
    let mut open = true;
    while open || !writes.is_empty() {
        let mut batch: Vec<Arc<Event>> = Vec::new();
        tokio::select! {
            received = events.recv_many(&mut batch, STREAM_BATCH), if open && writes.len() < STREAM_WRITES => {
                if received == 0 {
                    open = false;
                    continue;
                }
                let broker = Arc::clone(&broker);
                writes.push(async move {
                    let written = match broker.event_stream() {
                        Some(stream) => stream.publish_events(&batch).await,
                        None => Ok(()),
                    };
                    (batch.len() as u64, written)
                });
            }
            Some((count, written)) = writes.next(), if !writes.is_empty() => {
                if let Err(e) = written {
                    dropped.fetch_add(count, Ordering::Relaxed);
                    if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                        last_warning = Some(Instant::now());
                        tracing::warn!(error = %e, lost = count, "writing events to the broker's event stream failed; dropping them");
                    }
                }
                handled.fetch_add(count, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Deaf;

    #[async_trait::async_trait]
    impl Callback for Deaf {
        async fn on_event(&self, _event: &Event) {}
    }

    fn listener() -> Listener {
        Listener::new("deaf".to_owned(), Rules::all(), 1, Sink::Callback(Arc::new(Deaf)))
    }

    #[test]
    fn drops_are_logged_at_first_then_at_most_once_a_minute() {
        let mut listener = listener();
        assert!(listener.time_to_warn(), "the first drop is logged");
        assert!(!listener.time_to_warn(), "not again at once");
        // As if the listener were two minutes old and last warned a minute and a
        // half ago, then a second ago.
        listener.created = Instant::now().checked_sub(Duration::from_secs(120)).expect("uptime");
        listener.warned_at.store(30_000, Ordering::Relaxed);
        assert!(listener.time_to_warn(), "logged again after a minute");
        assert!(!listener.time_to_warn(), "then quiet again");
        listener.warned_at.store(119_000, Ordering::Relaxed);
        assert!(!listener.time_to_warn(), "a second after the last warning");
    }
}
