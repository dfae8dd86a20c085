use dmq_core::{TaskError, task};

#[task(guarantee = "twice")]
async fn send(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
