use dmq_core::{TaskError, task};

#[task]
async fn echo<T: serde::Serialize>(value: T) -> Result<T, TaskError> {
    Ok(value)
}

fn main() {}
