use dmq_core::{TaskError, task};

#[task(backoff = "exponential(10s, 2, 1s)")]
async fn send(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
