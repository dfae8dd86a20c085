use dmq_core::{TaskError, task};

#[task]
async fn greet(name: &str, titles: Vec<&str>) -> Result<String, TaskError> {
    Ok(format!("{} {name}", titles.join(" ")))
}

fn main() {}
