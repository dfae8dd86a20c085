use dmq_core::{TaskError, task};

#[task(max_retries = 3, jitter = "full")]
async fn send(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
