use dmq_core::{TaskError, task};

#[task(every = "0s")]
async fn refresh() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
