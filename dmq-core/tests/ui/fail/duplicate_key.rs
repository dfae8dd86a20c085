use dmq_core::{TaskError, task};

#[task(queue = "emails", name = "emails.send", queue = "urgent")]
async fn send(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
