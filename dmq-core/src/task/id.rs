use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The unique id of one enqueued job (a random UUID), by which its result is found.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl Hash for TaskId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One 128-bit word: a third less to hash than the UUID's bytes and their
        // length, and every job's id is hashed several times on its way through.
        state.write_u128(self.0.as_u128());
    }
}

impl TaskId {
    /// A fresh random id.
    #[must_use]
    pub fn new() -> Self {
        TaskId(Uuid::new_v4())
    }

    /// The id as a UUID.
    #[must_use]
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for TaskId {
    fn from(uuid: Uuid) -> Self {
        TaskId(uuid)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0)
    }
}

impl FromStr for TaskId {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(TaskId).map_err(|e| {
            crate::Error::InvalidArgument(format!("{s:?} is not a task id (a UUID): {e}"))
        })
    }
}
