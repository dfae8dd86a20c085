//! The batched ack writer: acknowledgements on their way, sent a batch per queue per
//! round trip.

use std::sync::Arc;

use dmq_core::{Error, Result};

use crate::batch::Batcher;
use crate::conn::Shared;
use crate::error::{copy_error, redis_error};
use crate::keys::{Keys, id_text};
use crate::scripts::Scripts;

use super::*;

/// The most acknowledgements sent in one batch.
pub(super) const MAX_ACK_BATCH: usize = 512;

/// The task that sends acknowledgements in batches: one ack script per queue per
/// batch, the queues' scripts sent together.
pub(super) fn ack_writer(
    shared: Arc<Shared>,
    keys: Keys,
    scripts: Arc<Scripts>,
    url: String,
) -> Batcher<Settled> {
    Batcher::new(MAX_ACK_BATCH, move |leases: Vec<Settled>| {
        let shared = Arc::clone(&shared);
        let keys = keys.clone();
        let scripts = Arc::clone(&scripts);
        let url = url.clone();
        async move {
            let failed = |e: redis::RedisError| {
                shared.failed(&e);
                redis_error(&format!("acknowledging jobs on redis at {url}"), e)
            };
            let conn = match shared.get().await {
                Ok(conn) => conn,
                Err(e) => {
                    let e = failed(e);
                    return leases.iter().map(|_| Err(copy_error(&e))).collect();
                }
            };
            let mut queues: Vec<&str> = Vec::new();
            for (lease, _) in &leases {
                if !queues.contains(&lease.queue.as_str()) {
                    queues.push(&lease.queue);
                }
            }
            let acks = queues.iter().map(|queue| {
                let mut conn = conn.clone();
                let q = keys.queue(queue);
                let mut invocation = scripts.ack.prepare_invoke();
                invocation.key(q.payloads()).key(q.meta()).key(q.in_flight()).key(q.completed());
                super::add_gate_keys(&mut invocation, &q);
                invocation.key(q.signal());
                for (lease, remember_ms) in leases.iter().filter(|(l, _)| l.queue == *queue) {
                    invocation.arg(id_text(lease.id)).arg(&lease.token).arg(*remember_ms);
                }
                async move { invocation.invoke_async::<Vec<u8>>(&mut conn).await }
            });
            let replies = futures::future::join_all(acks).await;
            let mut results: Vec<Option<Result<()>>> = leases.iter().map(|_| None).collect();
            for (queue, reply) in queues.iter().zip(replies) {
                let positions =
                    leases.iter().map(|(l, _)| l).enumerate().filter(|(_, l)| l.queue == *queue);
                match reply {
                    Ok(acked) => {
                        for (n, (i, lease)) in positions.enumerate() {
                            results[i] = Some(match acked.get(n) {
                                Some(b'1') => Ok(()),
                                _ => Err(Error::LeaseLost { id: lease.id }),
                            });
                        }
                    }
                    Err(e) => {
                        let e = failed(e);
                        for (i, _) in positions {
                            results[i] = Some(Err(copy_error(&e)));
                        }
                    }
                }
            }
            results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(Error::backend(
                            "an acknowledgement was left out of its batch".to_owned(),
                            false,
                        ))
                    })
                })
                .collect()
        }
    })
}
