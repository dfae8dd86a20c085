// A task without arguments and without keys: named after the function, on "default".
use dmq_core::{Call, Registry, TaskError, task};

#[task]
async fn tick() -> Result<u64, TaskError> {
    Ok(1)
}

fn main() {
    let call: Call<u64> = tick::call();
    assert_eq!(call.task_name(), "tick");
    assert_eq!(tick::QUEUE, "default");

    let info = Registry::from_linked().unwrap().task("tick").unwrap();
    assert_eq!(info.max_retries, None);
    assert_eq!(info.timeout, None);
}
