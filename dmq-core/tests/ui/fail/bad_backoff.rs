use dmq_core::{TaskError, task};

#[task(backoff = "quadratic(1s)")]
async fn send(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
