//! The UDP source's cost (issue 18), measured side by side in one run:
//!
//! 1. at N UDP sockets (10k and 100k by default), sockwatch's UDP source (both families
//!    dumped with the memory-info extension, parsed, aggregated per port, drops followed)
//!    against a minimal client making the same two dumps and only counting the replies;
//! 2. on a host with few UDP sockets (10), the UDP source's share of a whole sample, at
//!    0 and at 16,000 TCP sockets (a process may hold 20,000 files here).
//!
//! CPU is the measuring thread's own clock (`CLOCK_THREAD_CPUTIME_ID`): the kernel builds
//! the dump in the reader's `recvmsg`, so its walk is counted too. Rounds alternate between
//! the two ways; medians are reported. Needs root (it makes its own network namespace);
//! prints why and exits 0 otherwise.
//!
//!     cargo bench --bench udp                      # N = 10000,100000
//!     cargo bench --bench udp -- --sizes 1000,10000 --rounds 30

#[path = "common/measure.rs"]
mod measure;
use measure::median;

/// CPU seconds `f` takes on this thread.
fn cpu(f: impl FnOnce()) -> f64 {
    measure::cpu_of(f).0
}

use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};

use sockwatch::sources::udp::sockets::{self as udp, UdpConfig, UdpTracker};

/// The minimal client: the same two requests (UDP, every state, SKMEMINFO), each reply
/// datagram walked only to count its messages. Returns the sockets counted.
fn floor_dump(buf: &mut [u8]) -> u64 {
    use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};
    let mut sock = Socket::new(NETLINK_SOCK_DIAG).unwrap();
    sock.bind_auto().unwrap();
    sock.connect(&SocketAddr::new(0, 0)).unwrap();
    let requests = [udp::request(libc::AF_INET as u8, 1), udp::request(libc::AF_INET6 as u8, 1)];
    measure::dump_counts(&mut sock, buf, &requests).iter().sum()
}

/// UDP sockets `from..to` bound on 127.0.x.1, ports 1024 up: distinct local ports, as on
/// a host with many UDP services or connected client sockets.
fn bind_range(from: usize, to: usize) -> Vec<UdpSocket> {
    (from..to)
        .map(|i| {
            let addr = Ipv4Addr::new(127, 0, (i / 60_000) as u8, 1);
            UdpSocket::bind((addr, 1024 + (i % 60_000) as u16)).unwrap()
        })
        .collect()
}

/// Sockets per holder process: below the file limit a process may have (20,000 on a host
/// without CAP_SYS_RESOURCE to raise it).
const PER_HOLDER: usize = 15_000;

/// `n` UDP sockets, held by child processes (in this namespace) until dropped.
struct Population(Vec<std::process::Child>);

impl Population {
    fn new(n: usize) -> Population {
        use std::io::BufRead;
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..n.div_ceil(PER_HOLDER))
            .map(|i| {
                let (from, to) = (i * PER_HOLDER, ((i + 1) * PER_HOLDER).min(n));
                std::process::Command::new(&exe)
                    .args([HOLD_ARG, &from.to_string(), &to.to_string()])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut p = Population(children);
        for c in &mut p.0 {
            let mut line = String::new();
            std::io::BufReader::new(c.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready", "a holder failed");
        }
        p
    }
}

impl Drop for Population {
    fn drop(&mut self) {
        for c in &mut self.0 {
            drop(c.stdin.take()); // EOF: the holder exits
            let _ = c.wait();
        }
    }
}

const HOLD_ARG: &str = "--hold";

fn setup_namespace() {
    // SAFETY: a plain syscall on this process.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    // A child inherits the namespace.
    assert!(std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status().unwrap().success());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(HOLD_ARG) {
        let (from, to) = (args[2].parse().unwrap(), args[3].parse().unwrap());
        let held = bind_range(from, to);
        println!("ready");
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
        drop(held);
        return;
    }
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "10000,100000".into())
        .split(',')
        .map(|s| s.parse().expect("--sizes N,N"))
        .collect();
    let rounds: usize = arg("--rounds").map_or(20, |r| r.parse().expect("--rounds N"));
    let only_dumps = args.iter().any(|a| a == "--dumps-only");
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP benches/udp: needs root for a network namespace");
        return;
    }
    setup_namespace();
    let mut buf = vec![0u8; 64 * 1024];
    let cfg = UdpConfig::default();
    println!("| UDP sockets | minimal client CPU/dump | sockwatch UDP source CPU/sample | ratio |");
    println!("|---|---|---|---|");
    for &n in &sizes {
        let population = Population::new(n);
        let mut tracker = UdpTracker::default();
        let (mut floor, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let mut counted = 0;
            floor.push(cpu(|| counted = floor_dump(&mut buf)));
            assert_eq!(counted, n as u64, "the minimal client saw every socket");
            let mut seen = 0;
            ours.push(cpu(|| seen = tracker.read(&cfg, [None, None]).unwrap().sockets[0]));
            assert_eq!(seen, n as u64, "sockwatch saw every socket");
        }
        let (f, o) = (median(floor), median(ours));
        println!("| {n} | {:.2} ms | {:.2} ms | {:.2} |", f * 1e3, o * 1e3, o / f);
        drop(population);
    }

    if only_dumps {
        return;
    }
    // A host with few UDP sockets: the UDP source's share of a whole sample.
    let few = bind_range(0, 10);
    let config = sockwatch::config::Config::load(&Default::default()).unwrap();
    println!();
    println!("| host | whole sample CPU | UDP source CPU | UDP's share of the rest |");
    println!("|---|---|---|---|");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut held = Vec::new();
    for tcp in [0usize, 16_000] {
        while held.len() * 2 < tcp {
            let c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            held.push((c, listener.accept().unwrap().0));
        }
        let mut sampler = sockwatch::sampler::Sampler::new(&config, |_| Vec::new());
        let mut tracker = UdpTracker::default();
        let (mut whole, mut alone) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            whole.push(cpu(|| drop(sampler.sample())));
            let inuse = sockwatch::sources::procfs::sockstat::read(std::path::Path::new("/proc")).unwrap().udp_inuse;
            alone.push(cpu(|| drop(tracker.read(&cfg, inuse).unwrap())));
        }
        let (w, u) = (median(whole), median(alone));
        println!(
            "| 10 UDP, {tcp} TCP sockets | {:.3} ms | {:.3} ms | {:.1} % |",
            w * 1e3,
            u * 1e3,
            100.0 * u / (w - u).max(1e-9)
        );
    }
    drop(few);
}
