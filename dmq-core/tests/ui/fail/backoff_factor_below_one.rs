use dmq_core::{TaskError, task};

#[task(backoff = "exponential(1s, 0.5, 1m)")]
async fn send(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
