use dmq_core::task;

#[task]
async fn count(words: String) -> usize {
    words.split_whitespace().count()
}

fn main() {}
