use dmq_core::{TaskError, task};

#[task]
fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    Ok(x + y)
}

fn main() {}
