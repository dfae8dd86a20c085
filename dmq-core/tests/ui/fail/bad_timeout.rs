use dmq_core::{TaskError, task};

#[task(timeout = "30 parsecs")]
async fn send(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
