use dmq_core::{Backoff, RetryPolicy, TaskError, task};

mod policies {
    use super::*;

    /// Takes an argument: the worker has none to give it.
    pub fn emails(max_retries: u32) -> RetryPolicy {
        RetryPolicy::new(max_retries, Backoff::default())
    }
}

#[task(retry = policies::emails)]
async fn send(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
