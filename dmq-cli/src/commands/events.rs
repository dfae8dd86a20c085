//! `dmq events`: follow the namespace's event stream, filtered by kind, task and queue.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use dmq_core::{Event, EventKind, EventPage, EventStream, EventsFrom, Rules};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

use super::admin::Admin;
use crate::cli::EventsArgs;

/// The most events one read takes.
const PAGE: usize = 1_000;

/// How long one read waits for events when nothing else ends the wait.
const FOLLOW_WAIT: Duration = Duration::from_secs(30);

/// The longest pause between tries while the broker cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `dmq events`.
pub(crate) async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let mut stop = Stop::new(&args)?;
    let admin = Admin::connect(&args.broker).await?;
    let broker = Arc::clone(admin.manager.broker());
    let stream = broker.event_stream().ok_or_else(|| {
        anyhow::anyhow!("this broker keeps no event stream, so there are no events to watch")
    })?;
    let rules = rules_of(&args);
    let filtered = rules != Rules::all();
    let mut out = Printer { json: admin.json, printed: 0, limit: args.count };

    let (start, told) = match args.last {
        _ if args.from_start => (EventsFrom::Oldest, "from the oldest kept".to_owned()),
        // The last n that match: read them all, keep the last n (below).
        Some(n) if filtered => (EventsFrom::Oldest, format!("from the last {n} that match")),
        Some(n) => (EventsFrom::Last(n), format!("from the last {n}")),
        None => (EventsFrom::Now, "from now".to_owned()),
    };
    // Where to start, fixed before saying so: a test (or a script) may start jobs as
    // soon as it reads the line below.
    let placed = stream.read_events(&start, 0, Duration::ZERO).await?;
    let mut from = EventsFrom::After(placed.cursor);
    eprintln!("watching the events of namespace {:?} {told}; Ctrl-C to stop", admin.namespace());

    if let Some(n) = args.last.filter(|_| filtered && !args.from_start) {
        // Up to the end of the stream as it is now, keeping the last n that match.
        let mut kept: VecDeque<Event> = VecDeque::with_capacity(n.min(PAGE));
        loop {
            let Some(page) = stop.read(stream, &from, Duration::ZERO).await? else {
                return Ok(());
            };
            from = EventsFrom::After(page.cursor.clone());
            out.warn_skipped(&page);
            // Pages may hold fewer events than asked for (a page ends with a stream
            // entry): only an empty one, read without waiting, is the end.
            let caught_up = page.events.is_empty();
            for event in page.events.into_iter().filter(|e| rules.matches(e)) {
                if kept.len() == n {
                    kept.pop_front();
                }
                if n > 0 {
                    kept.push_back(event);
                }
            }
            if caught_up {
                break;
            }
        }
        if out.print(kept.iter())? == Flow::Stop {
            return Ok(());
        }
    }

    loop {
        let Some(wait) = stop.wait() else { return Ok(()) };
        let Some(page) = stop.read(stream, &from, wait).await? else { return Ok(()) };
        from = EventsFrom::After(page.cursor.clone());
        out.warn_skipped(&page);
        if out.print(page.events.iter().filter(|e| rules.matches(e)))? == Flow::Stop {
            return Ok(());
        }
    }
}

/// The rules that `--kind`, `--task` and `--queue` make.
fn rules_of(args: &EventsArgs) -> Rules {
    let mut rules = Rules::all();
    if !args.kinds.is_empty() {
        rules = rules.events(args.kinds.iter().copied());
    }
    if !args.tasks.is_empty() {
        rules = rules.tasks(args.tasks.iter().cloned());
    }
    if !args.queues.is_empty() {
        rules = rules.queues(args.queues.iter().cloned());
    }
    rules
}

/// What ends the command: a signal, or `--for` running out.
struct Stop {
    interrupt: Signal,
    terminate: Signal,
    deadline: Option<Instant>,
}

impl Stop {
    fn new(args: &EventsArgs) -> anyhow::Result<Self> {
        Ok(Stop {
            interrupt: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
            deadline: args.duration.map(|d| Instant::now() + d),
        })
    }

    /// How long the next read may wait; `None` once `--for` has run out.
    fn wait(&self) -> Option<Duration> {
        match self.deadline {
            None => Some(FOLLOW_WAIT),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                (!left.is_zero()).then_some(left)
            }
        }
    }

    /// One page from `from`, waiting up to `wait`; `None` when a signal or `--for`
    /// ends the command first. A broker that cannot be reached is tried again, with
    /// backoff, until it can.
    async fn read(
        &mut self,
        stream: &dyn EventStream,
        from: &EventsFrom,
        wait: Duration,
    ) -> anyhow::Result<Option<EventPage>> {
        let mut backoff = Duration::from_millis(200);
        let mut warned = false;
        loop {
            let deadline = self.deadline;
            let ended = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // A read is cancel safe: dropping it loses nothing.
            let read = tokio::select! {
                read = stream.read_events(from, PAGE, wait) => read,
                _ = self.interrupt.recv() => return Ok(None),
                _ = self.terminate.recv() => return Ok(None),
                () = ended => return Ok(None),
            };
            match read {
                Ok(page) => {
                    if warned {
                        eprintln!("dmq events: reading the event stream again");
                    }
                    return Ok(Some(page));
                }
                Err(e) if e.is_transient() => {
                    if !warned {
                        eprintln!("dmq events: {e}; trying again");
                        warned = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = self.interrupt.recv() => return Ok(None),
                        _ = self.terminate.recv() => return Ok(None),
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Whether to go on after printing events.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

/// Prints events, one per line, and counts them against `--count`.
struct Printer {
    json: bool,
    printed: u64,
    limit: Option<u64>,
}

impl Printer {
    /// Prints `events` (a page's worth) in one write; stops after `--count` events,
    /// or when stdout was closed (a pipe into `head`, say).
    fn print<'a>(&mut self, events: impl Iterator<Item = &'a Event>) -> anyhow::Result<Flow> {
        let mut lines = String::new();
        let mut flow = Flow::Go;
        for event in events {
            if self.json {
                lines.push_str(&dmq_server::event_json(event).to_string());
            } else {
                lines.push_str(&text_line(event));
            }
            lines.push('\n');
            self.printed += 1;
            if self.limit.is_some_and(|limit| self.printed >= limit) {
                flow = Flow::Stop;
                break;
            }
        }
        if lines.is_empty() {
            return Ok(flow);
        }
        let mut stdout = io::stdout().lock();
        match stdout.write_all(lines.as_bytes()).and_then(|()| stdout.flush()) {
            Ok(()) => Ok(flow),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Flow::Stop),
            Err(e) => Err(e).context("writing to stdout"),
        }
    }

    /// Says on stderr that events this version cannot read were passed over.
    fn warn_skipped(&self, page: &EventPage) {
        if page.skipped > 0 {
            eprintln!(
                "dmq events: passed over {} events this version of dmq cannot read (written by \
                 a newer one?)",
                page.skipped
            );
        }
    }
}

/// An event as one line of text: time, kind (padded, so that the columns line up),
/// task, then `key=value` facts, and last the free text of an error or reason, with
/// any line breaks in it turned into spaces.
///
/// `2030-01-01T09:00:00.123Z failed        emails.send id=... queue=emails attempt=1
/// worker=... failure=fatal run_time=813µs error: "nobody" is not an e-mail address`
fn text_line(event: &Event) -> String {
    use std::fmt::Write as _;

    let mut line = format!(
        "{} {:<13} {} id={} queue={} attempt={}",
        time(event.at),
        event.event_type().as_str(),
        event.task,
        event.id,
        event.queue,
        event.attempt
    );
    if let Some(worker) = &event.worker {
        let _ = write!(line, " worker={worker}");
    }
    let text = match &event.kind {
        EventKind::Queued { eta } => {
            if let Some(eta) = eta {
                let _ = write!(line, " eta={}", time(*eta));
            }
            None
        }
        EventKind::Completed { run_time } => {
            let _ = write!(line, " run_time={run_time:?}");
            None
        }
        EventKind::Failed { failure, error, run_time } => {
            let _ = write!(line, " failure={failure}");
            if let Some(run_time) = run_time {
                let _ = write!(line, " run_time={run_time:?}");
            }
            Some(("error", error))
        }
        EventKind::Retry { delay, error, run_time } => {
            let _ = write!(line, " retry_in={delay:?} run_time={run_time:?}");
            Some(("error", error))
        }
        EventKind::DeadLettered { reason } => Some(("reason", reason)),
        EventKind::Expired { expired_at } => {
            let _ = write!(line, " expired_at={}", time(*expired_at));
            None
        }
        EventKind::Held { gate, limit } => {
            let _ = write!(line, " limit={}", limit.as_str());
            Some(("gate", gate))
        }
        // Started, NotFound, and kinds a later dmq adds: no facts to show.
        _ => None,
    };
    if let Some((label, text)) = text {
        let _ = write!(line, " {label}: {}", text.replace(['\n', '\r'], " "));
    }
    line
}

/// A time as RFC 3339 in UTC, to the millisecond.
fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmq_core::{FailureKind, TaskId};
    use serde_json::json;

    #[test]
    fn a_failure_prints_as_one_line_and_as_json() {
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let kind = EventKind::Failed {
            failure: FailureKind::Fatal,
            error: "line one\nline two".into(),
            run_time: Some(Duration::from_micros(1500)),
        };
        let id = TaskId::new();
        let event =
            Event::new(kind, id, "emails.send", "emails", 2).with_time(at).with_worker("w1");
        assert_eq!(
            text_line(&event),
            format!(
                "2023-11-14T22:13:20.123Z failed        emails.send id={id} queue=emails \
                 attempt=2 worker=w1 failure=fatal run_time=1.5ms error: line one line two"
            )
        );
        assert_eq!(
            dmq_server::event_json(&event),
            json!({
                "kind": "failed", "id": id.to_string(), "task": "emails.send",
                "queue": "emails", "attempt": 2, "at": "2023-11-14T22:13:20.123Z",
                "worker": "w1", "failure": "fatal", "error": "line one\nline two",
                "run_time_us": 1500,
            })
        );
    }
}
