use dmq_core::{TaskError, task};

#[task(cron = "@hourly", every = "1h")]
async fn refresh() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
