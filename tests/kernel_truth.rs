//! The daemon, run inside a network namespace holding a known socket population, must
//! report what the kernel itself reports there: `ss`, /proc/net/sockstat, /proc/net/snmp,
//! nf_conntrack_count and `conntrack -C`.
//!
//! Needs root, iproute2 (`ip`, `ss`), nftables and conntrack.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};

use common::*;

const V4_LISTENERS: usize = 3;
const V6_LISTENERS: usize = 2;
const V4_PAIRS: usize = 12;
const V6_PAIRS: usize = 5;
const V4_TIME_WAIT: usize = 300;
const V6_TIME_WAIT: usize = 120;

/// Sockets held open for the duration of the test.
struct Population {
    _listeners: Vec<TcpListener>,
    _streams: Vec<TcpStream>,
}

/// Builds the population; run inside the namespace.
fn populate() -> Population {
    let mut listeners = Vec::new();
    let mut streams = Vec::new();
    for (addr, n) in [("127.0.0.1:0", V4_LISTENERS), ("[::1]:0", V6_LISTENERS)] {
        for _ in 0..n {
            listeners.push(TcpListener::bind(addr).unwrap());
        }
    }
    let v4 = listeners[0].local_addr().unwrap();
    let v6 = listeners[V4_LISTENERS].local_addr().unwrap();
    for (target, listener, pairs, time_wait) in
        [(v4, &listeners[0], V4_PAIRS, V4_TIME_WAIT), (v6, &listeners[V4_LISTENERS], V6_PAIRS, V6_TIME_WAIT)]
    {
        for _ in 0..pairs {
            let c = TcpStream::connect(target).unwrap();
            let (a, _) = listener.accept().unwrap();
            streams.push(c);
            streams.push(a);
        }
        // The client closes first, so the client side ends in TIME_WAIT for 60 s.
        for _ in 0..time_wait {
            let c = TcpStream::connect(target).unwrap();
            let (mut a, _) = listener.accept().unwrap();
            drop(c);
            let mut buf = [0u8; 1];
            assert_eq!(a.read(&mut buf).unwrap(), 0, "expected the client's FIN");
            drop(a);
        }
    }
    Population { _listeners: listeners, _streams: streams }
}

fn snmp_tcp(ns: &Netns, field: &str) -> f64 {
    let text = ns.exec_stdout("cat", &["/proc/net/snmp"]);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let i = names.split_whitespace().position(|n| n == field).unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

fn tcp(m: &std::collections::HashMap<String, f64>, family: &str, state: &str) -> f64 {
    value(m, &format!("sockwatch_tcp_sockets{{family=\"{family}\",state=\"{state}\"}}"))
}

fn daemon_counts_match_kernel() {
    if !require("daemon_counts_match_kernel", &["ss", "nft", "conntrack", "sysctl"]) {
        return;
    }
    let ns = Netns::new("truth");
    ns.enable_conntrack();
    let _population = ns.enter(populate);
    ns.settle();

    // One sample at start-up (interval 1h), taken after the population is complete. The
    // harness waits for it through the daemon's log, so no TCP connection of ours exists
    // yet: the ground truth read next is what the sample saw, plus nothing.
    let daemon = Daemon::start(&ns, 9822, &["--interval", "1h"]);
    let ss4 = ns.ss_states("-4");
    let ss6 = ns.ss_states("-6");
    let sockstat_tw = sockstat_field(&ns, "/proc/net/sockstat", "TCP:", "tw");
    let sockstat_inuse = sockstat_field(&ns, "/proc/net/sockstat", "TCP:", "inuse")
        + sockstat_field(&ns, "/proc/net/sockstat6", "TCP6:", "inuse");
    let ct_count: f64 = ns.exec_stdout("cat", &["/proc/sys/net/netfilter/nf_conntrack_count"]).trim().parse().unwrap();
    let ct_max: f64 = ns.exec_stdout("cat", &["/proc/sys/net/netfilter/nf_conntrack_max"]).trim().parse().unwrap();
    let ct_cli: f64 = String::from_utf8_lossy(&ns.exec("conntrack", &["-C"]).stdout).trim().parse().unwrap();
    let active_opens = snmp_tcp(&ns, "ActiveOpens");

    let (status, body) = daemon.get(&ns, "/metrics");
    assert_eq!(status, 200, "{body}");
    let m = parse_metrics(&body);
    let ss = |map: &std::collections::HashMap<String, u64>, s: &str| map.get(s).copied().unwrap_or(0) as f64;

    // Listeners: ours plus the daemon's own.
    assert_eq!(tcp(&m, "ipv4", "listen"), ss(&ss4, "LISTEN"));
    assert_eq!(tcp(&m, "ipv4", "listen"), (V4_LISTENERS + 1) as f64);
    assert_eq!(tcp(&m, "ipv6", "listen"), ss(&ss6, "LISTEN"));
    assert_eq!(tcp(&m, "ipv6", "listen"), V6_LISTENERS as f64);
    // Established: both ends of every pair.
    assert_eq!(tcp(&m, "ipv4", "established"), ss(&ss4, "ESTAB"));
    assert_eq!(tcp(&m, "ipv4", "established"), (2 * V4_PAIRS) as f64);
    assert_eq!(tcp(&m, "ipv6", "established"), ss(&ss6, "ESTAB"));
    assert_eq!(tcp(&m, "ipv6", "established"), (2 * V6_PAIRS) as f64);
    // TIME_WAIT: netlink, ss and the kernel's own counter agree.
    assert_eq!(tcp(&m, "ipv4", "time_wait"), ss(&ss4, "TIME-WAIT"));
    assert_eq!(tcp(&m, "ipv4", "time_wait"), V4_TIME_WAIT as f64);
    assert_eq!(tcp(&m, "ipv6", "time_wait"), ss(&ss6, "TIME-WAIT"));
    assert_eq!(tcp(&m, "ipv6", "time_wait"), V6_TIME_WAIT as f64);
    assert_eq!(value(&m, "sockwatch_sockstat_tcp_sockets{kind=\"tw\"}"), sockstat_tw as f64);
    assert_eq!(sockstat_tw as usize, V4_TIME_WAIT + V6_TIME_WAIT);
    // sockstat inuse counts hashed sockets: here, listeners and established ones.
    assert_eq!(value(&m, "sockwatch_sockstat_tcp_sockets{kind=\"inuse\"}"), sockstat_inuse as f64);
    let hashed: f64 = ["ipv4", "ipv6"].iter().map(|f| tcp(&m, f, "listen") + tcp(&m, f, "established")).sum();
    assert_eq!(sockstat_inuse as f64, hashed);
    // No state the test did not create.
    for state in ["syn_sent", "syn_recv", "fin_wait1", "fin_wait2", "close_wait", "last_ack", "closing"] {
        assert_eq!(tcp(&m, "ipv4", state) + tcp(&m, "ipv6", state), 0.0, "{state}");
    }

    // Conntrack: one entry per connection made, by every measure.
    let connections = (V4_PAIRS + V4_TIME_WAIT + V6_PAIRS + V6_TIME_WAIT) as f64;
    assert_eq!(value(&m, "sockwatch_conntrack_entries"), ct_count);
    assert_eq!(ct_count, ct_cli, "nf_conntrack_count vs conntrack -C");
    assert_eq!(ct_count, connections);
    assert_eq!(value(&m, "sockwatch_conntrack_entries_limit"), ct_max);
    assert!(m.contains_key("sockwatch_conntrack_dropped_total"));

    // SNMP: every connection the test opened was an active open in this namespace.
    assert_eq!(value(&m, "sockwatch_tcp_active_opens_total"), active_opens);
    assert_eq!(active_opens, connections);

    // Limits as the namespace sees them.
    let range = ns.exec_stdout("cat", &["/proc/sys/net/ipv4/ip_local_port_range"]);
    let mut r = range.split_whitespace().map(|p| p.parse::<f64>().unwrap());
    let (lo, hi) = (r.next().unwrap(), r.next().unwrap());
    assert_eq!(value(&m, "sockwatch_ephemeral_port_range_low"), lo);
    assert_eq!(value(&m, "sockwatch_ephemeral_port_range_high"), hi);
    assert_eq!(value(&m, "sockwatch_ephemeral_port_range_size"), hi - lo + 1.0);

    for source in ["sockets", "sockstat", "conntrack", "snmp", "limits"] {
        assert_eq!(value(&m, &format!("sockwatch_source_up{{source=\"{source}\"}}")), 1.0, "{source}");
    }
    assert_eq!(value(&m, "sockwatch_samples_total"), 1.0);

    // promtool accepts the live output.
    if have_command("promtool") {
        let out = promtool_check(&body);
        assert!(out.is_empty(), "promtool check metrics: {out}");
    } else {
        skip("daemon_counts_match_kernel (promtool part)", "needs promtool (Debian package prometheus)");
    }
}

/// Runs `promtool check metrics` on `text`; returns what it printed (empty when clean).
fn promtool_check(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        printed
    } else {
        format!("exit {}: {printed}", out.status)
    }
}

/// The conntrack source must never open the per-entry listings, which take seconds to
/// minutes on a full table. strace records every open of the sampling process.
fn never_opens_conntrack_listing() {
    if !require("never_opens_conntrack_listing", &["strace", "nft"]) {
        return;
    }
    let ns = Netns::new("strace");
    ns.enable_conntrack();
    let _population = ns.enter(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l.accept().unwrap(), c)
    });
    let trace = std::env::temp_dir().join(format!("sockwatch-strace-{}.txt", std::process::id()));
    let trace_s = trace.to_str().unwrap();
    // Both the one-shot path and the daemon's sampler (three samples at 1 s).
    ns.exec("strace", &["-f", "-qq", "-e", "trace=open,openat,openat2", "-o", trace_s, BIN, "sample"]);
    let sampled = std::fs::read_to_string(&trace).unwrap();
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "timeout", "-s", "TERM", "2.5", "strace", "-f", "-qq"])
        .args(["-e", "trace=open,openat,openat2", "-o", trace_s, BIN, "--interval", "1s"])
        .args(["--web.listen-address", "127.0.0.1:9823", "--log.level", "warn"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(124), "the daemon should run until timeout stops it");
    let served = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_file(&trace);
    for (what, log) in [("sample", &sampled), ("serve", &served)] {
        // The trace works and the conntrack source did run: it read the O(1) counters.
        assert!(log.contains("\"/proc/sys/net/netfilter/nf_conntrack_count\""), "{what}: no count read in\n{log}");
        assert!(log.contains("\"/proc/net/stat/nf_conntrack\""), "{what}: no stat read");
        for forbidden in ["\"/proc/net/nf_conntrack\"", "\"/proc/net/ip_conntrack\"", "\"/proc/self/net/nf_conntrack\""]
        {
            assert!(!log.contains(forbidden), "{what} opened {forbidden}:\n{log}");
        }
    }
    let samples = served.matches("\"/proc/sys/net/netfilter/nf_conntrack_count\"").count();
    assert!(samples >= 2, "the daemon sampled {samples} times in 2.5 s at a 1 s interval");
}

/// sockwatch's one walk of both families and the per-family dumps it falls back to (on a
/// kernel that refuses the former) see the same sockets, socket for socket.
fn one_walk_and_per_family_dumps_agree() {
    use sockwatch::sources::kernel::inet_diag::DiagMsg;
    use sockwatch::sources::tcp::sockets::SockDiag;
    if !require("one_walk_and_per_family_dumps_agree", &[]) {
        return;
    }
    let ns = Netns::new("walk");
    let population = ns.enter(populate);
    ns.settle(); // no socket between states while the two are compared
    let (one, per_family) = ns.enter(|| {
        let list = |mut diag: SockDiag| {
            let mut seen = Vec::new();
            let sockets = diag
                .read(&mut |m: &DiagMsg<'_>| {
                    seen.push((m.family(), m.state(), m.src_addr(), m.src_port(), m.dst_addr(), m.dst_port()))
                })
                .unwrap();
            seen.sort();
            (sockets.states, seen)
        };
        (list(SockDiag::new()), list(SockDiag::new().per_family()))
    });
    drop(population);
    assert_eq!(one.0.ipv4[10], V4_LISTENERS as u64);
    assert_eq!(one.0.ipv6[10], V6_LISTENERS as u64);
    assert_eq!(one.0.ipv4[6], V4_TIME_WAIT as u64);
    assert_eq!(one.0.ipv6[6], V6_TIME_WAIT as u64);
    assert_eq!(one.0.ipv4[1], 2 * V4_PAIRS as u64);
    assert_eq!(one.0.ipv6[1], 2 * V6_PAIRS as u64);
    assert_eq!(one, per_family);
}

test_main!(daemon_counts_match_kernel, never_opens_conntrack_listing, one_walk_and_per_family_dumps_agree,);
