use dmq_core::task;

#[task]
async fn log(line: String) {
    println!("{line}");
}

fn main() {}
