//! Two tasks linked into one binary under one name make the manager refuse to start,
//! naming both places.

use dmq_core::{Error, Manager, TaskError, task};

mod billing {
    use super::*;

    #[task(name = "invoice.send")]
    pub async fn send(id: u64) -> Result<u64, TaskError> {
        Ok(id)
    }
}

mod mailing {
    use super::*;

    #[task(name = "invoice.send")]
    pub async fn send(id: u64) -> Result<u64, TaskError> {
        Ok(id + 1)
    }
}

#[test]
fn manager_construction_fails_naming_both_tasks() {
    let err = Manager::builder().build().expect_err("duplicate task names must be refused");
    assert!(matches!(err, Error::DuplicateTask { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("\"invoice.send\""), "{text}");
    assert!(text.contains("billing"), "{text}");
    assert!(text.contains("mailing"), "{text}");
    assert!(text.contains("duplicate_names.rs"), "{text}");
    // Both remain callable as plain functions and as typed calls.
    let _ = (billing::send::call(1), mailing::send::call(2));
}
