use std::rc::Rc;

use dmq_core::{TaskError, task};

async fn pause() {}

#[task]
async fn hold(n: u32) -> Result<u32, TaskError> {
    let shared = Rc::new(n);
    pause().await;
    Ok(*shared)
}

fn main() {}
