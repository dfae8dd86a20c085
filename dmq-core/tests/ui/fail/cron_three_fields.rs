use dmq_core::{TaskError, task};

#[task(cron = "0 */4 *")]
async fn refresh() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
