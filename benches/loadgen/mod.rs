//! The benchmarks' load generator: *holds* a socket population inside a network namespace
//! for as long as it lives, so every tool is measured on the same N.
//!
//! - **N TIME_WAIT sockets.** A TIME_WAIT socket lives 60 s (TCP_TIMEWAIT_LEN), so a
//!   population built once decays while it is measured. Workers churn loopback connections
//!   (the client closes first, so the TIME_WAIT is the client's) across one server port
//!   per 10,000 sockets, paced by a controller at N/60 connections per second from the
//!   start: after 60 s the N exist, and from then on each new connection replaces one
//!   that expires, so the population stays at N, and the load on the host is the steady
//!   churn that holds N (16,700 connections/s at 1M), never a build burst.
//! - **M ESTABLISHED pairs**, connected once and held open (2·M sockets) by helper
//!   processes (the bench binary with `--hold-pairs`, 9,000 pairs each), on their own
//!   server ports.
//! - **Conntrack entries** for all of them when the namespace has conntrack on (the
//!   harness adds an nftables `ct` rule); the TIME_WAIT conntrack timeout is set to 60 s in
//!   the namespace so the table holds one entry per TIME_WAIT socket, not two.
//!
//! Everything stays in the namespace, on loopback, and stops when the `Population` drops.

// Each bench that includes this module uses part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::common::Netns;

/// TIME_WAIT sockets (or established pairs) per server port: well inside the port range.
const PER_PORT: usize = 10_000;
/// TCP_TIMEWAIT_LEN.
const TIME_WAIT: Duration = Duration::from_secs(60);

pub struct Population {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
    _established: Vec<PairHolder>,
    tw: usize,
    started: Instant,
    /// How long the build took: 60 s, longer if the host could not churn N/60 per second.
    pub built_in: Duration,
}

/// Enters the namespace on the calling thread.
fn enter(ns_path: &str) {
    let f = std::fs::File::open(ns_path).unwrap_or_else(|e| panic!("{ns_path}: {e}"));
    // SAFETY: valid fd; setns affects only this thread.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {ns_path}");
}

/// One connection, closed by the client first; the server reads the FIN before it closes,
/// so only the client's socket goes to TIME_WAIT.
fn churn(l: &TcpListener) -> std::io::Result<()> {
    let c = TcpStream::connect(l.local_addr()?)?;
    // accept() may hand over another worker's connection: any one will do.
    let (mut a, _) = l.accept()?;
    drop(c);
    let _ = a.read(&mut [0u8; 1]);
    Ok(())
}

impl Population {
    /// Builds `tw` TIME_WAIT sockets and `established` ESTABLISHED pairs in `ns`, server
    /// ports from `first_port` up, then holds them with `workers` churn threads until dropped.
    pub fn hold(ns: &Netns, tw: usize, established: usize, first_port: u16, workers: usize) -> Population {
        // Server ports stay below the port range, or a client could take one first.
        let server_ports = established.div_ceil(PAIRS_PER_HELPER) + tw.div_ceil(PER_PORT).max(1);
        assert!(usize::from(first_port) + server_ports < 10_000, "server ports must lie below 10000");
        ns.sysctl("net.ipv4.ip_local_port_range", "10000 65000");
        ns.sysctl("net.ipv4.tcp_max_tw_buckets", &(2 * tw).max(1 << 16).to_string());
        // Present once the namespace has conntrack on; per namespace since Linux 4.x.
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=60"])
            .status();
        let ns_path = format!("/run/netns/{}", ns.name);

        // Established pairs first: they are the steady part of the table. Each pair takes
        // two descriptors and RLIMIT_NOFILE may not be raisable (no CAP_SYS_RESOURCE in a
        // container), so helper processes hold them, PAIRS_PER_HELPER each.
        let est_ports = established.div_ceil(PAIRS_PER_HELPER);
        let helpers: Vec<PairHolder> = (0..est_ports)
            .map(|i| {
                let k = PAIRS_PER_HELPER.min(established - i * PAIRS_PER_HELPER);
                PairHolder::start(ns, first_port + i as u16, k)
            })
            .collect();
        let tw_first = first_port + est_ports as u16;
        let listeners: Arc<Vec<TcpListener>> = Arc::new(
            (0..tw.div_ceil(PER_PORT).max(1))
                .map(|i| {
                    let port = tw_first + i as u16;
                    ns.enter(move || TcpListener::bind(("127.0.0.1", port)).expect("bind churn port"))
                })
                .collect(),
        );
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicU64::new(0));
        // Connections the workers may have made by now: N/60 per second elapsed, so N in
        // the last 60 s (all that were made ≥ 60 s ago have expired).
        let target = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for w in 0..workers {
            let (stop, made, target, listeners, ns_path) =
                (stop.clone(), made.clone(), target.clone(), listeners.clone(), ns_path.clone());
            threads.push(std::thread::spawn(move || {
                enter(&ns_path);
                let mut next = w;
                while !stop.load(Ordering::Relaxed) {
                    if made.load(Ordering::Relaxed) >= target.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    if churn(&listeners[next % listeners.len()]).is_ok() {
                        made.fetch_add(1, Ordering::Relaxed);
                    }
                    next += workers;
                }
            }));
        }
        {
            let (stop, made, target) = (stop.clone(), made.clone(), target.clone());
            threads.push(std::thread::spawn(move || {
                let mut history: VecDeque<(Instant, u64)> = VecDeque::new();
                let mut expired = 0;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    history.push_back((now, made.load(Ordering::Relaxed)));
                    while history.front().is_some_and(|&(t, _)| now.duration_since(t) >= TIME_WAIT) {
                        expired = history.pop_front().unwrap().1;
                    }
                    let ramp = now.duration_since(started).min(TIME_WAIT).as_secs_f64() / TIME_WAIT.as_secs_f64();
                    target.store(expired + (tw as f64 * ramp) as u64, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }));
        }
        // The ramp: 60 s, then N were made in the last 60 s (if the host kept up).
        while started.elapsed() < TIME_WAIT || made.load(Ordering::Relaxed) < tw as u64 {
            std::thread::sleep(Duration::from_millis(50));
        }
        Population { stop, made, threads, _established: helpers, tw, started, built_in: started.elapsed() }
    }

    /// Connections made since the start.
    pub fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    /// Connections per second made since the build, each replacing an expired TIME_WAIT
    /// socket: N/60 when the host keeps up.
    pub fn churn_rate(&self) -> f64 {
        let since = self.started.elapsed().saturating_sub(self.built_in).as_secs_f64();
        (self.made.load(Ordering::Relaxed) as f64 - self.tw as f64) / since.max(1e-3)
    }
}

impl Drop for Population {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Held pairs per helper process: two descriptors each, under a 20,000 RLIMIT_NOFILE.
const PAIRS_PER_HELPER: usize = 9_000;

/// The argument that makes the bench binary a pair holder (see [`hold_pairs_main`]).
pub const HOLD_PAIRS_ARG: &str = "--hold-pairs";

/// A helper process holding ESTABLISHED pairs; they close when it is dropped.
struct PairHolder(std::process::Child);

impl PairHolder {
    fn start(ns: &Netns, port: u16, pairs: usize) -> PairHolder {
        use std::io::BufRead;
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(std::env::current_exe().expect("current exe"))
            .args([HOLD_PAIRS_ARG, &port.to_string(), &pairs.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn pair holder");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).expect("pair holder");
        assert_eq!(line.trim(), "ready", "pair holder on port {port} failed");
        PairHolder(child)
    }
}

impl Drop for PairHolder {
    fn drop(&mut self) {
        drop(self.0.stdin.take()); // EOF: the holder exits, closing its pairs
        let _ = self.0.wait();
    }
}

/// Pair holder: `--hold-pairs PORT K` listens on 127.0.0.1:PORT, connects K pairs, says
/// `ready` and holds them until its standard input closes.
pub fn hold_pairs_main(args: &[String]) {
    let (port, k): (u16, usize) = match args {
        [port, k, ..] => (port.parse().expect("port"), k.parse().expect("pairs")),
        _ => panic!("{HOLD_PAIRS_ARG} PORT PAIRS"),
    };
    let l = TcpListener::bind(("127.0.0.1", port)).expect("bind established port");
    let mut pairs = Vec::with_capacity(k);
    for _ in 0..k {
        let c = TcpStream::connect(l.local_addr().unwrap()).expect("connect");
        pairs.push((c, l.accept().expect("accept").0));
    }
    println!("ready");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
