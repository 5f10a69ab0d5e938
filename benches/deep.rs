//! What a dump inside a namespace costs with and without a socket hash of its own
//! (`net.ipv4.tcp_child_ehash_entries`), side by side in one run:
//!
//! A namespace "big" holds N TIME_WAIT sockets (300,000 by default, the load generator's
//! steady churn). Namespace A is made the usual way: it shares the host's socket hash, so a
//! sock_diag dump inside it walks all N sockets to find its own few. Namespace B is made
//! right after `net.ipv4.tcp_child_ehash_entries` is set in the creating namespace (then
//! put back): it has a hash of its own, and a dump inside it walks only that. Each holds
//! 100 TIME_WAIT sockets. Dumps alternate, 20 rounds, CPU on the measuring thread's clock
//! (the kernel walks in the reader's `recvmsg`).
//!
//! Needs root. It sets the host-wide `tcp_child_ehash_entries` for the moment B is made
//! (only namespaces created meanwhile are affected), and puts it back.
//!
//!     cargo bench --bench deep
//!     cargo bench --bench deep -- --sockets 300000 --rounds 20

#[path = "../tests/common/mod.rs"]
mod common;
mod loadgen;
#[path = "common/measure.rs"]
mod measure;

use measure::{cpu_of, median};
use sockwatch::sources::tcp::sockets::SockDiag;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().expect(name))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("deep bench: needs root (namespaces, a sysctl); skipped");
        return;
    }
    let (sockets, rounds) = (arg(&args, "--sockets", 300_000), arg(&args, "--rounds", 20));
    let big = common::Netns::new("deep-big");
    eprintln!("holding {sockets} TIME_WAIT sockets in a namespace (60 s to build)...");
    let population = loadgen::Population::hold(&big, sockets, 0, 2000, 2);
    let shared = common::Netns::new("deep-shared");
    const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_child_ehash_entries";
    let before = std::fs::read_to_string(SYSCTL).expect(SYSCTL);
    std::fs::write(SYSCTL, "1024").expect(SYSCTL);
    let own = common::Netns::new("deep-own");
    std::fs::write(SYSCTL, before.trim()).expect(SYSCTL);
    for ns in [&shared, &own] {
        let _tw = common::time_wait_population(ns, 100, 3000, 1);
    }
    let dumper = |ns: &common::Netns| {
        SockDiag::in_namespace(format!("/run/netns/{}", ns.name).into(), measure::netns_inode(&ns.name))
    };
    let (mut a, mut b) = (dumper(&shared), dumper(&own));
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let (mut na, mut nb) = (0, 0);
    for _ in 0..rounds {
        let (t, n) = cpu_of(|| a.read(&mut |_| {}).unwrap());
        ta.push(t);
        na = n.states.total(6);
        let (t, n) = cpu_of(|| b.read(&mut |_| {}).unwrap());
        tb.push(t);
        nb = n.states.total(6);
    }
    let held = population.made();
    drop(population);
    let (ta, tb) = (median(ta), median(tb));
    println!("| dump inside a namespace of 100 TIME_WAIT, host holding {sockets} ({held} made) | CPU per dump | TIME_WAIT found |");
    println!("|---|---|---|");
    println!("| shared socket hash (the default) | {:.3} ms | {na} |", ta * 1e3);
    println!("| own socket hash (tcp_child_ehash_entries = 1024) | {:.3} ms | {nb} |", tb * 1e3);
    println!("\nratio own/shared: {:.4}", tb / ta);
}
