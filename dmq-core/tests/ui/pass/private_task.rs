// A private task in a nested module, called through its module from its neighbours,
// with argument types named through `super::` and `crate::` paths.
mod orders {
    pub struct Unused;

    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct OrderId(pub u64);

    pub mod tasks {
        use dmq_core::{Call, TaskError, task};

        #[task(name = "orders.cancel")]
        async fn cancel(id: super::OrderId, reason: crate::Reason) -> Result<bool, TaskError> {
            let _ = (id.0, reason);
            Ok(true)
        }

        pub fn cancel_later(id: u64) -> Call<bool> {
            cancel::call(super::OrderId(id), crate::Reason::Fraud)
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub enum Reason {
    Fraud,
}

fn main() {
    let _ = orders::Unused;
    assert_eq!(orders::tasks::cancel_later(3).task_name(), "orders.cancel");
}
