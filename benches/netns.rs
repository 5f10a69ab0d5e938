//! The cost of seeing every network namespace (issue 16), side by side in one run:
//!
//! 1. at K namespaces (10, 100, 1000 by default), each with one process in it, sockwatch's
//!    cheap layer (discovery over every /proc/PID, attribution, the O(1) counters of each
//!    namespace) against cAdvisor's method on the same namespaces: reading and parsing
//!    `/proc/PID/net/tcp` and `tcp6` of one process per namespace (what its per-container
//!    TCP metrics do, and why they are off by default). The host holds `--tcp` TCP sockets
//!    (default 10,000) in one of the namespaces, as a busy node would: `/proc/PID/net/tcp`
//!    walks the host's whole socket hash whatever namespace asks;
//! 2. discovery alone with `--procs` extra processes on the host (default 10,000);
//! 3. the daemon's RSS with every namespace read (`sockwatch serve --netns on`).
//!
//! CPU is the measuring thread's clock (`CLOCK_THREAD_CPUTIME_ID`, kernel time included:
//! procfs generates the files in the reader's `read`). Medians of `--rounds` (default 10),
//! alternating. Needs root; prints why and exits 0 otherwise.
//!
//!     cargo bench --bench netns
//!     cargo bench --bench netns -- --sizes 10,100 --procs 2000 --rounds 5

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/measure.rs"]
mod measure;
use measure::{cpu_of, median};

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sockwatch::sources::netns::{self, NetnsConfig};

/// cAdvisor's per-container TCP statistics: /proc/PID/net/tcp and tcp6 read and parsed
/// (the state column counted), for one process per namespace.
fn cadvisor_method(pids: &[u32]) -> u64 {
    let mut states = [0u64; 16];
    for pid in pids {
        for file in ["tcp", "tcp6"] {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else { continue };
            for line in text.lines().skip(1) {
                if let Some(st) = line.split_whitespace().nth(3).and_then(|s| u8::from_str_radix(s, 16).ok()) {
                    states[usize::from(st & 15)] += 1;
                }
            }
        }
    }
    states.iter().sum()
}

/// K namespaces (`ip netns add`), each with a `sleep` in it; removed on drop.
struct Namespaces {
    names: Vec<String>,
    sleepers: Vec<Child>,
}

impl Namespaces {
    fn new(k: usize, tag: &str) -> Namespaces {
        let mut n = Namespaces { names: Vec::new(), sleepers: Vec::new() };
        for i in 0..k {
            let name = format!("swb-{tag}-{i}-{}", std::process::id());
            assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
            let child = Command::new("ip")
                .args(["netns", "exec", &name, "sleep", "3600"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            n.names.push(name);
            n.sleepers.push(child);
        }
        std::thread::sleep(Duration::from_millis(300)); // every exec done
        n
    }

    fn pids(&self) -> Vec<u32> {
        self.sleepers.iter().map(Child::id).collect()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for c in &mut self.sleepers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// `n` TCP sockets (n/2 loopback pairs) created inside `ns` by a thread that entered it.
fn tcp_population(ns: &str, n: usize) -> Vec<(TcpStream, TcpStream)> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: valid fd; this thread only.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        assert!(Command::new("ip").args(["link", "set", "lo", "up"]).status().unwrap().success());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (0..n / 2).map(|_| (TcpStream::connect(a).unwrap(), l.accept().unwrap().0)).collect()
    })
    .join()
    .unwrap()
}

/// `n` TIME_WAIT sockets in `ns` (loopback connections the client closes first, spread over
/// 20 server ports so no port range runs out); they last 60 s.
fn time_wait_population(ns: &str, n: usize) {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: valid fd; this thread only.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let _ = Command::new("sysctl").args(["-qw", "net.ipv4.ip_local_port_range=1024 65000"]).status();
        let _ = Command::new("sysctl").args(["-qw", "net.ipv4.tcp_tw_reuse=0"]).status();
        let _ = Command::new("sysctl").args(["-qw", "net.ipv4.tcp_max_tw_buckets=2000000"]).status();
        let listeners: Vec<TcpListener> = (0..20).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        for i in 0..n {
            let l = &listeners[i % listeners.len()];
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (a, _) = l.accept().unwrap();
            drop(c); // the client closes first: its side goes to TIME_WAIT
            drop(a);
        }
    })
    .join()
    .unwrap();
}

/// The deep layer at `k` namespaces with `tw` TIME_WAIT sockets on the host: how long the
/// dumps of a sample take against their budget, and how many namespaces one sample covers.
fn deep_layer(busy: &str, tw: usize, k: usize, rounds: usize) {
    time_wait_population(busy, tw);
    let cfg = NetnsConfig::default();
    let budget = Duration::from_millis(1250); // 10 s interval x 0.25 max-share / 2
    let mut source = netns::NetnsSource::default();
    let (mut cpu, mut wall, mut dumps) = (Vec::new(), Vec::new(), Vec::new());
    // Samples until every namespace but sockwatch's own has been dumped once (each then has
    // a kept socket): the round-robin's cycle.
    let (mut covered_after, mut total_dumps) = (None, 0);
    for sample in 1..=40 {
        let t = std::time::Instant::now();
        let (c, n) = cpu_of(|| {
            source
                .read_within(Path::new("/proc"), &cfg, Some(262_144), budget, None, std::time::Duration::from_secs(10))
                .unwrap()
        });
        if sample <= rounds.max(3) {
            wall.push(t.elapsed().as_secs_f64());
            cpu.push(c);
            dumps.push((n.deep_dumps_total - total_dumps) as f64);
        }
        total_dumps = n.deep_dumps_total;
        if n.deep_kept + 1 >= n.count {
            covered_after = Some(sample);
            break;
        }
    }
    let (per_sample, wall, cpu) = (median(dumps), median(wall), median(cpu));
    println!();
    println!(
        "deep layer, {k} namespaces, {tw} TIME_WAIT on the host, budget {:.2} s: a sample took {:.2} s wall, {:.2} s CPU, \
         {per_sample:.0} dumps ({:.1} ms each); every namespace dumped at least once after {} samples",
        budget.as_secs_f64(),
        wall,
        cpu,
        wall * 1e3 / per_sample.max(1.0),
        covered_after.map_or("more than 40".to_owned(), |s| s.to_string())
    );
}

/// /metrics latency of the daemon with every namespace (port 19871) against one with
/// `--netns off` (19872), alternating on two keep-alive connections, 200 requests each.
fn scrape_latency(k: usize) {
    // Plain text, then gzip as Prometheus asks for it (`Accept-Encoding: gzip`; both bodies
    // are rendered once per sample).
    for (kind, headers) in [("plain", ""), ("gzip", "Accept-Encoding: gzip\r\n")] {
        let connect = |port: u16| {
            let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
            (std::io::BufReader::new(w.try_clone().unwrap()), w)
        };
        let (mut on, mut off) = (connect(19871), connect(19872));
        let (mut t_on, mut t_off) = (Vec::new(), Vec::new());
        for i in 0..200 {
            // Which daemon is asked first alternates: the first request after the pause
            // finds the CPU idle and pays for waking it.
            let mut pair = [(&mut on, &mut t_on), (&mut off, &mut t_off)];
            if i % 2 == 1 {
                pair.reverse();
            }
            for ((r, w), times) in pair {
                let t = std::time::Instant::now();
                assert_eq!(common::keepalive_get_with(r, w, "/metrics", headers), Some(200));
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let pct = |mut v: Vec<f64>, p: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * p) as usize]
        };
        let size = |port: u16| {
            let (mut r, mut w) = connect(port);
            use std::io::{Read, Write};
            let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
            w.write_all(req.as_bytes()).unwrap();
            let mut all = Vec::new();
            let _ = r.read_to_end(&mut all);
            all.len() // headers included
        };
        println!(
            "/metrics latency ({kind}), {k} namespaces: --netns on p50 {:.2} ms p99 {:.2} ms ({} bytes); --netns off p50 {:.2} ms p99 {:.2} ms ({} bytes)",
            pct(t_on.clone(), 0.5),
            pct(t_on, 0.99),
            size(19871),
            pct(t_off.clone(), 0.5),
            pct(t_off, 0.99),
            size(19872)
        );
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.trim().parse().ok()).unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "10,100,1000".into())
        .split(',')
        .map(|s| s.parse().expect("--sizes"))
        .collect();
    let rounds: usize = arg("--rounds").map_or(10, |r| r.parse().expect("--rounds N"));
    let tcp: usize = arg("--tcp").map_or(10_000, |r| r.parse().expect("--tcp N"));
    let tw: usize = arg("--time-wait").map_or(100_000, |r| r.parse().expect("--time-wait N"));
    let procs: usize = arg("--procs").map_or(10_000, |r| r.parse().expect("--procs N"));
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP benches/netns: needs root for network namespaces");
        return;
    }
    let cfg = NetnsConfig::default();
    let root = Path::new("/proc");
    let busy = Namespaces::new(1, "busy");
    let _sockets = tcp_population(&busy.names[0], tcp);
    println!(
        "{tcp} TCP sockets held in one namespace; {} processes on the host",
        std::fs::read_dir(root).unwrap().count()
    );
    println!();
    println!("| namespaces | sockwatch cheap layer CPU/sample | on a full-scan sample (1 in {}) | cAdvisor method (tcp + tcp6 per namespace) | cAdvisor ÷ sockwatch |", netns::FULL_SCAN_EVERY);
    println!("|---|---|---|---|---|");
    for &k in &sizes {
        let set = Namespaces::new(k, "k");
        // The same namespaces sockwatch reads: the K, the busy one, and this process's own.
        let mut pids = set.pids();
        pids.extend(busy.pids());
        pids.push(std::process::id());
        let (mut ours, mut full, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        let mut source = netns::NetnsSource::default();
        source.read(root, &cfg, Some(262_144)).unwrap(); // the first sample scans everything
        for _ in 0..rounds {
            let (t, n) = cpu_of(|| source.read(root, &cfg, Some(262_144)).unwrap());
            assert!(n.count as usize >= pids.len(), "every namespace found: {} of {}", n.count, pids.len());
            ours.push(t);
            full.push(cpu_of(|| netns::read(root, &cfg, Some(262_144)).unwrap()).0);
            let (t, seen) = cpu_of(|| cadvisor_method(&pids));
            assert!(seen as usize >= tcp, "the busy namespace's sockets seen: {seen}");
            theirs.push(t);
        }
        let (o, f, c) = (median(ours), median(full), median(theirs));
        println!("| {k} | {:.2} ms | {:.2} ms | {:.1} ms | {:.0}× |", o * 1e3, f * 1e3, c * 1e3, c / o);
        if k == *sizes.iter().max().unwrap() {
            deep_layer(&busy.names[0], tw, k, rounds);
            // The daemon with every namespace: its RSS once it has sampled a few times, and
            // its /metrics latency against a daemon with --netns off, side by side.
            let daemon = |netns: &str, port: u16| {
                Command::new(env!("CARGO_BIN_EXE_sockwatch"))
                    .args(["serve", "--netns", netns, "--interval", "1s"])
                    .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
                    .args(["--munin.socket", "", "--log.level", "error"])
                    .spawn()
                    .unwrap()
            };
            let (mut on, mut off) = (daemon("on", 19871), daemon("off", 19872));
            std::thread::sleep(Duration::from_secs(20));
            println!();
            println!(
                "daemon RSS after 20 s reading {k} namespaces every second (deep layer on): {:.1} MiB",
                rss_kib(on.id()) as f64 / 1024.0
            );
            scrape_latency(k);
            for d in [&mut on, &mut off] {
                let _ = d.kill();
                let _ = d.wait();
            }
        }
    }

    // Discovery alone, with many processes on the host.
    let extra: Vec<Child> =
        (0..procs).map(|_| Command::new("sleep").arg("3600").stdout(Stdio::null()).spawn().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let host_procs = std::fs::read_dir(root).unwrap().count();
    let times: Vec<f64> = (0..rounds).map(|_| cpu_of(|| netns::discover(root, &netns::PIN_DIRS).unwrap()).0).collect();
    let mut d = netns::Discovery::default();
    d.scan(root, &netns::PIN_DIRS).unwrap();
    let steady: Vec<f64> = (0..rounds).map(|_| cpu_of(|| d.scan(root, &netns::PIN_DIRS).unwrap()).0).collect();
    println!();
    println!(
        "discovery over {host_procs} /proc entries: full scan {:.2} ms CPU, between full scans {:.2} ms (medians of {rounds})",
        median(times) * 1e3,
        median(steady) * 1e3
    );
    for mut c in extra {
        let _ = c.kill();
        let _ = c.wait();
    }
}
