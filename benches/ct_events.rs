//! Conntrack event mode against dumping every 60 s (issue 17), under a steady churn of
//! connections, side by side in one run, with the host's CPU included:
//!
//! - the load generator (`loadgen/`) churns `--rate` loopback connections a second
//!   (default 10,000) in a namespace with conntrack on; each closed connection's entry
//!   stays 60 s in TIME_WAIT (the namespace's timeout is set so), so the table holds
//!   about rate × 60 entries;
//! - four windows of `--seconds` (default 120) each, measured alike: no sockwatch (the
//!   baseline), sockwatch without the breakdown (what the daemon costs besides conntrack:
//!   its samples of the namespace's 600,000 TIME_WAIT sockets), sockwatch dumping the table
//!   every 60 s (`--conntrack.breakdown`), and sockwatch following events
//!   (`--conntrack.events`, resync every 10 m: no dump in the window). Each daemon runs 10 s
//!   before its window opens, so its first dump is done;
//! - per window: the daemon's CPU (utime + stime), the host's busy CPU (`/proc/stat`) and
//!   the connections made. The kernel's cost of generating events lands on the host,
//!   in the context of the connections' threads: it is the host's CPU above the baseline
//!   beyond the daemon's own.
//!
//! ```sh
//! cargo bench --bench ct_events
//! cargo bench --bench ct_events -- --rate 5000 --seconds 60
//! ```

#[path = "../tests/common/mod.rs"]
mod common;
mod loadgen;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ConntrackMax, Netns, BIN};

/// Busy and total jiffies of the host (`cpu` line of /proc/stat).
fn host_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let v: Vec<u64> = stat.lines().next().unwrap().split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    (total - idle, total)
}

/// utime + stime of a process, seconds.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    // After the command name: state (field 3) … utime (14), stime (15).
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (field(11) + field(12)) as f64 / ticks()
}

fn ticks() -> f64 {
    // SAFETY: no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

struct Window {
    daemon_cpu: f64,
    host_busy: f64,
    /// This process's CPU: the load generator's threads, whose connect and close run the
    /// kernel's conntrack work, event generation included.
    generator_cpu: f64,
    made: u64,
}

fn window(ns: &Netns, pop: &loadgen::Population, flags: Option<&[&str]>, seconds: u64) -> Window {
    let mut daemon = flags.map(|flags| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                BIN,
                "serve",
                "--web.listen-address",
                "127.0.0.1:0",
                "--munin.socket",
                "",
            ])
            .args(["--log.level", "error"])
            .args(flags)
            .spawn()
            .unwrap()
    });
    std::thread::sleep(Duration::from_secs(10));
    let pid = daemon.as_ref().map(|d| d.id());
    let me = std::process::id();
    let (cpu0, (busy0, _), made0, gen0) = (pid.map_or(0.0, process_cpu), host_jiffies(), pop.made(), process_cpu(me));
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, (busy1, _), made1, gen1) = (pid.map_or(0.0, process_cpu), host_jiffies(), pop.made(), process_cpu(me));
    let elapsed = t.elapsed().as_secs_f64();
    if let Some(d) = daemon.as_mut() {
        let _ = d.kill();
        let _ = d.wait();
    }
    let scale = seconds as f64 / elapsed;
    Window {
        daemon_cpu: (cpu1 - cpu0) * scale,
        host_busy: (busy1 - busy0) as f64 / ticks() * scale,
        generator_cpu: (gen1 - gen0) * scale,
        made: ((made1 - made0) as f64 * scale) as u64,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == loadgen::HOLD_PAIRS_ARG) {
        loadgen::hold_pairs_main(&args[i + 1..]);
        return;
    }
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let rate: usize = arg("--rate").map_or(10_000, |r| r.parse().unwrap());
    let seconds: u64 = arg("--seconds").map_or(120, |r| r.parse().unwrap());
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP benches/ct_events: needs root for network namespaces and conntrack");
        return;
    }
    let ns = Netns::new("ctevb");
    ns.enable_conntrack();
    let _max = ConntrackMax::set((rate * 60 * 3 / 2) as u64 + 10_000);
    let pop = loadgen::Population::hold(&ns, rate * 60, 0, 2_000, 4);
    let entries = ns.exec_stdout("cat", &["/proc/sys/net/netfilter/nf_conntrack_count"]);
    println!("churn {rate}/s, {} conntrack entries held, windows of {seconds} s", entries.trim());
    println!();
    let base = window(&ns, &pop, None, seconds);
    let plain = window(&ns, &pop, Some(&[]), seconds);
    let dumps: &[&str] = &["--conntrack.breakdown", "--conntrack.breakdown-interval", "60s"];
    let dump = window(&ns, &pop, Some(dumps), seconds);
    let events: &[&str] = &["--conntrack.breakdown", "--conntrack.events", "--conntrack.resync-interval", "10m"];
    let ev = window(&ns, &pop, Some(events), seconds);
    let per_hour = 3600.0 / seconds as f64;
    println!(
        "| mode | connections/s | daemon CPU per hour | load generator CPU per hour (kernel work of its connections) | host CPU above the baseline, per hour |"
    );
    println!("|---|---|---|---|---|");
    for (name, w) in [
        ("no sockwatch (baseline)", &base),
        ("sockwatch, no breakdown", &plain),
        ("dump every 60 s", &dump),
        ("events (resync 10 m)", &ev),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} s | {:.1} s | {:.1} s |",
            w.made as f64 / seconds as f64,
            w.daemon_cpu * per_hour,
            w.generator_cpu * per_hour,
            (w.host_busy - base.host_busy) * per_hour
        );
    }
    // What each mode's conntrack work costs: the daemon above the daemon without the
    // breakdown, plus what the generator's connections cost more than in the baseline
    // window (the kernel's event generation lands there).
    let daemon = |w: &Window| (w.daemon_cpu - plain.daemon_cpu).max(0.0);
    let cost = |w: &Window| daemon(w) + (w.generator_cpu - base.generator_cpu).max(0.0);
    println!();
    println!(
        "conntrack work per hour: dumps {:.1} s in the daemon, {:.1} s with the kernel's extra; events {:.1} s, {:.1} s",
        daemon(&dump) * per_hour,
        cost(&dump) * per_hour,
        daemon(&ev) * per_hour,
        cost(&ev) * per_hour
    );
    println!(
        "events ÷ dumps: daemon alone {:.2}× (whole daemon {:.2}×); daemon + the generator's extra kernel work {:.2}× (target ≤ 0.25×)",
        daemon(&ev) / daemon(&dump).max(1e-9),
        ev.daemon_cpu / dump.daemon_cpu.max(1e-9),
        cost(&ev) / cost(&dump).max(1e-9)
    );
}
