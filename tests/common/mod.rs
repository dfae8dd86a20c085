//! Helpers shared by the end-to-end tests.

#![allow(dead_code)]

use std::fmt::Debug;
use std::time::Duration;

use dmq_core::Error;

/// How long a test waits for a result before calling it lost: generous, never a
/// performance bound.
pub const WAIT: Duration = Duration::from_secs(30);

/// The kind and message of a failed task's result; panics on anything else.
pub fn failure<T: Debug>(result: Result<T, Error>) -> (String, String) {
    match result {
        Err(Error::TaskFailed { kind, message, .. }) => (kind, message),
        other => panic!("expected a failed task result, got {other:?}"),
    }
}

/// `args` encoded as a task's argument tuple.
pub fn encode_args<T: serde::Serialize>(args: &T) -> Vec<u8> {
    rmp_serde::to_vec(args).expect("encode the arguments")
}
