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
//! - **M ESTABLISHED pairs**, connected once and held open (2·M sockets), on their own
//!   server ports.
//! - **Conntrack entries** for all of them when the namespace has conntrack on (the
//!   harness adds an nftables `ct` rule); the TIME_WAIT conntrack timeout is set to 60 s in
//!   the namespace so the table holds one entry per TIME_WAIT socket, not two.
//!
//! Everything stays in the namespace, on loopback, and stops when the `Population` drops.

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
    _established: Vec<(TcpStream, TcpStream)>,
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
        ns.sysctl("net.ipv4.ip_local_port_range", "10000 65000");
        ns.sysctl("net.ipv4.tcp_max_tw_buckets", &(2 * tw).max(1 << 16).to_string());
        // Present once the namespace has conntrack on; per namespace since Linux 4.x.
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=60"])
            .status();
        raise_fd_limit(2 * established + 4096);
        let ns_path = format!("/run/netns/{}", ns.name);

        // Established pairs first: they are the steady part of the table.
        let est_ports = established.div_ceil(PER_PORT);
        let est_path = ns_path.clone();
        let pairs = std::thread::spawn(move || {
            enter(&est_path);
            let mut pairs = Vec::with_capacity(established);
            for p in 0..est_ports {
                let l = TcpListener::bind(("127.0.0.1", first_port + p as u16)).expect("bind established port");
                for _ in 0..PER_PORT.min(established - pairs.len()) {
                    let c = TcpStream::connect(l.local_addr().unwrap()).expect("connect");
                    pairs.push((c, l.accept().expect("accept").0));
                }
            }
            pairs
        })
        .join()
        .expect("established pairs");

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
        Population { stop, made, threads, _established: pairs, tw, started, built_in: started.elapsed() }
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

/// Held pairs need two descriptors each.
fn raise_fd_limit(want: usize) {
    let nr_open: u64 =
        std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1 << 20);
    let want = (want as u64).min(nr_open);
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer; then a plain setrlimit of our own process.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        if rl.rlim_cur < want {
            rl.rlim_cur = want;
            rl.rlim_max = rl.rlim_max.max(want);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0, "RLIMIT_NOFILE {want}");
        }
    }
}
