// A `mut` argument, a serde struct, a pattern and a `_` argument.
use dmq_core::{TaskError, task};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub lines: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Shipped {
    pub id: u64,
    pub parcels: usize,
}

#[task(queue = "shipping")]
pub async fn ship(
    mut order: Order,
    (width, height): (u32, u32),
    _: String,
) -> Result<Shipped, TaskError> {
    order.lines.retain(|line| !line.is_empty());
    let _ = width * height;
    Ok(Shipped {
        id: order.id,
        parcels: order.lines.len(),
    })
}

fn main() {
    let order = Order {
        id: 1,
        lines: vec!["book".to_owned()],
    };
    let call: dmq_core::Call<Shipped> = ship::call(order, (2, 3), "note".to_owned());
    assert_eq!(call.task_name(), "ship");
}
