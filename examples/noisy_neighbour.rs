//! A noisy neighbour for the test suite: run inside a network namespace of its own
//! (`scripts/noisy-neighbour up` makes one and runs this there), it keeps that namespace
//! busy the way a container host's pods are: a standing population of TIME_WAIT sockets
//! (each a conntrack entry when the namespace tracks connections), some held connections
//! and listeners. Traffic stays on the namespace's loopback.
//!
//! `noisy_neighbour [--time-wait N] [--hold N] [--seconds S]`
//!
//! - `--time-wait N` (default 60000): fills to N TIME_WAIT sockets as fast as it can, then
//!   churns at N / 55 connections a second so the count stays above N (TIME_WAIT lasts 60 s).
//! - `--hold N` (default 100): N established connections held open throughout.
//! - `--seconds S` (default 3600): stops by itself after S seconds.
//!
//! It prints one line when the population first reaches N, so a script can wait for it.
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// One listener per this many TIME_WAIT sockets: ports are unique per (local IP, remote IP,
/// remote port), and connect()'s search for a free port slows as one destination fills.
const PER_LISTENER: usize = 10_000;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!("noisy_neighbour: {name} needs a number");
            std::process::exit(2)
        }),
        None => default,
    }
}

/// TIME_WAIT sockets in this namespace, from the kernel's own count.
fn time_wait() -> u64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.iter().position(|&w| w == "tw").and_then(|i| f.get(i + 1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One connection, closed by the client first (the client's side goes to TIME_WAIT).
fn churn_once(l: &TcpListener, to: SocketAddr) -> std::io::Result<()> {
    let c = TcpStream::connect_timeout(&to, Duration::from_millis(500))?;
    let (s, _) = l.accept()?;
    drop(c);
    drop(s);
    Ok(())
}

fn main() {
    let target = arg("--time-wait", 60_000) as usize;
    let hold = arg("--hold", 100) as usize;
    let deadline = Instant::now() + Duration::from_secs(arg("--seconds", 3600));

    let listeners: Vec<TcpListener> = (0..target.div_ceil(PER_LISTENER).max(1))
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener"))
        .collect();
    let held: Vec<(TcpStream, TcpStream)> = (0..hold)
        .filter_map(|_| {
            let c = TcpStream::connect(listeners[0].local_addr().ok()?).ok()?;
            Some((c, listeners[0].accept().ok()?.0))
        })
        .collect();
    eprintln!("noisy_neighbour: {} listeners, {} connections held", listeners.len(), held.len());

    let mut reached = false;
    let rate = (target as f64 / 55.0).max(1.0);
    let started = Instant::now();
    let mut made = 0u64;
    let mut failed = 0u64;
    while Instant::now() < deadline {
        if !reached && time_wait() as usize >= target {
            reached = true;
            println!(
                "noisy_neighbour: {} TIME_WAIT sockets after {:.1} s",
                time_wait(),
                started.elapsed().as_secs_f64()
            );
        }
        // Below the target: a burst; at it: the rate that keeps it there.
        let batch = if reached { (rate / 10.0).ceil() as usize } else { 500 };
        let failed_before = failed;
        for i in 0..batch {
            let l = &listeners[(made as usize + i) % listeners.len()];
            if churn_once(l, l.local_addr().unwrap()).is_err() {
                failed += 1; // the table full or the ports held: a neighbour's trouble, not ours
            }
        }
        made += batch as u64;
        if reached || failed - failed_before == batch as u64 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!("noisy_neighbour: {made} connections made, {failed} failed; done");
}
