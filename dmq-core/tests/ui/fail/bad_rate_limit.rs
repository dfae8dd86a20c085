use dmq_core::{TaskError, task};

#[task(rate_limit = "100 per second")]
async fn send(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
