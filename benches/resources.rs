//! The five sources of issue 28 (listeners, fds, sockmem, softnet, neighbour), measured
//! side by side in one run:
//!
//! 1. **Their share of a sample at N TCP sockets** (300,000 TIME_WAIT by default, held by
//!    the load generator in a namespace of the bench's own): a whole sample (every source)
//!    against the five read alone, alternating, each on the measuring thread's CPU clock
//!    (the kernel builds a dump inside the reader's `recvmsg`, so its walk counts).
//! 2. **The per-process descriptor scan at P processes** (10,000 idle processes by default):
//!    counting each process's descriptors by `stat()` of `/proc/PID/fd` (Linux 6.2+: the
//!    kernel returns the count) against listing the directory, the whole scan each time
//!    (walk, count, kept limits, top-K), alternating.
//!
//! Needs root (a namespace, sysctls inside it); prints why and exits 0 otherwise.
//!
//!     cargo bench --bench resources
//!     cargo bench --bench resources -- --sockets 300000 --processes 10000 --rounds 20

#[path = "../tests/common/mod.rs"]
mod common;
mod loadgen;
#[path = "common/measure.rs"]
mod measure;

use std::path::Path;
use std::process::{Command, Stdio};

use measure::{cpu_of, median};
use sockwatch::sources::procfs::fds::{Count, FdScanner};
use sockwatch::sources::procfs::{neighbour, sockmem, softnet};
use sockwatch::sources::tcp::listeners::ListenerDump;

const MEASURE_ARG: &str = "--measure-share";

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().expect(name))
}

/// Runs inside the namespace (its own process, so `/proc/net` is the namespace's): whole
/// samples against the five sources alone, `rounds` each, alternating. Prints the medians.
fn measure_share(rounds: usize) {
    let config = sockwatch::config::Config::load(&Default::default()).unwrap();
    let mut sampler = sockwatch::sampler::Sampler::new(&config, |_| Vec::new());
    let (mut listeners, mut fds) = (ListenerDump::default(), FdScanner::default());
    let root = Path::new("/proc");
    let (mut whole, mut five, mut each) = (Vec::new(), Vec::new(), [(); 5].map(|_| Vec::new()));
    let _ = sampler.sample(); // warm: buffers, the kept limits
    for _ in 0..rounds {
        let (w, s) = cpu_of(|| sampler.sample());
        assert!(s.sockets.is_some(), "the socket dump failed");
        whole.push(w);
        let t = [
            cpu_of(|| listeners.read(config.ports.listeners_top_k, &|_| 0, Some(4096)).map(|_| ())).0,
            cpu_of(|| fds.read(root, config.fds_top_k).map(|_| ())).0,
            cpu_of(|| sockmem::read(root).map(|_| ())).0,
            cpu_of(|| softnet::read(root).map(|_| ())).0,
            cpu_of(|| neighbour::read(root).map(|_| ())).0,
        ];
        for (v, x) in each.iter_mut().zip(t) {
            v.push(x);
        }
        five.push(t.iter().sum::<f64>());
    }
    let (w, f) = (median(whole), median(five));
    let names = ["listeners", "fds", "sockmem", "softnet", "neighbour"];
    let parts: Vec<String> = names.iter().zip(each).map(|(n, v)| format!("{n} {:.3} ms", median(v) * 1e3)).collect();
    println!("{:.3}\t{:.3}\t{}", w * 1e3, f * 1e3, parts.join(", "));
}

/// `p` idle processes (`sleep`), killed on drop.
struct Idle(Vec<std::process::Child>);

impl Drop for Idle {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(MEASURE_ARG) {
        measure_share(args[2].parse().unwrap());
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("resources bench: needs root (it makes a network namespace and sets sysctls in it); skipped");
        return;
    }
    let sockets = arg(&args, "--sockets", 300_000);
    let processes = arg(&args, "--processes", 10_000);
    let rounds = arg(&args, "--rounds", 20);

    // 1. The five sources' share of a sample at N sockets.
    let ns = common::Netns::new("res-bench");
    eprintln!("holding {sockets} TIME_WAIT sockets (60 s to build)...");
    let population = loadgen::Population::hold(&ns, sockets, 0, 2000, 2);
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&exe)
        .args([MEASURE_ARG, &rounds.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let held = population.made();
    drop(population);
    let line = String::from_utf8(out.stdout).unwrap();
    let cols: Vec<&str> = line.trim().split('\t').collect();
    let (whole, five): (f64, f64) = (cols[0].parse().unwrap(), cols[1].parse().unwrap());
    println!("| TCP sockets | whole sample CPU | the five new sources | their share of the rest (target ≤ 5 %) |");
    println!("|---|---|---|---|");
    println!(
        "| {sockets} TIME_WAIT ({held} made) | {whole:.3} ms | {five:.3} ms ({}) | {:.1} % |",
        cols[2],
        100.0 * five / (whole - five)
    );

    // 2. The descriptor scan at P processes: stat() against listing.
    eprintln!("starting {processes} idle processes...");
    let idle = Idle(
        (0..processes)
            .map(|_| {
                Command::new("sleep")
                    .arg("3600")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let root = Path::new("/proc");
    let (mut by_stat, mut by_list) = (FdScanner::with_count(Count::Stat), FdScanner::with_count(Count::List));
    let stat_works = by_stat.read(root, 10).unwrap().processes; // warm: every limit read once
    let listed = by_list.read(root, 10).unwrap().processes;
    let (mut s, mut l) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        s.push(cpu_of(|| by_stat.read(root, 10).unwrap()).0);
        l.push(cpu_of(|| by_list.read(root, 10).unwrap()).0);
    }
    drop(idle);
    let (s, l) = (median(s), median(l));
    println!();
    println!("| processes | stat() of /proc/PID/fd, whole scan | listing /proc/PID/fd, whole scan | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| {processes} idle + the host's ({stat_works} read by stat, {listed} by listing) | {:.2} ms | {:.2} ms | {:.2} |",
        s * 1e3,
        l * 1e3,
        s / l
    );
}
