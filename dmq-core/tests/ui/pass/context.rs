// A task taking the worker's context between two arguments: `call` leaves it out, and
// the registered runner passes the arguments and the context in the right places.
use std::sync::Mutex;

use dmq_core::__private::{RunError, TaskRegistration, inventory};
use dmq_core::{TaskContext, TaskError, task};

static SEEN: Mutex<Vec<(u32, String, String)>> = Mutex::new(Vec::new());

// The registration points at the function's own line, below the attribute.
const REPORT_LINE: u32 = line!() + 2;
#[task(name = "report")]
async fn report(n: u32, ctx: TaskContext, label: String) -> Result<String, TaskError> {
    SEEN.lock()
        .unwrap()
        .push((n, ctx.name().to_owned(), label.clone()));
    Ok(label)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = report::call(7, "seven".to_owned())
        .into_envelope()
        .unwrap()
        .args;
    let registration = inventory::iter::<TaskRegistration>
        .into_iter()
        .find(|r| r.name == "report")
        .unwrap();
    assert_eq!(registration.line, REPORT_LINE);
    assert!(
        registration.file.ends_with("context.rs"),
        "{}",
        registration.file
    );

    let value = (registration.run)(args, TaskContext::for_test("from the worker")).await;
    assert!(value.is_ok(), "{value:?}");
    assert_eq!(
        *SEEN.lock().unwrap(),
        [(7, "from the worker".to_owned(), "seven".to_owned())]
    );

    // Arguments of the wrong shape are refused before the function runs.
    let wrong = tick_args();
    let refused = (registration.run)(wrong, TaskContext::for_test("x")).await;
    assert!(matches!(refused, Err(RunError::BadArgs(_))), "{refused:?}");
    assert_eq!(SEEN.lock().unwrap().len(), 1);
}

#[task]
async fn tick() -> Result<(), TaskError> {
    Ok(())
}

fn tick_args() -> Vec<u8> {
    tick::call().into_envelope().unwrap().args
}
