use dmq_core::{TaskContext, TaskError, task};

#[task(queue = "reports", cron = "0 6 * * *")]
async fn report(day: u32, ctx: TaskContext) -> Result<(), TaskError> {
    let _ = (day, ctx);
    Ok(())
}

fn main() {}
