use dmq_core::{TaskError, task};

#[task(concurrency = 3, concurrency_key = tenant)]
async fn report(customer: String) -> Result<(), TaskError> {
    let _ = customer;
    Ok(())
}

fn main() {}
