use dmq_core::{TaskError, task};

pub struct Order {
    pub id: u64,
}

#[task]
async fn ship(order: Order) -> Result<(), TaskError> {
    let _ = order.id;
    Ok(())
}

fn main() {}
