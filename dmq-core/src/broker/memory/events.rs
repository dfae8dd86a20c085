//! The in-memory broker's event stream: batches of events in a capped log that this
//! process reads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::InMemoryBroker;
use crate::broker::{EventCursor, EventPage, EventStream, EventsFrom};
use crate::error::{Error, Result};
use crate::events::Event;

#[async_trait]
impl EventStream for InMemoryBroker {
    async fn publish_events(&self, events: &[Arc<Event>]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let batch = events.to_vec();
        let dropped = self.event_log().append(batch);
        // The dropped batches are freed once the lock is released.
        drop(dropped);
        self.published.notify_waiters();
        Ok(())
    }

    async fn read_events(
        &self,
        from: &EventsFrom,
        max: usize,
        wait: Duration,
    ) -> Result<EventPage> {
        let mut at = self.event_log().position(from)?;
        if max == 0 {
            return Ok(EventPage::new(Vec::new(), at.cursor(), 0));
        }
        let give_up = crate::clock::deadline(wait);
        loop {
            // Register for wake-ups before looking, so a publish between the look and
            // the wait is not missed.
            let published = self.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let events = self.event_log().read(&mut at, max);
            if !events.is_empty() || Instant::now() >= give_up {
                // Copied out once the lock is released.
                let events = events.iter().map(|event| Event::clone(event)).collect();
                return Ok(EventPage::new(events, at.cursor(), 0));
            }
            tokio::select! {
                () = &mut published => {}
                () = tokio::time::sleep_until(give_up) => {}
            }
        }
    }
}

/// The event stream: batches numbered from 1 in the order they were published.
#[derive(Debug)]
pub(super) struct EventLog {
    batches: VecDeque<(u64, Vec<Arc<Event>>)>,
    /// How many events `batches` holds.
    held: usize,
    /// The number of the last batch published; 0 before the first.
    last: u64,
    /// About how many events to keep.
    pub(super) cap: usize,
}

/// A place in the event log: after the first `taken` events of batch `batch` (all of
/// them when `None`) and every batch before it.
#[derive(Debug, Clone, Copy)]
struct LogPosition {
    batch: u64,
    taken: Option<usize>,
}

impl LogPosition {
    fn cursor(self) -> EventCursor {
        match self.taken {
            Some(taken) => EventCursor::within(self.batch.to_string(), taken),
            None => EventCursor::after(self.batch.to_string()),
        }
    }
}

impl EventLog {
    pub(super) fn new(cap: usize) -> Self {
        EventLog { batches: VecDeque::new(), held: 0, last: 0, cap }
    }

    /// Appends a batch and drops the oldest batches the cap has no room for; returns
    /// them, to be freed outside the lock.
    pub(super) fn append(&mut self, batch: Vec<Arc<Event>>) -> Vec<Vec<Arc<Event>>> {
        self.last += 1;
        self.held += batch.len();
        self.batches.push_back((self.last, batch));
        let mut dropped = Vec::new();
        while let Some((_, oldest)) = self.batches.front() {
            if self.held - oldest.len() < self.cap {
                break;
            }
            self.held -= oldest.len();
            dropped.extend(self.batches.pop_front().map(|(_, batch)| batch));
        }
        dropped
    }

    /// Where `from` starts.
    fn position(&self, from: &EventsFrom) -> Result<LogPosition> {
        Ok(match from {
            EventsFrom::Now => LogPosition { batch: self.last, taken: None },
            EventsFrom::Oldest => LogPosition { batch: 0, taken: None },
            EventsFrom::Last(n) => {
                let mut wanted = *n;
                let mut at = LogPosition { batch: self.last, taken: None };
                for (number, batch) in self.batches.iter().rev() {
                    if wanted == 0 {
                        break;
                    }
                    let from_this = wanted.min(batch.len());
                    wanted -= from_this;
                    at = LogPosition { batch: *number, taken: Some(batch.len() - from_this) };
                }
                at
            }
            EventsFrom::After(cursor) => {
                let batch = cursor.entry().parse().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "{:?} is not a cursor of the in-memory event stream",
                        cursor.entry()
                    ))
                })?;
                LogPosition { batch, taken: cursor.taken() }
            }
        })
    }

    /// Up to `max` events from `at` on, moving `at` past them.
    fn read(&self, at: &mut LogPosition, max: usize) -> Vec<Arc<Event>> {
        let mut events = Vec::new();
        let first = self.batches.partition_point(|(number, _)| {
            *number < at.batch || (*number == at.batch && at.taken.is_none())
        });
        for (number, batch) in self.batches.range(first..) {
            let skip = if *number == at.batch { at.taken.unwrap_or(0) } else { 0 };
            let room = max - events.len();
            let rest = batch.get(skip..).unwrap_or_default();
            let take = rest.len().min(room);
            events.extend(rest[..take].iter().cloned());
            *at = if skip + take < batch.len() {
                LogPosition { batch: *number, taken: Some(skip + take) }
            } else {
                LogPosition { batch: *number, taken: None }
            };
            if events.len() == max {
                break;
            }
        }
        events
    }
}
