//! The default deployment's cost, side by side with node_exporter in one run (issue 33):
//! sockwatch as root in the host's namespace at its defaults (10 s interval, every
//! namespace read: the cheap layer for all, the per-pod dumps for those that could run
//! out), against node_exporter with the matching collectors (tcpstat, conntrack, sockstat,
//! netstat, softnet, arp, filefd), each scraped as an HA pair of Prometheus servers scrapes
//! at 15 s (twice per 15 s).
//!
//! The host: `--namespaces` (100) idle namespaces (pinned, as a runtime pins a pod's); a
//! pod's namespace holding N TIME_WAIT sockets (0, 100,000, 300,000: the load generator's
//! steady churn), as on a node, where the pods hold the sockets; and 0, 1 or 5 namespaces
//! **near** their port range (a 100-port range, two local servers, a client churning
//! connections so that about 100 ports toward each stay in TIME_WAIT: the cheap bound
//! reads full, so each is dumped every sample and every second between samples).
//!
//! Each row runs `--seconds` (60) after a 15 s settle; CPU is each process's own
//! (`/proc/PID/stat` utime + stime, threads that ended included), scaled to an hour.
//! Needs root, iproute2 and prometheus-node-exporter; run it on a quiet host (nothing
//! else holding namespaces or sockets: sockwatch reads the whole host).
//!
//!     cargo bench --bench deployment
//!     cargo bench --bench deployment -- --sizes 0,100000,300000 --near 0,1,5 --seconds 60

#[path = "../tests/common/mod.rs"]
mod common;
mod loadgen;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{KillOnDrop, Netns};

const SOCKWATCH: &str = "127.0.0.1:19822";
const NODE_EXPORTER: &str = "127.0.0.1:19100";

/// User + system CPU seconds of a process, its ended threads included.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / hz
}

fn get(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find(|l| l.starts_with(name))?.rsplit(' ').next()?.parse().ok()
}

/// `n` pinned namespaces, each empty, made and removed in one `ip -batch` each way.
struct Idle(Vec<String>);

impl Idle {
    fn new(n: usize) -> Idle {
        let names: Vec<String> = (0..n).map(|i| format!("sw-dep-{}-{i}", std::process::id())).collect();
        Idle::batch(names.iter().map(|n| format!("netns add {n}\n")).collect());
        Idle(names)
    }
    fn batch(cmds: String) {
        let mut child = Command::new("ip").args(["-batch", "-"]).stdin(Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), cmds.as_bytes()).unwrap();
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        Idle::batch(self.0.iter().map(|n| format!("netns del {n}\n")).collect());
    }
}

/// A namespace at its port range: 100 ports, two servers, a client keeping about 100
/// ports toward each in TIME_WAIT (its connects past that fail, as a pod's would).
struct Near {
    _ns: Netns,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Near {
    fn new(tag: &str) -> Near {
        let ns = Netns::new(tag);
        ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for port in [7100u16, 7101] {
            let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            threads.push(common::accept_until_close(&ns, addr, stop.clone()));
            let (stop, path) = (stop.clone(), format!("/run/netns/{}", ns.name));
            threads.push(std::thread::spawn(move || {
                let f = std::fs::File::open(&path).unwrap();
                // SAFETY: valid fd; setns affects only this thread.
                assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) }, 0);
                // 2 connections/s: 120 in 60 s, more than the 100 ports a destination has.
                while !stop.load(Ordering::Relaxed) {
                    let _ = TcpStream::connect(addr); // closed at once: the client's TIME_WAIT
                    std::thread::sleep(Duration::from_millis(500));
                }
            }));
        }
        Near { _ns: ns, stop, threads }
    }
}

impl Drop for Near {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Row {
    sockets: usize,
    near: usize,
    sw: f64,
    ne: f64,
    dumps: f64,
    refreshes: f64,
    needs: String,
    tw_seen: f64,
}

fn measure(sockets: usize, near: usize, seconds: u64) -> Row {
    let big = Netns::new("dep-pod");
    let population = (sockets > 0).then(|| loadgen::Population::hold(&big, sockets, 0, 2000, 2));
    let _near: Vec<Near> = (0..near).map(|i| Near::new(&format!("dep-near{i}"))).collect();
    let sw = KillOnDrop(
        Command::new(common::BIN)
            .args(["serve", "--web.listen-address", SOCKWATCH, "--munin.socket", "", "--log.level", "warn"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ne = KillOnDrop(
        Command::new("prometheus-node-exporter")
            .args(["--collector.disable-defaults", "--collector.tcpstat", "--collector.conntrack"])
            .args(["--collector.sockstat", "--collector.netstat", "--collector.softnet", "--collector.arp"])
            .args(["--collector.filefd", &format!("--web.listen-address={NODE_EXPORTER}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(SOCKWATCH).is_none_or(|b| !b.contains("sockwatch_samples_total")) || get(NODE_EXPORTER).is_none() {
        assert!(Instant::now() < deadline, "sockwatch or node_exporter did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(15)); // past the first samples and dumps
    let before = get(SOCKWATCH).unwrap_or_default();
    let (sw0, ne0) = (process_cpu(sw.0.id()), process_cpu(ne.0.id()));
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < Duration::from_secs(seconds) {
        // Two Prometheus servers, 15 s each: a scrape of each every 7.5 s.
        let _ = get(SOCKWATCH);
        let _ = get(NODE_EXPORTER);
        next += Duration::from_millis(7500);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (sw1, ne1) = (process_cpu(sw.0.id()), process_cpu(ne.0.id()));
    let after = get(SOCKWATCH).unwrap_or_default();
    let per_hour = 3600.0 / elapsed;
    let delta = |name: &str| metric(&after, name).unwrap_or(0.0) - metric(&before, name).unwrap_or(0.0);
    let needs = ["near", "could", "far"]
        .map(|n| {
            format!("{}", metric(&after, &format!("sockwatch_netns_deep_namespaces{{need=\"{n}\"}}")).unwrap_or(0.0))
        })
        .join("/");
    let tw_seen = metric(&after, "sockwatch_netns_tcp_time_wait_max").unwrap_or(0.0);
    drop(population);
    Row {
        sockets,
        near,
        sw: (sw1 - sw0) * per_hour,
        ne: (ne1 - ne0) * per_hour,
        dumps: delta("sockwatch_netns_deep_dumps_total") * per_hour,
        refreshes: delta("sockwatch_netns_deep_refresh_dumps_total") * per_hour,
        needs,
        tw_seen,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !common::require("deployment bench", &["prometheus-node-exporter"]) {
        return;
    }
    let opt = |name: &str, default: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or(default.into())
    };
    let list = |s: String| -> Vec<usize> { s.split(',').map(|v| v.parse().expect("a number")).collect() };
    let sizes = list(opt("--sizes", "0,100000,300000"));
    let nears = list(opt("--near", "0,1,5"));
    let seconds: u64 = opt("--seconds", "60").parse().expect("--seconds");
    let _idle = Idle::new(opt("--namespaces", "100").parse().expect("--namespaces"));
    println!("| TIME_WAIT in a pod's namespace | namespaces near | sockwatch CPU s/h | node_exporter CPU s/h | × node_exporter | dumps/h (of which between samples) | need near/could/far | most TIME_WAIT seen in a namespace |");
    println!("|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for &k in &nears {
            let r = measure(n, k, seconds);
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.2} | {:.0} ({:.0}) | {} | {:.0} |",
                r.sockets,
                r.near,
                r.sw,
                r.ne,
                r.sw / r.ne,
                r.dumps,
                r.refreshes,
                r.needs,
                r.tw_seen
            );
        }
    }
}
