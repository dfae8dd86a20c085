// Run: cargo run --release -p dmq-examples --example http_load -- URL TOKEN [SECONDS] [CONCURRENCY]
//
// A load generator for `dmq serve`: for SECONDS (10 by default) CONCURRENCY (32 by
// default) clients enqueue jobs one request each (POST /v1/jobs); then as many
// consumers claim those jobs one at a time and ack each (POST /v1/queues/{q}/claim,
// POST /v1/leases/ack) until the queue is empty. It prints requests per second and the
// latency of each kind of request (p50, p99). TOKEN needs the produce and consume
// scopes. The jobs go to a queue of their own, `load-<random>`, emptied by the run.

//! A load generator for `dmq serve`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token, rest @ ..] = args.as_slice() else {
        bail!("usage: http_load URL TOKEN [SECONDS] [CONCURRENCY]");
    };
    let seconds: u64 = rest.first().map_or(Ok(10), |s| s.parse()).context("SECONDS")?;
    let concurrency: usize = rest.get(1).map_or(Ok(32), |s| s.parse()).context("CONCURRENCY")?;
    let queue = format!("load-{}", &uuid_like());
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let url = Arc::<str>::from(url.trim_end_matches('/'));
    let token = Arc::<str>::from(token.as_str());

    // Enqueue, for `seconds`.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, token, queue, stop) =
            (client.clone(), url.clone(), token.clone(), queue.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let body = json!({"task": "load.noop", "args": [1], "queue": queue});
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let response = client
                    .post(format!("{url}/v1/jobs"))
                    .bearer_auth(&*token)
                    .json(&body)
                    .send()
                    .await?;
                if response.status() != reqwest::StatusCode::CREATED {
                    bail!("enqueue answered {}: {}", response.status(), response.text().await?);
                }
                response.bytes().await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut enqueue = Vec::new();
    for task in tasks {
        enqueue.extend(task.await??);
    }
    report("enqueue", &mut enqueue, started.elapsed());

    // Claim and ack each job, until none is left.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, token, queue) =
            (client.clone(), url.clone(), token.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let (mut claims, mut acks) = (Vec::new(), Vec::new());
            loop {
                let sent = Instant::now();
                let claimed: Value = client
                    .post(format!("{url}/v1/queues/{queue}/claim"))
                    .bearer_auth(&*token)
                    .json(&json!({"max": 1}))
                    .send()
                    .await?
                    .json()
                    .await?;
                claims.push(sent.elapsed());
                let Some(job) = claimed["jobs"].as_array().and_then(|jobs| jobs.first()) else {
                    break;
                };
                let sent = Instant::now();
                let response = client
                    .post(format!("{url}/v1/leases/ack"))
                    .bearer_auth(&*token)
                    .json(&json!({"lease": job["lease"], "result": 1}))
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("ack answered {}: {}", response.status(), response.text().await?);
                }
                response.bytes().await?;
                acks.push(sent.elapsed());
            }
            anyhow::Ok((claims, acks))
        }));
    }
    let (mut claims, mut acks) = (Vec::new(), Vec::new());
    for task in tasks {
        let (c, a) = task.await??;
        claims.extend(c);
        acks.extend(a);
    }
    let took = started.elapsed();
    println!(
        "claim+ack: {} jobs in {:.2} s: {:.0} jobs/s, {:.0} requests/s",
        acks.len(),
        took.as_secs_f64(),
        acks.len() as f64 / took.as_secs_f64(),
        (acks.len() + claims.len()) as f64 / took.as_secs_f64()
    );
    report("claim", &mut claims, took);
    report("ack", &mut acks, took);
    Ok(())
}

/// Prints how many requests of `kind` ran per second, and their p50 and p99.
fn report(kind: &str, latencies: &mut [Duration], took: Duration) {
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{kind}: {} requests, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        latencies.len() as f64 / took.as_secs_f64(),
        at(0.5),
        at(0.99)
    );
}

/// A random hex string, for the queue's name.
fn uuid_like() -> String {
    format!(
        "{:016x}",
        std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            Instant::now()
        )
    )
}
