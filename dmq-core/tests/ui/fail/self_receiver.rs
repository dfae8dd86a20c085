use dmq_core::{TaskError, task};

struct Mailer;

impl Mailer {
    #[task]
    async fn send(&self, to: String) -> Result<(), TaskError> {
        let _ = to;
        Ok(())
    }
}

fn main() {}
