use dmq_core::{TaskError, task};

#[task(queue = "emails", retries = 3)]
async fn send(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
