use dmq_core::{Backoff, RetryPolicy, TaskError, task};

fn policy() -> RetryPolicy {
    RetryPolicy::new(3, Backoff::default())
}

#[task(retry = policy, max_retries = 5)]
async fn send(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
