//! The admin capability: the queue registry, queue figures, dead letters, purges,
//! the doctor, and finding a job by id.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dmq_core::{
    BrokerAdmin, Cancelled, DeadLetter, Error, FoundJob, JobState, Lease, QueueCheckup,
    QueueDeleted, QueueStats, Result, TaskId, is_partition_of,
};
use redis::Value;

use crate::keys::id_text;

use super::*;

/// How often a reaper also looks for stranded jobs (see [`BrokerAdmin::doctor`]).
pub(super) const DOCTOR_EVERY: Duration = Duration::from_secs(60);

/// A dead letter from its list entry `<Unix ms>|<id>|<reason>` and its payload.
pub(super) fn parse_dead_entry(queue: &str, entry: &str, payload: Vec<u8>) -> Option<DeadLetter> {
    let mut parts = entry.splitn(3, '|');
    let (at, id, reason) = (parts.next()?, parts.next()?, parts.next()?);
    let id = id.parse::<TaskId>().ok()?;
    let at = at.parse().ok().and_then(DateTime::from_timestamp_millis).unwrap_or_default();
    Some(DeadLetter::new(id, queue, payload, reason, at))
}

/// How long a broker trusts that a queue it wrote to the queue registry is still
/// there before it writes it again (an operator may have deleted the registry).
pub(super) const REGISTRY_REFRESH: Duration = Duration::from_secs(60);

/// The field of a queue's meta hash that says since when (Unix ms) it is paused.
const PAUSED_FIELD: &str = "~paused";

/// How many of a queue's newest dead letters `find_job` looks through.
const DEAD_LETTERS_SEARCHED: usize = 10_000;

/// The queues a broker wrote to the queue registry, and since when.
#[derive(Debug, Default)]
pub(super) struct Registered {
    queues: std::collections::HashSet<String>,
    since: Option<std::time::Instant>,
}

impl RedisBroker {
    /// Adds the queues to the namespace's queue registry, those this broker has not
    /// added within [`REGISTRY_REFRESH`]: one `SADD` per new queue per minute, not one
    /// per job.
    ///
    /// A registry that cannot be written (a key of another type, written by another
    /// program) stops no enqueue: the failure is logged, and tried again a minute
    /// later. Only listing the queues fails then, saying why.
    pub(super) async fn register_queues<'a>(&self, queues: impl Iterator<Item = &'a str>) {
        let new: Vec<&str> = {
            let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
            if registered.since.is_none_or(|at| at.elapsed() >= REGISTRY_REFRESH) {
                registered.queues.clear();
                registered.since = Some(std::time::Instant::now());
            }
            let mut new: Vec<&str> = queues.filter(|q| !registered.queues.contains(*q)).collect();
            new.sort_unstable();
            new.dedup();
            new
        };
        if new.is_empty() {
            return;
        }
        let written = match self.conn().await {
            Ok(mut conn) => redis::cmd("SADD")
                .arg(self.keys.queues())
                .arg(&new)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.err("registering queues in the queue registry", e)),
            Err(e) => Err(e),
        };
        if let Err(e) = &written {
            tracing::warn!(
                error = %e,
                key = %self.keys.queues(),
                queues = ?new,
                "could not register queues; `dmq queues` may leave them out until a later try succeeds"
            );
        }
        // Done, or refused for good (another program's key in its place): the next
        // try comes after REGISTRY_REFRESH. A lost connection is tried at the next
        // enqueue.
        if written.as_ref().is_err_and(Error::is_transient) {
            return;
        }
        let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        registered.queues.extend(new.into_iter().map(str::to_owned));
    }

    /// Removes deleted `queues` from the namespace's queue registry, then from those
    /// this broker wrote there lately, so that its next enqueue to one registers it
    /// again.
    async fn unregister_queues(&self, queues: &[String]) -> Result<()> {
        let what = format!(
            "removing the deleted queues {queues:?} from the queue registry {} (their jobs \
             are deleted; `dmq queues` lists them, empty, until a delete of them succeeds)",
            self.keys.queues()
        );
        let mut conn = self.conn().await?;
        redis::cmd("SREM")
            .arg(self.keys.queues())
            .arg(queues)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.err(&what, e))?;
        let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        for queue in queues {
            registered.queues.remove(queue);
        }
        Ok(())
    }

    /// Looks for job `id` in `queue`: waiting or in flight, else among its newest dead
    /// letters.
    async fn find_in(&self, queue: &str, id: TaskId) -> Result<Option<FoundJob>> {
        let keys = self.keys.queue(queue);
        let field = id_text(id);
        let what = || format!("looking for job {id} in queue {queue:?}");
        let mut conn = self.conn().await?;
        // One transaction reads the envelope and every place the job can wait, so that
        // a job claimed meanwhile is not taken for stranded. Each `LPOS` reads its list
        // to the end when the id is not in it; a key of another type (not written by
        // dmq) holds no job.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .ignore_errors()
            .hget(keys.payloads(), field)
            .zscore(keys.delayed(), field)
            .zscore(keys.in_flight(), field)
            .cmd("LPOS")
            .arg(keys.suspect())
            .arg(field);
        for priority in 0..=9 {
            pipe.cmd("LPOS").arg(keys.ready(priority)).arg(field);
        }
        // Its gate, when it has one: a job held back there is waiting, ready.
        pipe.hexists(keys.gates(), format!("j:{id}"));
        // Its group, when it has one: a job not delayed nor in flight waits there.
        pipe.hexists(keys.gates(), format!("g:{id}"));
        let reply: Vec<Value> =
            pipe.query_async(&mut conn).await.map_err(|e| self.err(&what(), e))?;
        let held = |v: &Value| !matches!(v, Value::Nil | Value::ServerError(_));
        let [payload, due, lease, suspect, ready @ .., gated, grouped] = reply.as_slice() else {
            return Err(Error::backend(format!("{}: unexpected reply {reply:?}", what()), false));
        };
        let payload: Option<Vec<u8>> = match payload {
            Value::ServerError(_) => None,
            v => redis::from_redis_value_ref(v).map_err(|e| {
                Error::backend(format!("{}: the envelope is no string: {e}", what()), false)
            })?,
        };
        let score = |v: &Value| -> Option<DateTime<Utc>> {
            let ms: f64 = redis::from_redis_value_ref(v).ok()?;
            // Scores are whole Unix milliseconds.
            #[allow(clippy::cast_possible_truncation)]
            DateTime::from_timestamp_millis(ms as i64)
        };
        if let Some(payload) = payload {
            let (state, at) = if held(lease) {
                (JobState::InFlight, score(lease))
            } else if held(due) {
                (JobState::Delayed, score(due))
            } else if held(suspect) {
                (JobState::Suspect, None)
            } else if ready.iter().any(held)
                || matches!(gated, Value::Int(1))
                || matches!(grouped, Value::Int(1))
            {
                (JobState::Ready, None)
            } else {
                (JobState::Stranded, None)
            };
            return Ok(Some(FoundJob::new(id, queue, state, at, payload)));
        }
        let mut offset = 0;
        while offset < DEAD_LETTERS_SEARCHED {
            let page = self.dead_letters(queue, offset, 500).await?;
            if page.is_empty() {
                break;
            }
            if let Some(letter) = page.iter().find(|letter| letter.id == id) {
                let job = FoundJob::new(
                    id,
                    queue,
                    JobState::DeadLettered,
                    Some(letter.at),
                    letter.payload.clone(),
                );
                return Ok(Some(job.with_reason(letter.reason.clone())));
            }
            offset += page.len();
        }
        Ok(None)
    }

    /// Looks for stranded jobs in `queues` and puts them back, at most once every
    /// [`DOCTOR_EVERY`]; part of a reap.
    pub(super) async fn doctor_now_and_then(&self, queues: &[String]) {
        {
            let mut last = self.last_doctor.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < DOCTOR_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        match self.doctor(queues, true).await {
            Ok(checkups) => {
                for checkup in checkups.iter().filter(|c| !c.stranded.is_empty()) {
                    tracing::warn!(
                        queue = %checkup.queue,
                        jobs = checkup.stranded.len(),
                        ids = ?checkup.stranded,
                        "put back stranded jobs: their envelope was stored but they waited nowhere (a write cut off halfway)"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking for stranded jobs failed; trying again at a later reap")
            }
        }
    }
}

#[async_trait]
impl BrokerAdmin for RedisBroker {
    /// The queue registry's members. The first listing in a namespace also finds the
    /// queues by their keys (`SCAN`, on every master of a cluster), once, and registers them: a
    /// queue made by a dmq older than the registry is listed too, even after newer
    /// producers and workers started the registry with their own queues.
    async fn queues(&self) -> Result<Vec<String>> {
        let what = format!("listing the queues in the queue registry {}", self.keys.queues());
        let mut conn = self.conn().await?;
        let (scanned, mut queues): (bool, Vec<String>) = redis::pipe()
            .exists(self.keys.queues_scanned())
            .smembers(self.keys.queues())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(&what, e))?;
        if !scanned {
            let found = crate::namespace::queue_names_everywhere(&conn, &self.keys).await?;
            let mut pipe = redis::pipe();
            if !found.is_empty() {
                pipe.sadd(self.keys.queues(), &found).ignore();
            }
            pipe.set(self.keys.queues_scanned(), 1).ignore();
            pipe.query_async::<()>(&mut conn).await.map_err(|e| self.err(&what, e))?;
            queues.extend(found);
            queues.sort();
            queues.dedup();
        }
        queues.sort();
        Ok(queues)
    }

    async fn find_job(&self, id: TaskId, queues: &[String]) -> Result<Option<FoundJob>> {
        let all;
        let queues = if queues.is_empty() {
            all = self.queues().await?;
            &all
        } else {
            queues
        };
        // A queue whose keys another program spoiled stops the search only when the
        // job is found nowhere else: one bad queue does not hide every other.
        let mut spoiled = None;
        for queue in queues {
            match self.find_in(queue, id).await {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(e) if !e.is_transient() => {
                    tracing::warn!(%queue, error = %e, "could not look for a job in this queue");
                    spoiled.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        spoiled.map_or(Ok(None), Err)
    }

    async fn leased_payload(&self, lease: &Lease) -> Result<Option<Vec<u8>>> {
        let keys = self.keys.queue(&lease.queue);
        let field = id_text(lease.id);
        let mut conn = self.conn().await?;
        // Three reads of one slot in one transaction: whether the job is in flight,
        // the lease it is under (its meta), and its envelope; no list is searched.
        let (in_flight, meta, payload): (Option<f64>, Option<String>, Option<Vec<u8>>) =
            redis::pipe()
                .atomic()
                .zscore(keys.in_flight(), field)
                .hget(keys.meta(), field)
                .hget(keys.payloads(), field)
                .query_async(&mut conn)
                .await
                .map_err(|e| {
                    self.err(&format!("reading job {} of queue {:?}", lease.id, lease.queue), e)
                })?;
        let own = in_flight.is_some()
            && meta.as_deref().and_then(token_of_meta).is_some_and(|token| {
                token == lease.token && super::claim::fence_of(token) == lease.fence
            });
        Ok(payload.filter(|_| own))
    }

    async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let keys = self.keys.queue(queue);
        let mut pipe = redis::pipe();
        for priority in 0..=9 {
            pipe.llen(keys.ready(priority));
        }
        pipe.zcard(keys.delayed())
            .zcard(keys.in_flight())
            .llen(keys.dead())
            .get(keys.dead_dropped())
            .llen(keys.suspect())
            .get(keys.bad_entries())
            .hget(keys.meta(), PAUSED_FIELD)
            .zlexcount(keys.gated(), "[w", "(x")
            .zlexcount(keys.gated(), "[g", "(h");
        let mut conn = self.conn().await?;
        // Read as plain values: a counter another program overwrote with text counts 0
        // here rather than failing the read.
        let counts: Vec<Value> =
            pipe.query_async(&mut conn).await.map_err(|e| self.err("reading queue sizes", e))?;
        let at = |i: usize| match counts.get(i) {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            Some(Value::BulkString(text)) => {
                std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).unwrap_or(0)
            }
            _ => 0,
        };
        let mut stats = QueueStats::default();
        stats.suspect = at(14);
        stats.gated = at(17);
        // Jobs waiting in groups (fair claiming) are ready.
        stats.ready = (0..10).map(at).sum::<u64>() + at(18) + stats.suspect + stats.gated;
        stats.delayed = at(10);
        stats.in_flight = at(11);
        stats.dead = at(12);
        stats.dead_dropped = at(13);
        stats.bad_entries = at(15);
        stats.paused_since = match counts.get(16) {
            None | Some(Value::Nil) => None,
            // Paused, as the claim script sees it, even when the time is unreadable.
            Some(_) => Some(
                DateTime::from_timestamp_millis(i64::try_from(at(16)).unwrap_or(0))
                    .unwrap_or_default(),
            ),
        };
        Ok(stats)
    }

    /// Sets field `PAUSED_FIELD` of the queue's meta hash, which the claim script
    /// reads (and the enqueue script, which then wakes no claimer), to the time of
    /// the pause, unless it is set already; and lists the queue in the registry.
    async fn pause(&self, queue: &str) -> Result<bool> {
        let keys = self.keys.queue(queue);
        let what = format!("pausing queue {queue:?} (field {PAUSED_FIELD} of {})", keys.meta());
        let mut conn = self.conn().await?;
        let paused: bool = redis::cmd("HSETNX")
            .arg(keys.meta())
            .arg(PAUSED_FIELD)
            .arg(Utc::now().timestamp_millis())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(&what, e))?;
        // The registry is in a slot of its own: a command of its own.
        let _: i64 = redis::cmd("SADD")
            .arg(self.keys.queues())
            .arg(queue)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(&what, e))?;
        Ok(paused)
    }

    /// Deletes the pause field and wakes one idle claimer of the queue (which passes
    /// the wake-up on while jobs remain), in one transaction: the queue's keys share
    /// its slot. A wake-up for a queue that was not paused costs a claim that finds
    /// nothing new.
    /// The gates of the queue's gates hash (its `c:` fields, found with `HSCAN`), each
    /// with its slots (`r` members of the gated set, which a claim that finds the gate
    /// full prunes of jobs no longer in flight) and held jobs (`w` members).
    async fn gates(&self, queue: &str) -> Result<Vec<dmq_core::GateStatus>> {
        let keys = self.keys.queue(queue);
        let what = format!("reading the gates of queue {queue:?}");
        let mut conn = self.conn().await?;
        let mut found: Vec<(String, String)> = Vec::new();
        let mut cursor = 0_u64;
        loop {
            let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(keys.gates())
                .arg(cursor)
                .arg("MATCH")
                .arg("c:*")
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err(&what, e))?;
            found.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let now_us = Utc::now().timestamp_micros();
        let mut out = Vec::with_capacity(found.len());
        for (field, limits) in found {
            let Some(name) = field.strip_prefix("c:") else { continue };
            let mut parts = limits.split(':').map(|p| p.parse::<u64>().unwrap_or(0));
            let (interval, burst, concurrency) =
                (parts.next().unwrap_or(0), parts.next().unwrap_or(1), parts.next().unwrap_or(0));
            let rate = dmq_core::RateLimit::of_interval_us(interval);
            let mut status = dmq_core::GateStatus::new(dmq_core::Gate::new(
                name,
                rate,
                u32::try_from(burst).unwrap_or(u32::MAX),
                (concurrency > 0).then(|| u32::try_from(concurrency).unwrap_or(u32::MAX)),
            ));
            let range = |kind: char| (format!("[{kind}{name}\0"), format!("({kind}{name}\u{1}"));
            let ((r_lo, r_hi), (w_lo, w_hi)) = (range('r'), range('w'));
            let (running, waiting, tat): (u64, u64, Option<i64>) = redis::pipe()
                .zlexcount(keys.gated(), r_lo, r_hi)
                .zlexcount(keys.gated(), w_lo, w_hi)
                .hget(keys.gates(), format!("t:{name}"))
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err(&what, e))?;
            (status.running, status.waiting) = (running, waiting);
            let tolerance = i64::try_from(interval.saturating_mul(burst.max(1) - 1)).unwrap_or(0);
            status.next_start = tat
                .map(|tat| tat - tolerance)
                .filter(|at| interval > 0 && *at > now_us)
                .and_then(DateTime::from_timestamp_micros);
            out.push(status);
        }
        out.sort_by(|a, b| a.gate.name.cmp(&b.gate.name));
        Ok(out)
    }

    async fn resume(&self, queue: &str) -> Result<bool> {
        let keys = self.keys.queue(queue);
        let what = format!("resuming queue {queue:?} (field {PAUSED_FIELD} of {})", keys.meta());
        let mut conn = self.conn().await?;
        let (resumed,): (bool,) = redis::pipe()
            .atomic()
            .hdel(keys.meta(), PAUSED_FIELD)
            .lpush(keys.signal(), "1")
            .ignore()
            .ltrim(keys.signal(), 0, 0)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(&what, e))?;
        Ok(resumed)
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let keys = self.keys.queue(queue);
        let mut invocation = self.scripts.purge.prepare_invoke();
        invocation.key(keys.payloads()).key(keys.meta()).key(keys.delayed());
        add_ready_keys(&mut invocation, &keys);
        invocation.key(keys.suspect());
        super::add_gate_keys(&mut invocation, &keys);
        self.run("purging a queue", &invocation).await
    }

    /// One script deletes the queue and its partitions, checking everything before it
    /// deletes anything, so that a refusal deletes nothing. On a Redis Cluster, where
    /// each partition lives in a slot of its own, it is one script per slot: without
    /// `force`, the partitions' jobs in flight are counted first and the delete refused
    /// when there are any; a worker that claims a job of a later partition in the
    /// moment between makes that partition's script refuse after earlier ones deleted
    /// theirs, and the error says so.
    ///
    /// The queue registry lives in a slot of its own, so the queues leave it in a
    /// second step (`SREM`), once their keys are gone. In that order nothing is lost
    /// if the second step never comes: the registry then lists an empty queue, as it
    /// lists every emptied queue, and deleting it again removes it. The other order
    /// could leave jobs in a queue that `dmq queues`, `dmq job` and the doctor no
    /// longer see. A job enqueued between the two steps lands in a queue the registry
    /// does not list until its producer writes the registry again (each process does,
    /// at most a minute later) or a worker of the queue heartbeats; its workers run it
    /// meanwhile all the same.
    async fn delete_queue(&self, queue: &str, force: bool) -> Result<QueueDeleted> {
        let mut names: Vec<String> =
            self.queues().await?.into_iter().filter(|q| is_partition_of(q, queue)).collect();
        // The queue itself, listed or not.
        names.push(queue.to_owned());
        let parts = self.by_slot(names.clone(), String::as_str);
        if !force && parts.len() > 1 {
            let mut in_flight = 0;
            for name in &names {
                in_flight += self.queue_stats(name).await?.in_flight;
            }
            if in_flight > 0 {
                return Err(Error::QueueBusy { queue: queue.to_owned(), in_flight });
            }
        }
        let mut deleted = QueueDeleted::default();
        let mut done: Vec<&String> = Vec::new();
        for part in &parts {
            let mut invocation = self.scripts.delete_queue.prepare_invoke();
            for name in part {
                let keys = self.keys.queue(name);
                add_lease_keys(&mut invocation, &keys);
                invocation.key(keys.completed());
            }
            invocation.arg(u8::from(force));
            let what = format!("deleting queue {queue:?}");
            let reply: Vec<u64> = self.run(&what, &invocation).await?;
            match *reply.as_slice() {
                [1, waiting, delayed, dead_letters, in_flight] => {
                    let mut one = QueueDeleted::default();
                    (one.waiting, one.delayed) = (waiting, delayed);
                    (one.dead_letters, one.in_flight) = (dead_letters, in_flight);
                    deleted += one;
                    done.extend(part);
                }
                [0, in_flight] if done.is_empty() => {
                    return Err(Error::QueueBusy { queue: queue.to_owned(), in_flight });
                }
                [0, in_flight] => {
                    return Err(Error::backend(
                        format!(
                            "{what}: deleted {done:?}, then {part:?} refused: a worker claimed \
                             {in_flight} jobs of it meanwhile; the rest is as it was, and the \
                             queue registry still lists them all: delete the queue again"
                        ),
                        false,
                    ));
                }
                _ => {
                    return Err(Error::backend(
                        format!("{what}: unexpected reply {reply:?} from the delete_queue script"),
                        false,
                    ));
                }
            }
        }
        self.unregister_queues(&names).await?;
        Ok(deleted)
    }

    /// One script (`lua/cancel.lua`) on the queue's keys, which share one slot, so
    /// the same on a Redis Cluster: it checks every key's type before it changes
    /// anything. A delayed job is removed from the delayed set alone; a ready or
    /// suspect one from each ready list and the suspect list (`LREM`, which reads
    /// them through, as [`find_job`](BrokerAdmin::find_job) does).
    async fn cancel(&self, queue: &str, id: TaskId) -> Result<Cancelled> {
        let keys = self.keys.queue(queue);
        let mut invocation = self.scripts.cancel.prepare_invoke();
        invocation.key(keys.payloads()).key(keys.meta()).key(keys.delayed()).key(keys.in_flight());
        add_ready_keys(&mut invocation, &keys);
        invocation.key(keys.suspect()).key(keys.gates()).key(keys.gated()).arg(id_text(id));
        let what = format!("cancelling job {id} of queue {queue:?}");
        let reply: Vec<Value> = self.run(&what, &invocation).await?;
        let word = |v: &Value| redis::from_redis_value_ref::<String>(v).ok();
        match reply.as_slice() {
            [kind, payload] if word(kind).as_deref() == Some("removed") => {
                let payload = redis::from_redis_value_ref(payload).map_err(|e| {
                    Error::backend(format!("{what}: the envelope is no string: {e}"), false)
                })?;
                Ok(Cancelled::Removed { payload })
            }
            [kind] if word(kind).as_deref() == Some("running") => Ok(Cancelled::Running),
            [kind] if word(kind).as_deref() == Some("not_found") => Ok(Cancelled::NotFound),
            _ => Err(Error::backend(
                format!("{what}: unexpected reply {reply:?} from the cancel script"),
                false,
            )),
        }
    }

    async fn dead_letters(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys.queue(queue);
        let mut conn = self.conn().await?;
        let last = isize::try_from(offset.saturating_add(limit) - 1).unwrap_or(isize::MAX);
        let start = isize::try_from(offset).unwrap_or(isize::MAX);
        let entries: Vec<String> = redis::cmd("LRANGE")
            .arg(keys.dead())
            .arg(start)
            .arg(last)
            .query_async(&mut conn)
            .await
            .map_err(|e| {
                self.err(
                    &format!("listing the dead letters of queue {queue:?} ({})", keys.dead()),
                    e,
                )
            })?;
        let mut letters = Vec::new();
        for entry in entries {
            let Some((at, id)) = entry.split('|').next().zip(entry.split('|').nth(1)) else {
                continue;
            };
            let payload: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(keys.dead_payloads())
                .arg(format!("{at}|{id}"))
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err("reading a dead letter", e))?;
            letters.extend(parse_dead_entry(queue, &entry, payload.unwrap_or_default()));
        }
        Ok(letters)
    }

    async fn take_dead_letter(&self, queue: &str, id: TaskId) -> Result<Option<DeadLetter>> {
        let keys = self.keys.queue(queue);
        let mut invocation = self.scripts.take_dead.prepare_invoke();
        invocation.key(keys.dead()).key(keys.dead_payloads()).arg(id.to_string());
        let taken: Option<(String, Vec<u8>)> =
            self.run("taking a dead letter", &invocation).await?;
        Ok(taken.and_then(|(entry, payload)| parse_dead_entry(queue, &entry, payload)))
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64> {
        let keys = self.keys.queue(queue);
        let mut invocation = self.scripts.purge_dead.prepare_invoke();
        invocation.key(keys.dead()).key(keys.dead_payloads());
        self.run("purging dead letters", &invocation).await
    }

    /// One script per queue: a few counts, and only when they do not add up a pass
    /// over the queue's lists and sets (see docs/redis-layout.md).
    async fn doctor(&self, queues: &[String], fix: bool) -> Result<Vec<QueueCheckup>> {
        let mut checkups = Vec::with_capacity(queues.len());
        for queue in queues {
            let keys = self.keys.queue(queue);
            let mut invocation = self.scripts.doctor.prepare_invoke();
            add_lease_keys(&mut invocation, &keys);
            invocation.arg(u8::from(fix));
            let reply: Vec<Value> = self.run("looking for stranded jobs", &invocation).await?;
            let mut items = reply.into_iter();
            let mut count = || match items.next() {
                Some(Value::Int(n)) => Ok(u64::try_from(n).unwrap_or(0)),
                _ => {
                    Err(Error::backend("unexpected reply from the doctor script".to_owned(), false))
                }
            };
            let (_stored, _placed, suspect, bad_entries) = (count()?, count()?, count()?, count()?);
            let stranded: Vec<String> = items
                .filter_map(|v| match v {
                    Value::BulkString(id) => Some(String::from_utf8_lossy(&id).into_owned()),
                    _ => None,
                })
                .collect();
            let mut checkup = QueueCheckup::healthy(queue.clone());
            checkup.fixed = fix && !stranded.is_empty();
            checkup.stranded = stranded;
            checkup.suspect = suspect;
            checkup.bad_entries = bad_entries;
            checkups.push(checkup);
        }
        Ok(checkups)
    }
}

/// The lease token a job's meta holds (`<n>:<n>[/<n>][i]:<token>`, made by lib.lua's
/// `make_meta` and read as its `token_of` reads it); `None` for a meta of another
/// shape, or one with no lease (an empty token).
fn token_of_meta(meta: &str) -> Option<&str> {
    let (deliveries, rest) = meta.split_once(':')?;
    let (claim, token) = rest.split_once(':')?;
    let claim = claim.strip_suffix('i').unwrap_or(claim);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let claim_ok = match claim.split_once('/') {
        Some((a, b)) => digits(a) && (b.is_empty() || digits(b)),
        None => digits(claim),
    };
    (digits(deliveries) && claim_ok && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::token_of_meta;

    #[test]
    fn the_token_is_read_from_a_meta_as_lib_lua_reads_it() {
        assert_eq!(token_of_meta("5:2:1.1.17.ab@w"), Some("1.1.17.ab@w"));
        assert_eq!(token_of_meta("5:2/3i:t@w:x"), Some("t@w:x"), "a worker id may hold ':'");
        assert_eq!(token_of_meta("5:2/0i:t"), Some("t"));
        assert_eq!(token_of_meta("5:2i:t"), Some("t"));
        assert_eq!(token_of_meta("5:2:"), None, "not leased");
        for bad in ["", "5", "5:2", "x:2:t", "5:y:t", "5:2/z:t"] {
            assert_eq!(token_of_meta(bad), None, "{bad:?}");
        }
    }
}
