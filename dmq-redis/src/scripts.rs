//! The Lua scripts in `lua/`, one per atomic operation, loaded once and run by SHA.

use redis::Script;

/// A script from `lua/`, with the shared helpers of `lua/lib.lua` in front.
macro_rules! script {
    ($name:literal) => {
        Script::new(concat!(
            include_str!("../lua/lib.lua"),
            include_str!(concat!("../lua/", $name, ".lua"))
        ))
    };
}

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
    pub(crate) reap: Script,
    pub(crate) reap_begin: Script,
    pub(crate) reap_end: Script,
    pub(crate) heartbeat: Script,
    pub(crate) deregister: Script,
    pub(crate) workers: Script,
    pub(crate) take_dead: Script,
    pub(crate) schedule_begin: Script,
    pub(crate) schedule_fire: Script,
    pub(crate) purge_dead: Script,
    pub(crate) purge: Script,
    pub(crate) recover: Script,
    pub(crate) doctor: Script,
    pub(crate) drop_bad: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            enqueue: script!("enqueue"),
            claim: script!("claim"),
            ack: script!("ack"),
            retry: script!("retry"),
            release: script!("release"),
            dead_letter: script!("dead_letter"),
            renew: script!("renew"),
            reap: script!("reap"),
            reap_begin: script!("reap_begin"),
            reap_end: script!("reap_end"),
            heartbeat: script!("heartbeat"),
            deregister: script!("deregister"),
            workers: script!("workers"),
            take_dead: script!("take_dead"),
            schedule_begin: script!("schedule_begin"),
            schedule_fire: script!("schedule_fire"),
            purge_dead: script!("purge_dead"),
            purge: script!("purge"),
            recover: script!("recover"),
            doctor: script!("doctor"),
            drop_bad: script!("drop_bad"),
        }
    }
}
