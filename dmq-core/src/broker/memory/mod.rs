//! A broker held in process memory: for tests, examples and single-process use.
//!
//! The job lifecycle is here; each capability is a file of its own: `workers.rs` (the
//! worker registry and reaper), `schedules.rs`, `events.rs` (the event stream) and
//! `admin.rs`.

mod admin;
mod events;
mod quotas;
mod schedules;
mod workers;

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::time::Instant;

use self::events::EventLog;
use super::HeldBack;
use super::{
    Broker, BrokerAdmin, DEFAULT_EVENT_STREAM_CAP, DeadLetter, Delivery, EventStream, Job, Lease,
    ScheduleState, ScheduleStore, WorkerInfo, WorkerRegistry, refuse_keys_in_batches,
};
use crate::envelope::MAX_PRIORITY;
use crate::error::{Error, Result};
use crate::events::HeldBy;
use crate::limits::{Gate, Gcra, RateLimit};
use crate::task::TaskId;
use crate::unique::KeyHold;

/// The default cap on each queue's dead-letter queue.
pub const DEFAULT_DEAD_LETTER_CAP: usize = 10_000;

/// How many times, by default, a job's worker may be lost while the job runs alone
/// before the job is dead-lettered as a poison pill (see [`Delivery::isolated`]).
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

/// A [`Broker`] in process memory.
///
/// Several queues, priorities, delayed jobs held until their eta, leases that return
/// expired jobs to ready, and waiting claimers woken by notification; an event
/// stream this process can read ([`EventStream::read_events`]). Everything is lost when
/// the process exits: use Redis where jobs must survive.
#[derive(Debug)]
pub struct InMemoryBroker {
    state: Mutex<State>,
    notify: Notify,
    events: Mutex<EventLog>,
    /// Wakes the readers waiting for events.
    published: Notify,
    /// Whether any enqueue quota is set: an enqueue takes no lock for quotas while
    /// none is.
    quotas_set: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<String, Queue>,
    next_seq: u64,
    limits: Limits,
    /// Registered workers and when their heartbeat lapses.
    workers: HashMap<String, (WorkerInfo, Instant, DateTime<Utc>, Duration)>,
    /// Idempotency keys per (queue, key): the job they belong to and until when.
    idempotency: HashMap<(String, String), (TaskId, Instant)>,
    /// Periodic schedules by name.
    schedules: BTreeMap<String, ScheduleState>,
    /// Enqueue quotas: the broker's (key `None`) and its keys'.
    quotas: HashMap<Option<String>, quotas::Quota>,
}

/// What decides when a job is dead-lettered without running.
#[derive(Debug, Clone, Copy)]
struct Limits {
    dead_letter_cap: usize,
    /// Strikes that make a job a poison pill; 0 for no limit.
    max_deliveries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { dead_letter_cap: DEFAULT_DEAD_LETTER_CAP, max_deliveries: DEFAULT_MAX_DELIVERIES }
    }
}

#[derive(Debug, Default)]
struct Queue {
    /// One list per priority, index 0 the lowest.
    ready: [VecDeque<Stored>; MAX_PRIORITY as usize + 1],
    /// Jobs taken back after their worker was lost while running them, oldest first:
    /// each is claimed alone.
    suspect: VecDeque<Stored>,
    delayed: BTreeMap<(Instant, u64), Stored>,
    in_flight: HashMap<TaskId, InFlight>,
    /// The in-flight jobs' leases, the soonest to expire on top, so that expired ones
    /// are found without looking at the others. Settling a job leaves its entry
    /// behind, stale (so does a renewal, which pushes a new one): an entry is live
    /// while its job is in flight under that token and deadline. Stale entries are
    /// dropped when they come to the top, and all at once when they outnumber the
    /// live ones.
    leases: BinaryHeap<Reverse<(Instant, u64, TaskId)>>,
    /// The ids of every job here that is ready, delayed or in flight.
    known: HashSet<TaskId>,
    dead: VecDeque<DeadLetter>,
    dead_dropped: u64,
    /// Since when the queue is paused: claims pass it by.
    paused_since: Option<DateTime<Utc>>,
    /// The gates its jobs pass, by name, and the jobs waiting at each.
    gates: HashMap<Arc<str>, GateState>,
    /// Ready jobs of groups, by group, highest priority first, then in order: claimed
    /// round robin across groups.
    grouped: BTreeMap<(Arc<str>, Reverse<u8>, u64), Stored>,
    /// The group a job was last claimed from; the next claim starts after it.
    last_group: Option<Arc<str>>,
    /// Orders the grouped jobs.
    group_seq: u64,
    /// Whether the next ready job comes from the groups (claims alternate while
    /// grouped and ungrouped jobs both wait).
    groups_turn: bool,
    /// Completions recorded by `complete`, and until when they are remembered.
    completed: HashMap<TaskId, Instant>,
    /// The same completions in the order they were recorded, to forget them.
    completed_order: VecDeque<(Instant, TaskId)>,
}

impl State {
    /// Schedule `name`'s state, registered now if it is new.
    fn schedule(&mut self, name: &str) -> &mut ScheduleState {
        self.schedules
            .entry(name.to_owned())
            .or_insert_with(|| ScheduleState::new(name, Utc::now(), None, None))
    }
}

impl Queue {
    /// Records that job `id` completed, until `until`, forgetting the completions
    /// recorded earlier whose time is up.
    fn remember_completion(&mut self, id: TaskId, until: Instant) {
        let now = Instant::now();
        while let Some(&(at, old)) = self.completed_order.front() {
            if at > now {
                break;
            }
            self.completed_order.pop_front();
            if self.completed.get(&old).is_some_and(|t| *t <= now) {
                self.completed.remove(&old);
            }
        }
        self.completed.insert(id, until);
        self.completed_order.push_back((until, id));
    }
}

/// A gate's limits (the last enqueue's), its rate state, the jobs it lets run and
/// those waiting at it.
#[derive(Debug)]
struct GateState {
    rate: Option<RateLimit>,
    burst: u32,
    concurrency: Option<u32>,
    gcra: Gcra,
    /// Jobs let through and maybe still in flight: checked against the queue's
    /// in-flight jobs when the gate looks full, so a job that left flight by any path
    /// frees its slot.
    running: HashSet<TaskId>,
    /// Jobs a claim found over the limit, highest priority first, then oldest.
    waiting: BTreeMap<(Reverse<u8>, u64), Stored>,
}

impl GateState {
    fn new(gate: &Gate) -> Self {
        GateState {
            rate: gate.rate,
            burst: gate.burst,
            concurrency: gate.concurrency,
            gcra: Gcra::default(),
            running: HashSet::new(),
            waiting: BTreeMap::new(),
        }
    }

    /// Whether job `id` may start now (µs on the broker's clock); counts it in when so.
    fn admit(&mut self, id: TaskId, now: u64, in_flight: &HashMap<TaskId, InFlight>) -> bool {
        if let Some(limit) = self.concurrency {
            let limit = limit as usize;
            if self.running.len() >= limit {
                self.running.retain(|id| in_flight.contains_key(id));
            }
            if self.running.len() >= limit {
                return false;
            }
        }
        if let Some(rate) = self.rate {
            if !self.gcra.admit(now, rate, self.burst) {
                return false;
            }
        }
        if self.concurrency.is_some() {
            self.running.insert(id);
        }
        true
    }

    /// Which limit holds a job back that `admit` refused: the concurrency when it is
    /// full, else the rate.
    fn held_by(&self) -> HeldBy {
        match self.concurrency {
            Some(limit) if self.running.len() >= limit as usize => HeldBy::Concurrency,
            _ => HeldBy::Rate,
        }
    }

    /// When the gate may let a job through on its own (its rate), if its rate is what
    /// holds it.
    fn opens_at(&self) -> Option<Instant> {
        let rate = self.rate?;
        Some(instant_of(self.gcra.next_start(rate, self.burst)))
    }
}

/// The broker's clock for rates: microseconds since the first call.
fn micros(at: Instant) -> u64 {
    let since = at.saturating_duration_since(*clock_base());
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

fn instant_of(micros: u64) -> Instant {
    crate::clock::instant_after(*clock_base(), Duration::from_micros(micros))
}

fn clock_base() -> &'static Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(Instant::now)
}

#[derive(Debug)]
struct Stored {
    id: TaskId,
    priority: u8,
    /// The gate it passes before it starts, if any.
    gate: Option<Arc<str>>,
    /// The group it is claimed fairly in, if any.
    group: Option<Arc<str>>,
    /// Shared with the claims that copy it, so that they copy it after the lock is
    /// released.
    payload: Arc<[u8]>,
    deliveries: u32,
    /// How many times its worker was lost while it ran alone.
    strikes: u32,
}

/// A job about to be added, made before the lock is taken.
struct NewJob {
    queue: String,
    eta: Option<DateTime<Utc>>,
    stored: Stored,
    gate: Option<Gate>,
}

impl From<Job> for NewJob {
    fn from(job: Job) -> Self {
        let stored = Stored {
            id: job.id,
            priority: job.priority.min(MAX_PRIORITY),
            payload: job.payload.into(),
            deliveries: 0,
            strikes: 0,
            gate: job.gate.as_ref().map(|gate| Arc::from(gate.name.as_str())),
            group: job.group.as_deref().map(Arc::from),
        };
        NewJob { queue: job.queue, eta: job.eta, stored, gate: job.gate }
    }
}

/// A job claimed under the lock, made into a [`Delivery`] once the lock is released,
/// so that other callers do not wait while its lease and payload are allocated.
struct Claimed<'a> {
    id: TaskId,
    queue: &'a str,
    token: u64,
    payload: Arc<[u8]>,
    deliveries: u32,
    isolated: bool,
}

impl Claimed<'_> {
    fn into_delivery(self) -> Delivery {
        let token = token_of(self.token);
        let lease = Lease { id: self.id, queue: self.queue.to_owned(), token, fence: self.token };
        let delivery = Delivery::new(lease, self.payload.to_vec(), self.deliveries);
        if self.isolated { delivery.to_run_alone() } else { delivery }
    }
}

/// Room reserved, before the lock is taken, for the jobs one claim takes; a larger
/// claim grows it under the lock.
const CLAIM_RESERVE: usize = 256;

#[derive(Debug)]
struct InFlight {
    stored: Stored,
    /// The lease's number, fresh for every claim; the token is its lowercase hex form.
    token: u64,
    deadline: Instant,
    /// The worker holding the lease.
    worker: Arc<str>,
    /// When it was claimed: a worker presumed dead loses only the jobs it claimed
    /// before its heartbeat lapsed.
    claimed_at: Instant,
    /// Whether it runs alone (it was suspect): losing it counts a strike.
    isolated: bool,
}

impl Default for InMemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryBroker {
    /// An empty broker with the default dead-letter cap.
    #[must_use]
    pub fn new() -> Self {
        Self::with_dead_letter_cap(DEFAULT_DEAD_LETTER_CAP)
    }

    /// An empty broker whose dead-letter queues keep at most `cap` jobs each; older
    /// ones are dropped and counted.
    #[must_use]
    pub fn with_dead_letter_cap(cap: usize) -> Self {
        let limits = Limits { dead_letter_cap: cap, ..Limits::default() };
        InMemoryBroker {
            state: Mutex::new(State { limits, ..State::default() }),
            notify: Notify::new(),
            events: Mutex::new(EventLog::new(DEFAULT_EVENT_STREAM_CAP)),
            published: Notify::new(),
            quotas_set: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The same broker, its event stream keeping about the last `cap` events
    /// ([`DEFAULT_EVENT_STREAM_CAP`] by default): at least `cap`, less than one batch
    /// more, as the oldest batches are dropped whole. 0 keeps none.
    #[must_use]
    pub fn with_event_stream_cap(self, cap: usize) -> Self {
        self.event_log().cap = cap;
        self
    }

    /// Dead-letters a job whose worker was lost `n` times while it ran alone (5 by
    /// default), instead of handing it out again: a job that kills or hangs every
    /// worker that takes it must not take them all down in turn. 0 means no limit.
    #[must_use]
    pub fn with_max_deliveries(self, n: u32) -> Self {
        self.lock().limits.max_deliveries = n;
        self
    }

    fn event_log(&self) -> MutexGuard<'_, EventLog> {
        // Every change to the log completes before anything that could panic.
        self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written: every
        // mutation below completes before anything that could panic.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the job's in-flight entry when `lease` still holds it.
    fn settle<T>(
        &self,
        lease: &Lease,
        f: impl FnOnce(&mut Queue, InFlight, &mut u64) -> T,
    ) -> Result<T> {
        let mut state = self.lock();
        let state = &mut *state;
        let held = state
            .queues
            .get_mut(&lease.queue)
            .and_then(|queue| queue.take_held(lease).map(|held| (queue, held)));
        let (queue, held) = held.ok_or(Error::LeaseLost { id: lease.id })?;
        let freed = queue.free_slot(&held.stored);
        let out = f(queue, held, &mut state.next_seq);
        if freed {
            self.notify.notify_waiters();
        }
        Ok(out)
    }
}

/// The token of lease number `number`: its lowercase hex form. Written by hand, as
/// [`token_matches`] reads it, because every claim and every settle pays for it.
fn token_of(number: u64) -> String {
    let mut token = String::with_capacity(hex_len(number));
    token.extend((0..hex_len(number)).rev().map(|at| char::from(hex_digit(number, at))));
    token
}

/// Whether `token` is [`token_of`] `number`, without writing that down.
fn token_matches(number: u64, token: &str) -> bool {
    let len = hex_len(number);
    token.len() == len
        && token.bytes().zip((0..len).rev()).all(|(b, at)| b == hex_digit(number, at))
}

/// How many hex digits `number` takes (one for zero).
fn hex_len(number: u64) -> usize {
    (64 - number.leading_zeros() as usize).div_ceil(4).max(1)
}

/// The lowercase hex digit of `number` at place `at` (0 the lowest).
fn hex_digit(number: u64, at: usize) -> u8 {
    b"0123456789abcdef"[((number >> (4 * at)) & 0xf) as usize]
}

fn due_instant(eta: DateTime<Utc>) -> Instant {
    let ahead = (eta - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    crate::clock::deadline(ahead)
}

impl Queue {
    fn push_ready(&mut self, stored: Stored) {
        if let Some(group) = &stored.group {
            self.group_seq += 1;
            let key = (Arc::clone(group), Reverse(stored.priority), self.group_seq);
            self.grouped.insert(key, stored);
            return;
        }
        self.ready[usize::from(stored.priority.min(MAX_PRIORITY))].push_back(stored);
    }

    /// The first job of the group after the one last claimed from (round robin), if
    /// any group has jobs.
    fn pop_grouped(&mut self) -> Option<Stored> {
        let after = self.last_group.take().map(|last| (last, Reverse(0), u64::MAX));
        let next = match &after {
            Some(after) => self
                .grouped
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .next()
                .map(|(key, _)| key.clone()),
            None => None,
        };
        let (key, stored) = match next {
            Some(key) => self.grouped.remove_entry(&key)?,
            None => self.grouped.pop_first()?,
        };
        self.last_group = Some(key.0);
        Some(stored)
    }

    /// Moves due delayed jobs to ready, and takes back expired leases.
    fn promote(&mut self, name: &str, now: Instant, limits: Limits) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let stored = entry.remove();
            self.push_ready(stored);
        }
        self.expire_leases(name, now, limits);
    }

    /// Takes back the jobs whose lease expired by `now` (see [`Queue::give_back`]), the
    /// one that expired first first; returns how many.
    fn expire_leases(&mut self, name: &str, now: Instant, limits: Limits) -> u64 {
        let mut expired = Vec::new();
        while let Some(&Reverse((deadline, token, id))) = self.leases.peek() {
            if deadline > now {
                break;
            }
            self.leases.pop();
            if let Entry::Occupied(held) = self.in_flight.entry(id) {
                if held.get().token == token && held.get().deadline == deadline {
                    expired.push(held.remove());
                }
            }
        }
        let moved = expired.len() as u64;
        for held in expired {
            self.give_back(name, held, "lease expired", limits);
        }
        moved
    }

    /// Returns to the front of ready the jobs that the workers in `dead` claimed
    /// before their heartbeat lapsed (at the instant `dead` maps them to); returns how
    /// many.
    fn return_jobs_of(
        &mut self,
        name: &str,
        dead: &HashMap<String, Duration>,
        now: Instant,
        holding: &mut HashSet<String>,
        limits: Limits,
    ) -> u64 {
        if dead.is_empty() {
            return 0;
        }
        let mut lapsed = Vec::new();
        for (id, held) in &self.in_flight {
            let Some(ttl) = dead.get(&*held.worker) else { continue };
            // A claim is a sign of life too: only claims at least a ttl old are lost.
            if crate::clock::instant_after(held.claimed_at, *ttl) <= now {
                lapsed.push(*id);
            } else {
                holding.insert(held.worker.to_string());
            }
        }
        let moved = lapsed.len() as u64;
        for id in lapsed {
            if let Some(held) = self.in_flight.remove(&id) {
                self.give_back(name, held, "its worker stopped heartbeating", limits);
            }
        }
        moved
    }

    /// A lapsed lease's job becomes suspect: it waits in the suspect list to be
    /// claimed alone. One that was running alone gets a strike, and with
    /// `max_deliveries` strikes it is dead-lettered as a poison pill instead.
    fn give_back(&mut self, name: &str, held: InFlight, why: &str, limits: Limits) {
        let mut stored = held.stored;
        if held.isolated {
            stored.strikes += 1;
            if limits.max_deliveries > 0 && stored.strikes >= limits.max_deliveries {
                let reason = format!(
                    "poison: its worker was lost {} times while it ran alone ({why}; {} \
                     deliveries); it may crash or hang its worker",
                    stored.strikes, stored.deliveries
                );
                self.known.remove(&stored.id);
                let letter =
                    DeadLetter::new(stored.id, name, stored.payload.to_vec(), reason, Utc::now());
                self.bury(letter, limits.dead_letter_cap);
                return;
            }
        }
        self.suspect.push_back(stored);
    }

    /// Pushes a dead letter, dropping (and counting) the oldest beyond `cap`.
    fn bury(&mut self, letter: DeadLetter, cap: usize) {
        self.dead.push_front(letter);
        while self.dead.len() > cap {
            self.dead.pop_back();
            self.dead_dropped += 1;
        }
    }

    /// Takes the job `lease` holds out of flight; `None`, changing nothing, when the
    /// token is stale.
    fn take_held(&mut self, lease: &Lease) -> Option<InFlight> {
        let Entry::Occupied(entry) = self.in_flight.entry(lease.id) else {
            return None;
        };
        if !token_matches(entry.get().token, &lease.token) {
            return None;
        }
        Some(entry.remove())
    }

    /// Records a lease of the job `id` under `token` until `deadline`.
    fn add_lease(&mut self, deadline: Instant, token: u64, id: TaskId) {
        self.leases.push(Reverse((deadline, token, id)));
    }

    /// Whether a lease entry still describes its job's lease.
    fn is_live(&self, &Reverse((deadline, token, id)): &Reverse<(Instant, u64, TaskId)>) -> bool {
        self.in_flight.get(&id).is_some_and(|held| held.token == token && held.deadline == deadline)
    }

    /// Drops the stale lease entries on top, and rebuilds the heap from the jobs in
    /// flight when stale entries outnumber live ones (which keeps it within twice
    /// their number, at a constant cost per lease).
    fn tidy_leases(&mut self) {
        while self.leases.peek().is_some_and(|top| !self.is_live(top)) {
            self.leases.pop();
        }
        if self.leases.len() > 2 * self.in_flight.len() + 64 {
            self.leases = self
                .in_flight
                .iter()
                .map(|(id, held)| Reverse((held.deadline, held.token, *id)))
                .collect();
        }
    }

    /// Leases `job` (a stored job, its token, whether it runs alone) to `worker`, from
    /// `at` until `deadline` (the `lease` pair).
    fn hold<'a>(
        &mut self,
        name: &'a str,
        (mut stored, token, isolated): (Stored, u64, bool),
        (at, deadline): (Instant, Instant),
        worker: &Arc<str>,
    ) -> Claimed<'a> {
        stored.deliveries += 1;
        let claimed = Claimed {
            id: stored.id,
            queue: name,
            token,
            payload: Arc::clone(&stored.payload),
            deliveries: stored.deliveries,
            isolated,
        };
        self.add_lease(deadline, token, stored.id);
        let worker = Arc::clone(worker);
        let held = InFlight { stored, token, deadline, worker, claimed_at: at, isolated };
        self.in_flight.insert(held.stored.id, held);
        claimed
    }

    /// The next ready job: highest priority first; grouped jobs round robin across
    /// groups, taking turns with the ungrouped ones while both wait.
    fn pop_ready(&mut self) -> Option<Stored> {
        if self.grouped.is_empty() {
            return self.ready.iter_mut().rev().find_map(VecDeque::pop_front);
        }
        self.groups_turn = !self.groups_turn;
        if self.groups_turn {
            return self.pop_grouped();
        }
        let ungrouped = self.ready.iter_mut().rev().find_map(VecDeque::pop_front);
        ungrouped.or_else(|| self.pop_grouped())
    }

    /// Whether `stored` may start now: it has no gate, or its gate lets it through
    /// (and counts it in).
    fn admits(&mut self, stored: &Stored, now: Instant) -> bool {
        let Some(name) = &stored.gate else { return true };
        match self.gates.get_mut(name) {
            Some(gate) => gate.admit(stored.id, micros(now), &self.in_flight),
            None => true,
        }
    }

    /// Puts `stored`, held back by its gate, to wait at the gate; reports it in `held`.
    fn park(&mut self, name: &str, stored: Stored, seq: u64, held: &mut Vec<HeldBack>) {
        let gate = stored.gate.as_ref().and_then(|g| Some((g, self.gates.get_mut(g)?)));
        let Some((gate_name, gate)) = gate else {
            return self.push_ready(stored);
        };
        let id = stored.id;
        held.push(HeldBack::new(
            id,
            name,
            gate_name.as_ref(),
            gate.held_by(),
            stored.payload.to_vec(),
        ));
        gate.waiting.insert((Reverse(stored.priority), seq), stored);
    }

    /// A job that waited at a gate which lets it through now, if any.
    fn pop_admitted(&mut self, now: Instant) -> Option<Stored> {
        let now = micros(now);
        let in_flight = &self.in_flight;
        self.gates.values_mut().find_map(|gate| {
            let entry = gate.waiting.first_entry()?;
            let id = entry.get().id;
            gate.admit(id, now, in_flight).then(|| gate.waiting.pop_first().map(|(_, s)| s))?
        })
    }

    /// How many jobs wait at gates.
    fn gated_len(&self) -> usize {
        self.gates.values().map(|gate| gate.waiting.len()).sum()
    }

    /// Frees the slot a job that left flight held at its gate; whether a job waits
    /// there that it may let through.
    fn free_slot(&mut self, stored: &Stored) -> bool {
        let Some(gate) = stored.gate.as_ref().and_then(|name| self.gates.get_mut(name)) else {
            return false;
        };
        gate.running.remove(&stored.id) && !gate.waiting.is_empty()
            || self.suspect.front().is_some_and(|s| s.gate == stored.gate)
    }

    /// The next instant something here changes on its own: a delayed job falls due
    /// or a lease expires.
    fn next_change(&mut self) -> Option<Instant> {
        self.tidy_leases();
        let delayed = self.delayed.keys().next().map(|(at, _)| *at);
        let lease = self.leases.peek().map(|Reverse((at, _, _))| *at);
        let suspect_gate = self.suspect.front().and_then(|s| s.gate.as_ref());
        let gates = self
            .gates
            .iter()
            .filter(|(name, gate)| !gate.waiting.is_empty() || Some(*name) == suspect_gate)
            .filter_map(|(_, gate)| gate.opens_at());
        [delayed, lease].into_iter().flatten().chain(gates).min()
    }

    fn ready_len(&self) -> usize {
        self.ready.iter().map(VecDeque::len).sum::<usize>()
            + self.grouped.len()
            + self.suspect.len()
            + self.gated_len()
    }
}

impl State {
    /// Refuses a job whose id is already queued.
    fn check_new(&self, job: &NewJob) -> Result<()> {
        let id = job.stored.id;
        if self.queues.get(&job.queue).is_some_and(|q| q.known.contains(&id)) {
            return Err(Error::DuplicateJob { id, queue: job.queue.clone() });
        }
        Ok(())
    }

    /// Refuses jobs whose id is already queued, or repeated among `jobs`; `seen` is
    /// empty, with room for every job.
    fn check_batch<'a>(
        &self,
        jobs: &'a [NewJob],
        seen: &mut HashSet<(&'a str, TaskId)>,
    ) -> Result<()> {
        for job in jobs {
            self.check_new(job)?;
            if !seen.insert((&job.queue, job.stored.id)) {
                return Err(Error::DuplicateJob { id: job.stored.id, queue: job.queue.clone() });
            }
        }
        Ok(())
    }

    fn add(&mut self, job: NewJob) {
        let NewJob { queue, eta, stored, gate } = job;
        let seq = self.next_seq;
        self.next_seq += 1;
        let queue = self.queues.entry(queue).or_default();
        queue.known.insert(stored.id);
        if let (Some(gate), Some(name)) = (gate, &stored.gate) {
            // The last enqueue's limits hold; the rate state and the jobs stay.
            let state =
                queue.gates.entry(Arc::clone(name)).or_insert_with(|| GateState::new(&gate));
            state.rate = gate.rate;
            state.burst = gate.burst;
            state.concurrency = gate.concurrency;
        }
        match eta {
            Some(eta) if eta > Utc::now() => {
                queue.delayed.insert((due_instant(eta), seq), stored);
            }
            _ => queue.push_ready(stored),
        }
    }

    /// Claims up to `max` jobs into `claimed` for `worker`; returns when the next one
    /// could be due.
    fn try_claim<'a>(
        &mut self,
        worker: &Arc<str>,
        queues: &'a [String],
        max: usize,
        lease: Duration,
        claimed: &mut Vec<Claimed<'a>>,
        held: &mut Vec<HeldBack>,
    ) -> Option<Instant> {
        let now = Instant::now();
        let deadline = crate::clock::instant_after(now, lease);
        let mut next_change: Option<Instant> = None;
        let limits = self.limits;
        for name in queues {
            let Some(queue) = self.queues.get_mut(name) else {
                continue;
            };
            queue.promote(name, now, limits);
            if queue.paused_since.is_some() {
                continue;
            }
            // A queue with a suspect job hands out that job alone (after whatever
            // earlier queues gave: the worker then hands it back and comes for it
            // with nothing else running), once its gate lets it.
            if let Some(stored) = queue.suspect.pop_front() {
                if queue.admits(&stored, now) {
                    self.next_seq += 1;
                    let job = (stored, self.next_seq, true);
                    claimed.push(queue.hold(name, job, (now, deadline), worker));
                    return None;
                }
                queue.suspect.push_front(stored);
            }
            // Jobs that waited at a gate that now lets them through come first.
            while claimed.len() < max {
                let Some(stored) = queue.pop_admitted(now) else { break };
                self.next_seq += 1;
                let job = (stored, self.next_seq, false);
                claimed.push(queue.hold(name, job, (now, deadline), worker));
            }
            while claimed.len() < max {
                let Some(stored) = queue.pop_ready() else {
                    break;
                };
                self.next_seq += 1;
                if !queue.admits(&stored, now) {
                    queue.park(name, stored, self.next_seq, held);
                    continue;
                }
                let job = (stored, self.next_seq, false);
                claimed.push(queue.hold(name, job, (now, deadline), worker));
            }
            if let Some(at) = queue.next_change() {
                next_change = Some(next_change.map_or(at, |n| n.min(at)));
            }
        }
        next_change
    }
}

#[async_trait]
impl Broker for InMemoryBroker {
    async fn enqueue(&self, job: Job) -> Result<()> {
        let idempotency = job.idempotency.clone();
        let hold = job.key_hold;
        let (id, queue) = (job.id, job.queue.clone());
        let job = NewJob::from(job);
        {
            let mut state = self.lock();
            let now = Instant::now();
            let holder = idempotency.as_ref().and_then(|(key, _)| {
                let known = state.idempotency.get(&(queue.clone(), key.clone()));
                known.filter(|(_, until)| *until > now).map(|(holder, _)| *holder)
            });
            if let (Some(holder), Some((key, _))) = (holder, &idempotency) {
                let q = state.queues.get_mut(&queue);
                let holds = q.as_ref().is_some_and(|q| match hold {
                    KeyHold::Ttl => true,
                    KeyHold::Queued => {
                        q.known.contains(&holder) && !q.in_flight.contains_key(&holder)
                    }
                    KeyHold::UntilDone => q.known.contains(&holder),
                    KeyHold::Debounce => q.delayed.values().any(|s| s.id == holder),
                }) || hold == KeyHold::Ttl;
                match q {
                    // The job the key names, again, while it waits: it replaces itself.
                    Some(q) if holds && hold == KeyHold::Debounce && holder == id => {
                        q.delayed.retain(|_, s| s.id != holder);
                        q.known.remove(&holder);
                    }
                    // A key never hands itself twice to one id.
                    _ if holds || holder == id => {
                        return Err(Error::IdempotencyKeyTaken {
                            key: key.clone(),
                            queue,
                            existing: holder,
                        });
                    }
                    _ => {}
                }
            }
            state.check_new(&job)?;
            state.add(job);
            if let Some((key, ttl)) = idempotency {
                state.idempotency.retain(|_, (_, until)| *until > now);
                state.idempotency.insert((queue, key), (id, crate::clock::instant_after(now, ttl)));
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn enqueue_batch(&self, jobs: Vec<Job>) -> Result<()> {
        refuse_keys_in_batches(&jobs)?;
        let jobs: Vec<NewJob> = jobs.into_iter().map(NewJob::from).collect();
        let mut seen = HashSet::with_capacity(jobs.len());
        {
            let mut state = self.lock();
            state.check_batch(&jobs, &mut seen)?;
            drop(seen);
            for job in jobs {
                state.add(job);
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn claim(
        &self,
        worker: &str,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        Ok(self.claim_reporting(worker, queues, max, lease, wait).await?.0)
    }

    async fn claim_reporting(
        &self,
        worker: &str,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<(Vec<Delivery>, Vec<HeldBack>)> {
        if max == 0 || queues.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        // One copy of the worker's id, shared by every lease of this claim.
        let worker: Arc<str> = Arc::from(worker);
        let mut claimed = Vec::with_capacity(max.min(CLAIM_RESERVE));
        let mut held = Vec::new();
        let deliveries = |claimed: Vec<Claimed<'_>>| {
            claimed.into_iter().map(Claimed::into_delivery).collect::<Vec<_>>()
        };
        // Most claims find work: look once before paying for a wake-up registration.
        self.lock().try_claim(&worker, queues, max, lease, &mut claimed, &mut held);
        if !claimed.is_empty() {
            return Ok((deliveries(claimed), held));
        }
        let give_up = crate::clock::deadline(wait);
        loop {
            // Register for wake-ups before looking, so an enqueue between the look and
            // the wait is not missed. Nothing below awaits while holding claimed jobs,
            // so dropping this future loses nothing.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_change =
                self.lock().try_claim(&worker, queues, max, lease, &mut claimed, &mut held);
            if !claimed.is_empty() {
                return Ok((deliveries(claimed), held));
            }
            if Instant::now() >= give_up {
                return Ok((Vec::new(), held));
            }
            let until = next_change.map_or(give_up, |at| at.min(give_up));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<()> {
        let held = self.settle(lease, |queue, held, _| {
            queue.known.remove(&held.stored.id);
            held
        })?;
        // Freed once the lock is released.
        drop(held);
        Ok(())
    }

    async fn complete(&self, lease: &Lease, remember: Duration) -> Result<()> {
        let until = crate::clock::deadline(remember);
        let held = self.settle(lease, |queue, held, _| {
            queue.known.remove(&held.stored.id);
            queue.remember_completion(held.stored.id, until);
            held
        })?;
        drop(held);
        Ok(())
    }

    async fn is_complete(&self, queue: &str, id: TaskId) -> Result<bool> {
        let state = self.lock();
        let until = state.queues.get(queue).and_then(|q| q.completed.get(&id));
        Ok(until.is_some_and(|t| *t > Instant::now()))
    }

    async fn retry(&self, lease: &Lease, payload: Vec<u8>, eta: DateTime<Utc>) -> Result<()> {
        let payload: Arc<[u8]> = payload.into();
        self.settle(lease, |queue, held, seq| {
            let stored = Stored { payload, deliveries: 0, strikes: 0, ..held.stored };
            *seq += 1;
            if eta > Utc::now() {
                queue.delayed.insert((due_instant(eta), *seq), stored);
            } else {
                queue.push_ready(stored);
            }
        })?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.settle(lease, |queue, held, _| {
            let priority = usize::from(held.stored.priority.min(MAX_PRIORITY));
            // A release is a settle, not a lost delivery: it counts as neither.
            let stored =
                Stored { deliveries: held.stored.deliveries.saturating_sub(1), ..held.stored };
            if held.isolated {
                queue.suspect.push_front(stored);
            } else {
                queue.ready[priority].push_front(stored);
            }
        })?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<()> {
        let cap = self.lock().limits.dead_letter_cap;
        self.settle(lease, |queue, held, _| {
            let letter = DeadLetter::new(
                held.stored.id,
                lease.queue.clone(),
                held.stored.payload.to_vec(),
                reason,
                Utc::now(),
            );
            queue.known.remove(&letter.id);
            queue.bury(letter, cap);
        })
    }

    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<()> {
        let mut state = self.lock();
        let queue = state.queues.get_mut(&lease.queue).ok_or(Error::LeaseLost { id: lease.id })?;
        let held = queue
            .in_flight
            .get_mut(&lease.id)
            .filter(|held| token_matches(held.token, &lease.token))
            .ok_or(Error::LeaseLost { id: lease.id })?;
        held.deadline = crate::clock::deadline(lease_for);
        let (deadline, token) = (held.deadline, held.token);
        // The entry of the old deadline goes stale.
        queue.add_lease(deadline, token, lease.id);
        queue.tidy_leases();
        Ok(())
    }

    fn worker_registry(&self) -> Option<&dyn WorkerRegistry> {
        Some(self)
    }

    fn schedule_store(&self) -> Option<&dyn ScheduleStore> {
        Some(self)
    }

    fn event_stream(&self) -> Option<&dyn EventStream> {
        Some(self)
    }

    fn admin(&self) -> Option<&dyn BrokerAdmin> {
        Some(self)
    }

    fn quota_store(&self) -> Option<&dyn super::QuotaStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::EventsFrom;
    use crate::events::Event;

    #[tokio::test]
    async fn a_batch_across_queues_is_atomic_as_a_whole() {
        let broker = InMemoryBroker::new();
        let queued = Job::new(TaskId::new(), "beta", 5, None, vec![0]);
        broker.enqueue(queued.clone()).await.unwrap();
        let batch = vec![Job::new(TaskId::new(), "alpha", 5, None, vec![1]), queued];
        assert!(matches!(broker.enqueue_batch(batch).await, Err(Error::DuplicateJob { .. })));
        assert_eq!(broker.queue_stats("alpha").await.unwrap().ready, 0, "alpha's part was added");
    }

    #[tokio::test]
    async fn the_dead_letter_cap_drops_the_oldest_and_counts_them() {
        let broker = InMemoryBroker::with_dead_letter_cap(3);
        let queues = vec!["q".to_owned()];
        for i in 0..5u8 {
            broker.enqueue(Job::new(TaskId::new(), "q", 5, None, vec![i])).await.unwrap();
            let got = broker.claim("w", &queues, 1, Duration::from_secs(30), Duration::ZERO).await;
            broker.dead_letter(&got.unwrap()[0].lease, &format!("bad {i}")).await.unwrap();
        }
        let stats = broker.queue_stats("q").await.unwrap();
        assert_eq!((stats.dead, stats.dead_dropped), (3, 2));
        let kept: Vec<String> =
            broker.dead_letters("q", 0, 10).await.unwrap().into_iter().map(|d| d.reason).collect();
        assert_eq!(kept, ["bad 4", "bad 3", "bad 2"]);
    }

    #[tokio::test]
    async fn a_deleted_queue_forgets_the_count_of_dropped_letters_and_completions() {
        let broker = InMemoryBroker::with_dead_letter_cap(1);
        let queues = vec!["q".to_owned()];
        let long = Duration::from_secs(30);
        for i in 0..3u8 {
            broker.enqueue(Job::new(TaskId::new(), "q", 5, None, vec![i])).await.unwrap();
        }
        let got = broker.claim("w", &queues, 3, long, Duration::ZERO).await.unwrap();
        broker.dead_letter(&got[0].lease, "one").await.unwrap();
        broker.dead_letter(&got[1].lease, "two").await.unwrap();
        broker.complete(&got[2].lease, long).await.unwrap();
        assert_eq!(broker.queue_stats("q").await.unwrap().dead_dropped, 1);
        assert!(broker.is_complete("q", got[2].lease.id).await.unwrap());
        let deleted = broker.delete_queue("q", false).await.unwrap();
        assert_eq!(deleted.dead_letters, 1);
        assert_eq!(broker.queue_stats("q").await.unwrap().dead_dropped, 0);
        assert!(!broker.is_complete("q", got[2].lease.id).await.unwrap());
    }

    #[tokio::test]
    async fn the_event_stream_keeps_at_least_its_cap_and_drops_whole_batches() {
        let event =
            |n: u32| Arc::new(Event::new(crate::EventKind::Started, TaskId::new(), "t", "q", n));
        let broker = InMemoryBroker::new().with_event_stream_cap(3);
        for sizes in [[2, 2], [1, 1]] {
            for size in sizes {
                let batch: Vec<Arc<Event>> = (0..size).map(event).collect();
                broker.publish_events(&batch).await.unwrap();
            }
        }
        // 2+2+1+1 published: the first batch of 2 goes (4 left >= 3), the second
        // stays (2 would be under the cap).
        let page = broker.read_events(&EventsFrom::Oldest, 10, Duration::ZERO).await.unwrap();
        assert_eq!(page.events.iter().map(|e| e.attempt).collect::<Vec<_>>(), [0, 1, 0, 0]);

        let none = InMemoryBroker::new().with_event_stream_cap(0);
        none.publish_events(&[event(1)]).await.unwrap();
        let page = none.read_events(&EventsFrom::Oldest, 10, Duration::ZERO).await.unwrap();
        assert!(page.events.is_empty(), "a cap of 0 keeps nothing");
    }

    #[test]
    fn a_token_is_the_lowercase_hex_form_and_matches_only_it() {
        for number in [0, 1, 15, 16, 255, 0xdead_beef, u64::MAX] {
            let token = token_of(number);
            assert_eq!(token, format!("{number:x}"));
            assert!(token_matches(number, &token));
        }
        for other in ["FF", "0ff", "+ff", "fe", "", "ff ", "100", "f"] {
            assert!(!token_matches(255, other), "{other:?}");
        }
    }

    #[tokio::test]
    async fn a_renewed_lease_expires_at_its_new_deadline_not_its_old_one() {
        let broker = InMemoryBroker::new();
        let queues = vec!["q".to_owned()];
        broker.enqueue(Job::new(TaskId::new(), "q", 5, None, vec![1])).await.unwrap();
        let short = Duration::from_millis(50);
        let got = broker.claim("w", &queues, 1, short, Duration::ZERO).await.unwrap();
        broker.renew(&got[0].lease, Duration::from_secs(60)).await.unwrap();
        tokio::time::sleep(short * 2).await;
        let again = broker.claim("w", &queues, 1, short, Duration::ZERO).await.unwrap();
        assert!(again.is_empty(), "the renewed lease has not expired");
        assert_eq!(broker.reap(&queues).await.unwrap(), 0);
        broker.renew(&got[0].lease, Duration::ZERO).await.unwrap();
        let again = broker.claim("w", &queues, 1, short, Duration::ZERO).await.unwrap();
        assert_eq!(again.len(), 1, "a lease renewed to nothing expires at once");
        assert!(matches!(broker.ack(&got[0].lease).await, Err(Error::LeaseLost { .. })));
        broker.ack(&again[0].lease).await.unwrap();
        assert_eq!(broker.queue_stats("q").await.unwrap().in_flight, 0);
    }

    #[tokio::test]
    async fn the_stale_lease_of_an_earlier_claim_does_not_expire_a_later_one() {
        let broker = InMemoryBroker::new();
        let queues = vec!["q".to_owned()];
        broker.enqueue(Job::new(TaskId::new(), "q", 5, None, vec![1])).await.unwrap();
        let short = Duration::from_millis(50);
        let first = broker.claim("w", &queues, 1, short, Duration::ZERO).await.unwrap();
        broker.release(&first[0].lease).await.unwrap();
        let long = Duration::from_secs(60);
        let second = broker.claim("w", &queues, 1, long, Duration::ZERO).await.unwrap();
        tokio::time::sleep(short * 2).await;
        assert!(broker.claim("w", &queues, 1, long, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(broker.reap(&queues).await.unwrap(), 0);
        broker.ack(&second[0].lease).await.unwrap();
    }

    #[tokio::test]
    async fn settled_leases_do_not_pile_up() {
        let broker = InMemoryBroker::new();
        let queues = vec!["q".to_owned()];
        let long = Duration::from_secs(60);
        // A job held throughout keeps its lease on top, so stale entries pile up
        // behind it unless they are swept out.
        broker.enqueue(Job::new(TaskId::new(), "q", 5, None, vec![0])).await.unwrap();
        let held = broker.claim("w", &queues, 1, long, Duration::ZERO).await.unwrap();
        for _ in 0..100 {
            let jobs = (0..100).map(|_| Job::new(TaskId::new(), "q", 5, None, vec![1])).collect();
            broker.enqueue_batch(jobs).await.unwrap();
            for delivery in broker.claim("w", &queues, 100, long, Duration::ZERO).await.unwrap() {
                broker.ack(&delivery.lease).await.unwrap();
            }
        }
        let leases = broker.lock().queues.get("q").map_or(0, |q| q.leases.len());
        assert!(leases <= 2 * 101 + 64, "{leases} lease entries for one job in flight");
        broker.ack(&held[0].lease).await.unwrap();
    }
}
