//! Claims: the claim script's reply read into deliveries, and claims whose reply was
//! lost given back.

use std::sync::Mutex;
use std::time::Duration;

use dmq_core::{Delivery, Error, HeldBack, HeldBy, Lease, Result, TaskId};
use redis::Value;

use crate::keys::QueueKeys;

use super::*;

/// A claim whose caller never learned what it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LostClaim {
    pub(super) worker: String,
    pub(super) queue: String,
    pub(super) tag: String,
}

/// The most jobs one claim takes.
pub(super) const MAX_CLAIM: usize = 1_000;

/// How a claim's time becomes its leases' fences: the claim's Unix millisecond times
/// this, plus each job's place in the claim (at most [`MAX_CLAIM`]).
pub(super) const FENCE_STRIDE: u64 = 1024;

/// What one run of the claim script returned.
pub(super) struct ClaimReply {
    pub(super) deliveries: Vec<Delivery>,
    /// How long until a delayed job falls due or a lease expires, when none was
    /// claimed.
    pub(super) next_change: Option<Duration>,
    /// The bad entries it dropped, and why.
    pub(super) bad: Vec<(Vec<u8>, String)>,
    /// Entries it leased that are no task id as dmq writes them (another character
    /// than a lowercase hex digit), with their tokens, and copies of a job within the
    /// claim (stale tokens): to drop with `drop_bad.lua`.
    pub(super) rejected: Vec<(String, String)>,
    /// The jobs it held back at their gates.
    pub(super) held: Vec<HeldBack>,
}

pub(super) fn parse_claim(queue: &str, reply: Vec<Value>) -> Option<ClaimReply> {
    let mut items = reply.into_iter();
    let next_change = match items.next()? {
        Value::Int(ms) if ms >= 0 => Some(Duration::from_millis(ms.unsigned_abs())),
        Value::Int(_) => None,
        _ => return None,
    };
    let mut bad = Vec::new();
    match items.next()? {
        Value::Array(entries) => {
            let mut entries = entries.into_iter();
            while let (Some(Value::BulkString(entry)), Some(Value::BulkString(why))) =
                (entries.next(), entries.next())
            {
                bad.push((entry, String::from_utf8_lossy(&why).into_owned()));
            }
        }
        Value::Nil => {}
        _ => return None,
    }
    // Said once for the claim: only a claim of one suspect job has it set.
    let Value::Int(isolated) = items.next()? else { return None };
    let mut held = Vec::new();
    match items.next()? {
        Value::Array(entries) => {
            let mut entries = entries.into_iter();
            while let (
                Some(Value::BulkString(id)),
                Some(Value::BulkString(gate)),
                Some(Value::BulkString(limit)),
                Some(Value::BulkString(payload)),
            ) = (entries.next(), entries.next(), entries.next(), entries.next())
            {
                // A held entry that is no task id is reported when it is handed out.
                let Some(id) = canonical_task_id(&id) else { continue };
                let limit = match limit.as_slice() {
                    b"concurrency" => HeldBy::Concurrency,
                    _ => HeldBy::Rate,
                };
                let gate = String::from_utf8_lossy(&gate).into_owned();
                held.push(HeldBack::new(id, queue, gate, limit, payload));
            }
        }
        Value::Nil => {}
        _ => return None,
    }
    let mut deliveries: Vec<Delivery> = Vec::with_capacity(items.len() / 4);
    let mut rejected = Vec::new();
    let mut seen: std::collections::HashMap<TaskId, usize, IdHash> =
        std::collections::HashMap::with_capacity_and_hasher(items.len() / 4, IdHash::default());
    loop {
        let Some(id) = items.next() else { break };
        let (
            Value::BulkString(id),
            Value::BulkString(payload),
            Value::Int(count),
            Value::BulkString(token),
        ) = (id, items.next()?, items.next()?, items.next()?)
        else {
            return None;
        };
        // Made of digits, the claim's hex tag and the worker's id (a Rust string):
        // UTF-8, taken over without a copy.
        let token = String::from_utf8(token)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        // Only the form dmq writes: any other (upper case, say) names keys that no
        // later write of this job would find.
        let Some(id) = canonical_task_id(&id) else {
            let raw = String::from_utf8_lossy(&id).into_owned();
            bad.push((id, "not a task id".to_owned()));
            rejected.push((raw, token));
            continue;
        };
        let lease = Lease { id, queue: queue.to_owned(), fence: fence_of(&token), token };
        let delivery = Delivery::new(lease, payload, u32::try_from(count).unwrap_or(u32::MAX));
        let delivery = if isolated == 1 { delivery.to_run_alone() } else { delivery };
        // A copy within the claim: the last one's lease is the one kept.
        if let Some(&at) = seen.get(&id) {
            let stale = std::mem::replace(&mut deliveries[at], delivery);
            bad.push((id.to_string().into_bytes(), "a copy of a job already claimed".to_owned()));
            rejected.push((stale.lease.id.to_string(), stale.lease.token));
            continue;
        }
        seen.insert(id, deliveries.len());
        deliveries.push(delivery);
    }
    Some(ClaimReply { deliveries, next_change, bad, rejected, held })
}

/// Hashes a [`TaskId`] by folding its 128 bits and one multiply (which spreads
/// them over the high bits the map also uses): the map it is for holds one claim's
/// jobs, a few hundred at most, so neither SipHash's cost nor its defence against
/// chosen keys is worth paying per job.
pub(super) type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
pub(super) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    #[allow(clippy::cast_possible_truncation)]
    fn write_u128(&mut self, n: u128) {
        self.0 = ((n as u64) ^ ((n >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The task id `bytes` spell in the one form dmq writes in Redis, lowercase and
/// hyphenated; `None` for any other bytes.
pub(super) fn canonical_task_id(bytes: &[u8]) -> Option<TaskId> {
    let hyphen = |i: usize| matches!(i, 8 | 13 | 18 | 23);
    let canonical = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| {
            if hyphen(i) { b == b'-' } else { b.is_ascii_digit() || (b'a'..=b'f').contains(&b) }
        });
    if !canonical {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The fence of a lease token `<seq>.<n>.<claimed at, Unix ms>.<tag>@<worker>`: the
/// claim's time on Redis's clock, in milliseconds, times [`FENCE_STRIDE`], plus the
/// job's place in its claim. The claim script makes each claim's time later than the
/// queue's previous claim's (field `~at` of the queue's meta hash; a millisecond
/// later when two claims share one), so the fence grows with every claim of a job,
/// a job released and claimed again at once included; and across queues, since a
/// lease is lost only after it expired or its worker's heartbeat lapsed, both many
/// milliseconds after the claim. Below 2^53 for the next 200,000 years. 0 for a
/// token that does not parse.
pub(super) fn fence_of(token: &str) -> u64 {
    let mut parts = token.splitn(4, '.');
    let _seq = parts.next();
    let n = parts.next().and_then(|p| p.parse::<u64>().ok());
    let at = parts.next().and_then(|p| p.parse::<u64>().ok());
    match (n, at) {
        (Some(n), Some(at)) => at.saturating_mul(FENCE_STRIDE).saturating_add(n % FENCE_STRIDE),
        _ => 0,
    }
}

/// A claim on its way: unless its reply is read ([`settled`]), dropping it (the
/// reply failed, or the claim's future was dropped) lists the claim among the lost
/// ones, whose jobs the next claim gives back.
///
/// [`settled`]: PendingClaim::settled
pub(super) struct PendingClaim<'a> {
    pub(super) lost: &'a Mutex<Vec<LostClaim>>,
    pub(super) claim: Option<LostClaim>,
}

impl<'a> PendingClaim<'a> {
    pub(super) fn new(lost: &'a Mutex<Vec<LostClaim>>, claim: LostClaim) -> Self {
        PendingClaim { lost, claim: Some(claim) }
    }

    /// The reply came: nothing to give back.
    pub(super) fn settled(mut self) {
        self.claim = None;
    }
}

impl Drop for PendingClaim<'_> {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            self.lost.lock().unwrap_or_else(|p| p.into_inner()).push(claim);
        }
    }
}

impl RedisBroker {
    /// Claims from one queue (a suspect job too, when `suspect` allows); returns the
    /// jobs and how long until the next change.
    ///
    /// The claim carries a fresh tag in its tokens, and comes back with its
    /// [`PendingClaim`]: until the caller settles it (once the jobs are handed to the
    /// worker), dropping it lists the claim among the lost ones, whose jobs the next
    /// claim gives back, rather than leave them in flight for a whole lease. So does a
    /// reply that never comes (the connection broke, or this future was dropped).
    pub(super) async fn claim_queue(
        &self,
        worker: &str,
        queue: &str,
        (max, suspect): (usize, bool),
        lease: Duration,
    ) -> Result<(Vec<Delivery>, Vec<HeldBack>, Option<Duration>, PendingClaim<'_>)> {
        let keys = self.keys.queue(queue);
        let tag = format!("{:x}", rand_u64());
        let mut invocation = self.scripts.claim.prepare_invoke();
        add_lease_keys(&mut invocation, &keys);
        invocation
            .arg(max)
            .arg(millis(lease).max(1))
            .arg(self.max_deliveries)
            .arg(self.dead_letter_cap)
            .arg(worker)
            .arg(&tag)
            .arg(u8::from(suspect));
        let pending = PendingClaim::new(
            &self.lost_claims,
            LostClaim { worker: worker.to_owned(), queue: queue.to_owned(), tag },
        );
        let reply: Vec<Value> = match self.run("claiming jobs", &invocation).await {
            Ok(reply) => reply,
            // Redis refused the script (a key of the wrong type, say): it changed nothing.
            Err(e) if !e.is_transient() => {
                pending.settled();
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let claim = parse_claim(queue, reply).ok_or_else(|| {
            Error::backend("unexpected reply from the claim script".to_owned(), false)
        })?;
        if !claim.rejected.is_empty() {
            self.drop_rejected(&keys, &claim.rejected).await?;
        }
        for (entry, why) in &claim.bad {
            tracing::error!(
                queue,
                entry = %String::from_utf8_lossy(entry),
                why,
                "dropped a bad entry from a ready list: it is no job of dmq's (another program \
                 or a bug wrote it); the jobs claimed beside it run as usual"
            );
        }
        Ok((claim.deliveries, claim.held, claim.next_change, pending))
    }

    /// Takes back the leases of entries a claim handed out that are no job of dmq's,
    /// and counts them as bad entries.
    pub(super) async fn drop_rejected(
        &self,
        keys: &QueueKeys,
        rejected: &[(String, String)],
    ) -> Result<()> {
        let mut invocation = self.scripts.drop_bad.prepare_invoke();
        invocation
            .key(keys.payloads())
            .key(keys.meta())
            .key(keys.in_flight())
            .key(keys.bad_entries());
        invocation.arg(rejected.len());
        for (id, token) in rejected {
            // A copy's stale token holds nothing: it is only counted.
            invocation.arg(id).arg(token);
        }
        self.run::<i64>("dropping bad entries", &invocation).await.map(|_| ())
    }

    /// Gives back what the claims whose reply was lost took. Returns an error, with
    /// the claims still listed, when Redis cannot be reached yet.
    pub(super) async fn recover_lost_claims(&self) -> Result<()> {
        let lost: Vec<LostClaim> =
            self.lost_claims.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for claim in lost {
            let keys = self.keys.queue(&claim.queue);
            let mut invocation = self.scripts.recover.prepare_invoke();
            invocation.key(keys.meta()).key(keys.in_flight()).key(keys.signal());
            add_ready_keys(&mut invocation, &keys);
            invocation.key(keys.suspect());
            invocation.arg(&claim.worker).arg(&claim.tag);
            let given: u64 =
                self.run("giving back a claim whose reply was lost", &invocation).await?;
            if given > 0 {
                tracing::warn!(
                    queue = %claim.queue,
                    jobs = given,
                    "gave back the jobs of a claim whose reply was lost (the connection broke); they are claimed again now"
                );
            }
            self.lost_claims.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| *c != claim);
        }
        Ok(())
    }
}
