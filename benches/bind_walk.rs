//! What leaving the bound-only sockets to a rarer dump saves: sockwatch's socket sample
//! against the dumps a client asking for every state makes, side by side in one run.
//!
//! A namespace holds N TIME_WAIT sockets (100,000 and 300,000 by default: the load
//! generator's steady churn, plus a few bound-only sockets). Inside it, taking turns, each
//! measured on the calling thread's CPU clock (the kernel walks in the reader's `recvmsg`):
//! - **sample**: `SockDiag::read`, sockwatch's socket sample, over runs of `BOUND_EVERY`
//!   reads (one of which also dumps the bound-only sockets), per read;
//! - **before**: the one-walk dump sockwatch sent before, every state (the bind table
//!   walked every sample);
//! - **per-family floor**: one dump per family, every state (what a per-family client
//!   asking for every state pays), and the same without the bound-only state (what a client
//!   that does not know it asks for: iproute2's `ss` before 6.5, for one);
//! - **one IPv4 walk**: one AF_INET dump, with and without the bound-only state.
//!
//! Medians of `--rounds` (20). Needs root.
//!
//!     cargo bench --bench bind_walk
//!     cargo bench --bench bind_walk -- --sizes 100000,300000 --rounds 20

#[path = "../tests/common/mod.rs"]
mod common;
mod loadgen;
#[path = "common/measure.rs"]
mod measure;

use measure::{cpu_of, median};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};
use sockwatch::sources::kernel::inet_diag::{ALL_STATES, BOUND_INACTIVE};
use sockwatch::sources::tcp::sockets::{SockDiag, BOUND_EVERY};

/// A sock_diag socket made inside `ns`.
fn raw_socket(ns: &common::Netns) -> Socket {
    ns.enter(|| {
        let mut s = Socket::new(NETLINK_SOCK_DIAG).unwrap();
        s.bind_auto().unwrap();
        s.connect(&SocketAddr::new(0, 0)).unwrap();
        s
    })
}

/// Each request's dump read to its end; the TIME_WAIT sockets seen.
fn dump(sock: &mut Socket, buf: &mut [u8], requests: &[Vec<u8>]) -> u64 {
    measure::dump_counts(sock, buf, requests)[6]
}

/// A TCP socket bound to 127.0.0.1 on an ephemeral port, neither connected nor listening.
fn bound_only() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a fresh descriptor, checked; the address is a valid
    // sockaddr_in for bind's length.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as u16;
        a.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let rc = libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&a) as u32);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("bind_walk bench: needs root (namespaces); skipped");
        return;
    }
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<usize> =
        opt("--sizes").unwrap_or("100000,300000".into()).split(',').map(|s| s.parse().expect("--sizes")).collect();
    let rounds: usize = opt("--rounds").map_or(20, |r| r.parse().expect("--rounds"));
    let (v4, v6) = (libc::AF_INET as u8, libc::AF_INET6 as u8);
    let before = [SockDiag::request_all_families_states(ALL_STATES, 1)];
    let per_family = [SockDiag::request_states(v4, ALL_STATES, 1), SockDiag::request_states(v6, ALL_STATES, 1)];
    let ipv4 = [SockDiag::request_states(v4, ALL_STATES, 1)];
    let unbound = ALL_STATES & !BOUND_INACTIVE;
    let per_family_nb = [SockDiag::request_states(v4, unbound, 1), SockDiag::request_states(v6, unbound, 1)];
    let ipv4_nb = [SockDiag::request_states(v4, unbound, 1)];
    println!("| N TIME_WAIT | sample (sockwatch) | before (every state, one walk) | per-family floor: every state / without bound-only | one IPv4 walk: every state / without | sample ÷ before | ÷ per-family floor: every state / without | ÷ one IPv4 walk: every state / without |");
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let ns = common::Netns::new("bindwalk");
        eprintln!("holding {n} TIME_WAIT sockets (60 s to build)...");
        let population = loadgen::Population::hold(&ns, n, 0, 2000, 2);
        // A few bound-only sockets, so that their dump has something to find.
        let _bound = ns.enter(|| (0..8).map(|_| bound_only()).collect::<Vec<_>>());
        let mut sample =
            SockDiag::in_namespace(format!("/run/netns/{}", ns.name).into(), measure::netns_inode(&ns.name));
        let mut sock = raw_socket(&ns);
        let mut buf = vec![0u8; 64 * 1024];
        let (mut s, mut b, mut f, mut i) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut fnb, mut inb) = (Vec::new(), Vec::new());
        let mut seen = [0u64; 6];
        for _ in 0..rounds {
            let (t, tw) = cpu_of(|| {
                let mut tw = 0;
                for _ in 0..BOUND_EVERY {
                    tw = sample.read(&mut |_| {}).unwrap().states.total(6);
                }
                tw
            });
            s.push(t / f64::from(BOUND_EVERY));
            seen[0] = tw;
            let (t, tw) = cpu_of(|| dump(&mut sock, &mut buf, &before));
            b.push(t);
            seen[1] = tw;
            let (t, tw) = cpu_of(|| dump(&mut sock, &mut buf, &per_family));
            f.push(t);
            seen[2] = tw;
            let (t, tw) = cpu_of(|| dump(&mut sock, &mut buf, &ipv4));
            i.push(t);
            seen[3] = tw;
            let (t, tw) = cpu_of(|| dump(&mut sock, &mut buf, &per_family_nb));
            fnb.push(t);
            seen[4] = tw;
            let (t, tw) = cpu_of(|| dump(&mut sock, &mut buf, &ipv4_nb));
            inb.push(t);
            seen[5] = tw;
        }
        let made = population.made();
        drop(population);
        // Every way saw the same population (the churn moves it by a few per cent).
        let lo = *seen.iter().min().unwrap() as f64;
        let hi = *seen.iter().max().unwrap() as f64;
        assert!(lo >= 0.9 * n as f64 && hi <= 1.1 * n as f64, "N={n}: TIME_WAIT seen {seen:?} ({made} made)");
        let (s, b, f, i, fnb, inb) = (median(s), median(b), median(f), median(i), median(fnb), median(inb));
        println!(
            "| {n} | {:.1} ms | {:.1} ms | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            s * 1e3,
            b * 1e3,
            f * 1e3,
            fnb * 1e3,
            i * 1e3,
            inb * 1e3,
            s / b,
            s / f,
            s / fnb,
            s / i,
            s / inb
        );
    }
}
