//! UDP drops per port against the kernel's own figures, in a namespace the test makes:
//! a receiver that never reads is flooded from loopback until it drops; sockwatch's
//! per-port drops must equal the `d` that `ss -uam` shows for that socket and the
//! namespace's `Udp: RcvbufErrors` delta; a receiver that reads shows 0; a socket closed
//! and reopened on the same port does not take the port's counter backwards.

mod common;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{parse_metrics, require, Daemon, Netns};

const DATAGRAMS: usize = 2000;

/// A UDP socket on 127.0.0.1 with a tiny receive buffer (the kernel doubles it).
fn small_receiver(port: u16) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let size: libc::c_int = 4096;
    // SAFETY: valid fd, option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    s
}

/// Sends `n` 200-byte datagrams to each port, paced so that a reading receiver keeps up.
fn flood(ns: &Netns, ports: Vec<u16>, n: usize) {
    ns.enter(move || {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..n {
            for &p in &ports {
                tx.send_to(&[0u8; 200], ("127.0.0.1", p)).unwrap();
            }
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
}

/// `Udp: RcvbufErrors` of the namespace (/proc/net/snmp: a header line, then values).
fn rcvbuf_errors(ns: &Netns) -> u64 {
    let text = ns.exec_stdout("cat", &["/proc/net/snmp"]);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors").unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// The `d` (drops) of the socket on 127.0.0.1:`port` in `ss -uamn`.
fn ss_drops(ns: &Netns, port: u16) -> u64 {
    let out = ns.exec_stdout("ss", &["-H", "-u", "-a", "-m", "-n", "sport", "=", &format!(":{port}")]);
    let skmem = out.split("skmem:(").nth(1).unwrap_or_else(|| panic!("no socket on :{port}: {out}"));
    let d = skmem.split([',', ')']).find_map(|f| f.strip_prefix('d')).unwrap_or_else(|| panic!("no d in {skmem}"));
    d.parse().unwrap()
}

fn drops(d: &Daemon, ns: &Netns, port: u16) -> Option<f64> {
    let m = parse_metrics(&d.get(ns, "/metrics").1);
    m.get(&format!("sockwatch_udp_drops_total{{local_ip=\"127.0.0.1\",port=\"{port}\"}}")).copied()
}

/// Waits for a sample taken after now (the daemon samples every second).
fn next_sample(d: &Daemon, ns: &Netns) -> std::collections::HashMap<String, f64> {
    let samples = |m: &std::collections::HashMap<String, f64>| m.get("sockwatch_samples_total").copied().unwrap_or(0.0);
    let first = samples(&parse_metrics(&d.get(ns, "/metrics").1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let m = parse_metrics(&d.get(ns, "/metrics").1);
        if samples(&m) >= first + 2.0 {
            return m;
        }
        assert!(Instant::now() < deadline, "no new sample");
    }
}

fn udp_drops_per_port_equal_the_kernels_counters() {
    if !require("udp_drops_per_port_equal_the_kernels_counters", &["ss"]) {
        return;
    }
    let ns = Netns::new("udp");
    let (slow, reader) = ns.enter(|| (small_receiver(0), UdpSocket::bind("127.0.0.1:0").unwrap()));
    let slow_port = slow.local_addr().unwrap().port();
    let reader_port = reader.local_addr().unwrap().port();
    // The reading receiver drains its socket on its own thread until told to stop.
    reader.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut buf, mut n) = ([0u8; 512], 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if reader.recv(&mut buf).is_ok() {
                    n += 1;
                }
            }
            n
        })
    };
    let d = Daemon::start(&ns, 9841, &["--interval", "1s", "--udp.ports", &reader_port.to_string()]);
    let before = rcvbuf_errors(&ns);
    flood(&ns, vec![slow_port, reader_port], DATAGRAMS);
    let m = next_sample(&d, &ns);
    let kernel = ss_drops(&ns, slow_port);
    let delta = rcvbuf_errors(&ns) - before;
    assert!(kernel > DATAGRAMS as u64 / 2, "the slow receiver should drop most: d = {kernel}");
    assert_eq!(kernel, delta, "ss's d against the namespace's RcvbufErrors delta");
    let series = |port: u16| format!("sockwatch_udp_drops_total{{local_ip=\"127.0.0.1\",port=\"{port}\"}}");
    assert_eq!(m.get(&series(slow_port)), Some(&(kernel as f64)), "sockwatch against ss for :{slow_port}");
    assert_eq!(m.get(&series(reader_port)), Some(&0.0), "the reading receiver, shown by --udp.ports");
    assert_eq!(ss_drops(&ns, reader_port), 0);
    assert_eq!(m.get("sockwatch_udp_socket_drops_total"), Some(&(kernel as f64)));
    let ss_count = ns.exec_stdout("ss", &["-H", "-u", "-a", "-n", "-4"]).lines().count() as f64;
    assert_eq!(m.get("sockwatch_udp_sockets{family=\"ipv4\"}"), Some(&ss_count));
    assert_eq!(
        m.get("sockwatch_udp_rcvbuf_errors_total{family=\"ipv4\",protocol=\"udp\"}"),
        Some(&(rcvbuf_errors(&ns) as f64))
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reading.join().unwrap() >= DATAGRAMS * 99 / 100, "the reader kept up");

    // Close the dropping socket and reopen the port: the port's total goes on from where
    // it was, and adds the new socket's drops.
    drop(slow);
    let m = next_sample(&d, &ns);
    assert_eq!(m.get(&series(slow_port)), Some(&(kernel as f64)), "kept after the socket closed");
    let slow = ns.enter(move || small_receiver(slow_port));
    flood(&ns, vec![slow_port], 500);
    next_sample(&d, &ns);
    let again = ss_drops(&ns, slow_port);
    assert!(again > 0 && again < kernel, "a new socket counts from 0: {again}");
    assert_eq!(drops(&d, &ns, slow_port), Some((kernel + again) as f64), "never backwards: old + new");

    // `sockwatch doctor` while the port drops: critical, and it names the port.
    // A socket made in the namespace sends from any thread.
    let tx = ns.enter(|| UdpSocket::bind("127.0.0.1:0").unwrap());
    let flooding = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < until {
            let _ = tx.send_to(&[0u8; 200], ("127.0.0.1", slow_port));
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, common::BIN, "doctor", "--json", "--munin.socket", ""])
        .output()
        .unwrap();
    flooding.join().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(2), "{report}");
    let udp = report["checks"].as_array().unwrap().iter().find(|c| c["resource"] == "udp receive queues").unwrap();
    assert_eq!(udp["level"], "critical");
    let detail = udp["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("dropping now: 127.0.0.1:{slow_port} (")), "{detail}");
    drop(slow);
}

test_main!(udp_drops_per_port_equal_the_kernels_counters,);
