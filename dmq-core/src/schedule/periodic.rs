//! A periodic schedule together with the job it enqueues: what a manager registers
//! and every worker's scheduler fires.

use std::sync::Arc;

use super::Schedule;
use crate::envelope::Envelope;

/// One periodic schedule and the job it enqueues at each fire time.
#[derive(Debug)]
pub(crate) struct Periodic {
    pub(crate) name: String,
    pub(crate) schedule: Schedule,
    /// The job to enqueue, but for its id and times, set at each fire.
    pub(crate) template: Envelope,
}

/// The periodic schedules the manager knows, for a worker's scheduler.
pub(crate) type Periodics = Vec<Arc<Periodic>>;
