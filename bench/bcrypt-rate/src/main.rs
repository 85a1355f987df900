//! `bcrypt-rate COST THREADS SECONDS`: hashes a 44-byte input (svc-users feeds bcrypt a
//! base64 SHA-256 digest of that length) on THREADS threads for about SECONDS seconds and
//! prints one JSON line: the total hash rate, summed over threads, each thread's rate
//! being its completed hashes over the time its last hash finished.

use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [cost, threads, seconds] => cost.parse::<u32>().ok().zip(threads.parse::<usize>().ok()).zip(seconds.parse::<f64>().ok()),
        _ => None,
    };
    let Some(((cost, threads), seconds)) = parsed.filter(|((c, t), s)| (4..=31).contains(c) && *t > 0 && *s > 0.0) else {
        eprintln!("usage: bcrypt-rate COST(4..31) THREADS(>0) SECONDS(>0)");
        return ExitCode::from(2);
    };
    let budget = Duration::from_secs_f64(seconds);
    let input = "q2Vq0h3qkV3m2d9tJ0bU1jS8XGv1m5y3rQ8cK7wZ0eA=";
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut done = 0u32;
                // At least one hash, so a budget shorter than one hash still measures.
                while done == 0 || started.elapsed() < budget {
                    if bcrypt::hash(input, cost).is_err() {
                        return None;
                    }
                    done += 1;
                }
                Some((done, started.elapsed()))
            })
        })
        .collect();
    let mut rate = 0.0;
    let mut hashes = 0;
    for worker in workers {
        match worker.join() {
            Ok(Some((done, elapsed))) => {
                hashes += done;
                rate += f64::from(done) / elapsed.as_secs_f64();
            }
            _ => {
                eprintln!("bcrypt-rate: a worker failed");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{{\"cost\":{cost},\"threads\":{threads},\"hashes\":{hashes},\"hashes_per_second\":{rate:.3}}}");
    ExitCode::SUCCESS
}
