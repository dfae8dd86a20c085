//! Enqueue in the caller's own transaction: `call.enqueue_in(&mut tx)` writes the job
//! with the caller's other writes, so that it exists for workers if and only if the
//! transaction commits. One statement, the SQL function `enqueue_in`
//! (migrations/0002), writes what the schema's mode says: the broker's `jobs`, or the
//! `outbox` an [`OutboxRelay`](crate::OutboxRelay) moves to Redis.

use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use dmq_core::{
    Call, DEFAULT_IDEMPOTENCY_TTL, DEFAULT_MAX_MESSAGE_SIZE, Envelope, Error, Registry, Result,
    TaskId, check_queue_name, check_task_name, partition_name, partition_of_key,
};
use sqlx::postgres::types::PgInterval;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::broker::interval;
use crate::error::{pg_error, sqlstate};
use crate::schema::{DEFAULT_SCHEMA, Schema};

/// Enqueues a job inside the caller's PostgreSQL transaction: the job exists for
/// workers if and only if that transaction commits. Implemented for every task call
/// (`send_email::call(..)`); bring it into scope with `use dmq_postgres::EnqueueIn`.
///
/// What the job becomes depends on what the namespace's schema serves (its mode,
/// recorded by whatever connected to it first, or by `dmq migrate`):
///
/// - a schema of a [`PostgresBroker`](crate::PostgresBroker): the job goes straight
///   into its `jobs` table, through the broker's own enqueue (its idempotency key
///   checked), and idle workers are woken when the transaction commits;
/// - a schema of an outbox, for a Redis broker: the job waits in the table `outbox`
///   until an [`OutboxRelay`](crate::OutboxRelay) (`dmq worker --outbox URL`) moves it
///   to Redis, exactly once, after the transaction commits.
///
/// Either way it is one statement, in one round trip, on the transaction's connection.
///
/// ```no_run
/// use dmq_core::{task, TaskError};
/// use dmq_postgres::EnqueueIn;
///
/// #[task(queue = "emails")]
/// async fn send_receipt(order: i64) -> Result<(), TaskError> {
///     Ok(())
/// }
///
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = pool.begin().await?;
/// let order: i64 = sqlx::query_scalar("INSERT INTO orders (total) VALUES (42) RETURNING id")
///     .fetch_one(&mut *tx)
///     .await?;
/// // Sent if and only if the order is saved.
/// let id = send_receipt::call(order).enqueue_in(&mut tx).await?;
/// tx.commit().await?;
/// // Later, with a manager on the same broker and backend:
/// // manager.result::<()>(id).wait(timeout).await?
/// # let _ = id;
/// # Ok(())
/// # }
/// # fn main() {}
/// ```
///
/// # What differs from `enqueue` on a manager
///
/// There is no manager here, so its settings are dmq's defaults: messages up to
/// [`DEFAULT_MAX_MESSAGE_SIZE`], idempotency keys held for
/// [`DEFAULT_IDEMPOTENCY_TTL`], and no `Queued` event (workers emit the rest). A
/// queue declared partitioned by a task linked into this binary
/// (`#[task(partitions = N)]`) gets its jobs placed on a partition: by the call's
/// [`partition_key`](Call::partition_key) when it has one, else by a hash of the
/// task id. A call with a partition key whose queue no linked task declares
/// partitioned is refused: the queue may be partitioned only by a manager
/// (`ManagerBuilder::partitions`), which `enqueue_in` cannot see, and a job enqueued
/// under its plain name would wait where no worker looks. For such a queue, enqueue
/// with the manager.
///
/// # Idempotency keys
///
/// A call with an [`idempotency_key`](Call::idempotency_key) whose key is held by
/// another job in its queue enqueues nothing and returns that job's id, as
/// `enqueue` does. In a broker's schema the key is the broker's own. In an outbox's
/// schema it is checked and held in the schema's `idempotency_keys` table (so two
/// transactions with one key enqueue one job; the second waits for the first to
/// commit or roll back), and the relay enqueues the job to Redis under the same
/// key, so a job enqueued there directly with that key counts too (see
/// [`OutboxRelay`](crate::OutboxRelay)).
///
/// # Errors
///
/// Before anything is sent, leaving the transaction usable:
/// [`Error::InvalidArgument`] for a namespace that cannot name a schema, an unusable
/// task or queue name, or a partition key as above, and the errors of
/// [`Call::into_envelope`] and [`Envelope::encode`] (a message over the size limit).
///
/// From PostgreSQL, which then aborts the transaction (roll it back): a schema that
/// does not exist or serves neither a broker nor an outbox yet (the error says to run
/// `dmq migrate`, or connect its broker or relay first), [`Error::DuplicateJob`] when
/// the job's id is already queued (ids are fresh random UUIDs, so this does not happen
/// by chance), and the connection's errors. dmq sets no savepoint, which would cost
/// two more round trips per job; wrap the call in one (`tx.begin()`) to keep the
/// transaction alive through such an error.
pub trait EnqueueIn: sealed::Sealed {
    /// Enqueues in namespace `dmq` (the schema `dmq`) within `tx`; returns the job's
    /// id, or the id of the job that holds its idempotency key.
    ///
    /// # Errors
    ///
    /// As the [trait](EnqueueIn) says.
    fn enqueue_in(
        self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> impl Future<Output = Result<TaskId>> + Send;

    /// Enqueues in namespace `namespace`, whose jobs live in the schema of that name
    /// (the namespace a broker was connected with, `connect_with_namespace`), within
    /// `tx`; returns as [`enqueue_in`](EnqueueIn::enqueue_in) does.
    ///
    /// ```no_run
    /// # use dmq_core::{task, TaskError};
    /// use dmq_postgres::EnqueueIn;
    /// # #[task]
    /// # async fn invoice(order: i64) -> Result<(), TaskError> { Ok(()) }
    /// # async fn demo(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> dmq_core::Result<()> {
    /// let id = invoice::call(7).enqueue_in_namespace(tx, "billing").await?;
    /// # let _ = id;
    /// # Ok(())
    /// # }
    /// # fn main() {}
    /// ```
    ///
    /// # Errors
    ///
    /// As the [trait](EnqueueIn) says.
    fn enqueue_in_namespace(
        self,
        tx: &mut Transaction<'_, Postgres>,
        namespace: &str,
    ) -> impl Future<Output = Result<TaskId>> + Send;
}

mod sealed {
    /// Only dmq's calls enqueue in a transaction.
    pub trait Sealed {}

    impl<T> Sealed for dmq_core::Call<T> {}
}

impl<T> EnqueueIn for Call<T> {
    fn enqueue_in(
        self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> impl Future<Output = Result<TaskId>> + Send {
        self.enqueue_in_namespace(tx, DEFAULT_SCHEMA)
    }

    fn enqueue_in_namespace(
        self,
        tx: &mut Transaction<'_, Postgres>,
        namespace: &str,
    ) -> impl Future<Output = Result<TaskId>> + Send {
        // Everything that can be refused is refused here, before a statement is sent:
        // such an error leaves the transaction as it was.
        let prepared = Prepared::new(self, namespace);
        async move { prepared?.write(tx).await }
    }
}

/// A job ready to be written: the statement and its parameters.
#[derive(Debug)]
struct Prepared {
    schema: Schema,
    statement: String,
    task: String,
    queue: String,
    id: TaskId,
    priority: i16,
    eta: Option<DateTime<Utc>>,
    payload: Vec<u8>,
    key: Option<String>,
    key_ttl: Option<PgInterval>,
    /// The gate the job passes (its flow limits), when it has one.
    gate: Option<dmq_core::Gate>,
    /// The group it is claimed fairly in, when it has one.
    group: Option<String>,
}

impl Prepared {
    /// Checks `call` as a manager's enqueue does and encodes it for `namespace`.
    fn new<T>(call: Call<T>, namespace: &str) -> Result<Self> {
        let schema = Schema::new(namespace)?;
        let (mut envelope, partition_key) = call.into_envelope_and_partition_key()?;
        check_task_name(&envelope.task)?;
        check_queue_name(&envelope.queue)?;
        place(&mut envelope, partition_key.as_deref(), declared_partitions()?)?;
        dmq_core::inject_trace_context(&mut envelope);
        if let Some(limits) = &envelope.limits {
            limits.check(&envelope.task)?;
        }
        if envelope.unique_for.is_some() {
            return Err(Error::InvalidArgument(format!(
                "a unique call of {:?} (.unique, .throttle, .debounce) cannot be enqueued in a \
                 transaction: its broker decides whether it is unique when it is enqueued, \
                 after the commit; give the call an idempotency_key instead, or enqueue it \
                 with the manager",
                envelope.task
            )));
        }
        if let Some(group) = &envelope.group {
            if group.is_empty() || group.contains('\0') || group.len() > dmq_core::MAX_GATE_LEN {
                return Err(Error::InvalidArgument(format!(
                    "the group of a job of {:?} must be text without NUL, 1 to {} bytes",
                    envelope.task,
                    dmq_core::MAX_GATE_LEN
                )));
            }
        }
        let gate = envelope.limits.as_ref().and_then(|l| dmq_core::Gate::of(&envelope.task, l));
        let payload = envelope.encode(DEFAULT_MAX_MESSAGE_SIZE)?;
        let key_ttl = envelope.idempotency_key.as_ref().map(|_| interval(DEFAULT_IDEMPOTENCY_TTL));
        Ok(Prepared {
            statement: match gate {
                Some(_) => format!(
                    "SELECT {}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    schema.at("enqueue_in")
                ),
                None => format!("SELECT {}($1, $2, $3, $4, $5, $6, $7)", schema.at("enqueue_in")),
            },
            gate,
            group: envelope.group,
            schema,
            task: envelope.task,
            queue: envelope.queue,
            id: envelope.id,
            priority: i16::from(envelope.priority.min(dmq_core::MAX_PRIORITY)),
            eta: envelope.eta,
            payload,
            key: envelope.idempotency_key,
            key_ttl,
        })
    }

    /// Writes the job on the transaction's connection; its id, or the id of the job
    /// holding its idempotency key.
    async fn write(self, conn: &mut PgConnection) -> Result<TaskId> {
        let mut query = sqlx::query_scalar(crate::schema::sql(&self.statement))
            .bind(&self.queue)
            .bind(self.id.as_uuid())
            .bind(self.priority)
            .bind(self.eta)
            .bind(&self.payload)
            .bind(self.key.as_deref())
            .bind(self.key_ttl);
        if let Some(gate) = &self.gate {
            let (interval, burst, concurrency) = crate::broker::gate_limits(gate);
            query = query.bind(&gate.name).bind(interval).bind(burst).bind(concurrency);
        }
        let mut holder: std::result::Result<Option<Uuid>, sqlx::Error> =
            query.fetch_one(&mut *conn).await;
        // A grouped job that went straight into the jobs table gets its group there, in
        // the same transaction (one that went to the outbox carries it in its envelope,
        // which the relay reads).
        if let (Ok(None), Some(group)) = (&holder, &self.group) {
            let set = format!(
                "UPDATE {} SET grp = $3 WHERE queue = $1 AND id = $2",
                self.schema.at("jobs")
            );
            let done = sqlx::query(crate::schema::sql(&set))
                .bind(&self.queue)
                .bind(self.id.as_uuid())
                .bind(group)
                .execute(&mut *conn)
                .await;
            if let Err(e) = done {
                holder = Err(e);
            }
        }
        match holder {
            Ok(None) => Ok(self.id),
            Ok(Some(existing)) => Ok(TaskId::from(existing)),
            Err(e) if sqlstate(&e).as_deref() == Some("23505") => {
                Err(Error::DuplicateJob { id: self.id, queue: self.queue })
            }
            Err(e) => Err(pg_error(
                &format!(
                    "could not enqueue a job of task {:?} in schema {:?} within the caller's \
                     transaction, which PostgreSQL has now aborted (roll it back)",
                    self.task,
                    self.schema.name()
                ),
                e,
            )),
        }
    }
}

/// The queues that tasks linked into this binary declare partitioned
/// (`#[task(partitions = N)]`), with their partition counts; read once.
fn declared_partitions() -> Result<&'static HashMap<String, u16>> {
    static DECLARED: OnceLock<std::result::Result<HashMap<String, u16>, String>> = OnceLock::new();
    let declared = DECLARED.get_or_init(|| {
        let registry = Registry::from_linked().map_err(|e| e.to_string())?;
        Ok(registry
            .tasks()
            .into_iter()
            .filter(|task| task.partitions > 1)
            .map(|task| (task.queue.to_owned(), task.partitions))
            .collect())
    });
    declared.as_ref().map_err(|e| Error::InvalidArgument(e.clone()))
}

/// Puts `envelope` on a partition of its queue when `declared` says the queue is
/// partitioned: the partition of `partition_key`, else one by a hash of its id.
fn place(
    envelope: &mut Envelope,
    partition_key: Option<&str>,
    declared: &HashMap<String, u16>,
) -> Result<()> {
    let queue = envelope.queue.as_str();
    let partition = match (declared.get(queue).copied(), partition_key) {
        (Some(count), Some(key)) => partition_of_key(key, count),
        (Some(count), None) => {
            u16::try_from(envelope.id.as_uuid().as_u128() % u128::from(count)).unwrap_or(0)
        }
        (None, None) => return Ok(()),
        (None, Some(_)) => {
            return Err(Error::InvalidArgument(format!(
                "this call of {:?} has a partition key, but no task linked into this binary \
                 declares queue {queue:?} partitioned (#[task(partitions = N)]); enqueue_in \
                 cannot see partitions declared on a manager (ManagerBuilder::partitions), \
                 so it would leave the job where no worker of a partitioned queue looks: \
                 enqueue it with the manager, or drop the partition key",
                envelope.task
            )));
        }
    };
    envelope.queue = partition_name(queue, partition);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(queue: &str) -> Envelope {
        Envelope::new("emails.send", queue, Vec::new())
    }

    #[test]
    fn a_declared_partitioned_queue_gets_a_partition() {
        let declared = HashMap::from([("emails".to_owned(), 8)]);
        let mut keyed = envelope("emails");
        place(&mut keyed, Some("customer-7"), &declared).unwrap();
        assert_eq!(keyed.queue, partition_name("emails", partition_of_key("customer-7", 8)));
        let mut unkeyed = envelope("emails");
        place(&mut unkeyed, None, &declared).unwrap();
        let expected = u16::try_from(unkeyed.id.as_uuid().as_u128() % 8).unwrap();
        assert_eq!(unkeyed.queue, partition_name("emails", expected));
    }

    #[test]
    fn a_plain_queue_stays_and_a_partition_key_for_it_is_refused() {
        let declared = HashMap::from([("emails".to_owned(), 8)]);
        let mut plain = envelope("reports");
        place(&mut plain, None, &declared).unwrap();
        assert_eq!(plain.queue, "reports");
        let err = place(&mut envelope("reports"), Some("k"), &declared).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains("ManagerBuilder::partitions"), "{err}");
    }
}
