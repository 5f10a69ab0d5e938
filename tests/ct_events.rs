//! Conntrack event mode (issue 17, `--conntrack.events`), in a namespace the test makes,
//! against the kernel:
//! - after a burst of connections opened, and some of their entries destroyed, the counts
//!   kept from events equal a fresh full dump's and what `conntrack -L` shows, with no
//!   dump in between (the resync interval is an hour);
//! - with a tiny receive buffer, a burst overflows it: the overflow is counted, a dump
//!   resynchronises, and the counts are right again.

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{parse_metrics, require, Daemon, Netns, BIN};

fn dest(port: u16) -> String {
    format!(
        "sockwatch_conntrack_destination_entries{{remote_ip=\"127.0.0.1\",remote_port=\"{port}\",protocol=\"tcp\"}}"
    )
}

/// Entries toward 127.0.0.1:`port`, as `conntrack -L` lists them.
fn conntrack_count(ns: &Netns, port: u16) -> usize {
    let out = ns.exec_stdout("conntrack", &["-L", "-p", "tcp", "--dport", &port.to_string()]);
    out.lines().filter(|l| l.contains(&format!("dport={port} "))).count()
}

/// `n` connections to a listener on `port` in `ns`, held (client and server ends).
fn connections(ns: &Netns, port: u16, n: usize) -> Vec<TcpStream> {
    ns.enter(move || {
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
            held.push(l.accept().unwrap().0);
        }
        held
    })
}

/// Waits until `pick` holds on the daemon's metrics; returns them.
fn until(
    daemon: &Daemon,
    ns: &Netns,
    what: &str,
    pick: impl Fn(&std::collections::HashMap<String, f64>) -> bool,
) -> std::collections::HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = parse_metrics(&daemon.get(ns, "/metrics").1);
        if pick(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}: never seen");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A fresh full dump, by the one-shot `sample` command in the namespace.
fn fresh_dump(ns: &Netns) -> std::collections::HashMap<String, f64> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN, "sample", "--conntrack.breakdown", "--munin.socket", ""])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    parse_metrics(&String::from_utf8_lossy(&out.stdout))
}

fn event_counts_equal_a_fresh_dump_and_recover_from_overflow() {
    if !require("event_counts_equal_a_fresh_dump_and_recover_from_overflow", &["nft", "conntrack"]) {
        return;
    }
    let ns = Netns::new("ctev");
    ns.enable_conntrack();
    let flags =
        ["--interval", "1s", "--conntrack.breakdown", "--conntrack.events", "--conntrack.resync-interval", "1h"];
    let daemon = Daemon::start(&ns, 9881, &flags);
    until(&daemon, &ns, "the first dump", |m| m.contains_key("sockwatch_conntrack_events_total"));

    // A burst: 60 connections to 7100 and 40 to 7101; then 7101's entries destroyed.
    let _a = connections(&ns, 7100, 60);
    let _b = connections(&ns, 7101, 40);
    until(&daemon, &ns, "100 NEW events applied", |m| {
        m.get(&dest(7101)) == Some(&40.0) && m.get(&dest(7100)) == Some(&60.0)
    });
    ns.exec("conntrack", &["-D", "-p", "tcp", "--dport", "7101"]);
    let m = until(&daemon, &ns, "40 DESTROY events applied", |m| !m.contains_key(&dest(7101)));
    assert_eq!(m["sockwatch_conntrack_resyncs_total"], 0.0, "no dump since the first: the counts come from events");
    assert!(m["sockwatch_conntrack_events_total"] >= 140.0, "{}", m["sockwatch_conntrack_events_total"]);
    let fresh = fresh_dump(&ns);
    assert_eq!((m[&dest(7100)], fresh[&dest(7100)]), (60.0, 60.0), "events against a fresh dump");
    assert!(!fresh.contains_key(&dest(7101)));
    assert_eq!((conntrack_count(&ns, 7100), conntrack_count(&ns, 7101)), (60, 0), "conntrack -L");
    drop(daemon);

    // A tiny buffer (4 KiB asked, the kernel's minimum is about that) and a burst of 300.
    let tiny = [&flags[..], &["--conntrack.event-buffer", "4096"]].concat();
    let daemon = Daemon::start(&ns, 9882, &tiny);
    until(&daemon, &ns, "the first dump", |m| m.contains_key("sockwatch_conntrack_events_total"));
    let _c = connections(&ns, 7102, 300);
    let m = until(&daemon, &ns, "an overflow and its resync", |m| {
        m.get("sockwatch_conntrack_event_overflows_total") >= Some(&1.0)
            && m.get("sockwatch_conntrack_resyncs_total") >= Some(&1.0)
    });
    let m = if m.get(&dest(7102)) == Some(&300.0) {
        m
    } else {
        until(&daemon, &ns, "the counts right after the resync", |m| m.get(&dest(7102)) == Some(&300.0))
    };
    assert_eq!((m[&dest(7102)], conntrack_count(&ns, 7102)), (300.0, 300), "after the resync, against conntrack -L");
    assert_eq!(m[&dest(7100)], 60.0);
}

/// A SIGHUP that shortens `--interval` reaches event mode's publishing too (it kept the
/// interval it started with: at 20 s, new entries showed up to 20 s late after a reload to
/// 1 s). Started at 20 s from its config file, reloaded to 1 s, a burst of connections is
/// counted within a few seconds, not at the next 20 s publish.
fn a_reloaded_interval_reaches_event_mode_publishing() {
    let test = "a_reloaded_interval_reaches_event_mode_publishing";
    if !require(test, &["nft", "conntrack"]) {
        return;
    }
    let ns = Netns::new("ctevhup");
    ns.enable_conntrack();
    let dir = std::env::temp_dir().join(format!("sockwatch-ctevhup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("sockwatch.toml");
    std::fs::write(&conf, "interval = \"20s\"\n").unwrap();
    let flags = [
        "--config",
        conf.to_str().unwrap(),
        "--conntrack.breakdown",
        "--conntrack.events",
        "--conntrack.resync-interval",
        "1h",
    ];
    let daemon = Daemon::start(&ns, 9883, &flags);
    until(&daemon, &ns, "the first dump", |m| m.contains_key("sockwatch_conntrack_events_total"));
    std::fs::write(&conf, "interval = \"1s\"\n").unwrap();
    // SAFETY: signalling our own child (ip netns exec execs sockwatch in its place).
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGHUP) };
    let reloaded = Instant::now();
    until(&daemon, &ns, "the 1 s interval in force", |m| m.get("sockwatch_sample_interval_seconds") == Some(&1.0));
    // Past the publish that was already due at 20 s when the reload came.
    std::thread::sleep(Duration::from_secs(3));
    let _held = connections(&ns, 7110, 30);
    let burst = Instant::now();
    until(&daemon, &ns, "the burst counted", |m| m.get(&dest(7110)) == Some(&30.0));
    let took = burst.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "counted {took:?} after the burst ({:?} after the reload): published at the old 20 s interval",
        reloaded.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Entries made before the daemon subscribed (`nf_conntrack_events=2`: no event extension,
/// so no DESTROY): UDP flows with a 10 s timeout exist when the daemon starts in event mode
/// (resync interval one hour). Within one interval after they expire, the counts read what
/// `conntrack -L` reads: none left.
fn entries_older_than_the_subscription_leave_when_they_expire() {
    let test = "entries_older_than_the_subscription_leave_when_they_expire";
    if !require(test, &["nft", "conntrack"]) {
        return;
    }
    let ns = Netns::new("evold");
    ns.enable_conntrack();
    ns.sysctl("net.netfilter.nf_conntrack_events", "2");
    ns.sysctl("net.netfilter.nf_conntrack_udp_timeout", "10");
    // 20 UDP flows from 127.0.0.7 to distinct ports: 20 entries, made with no listener.
    ns.enter(|| {
        let from = std::net::UdpSocket::bind("127.0.0.7:0").unwrap();
        for port in 0..20u16 {
            from.send_to(b"x", ("127.0.0.1", 7500 + port)).unwrap();
        }
    });
    let listed = |ns: &Netns| {
        ns.exec_stdout("conntrack", &["-L", "-p", "udp"]).lines().filter(|l| l.contains("src=127.0.0.7 ")).count()
    };
    assert_eq!(listed(&ns), 20, "conntrack -L before the daemon starts");
    let made = Instant::now();
    let daemon = Daemon::start(
        &ns,
        9864,
        &["--interval", "1s", "--conntrack.breakdown", "--conntrack.events", "--conntrack.resync-interval", "1h"],
    );
    let source = "sockwatch_conntrack_source_entries{source=\"127.0.0.7\"}";
    let m = until(&daemon, &ns, "the 20 flows counted", |m| m.get(source) == Some(&20.0));
    assert_eq!(m[source], 20.0);
    // They expire 10 s after they were made (a second of grace for the GC); then, within
    // one interval (1 s, and a second of slack), sockwatch has let them go.
    std::thread::sleep(Duration::from_secs(11).saturating_sub(made.elapsed()));
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let m = parse_metrics(&daemon.get(&ns, "/metrics").1);
        let counted = m.get(source).copied().unwrap_or(0.0);
        if counted == 0.0 {
            assert_eq!(listed(&ns), 0, "conntrack -L agrees");
            assert_eq!(m["sockwatch_conntrack_resyncs_total"], 1.0, "one resync, at their expiry");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {counted} counted {:.1} s after they expired",
            made.elapsed().as_secs_f64() - 10.0
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

test_main!(
    event_counts_equal_a_fresh_dump_and_recover_from_overflow,
    a_reloaded_interval_reaches_event_mode_publishing,
    entries_older_than_the_subscription_leave_when_they_expire,
);
