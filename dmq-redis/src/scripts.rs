//! The Lua scripts in `lua/`, one per atomic operation, loaded once and run by SHA.

use redis::Script;

/// Every script the broker runs.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) claim: Script,
    pub(crate) ack: Script,
    pub(crate) retry: Script,
    pub(crate) release: Script,
    pub(crate) dead_letter: Script,
    pub(crate) renew: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            enqueue: Script::new(include_str!("../lua/enqueue.lua")),
            claim: Script::new(include_str!("../lua/claim.lua")),
            ack: Script::new(include_str!("../lua/ack.lua")),
            retry: Script::new(include_str!("../lua/retry.lua")),
            release: Script::new(include_str!("../lua/release.lua")),
            dead_letter: Script::new(include_str!("../lua/dead_letter.lua")),
            renew: Script::new(include_str!("../lua/renew.lua")),
        }
    }
}
