//! NAT port use and who fills the conntrack table (issue 17), with real NAT in namespaces
//! the test builds: a client (10.77.1.2) routes through a router whose nftables rule
//! masquerades toward the server (10.77.2.2:8080) to a 100-port range, and holds
//! connections open until one fails. Against the kernel:
//! - `sockwatch_nat_ports_used` for that mapping equals what `conntrack -L` counts for it
//!   (and every NAT port `conntrack -L` shows lies in the rule's range);
//! - the utilisation reaches 0.9, and `NatPortsNearExhaustion` fires in a real Prometheus,
//!   before the first connection fails; the first failure comes when the range is used up;
//! - the top source is the client's address; with the table 85 % full, `sockwatch doctor`
//!   names that source and the destination, and the NAT mapping; Munin's `nat_ports` graph
//!   shows the busiest mapping's ports.

mod common;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nat::{NatLab, MAPPING};
use common::{parse_metrics, require, ConntrackMax, Daemon, MuninSession, Netns, Prometheus, BIN};

const NAT_LOW: u16 = 41000;
const NAT_PORTS: usize = 100;
const PORT: u16 = 9871;

/// `conntrack -L` in the router: the entries whose reply tuple is the mapping's (from
/// 10.77.2.2:8080 to 10.77.2.1), and the NAT ports they hold.
fn conntrack_mapping(router: &Netns) -> Vec<u16> {
    let out = router.exec_stdout("conntrack", &["-L", "-p", "tcp"]);
    out.lines()
        .filter_map(|line| {
            let fields: Vec<(&str, &str)> = line.split_whitespace().filter_map(|t| t.split_once('=')).collect();
            let nth = |key: &str, n: usize| fields.iter().filter(|(k, _)| *k == key).nth(n).map(|(_, v)| *v);
            let reply = (nth("src", 1)?, nth("dst", 1)?, nth("sport", 1)?);
            (reply == ("10.77.2.2", "10.77.2.1", "8080")).then(|| nth("dport", 1)?.parse().ok())?
        })
        .collect()
}

fn metrics(daemon: &Daemon, ns: &Netns) -> std::collections::HashMap<String, f64> {
    parse_metrics(&daemon.get(ns, "/metrics").1)
}

/// Waits until the daemon's breakdown shows `want` ports used by the mapping.
fn await_ports_used(daemon: &Daemon, ns: &Netns, want: usize) -> std::collections::HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = metrics(daemon, ns);
        if m.get(&format!("sockwatch_nat_ports_used{{{MAPPING}}}")) == Some(&(want as f64)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "sockwatch never showed {want} NAT ports used: {:?}",
            m.get("sockwatch_nat_entries")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn nat_ports_fill_until_connections_fail() {
    if !require("nat_ports_fill_until_connections_fail", &["nft", "conntrack", "prometheus"]) {
        return;
    }
    let lab = NatLab::build("nat", NAT_LOW, NAT_PORTS);
    let (client, router) = (&lab.client, &lab.router);
    let stop = Arc::new(AtomicBool::new(false));
    let accepter = lab.serve_and_hold(stop.clone());
    let munin = std::env::temp_dir().join(format!("sockwatch-nat-{}.sock", std::process::id()));
    let daemon = lab.daemon(PORT, "1s", &["--munin.socket", munin.to_str().unwrap()]);
    let held = Arc::new(Mutex::new(Vec::new()));
    let connect = |n: usize| -> usize {
        let held = held.clone();
        client.enter(move || {
            let mut ok = 0;
            for _ in 0..n {
                match TcpStream::connect_timeout(&"10.77.2.2:8080".parse().unwrap(), Duration::from_secs(2)) {
                    Ok(s) => {
                        held.lock().unwrap().push(s);
                        ok += 1;
                    }
                    Err(_) => break,
                }
            }
            ok
        })
    };

    // 90 % of the range: every connection goes through.
    assert_eq!(connect(90), 90, "the first 90 connections through the NAT");
    let m = await_ports_used(&daemon, router, 90);
    let ports = conntrack_mapping(router);
    assert_eq!(ports.len(), 90, "conntrack -L counts the mapping's entries");
    assert!(ports.iter().all(|p| (NAT_LOW..NAT_LOW + NAT_PORTS as u16).contains(p)), "NAT ports in the rule's range");
    assert_eq!(m["sockwatch_nat_port_utilization_max"], 0.9);
    assert_eq!(m["sockwatch_nat_port_range_size"], NAT_PORTS as f64);
    // Munin's graph of the busiest mapping, through the shim.
    let mut session = MuninSession::open(&munin);
    let fetched = session.ask("fetch sockwatch_nat_ports");
    for want in ["busiest.value 90", "range.value 100", "pct.value 90"] {
        assert!(fetched.iter().any(|l| l == want), "{want} in {fetched:?}");
    }
    drop(session);
    // Who fills the table: the client, toward the server.
    let top_source = m
        .iter()
        .filter(|(k, _)| k.starts_with("sockwatch_conntrack_source_entries{"))
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap();
    assert_eq!(
        (top_source.0.as_str(), *top_source.1),
        ("sockwatch_conntrack_source_entries{source=\"10.77.1.2\"}", 90.0)
    );
    let dest = "sockwatch_conntrack_destination_entries{remote_ip=\"10.77.2.2\",remote_port=\"8080\",protocol=\"tcp\"}";
    assert_eq!(m[dest], 90.0);

    // doctor names the mapping (90 of 100 ports: critical); and, with the table 85 % full,
    // the source and the destination filling it. The table is made 85 % full by lowering the
    // host-wide nf_conntrack_max, so that part needs the opt-in.
    let lower = ConntrackMax::allowed("nat_ports_fill_until_connections_fail (doctor at 85 % of nf_conntrack_max)");
    let count: u64 = router.exec_stdout("cat", &["/proc/sys/net/netfilter/nf_conntrack_count"]).trim().parse().unwrap();
    let report = {
        let _max = lower.then(|| ConntrackMax::set(count * 100 / 85));
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &router.name, BIN, "doctor", "--json", "--conntrack.breakdown"])
            .args(["--nat.port-range", &lab.range, "--munin.socket", ""])
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "doctor exits critical");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let check = |resource: &str| {
        report["checks"].as_array().unwrap().iter().find(|c| c["resource"] == resource).unwrap().clone()
    };
    if lower {
        let table = check("conntrack table")["detail"].as_str().unwrap().to_owned();
        assert!(
            table.contains("most entries from 10.77.1.2 (90)") && table.contains("toward 10.77.2.2:8080/tcp (90)"),
            "{table}"
        );
    }
    let nat = check("NAT source ports");
    assert!(nat["detail"].as_str().unwrap().contains("10.77.2.1 -> 10.77.2.2:8080/tcp: 90 of 100 ports"), "{nat}");
    assert_eq!(nat["level"], "critical", "90 % of the NAT range");

    // The alert, in a real Prometheus with the shipped rules, while nothing has failed yet.
    let prom = Prometheus::start(router, "nat", PORT);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !prom.firing(router).iter().any(|a| a == "NatPortsNearExhaustion") {
        assert!(Instant::now() < deadline, "NatPortsNearExhaustion did not fire: {:?}", prom.firing(router));
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(prom);

    // On until a connection fails: exactly when the range is used up.
    let more = connect(NAT_PORTS);
    assert_eq!(90 + more, NAT_PORTS, "connections went through until the NAT range was used up, not longer");
    let m = await_ports_used(&daemon, router, NAT_PORTS);
    assert_eq!(conntrack_mapping(router).len(), NAT_PORTS);
    assert_eq!(m["sockwatch_nat_port_utilization_max"], 1.0);

    stop.store(true, Ordering::Relaxed);
    accepter.join().unwrap();
    drop(held);
    drop(daemon);
    let _ = std::fs::remove_file(munin);
}

/// `conntrack -L`'s entries of the mapping by TCP state: (blocking, TIME_WAIT or CLOSE).
fn conntrack_split(router: &Netns) -> (usize, usize) {
    let out = router.exec_stdout("conntrack", &["-L", "-p", "tcp"]);
    let mine = out.lines().filter(|l| l.contains("src=10.77.2.2 dst=10.77.2.1 sport=8080"));
    let (mut blocking, mut recyclable) = (0, 0);
    for line in mine {
        let state = line.split_whitespace().nth(3).unwrap_or("");
        if matches!(state, "TIME_WAIT" | "CLOSE") {
            recyclable += 1;
        } else {
            blocking += 1;
        }
    }
    (blocking, recyclable)
}

/// Short connections only: their closing entries (TIME_WAIT, 120 s in conntrack) fill the
/// mapping's 100 ports, yet on a kernel that recycles them (6.5+) every new connection goes
/// through. sockwatch counts them as used but not blocking, as `conntrack -L` splits them,
/// and the utilisation the alert watches stays low: no false alarm.
fn closing_entries_that_fill_the_range_are_no_alarm() {
    let test = "closing_entries_that_fill_the_range_are_no_alarm";
    if !require(test, &["nft", "conntrack"]) {
        return;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    if !sockwatch::sources::ctnetlink::attribution::nat_recycles(release.trim()) {
        common::skip(test, &format!("kernel {} does not recycle NAT ports (before 6.5)", release.trim()));
        return;
    }
    let lab = NatLab::build("nats", NAT_LOW, NAT_PORTS);
    let (client, router) = (&lab.client, &lab.router);
    let stop = Arc::new(AtomicBool::new(false));
    let accepter = common::accept_until_close(&lab.server, common::nat::SERVER.parse().unwrap(), stop.clone());
    let daemon = lab.daemon(PORT + 1, "1s", &[]);
    // 1.5 times the range in short connections, each closed by the client first.
    const N: usize = 150;
    let ok = client.enter(|| {
        let mut ok = 0;
        for _ in 0..N {
            match TcpStream::connect_timeout(&"10.77.2.2:8080".parse().unwrap(), Duration::from_secs(2)) {
                Ok(s) => {
                    drop(s);
                    ok += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connection {ok} through a range full of closing entries failed: {e}"),
            }
        }
        ok
    });
    assert_eq!(ok, N, "every short connection went through");
    std::thread::sleep(Duration::from_secs(2)); // the last closes settle in TIME_WAIT
    let (blocking, recyclable) = conntrack_split(router);
    assert!(recyclable >= 90, "the range filled with closing entries: {recyclable} TIME_WAIT/CLOSE, {blocking} others");
    let deadline = Instant::now() + Duration::from_secs(15);
    let m = loop {
        let m = metrics(&daemon, router);
        let used = m.get(&format!("sockwatch_nat_ports_used{{{MAPPING}}}")).copied();
        if used == Some((blocking + recyclable) as f64) {
            break m;
        }
        assert!(Instant::now() < deadline, "sockwatch never showed {} ports used: {used:?}", blocking + recyclable);
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        m[&format!("sockwatch_nat_ports_blocking{{{MAPPING}}}")],
        blocking as f64,
        "as conntrack -L splits them"
    );
    let u = m["sockwatch_nat_port_utilization_max"];
    assert!(u < 0.8, "NatPortsNearExhaustion's expression would fire on closing entries: {u}");
    assert_eq!(u, blocking as f64 / NAT_PORTS as f64);
    stop.store(true, Ordering::Relaxed);
    let _ = accepter.join();
}

/// Held connections through a 100-port mapping opened at 2 a second, breakdown dumps every
/// 5 s: `NatPortsExhaustionPredicted` fires in a real Prometheus before the first connection
/// through the mapping fails, and the projection it fired on was the mapping's.
fn a_nat_ramp_is_predicted_before_the_first_failure() {
    let test = "a_nat_ramp_is_predicted_before_the_first_failure";
    if !require(test, &["nft", "conntrack", "prometheus"]) {
        return;
    }
    let lab = NatLab::build("natp", NAT_LOW, NAT_PORTS);
    let (client, router) = (&lab.client, &lab.router);
    let stop = Arc::new(AtomicBool::new(false));
    let accepter = lab.serve_and_hold(stop.clone());
    let _daemon = lab.daemon(PORT + 2, "5s", &[]);
    let prom = Prometheus::start(router, "natramp", PORT + 2);
    let path = format!("/run/netns/{}", client.name);
    let started = Instant::now();
    let opener = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: valid fd; affects only this thread.
        assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) }, 0);
        let mut held = Vec::new();
        loop {
            match TcpStream::connect_timeout(&"10.77.2.2:8080".parse().unwrap(), Duration::from_secs(2)) {
                Ok(s) => held.push(s),
                Err(_) => return (Instant::now(), held.len()),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let mut first: Option<Instant> = None;
    while !opener.is_finished() {
        if first.is_none() && prom.firing(router).iter().any(|a| a == "NatPortsExhaustionPredicted") {
            first = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (failed_at, opened) = opener.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let _ = accepter.join();
    let secs = |t: Instant| t.duration_since(started).as_secs_f64();
    eprintln!(
        "NAT ramp: {opened} connections held, the next failed at {:.0} s; NatPortsExhaustionPredicted firing at {}",
        secs(failed_at),
        first.map_or("never".into(), |t| format!("{:.0} s", secs(t)))
    );
    assert!(opened >= NAT_PORTS - 5, "the mapping filled first: {opened} held");
    let first = first.expect("NatPortsExhaustionPredicted never fired before the failure");
    assert!(first < failed_at, "it fired after the failure");
}

test_main!(
    nat_ports_fill_until_connections_fail,
    closing_entries_that_fill_the_range_are_no_alarm,
    a_nat_ramp_is_predicted_before_the_first_failure,
);
