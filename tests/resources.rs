//! The resources beside ports and conntrack, each driven to its failure where that can be
//! done safely (a process of the test's own, a namespace the test made) and compared with
//! the kernel's own count: descriptors (EMFILE under prlimit), the listen path (a listener
//! that never accepts; SYN cookies), and, only with the opt-in for host-wide changes, the
//! neighbour table (its limits are the whole host's).

mod common;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn sample(ns: Option<&Netns>, extra: &[&str]) -> HashMap<String, f64> {
    let mut args = vec!["sample", "--log.level", "warn", "--netns", "off", "--munin.socket", ""];
    args.extend_from_slice(extra);
    let out = match ns {
        Some(ns) => ns.exec_stdout(BIN, &args),
        None => {
            let o = Command::new(BIN).args(&args).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8(o.stdout).unwrap()
        }
    };
    parse_metrics(&out)
}

/// One `TcpExt:` counter of the namespace's /proc/net/netstat (the kernel's own count).
fn netstat(ns: &Netns, name: &str) -> u64 {
    let text = ns.exec_stdout("cat", &["/proc/net/netstat"]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let names = lines[0].split_whitespace();
    let values = lines[1].split_whitespace();
    names.zip(values).find(|(n, _)| *n == name).map(|(_, v)| v.parse().unwrap()).unwrap_or_else(|| panic!("no {name}"))
}

/// A process of the test's own holds every descriptor its limit allows (EMFILE at the next
/// one): sockwatch names it with the count /proc/PID/fd lists and the limit prlimit set.
fn a_process_at_its_descriptor_limit_is_named() {
    let test = "a_process_at_its_descriptor_limit_is_named";
    if !require_commands(test, &["prlimit", "python3"]) {
        return;
    }
    const LIMIT: u64 = 64;
    // Opens /dev/null until EMFILE, says so, then waits to be killed.
    let script = "import os,sys\nfds=[]\ntry:\n  while True: fds.append(os.open('/dev/null', os.O_RDONLY))\n\
                  except OSError as e:\n  print('EMFILE' if e.errno == 24 else e, flush=True)\nsys.stdin.read()\n";
    let mut child = KillOnDrop(
        Command::new("prlimit")
            .args([&format!("--nofile={LIMIT}:{LIMIT}"), "python3", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "EMFILE", "the helper did not reach its limit");
    // prlimit execs python3: the pid is the helper's.
    let pid = child.0.id();
    let listed = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as f64;
    // Every number below the limit is taken (EMFILE); a descriptor inherited above it
    // (numbered past the limit) is open too, so the listing may read more than the limit.
    assert!(listed >= LIMIT as f64, "the kernel's listing: {listed} open under a limit of {LIMIT}");
    let m = sample(None, &["--fds.top-k", "1000"]);
    let series = |name: &str| {
        let prefix = format!("{name}{{pid=\"{pid}\",command=\"python3\"");
        let found: Vec<f64> = m.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, v)| *v).collect();
        assert_eq!(found.len(), 1, "{prefix} in {:?}", m.keys().filter(|k| k.contains(name)).collect::<Vec<_>>());
        found[0]
    };
    assert_eq!(series("sockwatch_process_fds_open"), listed);
    assert_eq!(series("sockwatch_process_fds_limit"), LIMIT as f64);
    assert!(value(&m, "sockwatch_process_fd_utilization_max") >= 1.0, "the helper is at 100 % or more");
    assert!(value(&m, "sockwatch_fds_processes") >= 1.0);
    // The host's file handles against fs.file-max, read the same way the kernel prints them.
    let nr = std::fs::read_to_string("/proc/sys/fs/file-nr").unwrap();
    let max: f64 = nr.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(value(&m, "sockwatch_file_handles_max"), max);
    assert!(value(&m, "sockwatch_file_handles_allocated") >= listed);
}

/// Sets a listener's backlog (listen() may be called again on a listening socket).
fn with_backlog(l: TcpListener, backlog: i32) -> TcpListener {
    // SAFETY: valid listening socket fd.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), backlog) }, 0);
    l
}

/// Samples until the kernel's counter read before and after the sample agree (the flooded
/// listener keeps dropping retransmitted handshakes for a while): the metrics and that count.
fn stable_sample(ns: &Netns, counter: &str) -> (HashMap<String, f64>, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = netstat(ns, counter);
        let m = sample(Some(ns), &[]);
        if netstat(ns, counter) == before {
            return (m, before);
        }
        assert!(Instant::now() < deadline, "{counter} never held still for one sample");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A listener with a backlog of 1 that never accepts, flooded from its own namespace: its
/// own drop count is the namespace's ListenDrops (nothing else listens there), every one an
/// overflow; a second listener that accepts shows none.
fn a_flooded_listener_is_named_with_its_drops() {
    let test = "a_flooded_listener_is_named_with_its_drops";
    if !require(test, &["ss"]) {
        return;
    }
    let ns = Netns::new("lfull");
    let held = ns.enter(|| {
        let stuck = with_backlog(TcpListener::bind("127.0.0.1:7101").unwrap(), 1);
        let fine = TcpListener::bind("127.0.0.1:7102").unwrap();
        let mut clients = Vec::new();
        for _ in 0..12 {
            if let Ok(c) = TcpStream::connect_timeout(&"127.0.0.1:7101".parse().unwrap(), Duration::from_millis(200)) {
                clients.push(c);
            }
        }
        let c = TcpStream::connect("127.0.0.1:7102").unwrap();
        let a = fine.accept().unwrap().0;
        (stuck, fine, clients, c, a)
    });
    let (m, drops) = stable_sample(&ns, "ListenDrops");
    let overflows = netstat(&ns, "ListenOverflows");
    assert!(overflows > 0, "the kernel counted no overflow");
    let listener = |name: &str, port: u16| value(&m, &format!("{name}{{local_ip=\"127.0.0.1\",port=\"{port}\"}}"));
    assert_eq!(
        listener("sockwatch_listener_drops_total", 7101),
        drops as f64,
        "its drops = the namespace's ListenDrops"
    );
    assert_eq!(drops, overflows, "every drop here is an overflow");
    assert_eq!(listener("sockwatch_listener_drops_total", 7102), 0.0);
    assert_eq!(value(&m, "sockwatch_listeners_drops_total"), drops as f64);
    assert_eq!(value(&m, "sockwatch_tcp_listen_drops_total"), drops as f64);
    // Its SYN queue: the half-open connections ss lists on its port (0 or more, the kernel
    // decides), read again around the sample until it held still.
    let syn = |m: &HashMap<String, f64>| listener_syn(m, 7101);
    let ss_syn =
        || ns.exec_stdout("ss", &["-H", "-t", "-n", "state", "syn-recv", "sport", "=", ":7101"]).lines().count();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = ss_syn();
        let m = sample(Some(&ns), &[]);
        if ss_syn() == before {
            assert_eq!(syn(&m), before as f64, "SYN queue against ss");
            break;
        }
        assert!(Instant::now() < deadline, "the SYN queue never held still");
    }
    // doctor names the listener that drops, with its address and port.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN, "doctor", "--json", "--netns", "off", "--munin.socket", ""])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "critical: a listener drops now or dropped");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = report["checks"].as_array().unwrap().iter().find(|c| c["resource"] == "listen path").unwrap().clone();
    // Retransmitted handshakes may still be dropped: at least what the kernel counted above.
    assert!(check["used"].as_f64().unwrap() >= drops as f64, "{check}");
    assert!(check["detail"].as_str().unwrap().contains("127.0.0.1:7101"), "{check}");
    drop(held);
}

fn listener_syn(m: &HashMap<String, f64>, port: u16) -> f64 {
    value(m, &format!("sockwatch_listener_syn_queue{{local_ip=\"127.0.0.1\",port=\"{port}\"}}"))
}

/// `tcp_syncookies=2` (kept per namespace) answers every SYN with a cookie: the counters
/// sockwatch exports are the namespace's own.
fn syn_cookies_are_counted_as_the_kernel_counts_them() {
    let test = "syn_cookies_are_counted_as_the_kernel_counts_them";
    if !require(test, &[]) {
        return;
    }
    let ns = Netns::new("cookies");
    ns.sysctl("net.ipv4.tcp_syncookies", "2");
    const N: usize = 5;
    ns.enter(|| {
        let l = TcpListener::bind("127.0.0.1:7201").unwrap();
        for _ in 0..N {
            let _c = TcpStream::connect("127.0.0.1:7201").unwrap();
            let _a = l.accept().unwrap();
        }
    });
    let (m, sent) = stable_sample(&ns, "SyncookiesSent");
    assert!(sent >= N as u64, "the kernel sent {sent} cookies for {N} connections");
    assert_eq!(value(&m, "sockwatch_tcp_syncookies_sent_total"), sent as f64);
    assert_eq!(value(&m, "sockwatch_tcp_syncookies_recv_total"), netstat(&ns, "SyncookiesRecv") as f64);
    assert_eq!(value(&m, "sockwatch_tcp_syncookies_failed_total"), netstat(&ns, "SyncookiesFailed") as f64);
}

/// Host-wide, so only with the opt-in: gc_thresh3 lowered to just above the table's
/// current entries, then neighbours added in a namespace of the test's own until the kernel
/// refuses them. Each refusal is one table_fulls; sockwatch reads the table over its limit.
fn a_full_neighbour_table_is_seen() {
    let test = "a_full_neighbour_table_is_seen";
    if !require(test, &[]) || !host_settings_allowed(test, "net.ipv4.neigh.default.gc_thresh1/2/3") {
        return;
    }
    let pair = VethPair::new("neigh");
    let thresh = |n: u8| format!("/proc/sys/net/ipv4/neigh/default/gc_thresh{n}");
    let before = sample(None, &[]);
    let entries = value(&before, "sockwatch_neighbour_entries{table=\"arp\"}") as u64;
    let fulls_before = value(&before, "sockwatch_neighbour_table_fulls_total{table=\"arp\"}");
    let limit = entries + 40;
    let _thresh =
        HostSysctls::set(&[(&thresh(1), "1".into()), (&thresh(2), "2".into()), (&thresh(3), limit.to_string())]);
    // 120 neighbours on the client's veth: the first ~40 fit, the rest are refused.
    let mut refused = 0;
    for i in 0..120u32 {
        let ip = format!("10.213.{}.{}", 1 + i / 200, 10 + i % 200);
        let out = Command::new("ip")
            .args([
                "-n",
                &pair.client.name,
                "neigh",
                "add",
                &ip,
                "lladdr",
                "02:00:00:00:00:01",
                "dev",
                "sw0",
                "nud",
                "stale",
            ])
            .output()
            .unwrap();
        if !out.status.success() {
            refused += 1;
        }
    }
    assert!(refused > 0, "the kernel refused none of 120 neighbours over a gc_thresh3 of {limit}");
    let m = sample(None, &[]);
    assert_eq!(value(&m, "sockwatch_neighbour_gc_thresh{table=\"arp\",threshold=\"gc_thresh3\"}"), limit as f64);
    assert_eq!(value(&m, "sockwatch_neighbour_table_fulls_total{table=\"arp\"}") - fulls_before, refused as f64);
    assert!(value(&m, "sockwatch_neighbour_utilization{table=\"arp\"}") >= 1.0);
}

/// The host-wide settings these tests change, one test at a time, restored on drop.
struct HostSysctls(Vec<(String, String)>, #[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

impl HostSysctls {
    fn set(pairs: &[(&str, String)]) -> HostSysctls {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let mut saved = Vec::new();
        for (path, value) in pairs {
            saved.push((path.to_string(), std::fs::read_to_string(path).unwrap()));
            std::fs::write(path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        HostSysctls(saved, guard)
    }
}

impl Drop for HostSysctls {
    fn drop(&mut self) {
        for (path, value) in self.0.iter().rev() {
            let _ = std::fs::write(path, value);
        }
    }
}

/// The TCP line's `memory` column of /proc/net/protocols: pages allocated host-wide.
fn tcp_pages() -> u64 {
    let text = std::fs::read_to_string("/proc/net/protocols").unwrap();
    let line = text.lines().find(|l| l.starts_with("TCP ")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Host-wide, so only with the opt-in: tcp_mem's pressure threshold set to what TCP holds
/// now (its hard limit far above, so nothing fails), then a connection in the test's
/// namespace that is sent 8 MiB and never read: TCP enters memory pressure. sockwatch reads
/// the flag, and the namespace's TCPMemoryPressures as the kernel counts it.
fn tcp_memory_pressure_is_seen() {
    let test = "tcp_memory_pressure_is_seen";
    if !require(test, &[]) || !host_settings_allowed(test, "net.ipv4.tcp_mem") {
        return;
    }
    let ns = Netns::new("tcpmem");
    let now = tcp_pages();
    let _mem = HostSysctls::set(&[("/proc/sys/net/ipv4/tcp_mem", format!("1 {} {}", now + 64, now + 1_000_000))]);
    let held = ns.enter(|| {
        let l = TcpListener::bind("127.0.0.1:7301").unwrap();
        let mut c = TcpStream::connect("127.0.0.1:7301").unwrap();
        let (a, _) = l.accept().unwrap();
        c.set_nonblocking(true).unwrap();
        use std::io::Write;
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while sent < 8 << 20 && Instant::now() < deadline {
            match c.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        (l, c, a)
    });
    let (m, pressures) = stable_sample(&ns, "TCPMemoryPressures");
    assert!(pressures > 0, "the kernel never entered TCP memory pressure");
    assert_eq!(value(&m, "sockwatch_tcp_memory_pressures_total"), pressures as f64);
    assert_eq!(value(&m, "sockwatch_socket_memory_pressure{protocol=\"tcp\"}"), 1.0, "the press column reads yes");
    drop(held);
}

/// One `Udp:` counter of the namespace's /proc/net/snmp.
fn udp_snmp(ns: &Netns, name: &str) -> u64 {
    let text = ns.exec_stdout("cat", &["/proc/net/snmp"]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let names = lines[0].split_whitespace();
    names.zip(lines[1].split_whitespace()).find(|(n, _)| *n == name).unwrap().1.parse().unwrap()
}

/// Host-wide, so only with the opt-in: udp_mem set to one page, then a socket with a large
/// receive buffer sent 3,000 datagrams it never reads: past its guaranteed minimum each is
/// refused for lack of UDP memory, not for its own buffer. What the kernel counts for that
/// differs by version (Udp MemErrors, or, on 6.18 here, only the socket's own drop count:
/// `ss -um` d3000 with MemErrors, RcvbufErrors and InErrors all 0), so sockwatch is held to
/// both: its per-port drops against ss, its MemErrors against /proc/net/snmp, and the UDP
/// buffer memory read far above the one-page limit.
fn udp_memory_exhaustion_is_seen() {
    let test = "udp_memory_exhaustion_is_seen";
    if !require(test, &["ss"]) || !host_settings_allowed(test, "net.ipv4.udp_mem") {
        return;
    }
    let ns = Netns::new("udpmem");
    let _mem = HostSysctls::set(&[("/proc/sys/net/ipv4/udp_mem", "1 1 1".to_owned())]);
    let held = ns.enter(|| {
        let rx = std::net::UdpSocket::bind("127.0.0.1:7401").unwrap();
        let big: libc::c_int = 16 << 20;
        // SAFETY: a valid socket and option value (root may pass rmem_max: SO_RCVBUFFORCE).
        unsafe {
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&big as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..3000 {
            let _ = tx.send_to(&[0u8; 1400], "127.0.0.1:7401");
        }
        rx
    });
    // ss: `skmem:(r…,rb…,…,d<drops>)` of the receiver.
    let ss = ns.exec_stdout("ss", &["-H", "-u", "-a", "-n", "-m", "sport", "=", ":7401"]);
    let drops: u64 = ss
        .split("d")
        .last()
        .and_then(|t| t.trim_end().trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("{ss}"));
    assert!(drops > 0, "nothing was refused: {ss}");
    let m = sample(Some(&ns), &[]);
    assert_eq!(value(&m, "sockwatch_udp_drops_total{local_ip=\"127.0.0.1\",port=\"7401\"}"), drops as f64);
    assert_eq!(
        value(&m, "sockwatch_udp_mem_errors_total{family=\"ipv4\",protocol=\"udp\"}"),
        udp_snmp(&ns, "MemErrors") as f64
    );
    // The limit is visible from the host's namespace only: there, UDP's memory (the
    // protocols file's count) reads over udp_mem's one-page max.
    let host = sample(None, &[]);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    assert_eq!(value(&host, "sockwatch_socket_memory_limit_bytes{protocol=\"udp\",threshold=\"max\"}"), page);
    assert!(
        value(&host, "sockwatch_socket_memory_utilization{protocol=\"udp\"}") > 1.0,
        "UDP memory over udp_mem's max"
    );
    drop(held);
}

test_main!(
    a_process_at_its_descriptor_limit_is_named,
    a_flooded_listener_is_named_with_its_drops,
    syn_cookies_are_counted_as_the_kernel_counts_them,
    a_full_neighbour_table_is_seen,
    tcp_memory_pressure_is_seen,
    udp_memory_exhaustion_is_seen,
);
