// Every key of the attribute, read back from the registry.
use std::time::Duration;

use dmq_core::{Registry, TaskError, task};

/// Sends one email.
#[task(
    name = "emails.send",
    queue = "emails",
    max_retries = 5,
    timeout = "1m 30s"
)]
pub async fn send_email(to: String, body: String) -> Result<(), TaskError> {
    let _ = (to, body);
    Ok(())
}

fn main() {
    assert_eq!(send_email::NAME, "emails.send");
    assert_eq!(send_email::QUEUE, "emails");
    let call = send_email::call("ada@example.com".to_owned(), "hi".to_owned());
    assert_eq!(call.task_name(), "emails.send");
    let envelope = call.into_envelope().unwrap();
    assert_eq!(envelope.queue, "emails");

    let registry = Registry::from_linked().unwrap();
    let info = registry.task("emails.send").unwrap();
    assert_eq!(info.queue, "emails");
    assert_eq!(info.max_retries, Some(5));
    assert_eq!(info.timeout, Some(Duration::from_secs(90)));
    assert!(info.path.ends_with("::send_email"), "{}", info.path);
}
