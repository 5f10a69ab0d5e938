//! Hardening: the HTTP limits, gzip, TLS and basic auth from a web config file, kernel
//! faults (missing, truncated and odd /proc files, conntrack disappearing), load, and
//! slow clients.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn raw(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn split(resp: &[u8]) -> (String, Vec<u8>) {
    let at = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    (String::from_utf8_lossy(&resp[..at]).to_lowercase(), resp[at + 4..].to_vec())
}

fn gzip_when_accepted_and_identical_content() {
    let d = Served::start(&["--interval", "1h"]);
    let plain = http_get(&d.addr, "/metrics").1;
    let (head, body) = split(&raw(&d.addr, b"GET /metrics HTTP/1.0\r\nAccept-Encoding: gzip, deflate\r\n\r\n"));
    assert!(head.contains("content-encoding: gzip") && head.contains("vary: accept-encoding"), "{head}");
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut unzipped).unwrap();
    assert_eq!(unzipped, plain, "same snapshot, same bytes");
    assert!(body.len() * 3 < plain.len(), "gzip {} vs {}", body.len(), plain.len());
    let (head, _) = split(&raw(&d.addr, b"GET /metrics HTTP/1.0\r\nAccept-Encoding: gzip;q=0\r\n\r\n"));
    assert!(!head.contains("content-encoding"), "{head}");
}

fn oversized_requests_are_refused() {
    let d = Served::start(&[]);
    let mut req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 64 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    let resp = String::from_utf8_lossy(&raw(&d.addr, &req)).into_owned();
    assert!(resp.is_empty() || resp.starts_with("HTTP/1.1 431"), "{resp:.200}");
    assert_eq!(http_get(&d.addr, "/metrics").0, 200, "the daemon serves on");
    let resp = String::from_utf8_lossy(&raw(&d.addr, b"DELETE /metrics HTTP/1.0\r\n\r\n")).into_owned();
    assert!(resp.starts_with("HTTP/1.0 405"), "{resp}");
}

/// Makes a self-signed certificate for localhost with openssl.
fn self_signed(dir: &std::path::Path) -> bool {
    if !have_command("openssl") {
        return skip("tls_and_basic_auth", "needs openssl to make a test certificate");
    }
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    true
}

fn tls_and_basic_auth() {
    if !have_command("curl") {
        skip("tls_and_basic_auth", "needs curl");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockwatch-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if !self_signed(&dir) {
        return;
    }
    let hash = bcrypt::hash("s3cret", 6).unwrap();
    let cfg = dir.join("web.yml");
    // Relative paths are relative to the web config file, as in exporter-toolkit.
    std::fs::write(
        &cfg,
        format!(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .unwrap();
    let d = Served::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let port = d.addr.rsplit(':').next().unwrap();
    let curl = |user: Option<&str>| -> String {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(dir.join("tls.crt"));
        if let Some(u) = user {
            c.args(["-u", u]);
        }
        c.arg(format!("https://localhost:{port}/metrics"));
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    assert_eq!(curl(Some("prometheus:s3cret")), "200");
    assert_eq!(curl(Some("prometheus:wrong")), "401");
    assert_eq!(curl(Some("nobody:s3cret")), "401");
    assert_eq!(curl(None), "401");
    // The body really is the metrics, over TLS.
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(dir.join("tls.crt"))
        .args(["-u", "prometheus:s3cret", &format!("https://localhost:{port}/metrics")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("# TYPE sockwatch_tcp_sockets gauge"));
    // Plain HTTP to the TLS port gets nothing useful, and the server carries on.
    let plain = raw(&d.addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(!String::from_utf8_lossy(&plain).contains("sockwatch_"), "plaintext served over the TLS port");
    assert_eq!(curl(Some("prometheus:s3cret")), "200");
    let _ = std::fs::remove_dir_all(&dir);
}

fn bad_web_config_is_a_startup_error() {
    let dir = std::env::temp_dir().join(format!("sockwatch-badweb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("web.yml");
    std::fs::write(&cfg, "basic_auth_users:\n  prometheus: not-a-hash\n").unwrap();
    let out = Command::new(BIN)
        .args(["--web.listen-address", "127.0.0.1:0", "--munin.socket", ""])
        .arg("--web.config.file")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("basic_auth_users.prometheus: not a bcrypt hash"), "{err}");
    let out = Command::new(BIN).args(["--web.config.file", "/nonexistent/web.yml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--web.config.file: /nonexistent/web.yml is not a readable file")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Copies a directory tree (the fixture procfs) so a test can break it.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Waits until `cond` holds on a fresh scrape, for at most 5 s plus four intervals in
/// force: a loaded host stretches the interval (self-protection), and what the test waits
/// for comes at the samples' pace.
fn eventually(d: &Served, what: &str, cond: impl Fn(&std::collections::HashMap<String, f64>) -> bool) {
    let started = Instant::now();
    loop {
        let m = d.metrics();
        if cond(&m) {
            return;
        }
        let interval = m.get("sockwatch_sample_interval_seconds").copied().unwrap_or(1.0);
        let allowed = Duration::from_secs(5) + Duration::from_secs_f64(4.0 * interval);
        assert!(
            started.elapsed() < allowed,
            "{what} did not happen within {allowed:?} (interval in force {interval} s); log: {:?}",
            d.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn up(m: &std::collections::HashMap<String, f64>, source: &str) -> f64 {
    value(m, &format!("sockwatch_source_up{{source=\"{source}\"}}"))
}
fn errors(m: &std::collections::HashMap<String, f64>, source: &str) -> f64 {
    value(m, &format!("sockwatch_source_errors_total{{source=\"{source}\"}}"))
}

fn proc_faults_mark_sources_down_log_once_and_recover() {
    let root = std::env::temp_dir().join(format!("sockwatch-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    copy_tree(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc/linux-6.18")), &root);
    let d = Served::start(&["--path.procfs", root.to_str().unwrap()]);
    let m = d.metrics();
    for s in ["sockets", "sockstat", "conntrack", "snmp", "limits"] {
        assert_eq!(up(&m, s), 1.0, "{s}");
    }
    let snmp = root.join("net/snmp");
    let good_snmp = std::fs::read_to_string(&snmp).unwrap();

    // Truncated /proc/net/snmp: the header line without its values.
    std::fs::write(&snmp, good_snmp.lines().take(5).collect::<Vec<_>>().join("\n")).unwrap();
    eventually(&d, "snmp down", |m| up(m, "snmp") == 0.0);
    eventually(&d, "3 snmp errors", |m| errors(m, "snmp") >= 3.0);
    let m = d.metrics();
    assert!(!m.contains_key("sockwatch_tcp_active_opens_total"), "stale values must not be served as fresh");
    assert_eq!((up(&m, "sockstat"), up(&m, "conntrack"), up(&m, "sockets")), (1.0, 1.0, 1.0), "the others carry on");
    assert_eq!(d.log_count("source=\"snmp\""), 1, "one line per state change: {:?}", d.log.lock().unwrap());
    assert_eq!(d.log_count("no value line"), 1, "the line says why");

    // The kernel comes back: the source recovers, once logged.
    std::fs::write(&snmp, &good_snmp).unwrap();
    eventually(&d, "snmp up", |m| up(m, "snmp") == 1.0 && m.contains_key("sockwatch_tcp_active_opens_total"));
    assert_eq!(d.log_count("source is up again"), 1);

    // An unexpected header in the conntrack statistics.
    let stat = root.join("net/stat/nf_conntrack");
    let good_stat = std::fs::read_to_string(&stat).unwrap();
    std::fs::write(&stat, "cpu entries found\n0 0 0\n").unwrap();
    eventually(&d, "conntrack down on a bad header", |m| up(m, "conntrack") == 0.0 && errors(m, "conntrack") >= 1.0);
    assert!(!d.metrics().contains_key("sockwatch_conntrack_entries"));
    std::fs::write(&stat, &good_stat).unwrap();
    eventually(&d, "conntrack back", |m| up(m, "conntrack") == 1.0);

    // The conntrack module unloaded at run time: down, series gone, not an error.
    let before = errors(&d.metrics(), "conntrack");
    std::fs::remove_dir_all(root.join("sys/net/netfilter")).unwrap();
    std::fs::remove_file(&stat).unwrap();
    eventually(&d, "conntrack absent", |m| up(m, "conntrack") == 0.0);
    std::thread::sleep(Duration::from_millis(2100));
    let m = d.metrics();
    assert_eq!(errors(&m, "conntrack"), before, "an absent module is not an error");
    assert!(!m.keys().any(|k| k.starts_with("sockwatch_conntrack_")), "conntrack series absent");
    assert_eq!(d.log_count("conntrack module not loaded"), 1);

    // A file that is missing altogether.
    std::fs::remove_file(root.join("net/sockstat")).unwrap();
    eventually(&d, "sockstat down", |m| up(m, "sockstat") == 0.0);
    assert!(!d.metrics().contains_key("sockwatch_sockstat_tcp_memory_bytes"));
    assert_eq!(up(&d.metrics(), "sockets"), 1.0);
    let _ = std::fs::remove_dir_all(&root);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// 200 concurrent clients on /metrics for 30 s while the sampler dumps 500,000 sockets
/// every second and 200 Munin clients come and go: no request fails. Latencies are
/// printed (the benchmark harness is where speed is judged, not this test).
fn load_with_half_a_million_sockets() {
    if !require("load_with_half_a_million_sockets", &["sysctl"]) {
        return;
    }
    const SOCKETS: usize = 500_000;
    let sockets: usize = std::env::var("SOCKWATCH_LOAD_SOCKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(SOCKETS);
    const CLIENTS: usize = 200;
    const MUNIN: usize = 200;
    const DURATION: Duration = Duration::from_secs(30);
    let ns = Netns::new("load");
    let start = Instant::now();
    let _listeners = time_wait_population(&ns, sockets, 20_000, 4);
    eprintln!("load: {sockets} TIME_WAIT sockets made in {:?}", start.elapsed());
    let dir = std::env::temp_dir().join(format!("sockwatch-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("munin.sock");
    let daemon = Daemon::start(
        &ns,
        9822,
        &["--interval", "1s", "--munin.socket", sock.to_str().unwrap(), "--munin.max-clients", "256"],
    );
    let m = parse_metrics(&daemon.get(&ns, "/metrics").1);
    let tw = value(&m, "sockwatch_tcp_sockets{family=\"ipv4\",state=\"time_wait\"}");
    assert!(tw >= sockets as f64 * 0.99, "the sampler sees the population: {tw}");
    let samples_before = value(&m, "sockwatch_samples_total");

    let path = format!("/run/netns/{}", ns.name);
    let deadline = Instant::now() + DURATION;
    let (latencies, failures, munin_sessions, munin_failures) = std::thread::scope(|scope| {
        let http: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let path = &path;
                scope.spawn(move || {
                    let f = std::fs::File::open(path).unwrap();
                    // SAFETY: valid fd; affects only this thread.
                    assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) }, 0);
                    let (mut lat, mut failed) = (Vec::new(), 0usize);
                    let mut conn: Option<(std::io::BufReader<TcpStream>, TcpStream)> = None;
                    while Instant::now() < deadline {
                        if conn.is_none() {
                            match TcpStream::connect("127.0.0.1:9822") {
                                Ok(s) => {
                                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                                    conn = Some((std::io::BufReader::new(s.try_clone().unwrap()), s));
                                }
                                Err(_) => {
                                    failed += 1;
                                    continue;
                                }
                            }
                        }
                        let (r, w) = conn.as_mut().unwrap();
                        let t = Instant::now();
                        match keepalive_get(r, w, "/metrics") {
                            Some(200) => lat.push(t.elapsed()),
                            _ => {
                                failed += 1;
                                conn = None;
                            }
                        }
                    }
                    (lat, failed)
                })
            })
            .collect();
        let munin: Vec<_> = (0..MUNIN)
            .map(|_| {
                let sock = &sock;
                scope.spawn(move || {
                    let (mut ok, mut failed) = (0usize, 0usize);
                    while Instant::now() < deadline {
                        let session = (|| -> Option<()> {
                            use std::io::BufRead;
                            let s = std::os::unix::net::UnixStream::connect(sock).ok()?;
                            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                            let mut w = s.try_clone().ok()?;
                            let mut r = std::io::BufReader::new(s);
                            let mut line = String::new();
                            r.read_line(&mut line).ok()?;
                            line.starts_with("# munin node").then_some(())?;
                            w.write_all(b"fetch sockwatch_tcp_states\n").ok()?;
                            loop {
                                line.clear();
                                r.read_line(&mut line).ok()?;
                                if line == ".\n" {
                                    break;
                                }
                                line.contains(".value ").then_some(())?;
                            }
                            w.write_all(b"quit\n").ok()
                        })();
                        match session {
                            Some(()) => ok += 1,
                            None => failed += 1,
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    (ok, failed)
                })
            })
            .collect();
        let (mut lat, mut failed) = (Vec::new(), 0);
        for h in http {
            let (l, f) = h.join().unwrap();
            lat.extend(l);
            failed += f;
        }
        let (mut ok, mut mfailed) = (0, 0);
        for h in munin {
            let (o, f) = h.join().unwrap();
            ok += o;
            mfailed += f;
        }
        (lat, failed, ok, mfailed)
    });
    let mut sorted = latencies;
    sorted.sort();
    let m = parse_metrics(&daemon.get(&ns, "/metrics").1);
    let samples = value(&m, "sockwatch_samples_total") - samples_before;
    // A sample of half a million sockets on a busy host may take seconds: the interval
    // stretches (self-protection) and samples come at that pace, not at 1 s.
    let interval = value(&m, "sockwatch_sample_interval_seconds");
    eprintln!(
        "load: {} scrapes, p50 {:?}, p99 {:?}, max {:?}; {munin_sessions} Munin sessions; {samples} samples of {sockets} sockets",
        sorted.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted.last().unwrap()
    );
    assert_eq!(failures, 0, "failed /metrics requests");
    assert_eq!(munin_failures, 0, "failed Munin sessions");
    assert!(sorted.len() > CLIENTS * 10, "only {} scrapes in 30 s", sorted.len());
    assert!(munin_sessions > MUNIN * 10, "only {munin_sessions} Munin sessions");
    let due = (DURATION.as_secs_f64() / interval).floor();
    eprintln!("load: {samples} samples in {DURATION:?} at the interval in force, {interval} s ({due} due)");
    assert!(samples >= (due / 2.0).max(2.0), "the sampler kept sampling under load: {samples} of {due} due");
    let _ = std::fs::remove_dir_all(&dir);
}

/// 500 connections each send half a request header and stall; a normal scrape is still
/// answered at once, and the stalled ones are closed after the header read timeout.
fn slowloris_does_not_block_scrapes() {
    let d = Served::start(&[]);
    let mut stalled = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(&d.addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: sockwatch\r\nX-Slow: ").unwrap();
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (status, body) = http_get(&d.addr, "/metrics");
    let took = t.elapsed();
    eprintln!("slowloris: a scrape with 500 stalled connections took {took:?}");
    assert_eq!(status, 200);
    assert!(body.contains("sockwatch_samples_total"));
    // Well under the 10 s header timeout: it did not wait for stalled connections to be dropped.
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The stalled connections are closed by the server after the header read timeout.
    let s = &mut stalled[0];
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = t.elapsed();
    assert!(waited < Duration::from_secs(14), "a stalled connection lived {waited:?}");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

fn sigterm_removes_the_munin_socket_and_exits_zero() {
    let dir = std::env::temp_dir().join(format!("sockwatch-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("munin.sock");
    let mut d = Served::start(&["--munin.socket", sock.to_str().unwrap()]);
    assert!(sock.exists());
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "still running 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!sock.exists(), "the Munin socket file is removed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends SIGTERM and returns how long until the daemon logged that shutdown completed.
fn sigterm_until_shutdown_complete(d: &Served) -> Duration {
    let t = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    while d.log_count("shutdown complete") == 0 {
        assert!(t.elapsed() < Duration::from_secs(15), "no shutdown within 15 s: {:?}", d.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

/// A FIFO in place of /proc/net/snmp used to freeze the sampler forever (and shutdown
/// with it): it is refused as not a regular file, the source is down with that reason,
/// sampling goes on, and SIGTERM exits at once.
fn a_fifo_in_procfs_cannot_hang_the_sampler_or_shutdown() {
    let root = std::env::temp_dir().join(format!("sockwatch-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    copy_tree(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc/linux-6.18")), &root);
    let snmp = root.join("net/snmp");
    std::fs::remove_file(&snmp).unwrap();
    let c = std::ffi::CString::new(snmp.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let mut d = Served::start(&["--path.procfs", root.to_str().unwrap()]);
    eventually(&d, "three samples", |m| value(m, "sockwatch_samples_total") >= 3.0);
    let m = d.metrics();
    assert_eq!(up(&m, "snmp"), 0.0);
    assert_eq!((up(&m, "sockets"), up(&m, "sockstat")), (1.0, 1.0), "the others carry on");
    assert_eq!(value(&m, "sockwatch_sample_overdue_seconds"), 0.0);
    assert_eq!(d.log_count("not a regular file"), 1, "{:?}", d.log.lock().unwrap());
    let took = sigterm_until_shutdown_complete(&d);
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert!(d.child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&root);
}

/// A netlink dump that does not return (the kernel's answer held back by strace's fault
/// injection, as a stuck kernel would): the watchdog logs it once, the previous sample is
/// served marked overdue with the stuck source down, /-/ready fails, no second sample
/// starts, and SIGTERM does not wait for the stuck thread.
fn a_stuck_netlink_dump_is_reported_and_shutdown_stays_bounded() {
    if !have_command("strace") {
        skip("a_stuck_netlink_dump_is_reported_and_shutdown_stays_bounded", "needs strace");
        return;
    }
    let mut d = Served::start(&[]);
    let pid = d.child.id().to_string();
    // Which thread sends the sock_diag request (the sampler's), then hold its next one.
    // With -o, each line starts with the thread id.
    // Until a sample sends one: samples come at the interval in force, which a loaded host
    // stretches (a 1 s interval read 2.8 s there).
    let interval = value(&d.metrics(), "sockwatch_sample_interval_seconds");
    let mut tracer = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=sendto", "-o", "/dev/stdout", "-p", &pid])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let trace = BufReader::new(tracer.stdout.take().unwrap());
    let give_up = Instant::now() + Duration::from_secs_f64(3.0 * interval + 5.0);
    // Ends the trace at the deadline even if nothing is sent at all (its output then ends);
    // the child is reaped under the lock only, so no reused PID is ever signalled.
    let tracer = std::sync::Arc::new(std::sync::Mutex::new(Some(tracer)));
    let stop_tracing = {
        let tracer = tracer.clone();
        move || {
            if let Some(mut t) = tracer.lock().unwrap().take() {
                let _ = t.kill();
                let _ = t.wait();
            }
        }
    };
    {
        let stop = stop_tracing.clone();
        std::thread::spawn(move || {
            std::thread::sleep(give_up.saturating_duration_since(Instant::now()));
            stop();
        });
    }
    let mut lines = Vec::new();
    let mut tid = None;
    for line in trace.lines().map_while(Result::ok) {
        if line.contains("TCPDIAG_GETSOCK") {
            tid = line.split_whitespace().next().map(str::to_owned);
            break;
        }
        lines.push(line);
        assert!(Instant::now() < give_up, "no sock_diag request seen in three intervals: {lines:?}");
    }
    stop_tracing(); // one tracer at a time: the hold below attaches to the thread
    let tid = tid.unwrap_or_else(|| panic!("no sock_diag request seen: {lines:?}"));
    let hold = Command::new("strace")
        .args(["-qq", "-e", "trace=sendto", "-e", "inject=sendto:delay_enter=60s", "-o", "/dev/null", "-p", &tid])
        .spawn()
        .unwrap();
    let hold = KillOnDrop(hold);
    let deadline = Instant::now() + Duration::from_secs(15);
    let m = loop {
        let m = d.metrics();
        if value(&m, "sockwatch_sample_overdue_seconds") > 0.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "never reported overdue: {:?}", d.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(200));
    };
    // The held thread's next request is whichever netlink dump the sample reaches first
    // after strace attaches (the TCP sockets, UDP, the conntrack counters...): the source the
    // watchdog names is the one that must read as down, and the rest stay up.
    let stuck = d
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("past its"))
        .and_then(|l| l.split(" source=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|s| s.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("the watchdog named no source: {:?}", d.log.lock().unwrap()));
    eprintln!("the stuck source: {stuck}");
    assert_eq!(up(&m, &stuck), 0.0, "the stuck source {stuck} reads as down");
    let others_up = ["sockets", "sockstat", "snmp"].iter().filter(|s| **s != stuck).all(|s| up(&m, s) == 1.0);
    assert!(others_up, "only {stuck} is down");
    let samples = value(&m, "sockwatch_samples_total");
    assert_eq!(http_get(&d.addr, "/-/ready").0, 503);
    std::thread::sleep(Duration::from_secs(6));
    let m = d.metrics();
    assert_eq!(value(&m, "sockwatch_samples_total"), samples, "no second sample on top of the stuck one");
    assert!(value(&m, "sockwatch_sample_overdue_seconds") >= 10.0, "the overdue time keeps counting");
    assert_eq!(d.log_count("past its"), 1, "logged once: {:?}", d.log.lock().unwrap());
    let took = sigterm_until_shutdown_complete(&d);
    // In-flight HTTP gets up to 4 s, the stuck thread 2 s.
    assert!(took < Duration::from_secs(7), "shutdown took {took:?} with a stuck sample");
    drop(hold); // strace lets the held thread go, so the process can finish exiting
    assert!(d.child.wait().unwrap().success());
}

/// A GET with basic auth (`user:password`) over plain HTTP: the status.
fn get_as(addr: &str, credentials: &str) -> u16 {
    let resp =
        raw(addr, format!("GET /metrics HTTP/1.0\r\nAuthorization: {}\r\n\r\n", basic_auth(credentials)).as_bytes());
    String::from_utf8_lossy(&resp).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// SIGHUP re-reads the web config's contents: a revoked password stops working at once
/// (the credential cache is emptied), the new one works, and a broken file is rejected
/// with the running one kept.
fn sighup_reloads_the_web_config() {
    let dir = std::env::temp_dir().join(format!("sockwatch-webreload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("web.yml");
    let users = |pw: &str| format!("basic_auth_users:\n  prometheus: {}\n", bcrypt::hash(pw, 4).unwrap());
    std::fs::write(&cfg, users("old-password")).unwrap();
    let d = Served::start(&["--web.config.file", cfg.to_str().unwrap()]);
    assert_eq!(get_as(&d.addr, "prometheus:old-password"), 200);
    assert_eq!(get_as(&d.addr, "prometheus:old-password"), 200, "now from the credential cache");
    std::fs::write(&cfg, users("new-password")).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
    let t = Instant::now();
    while d.log_count("web config reloaded") == 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", d.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get_as(&d.addr, "prometheus:old-password"), 401, "the revoked password");
    assert_eq!(get_as(&d.addr, "prometheus:new-password"), 200);
    // A broken web config on reload: rejected, the running one stays.
    std::fs::write(&cfg, "basic_auth_users:\n  prometheus: not-a-hash\n").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
    while d.log_count("reload rejected") == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", d.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(d.log_count("basic_auth_users.prometheus: not a bcrypt hash"), 1);
    assert_eq!(get_as(&d.addr, "prometheus:new-password"), 200);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bcrypt check still running when SIGHUP revokes the password: the answer is 401, not
/// the 200 the old users would have given (it is checked again against the new ones).
fn a_check_running_at_sighup_is_judged_by_the_new_users() {
    let dir = std::env::temp_dir().join(format!("sockwatch-webrevoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("web.yml");
    // "old" at bcrypt cost 12: long enough in this build for the signal to land mid-check.
    const OLD: &str = "$2b$12$29hQ0hM7BYqVC/3QKCMok.Yg/duVeT4xc8NJZ7uPI4pucHLqL6R5O";
    std::fs::write(&cfg, format!("basic_auth_users:\n  alice: {OLD}\n")).unwrap();
    let d = Served::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let addr = d.addr.clone();
    let asked = Instant::now();
    let answer = std::thread::spawn(move || {
        let code = get_as(&addr, "alice:old");
        (code, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(100));
    std::fs::write(&cfg, format!("basic_auth_users:\n  bob: {}\n", bcrypt::hash("b", 4).unwrap())).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
    while d.log_count("web config reloaded") == 0 {
        assert!(asked.elapsed() < Duration::from_secs(10), "{:?}", d.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(5));
    }
    let reloaded = Instant::now();
    let (code, at) = answer.join().unwrap();
    assert!(at > reloaded, "the check ended before the reload ({:?} after asking): nothing tested", at - asked);
    assert_eq!(code, 401, "a revoked password answered");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A web config that is given but enables nothing (empty, or no users) is a warning: an
/// operator who wrote one expected protection.
fn a_web_config_that_enables_nothing_is_a_warning() {
    let dir = std::env::temp_dir().join(format!("sockwatch-webempty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [("empty.yml", ""), ("nousers.yml", "basic_auth_users: {}\n")] {
        let cfg = dir.join(name);
        std::fs::write(&cfg, text).unwrap();
        let d = Served::start(&["--web.config.file", cfg.to_str().unwrap()]);
        assert_eq!(d.log_count("enables neither TLS nor basic auth"), 1, "{name}: {:?}", d.log.lock().unwrap());
        assert_eq!(http_get(&d.addr, "/metrics").0, 200);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A v1 certificate (what `openssl x509 -req` makes without extensions) is refused by
/// name, not as a key mismatch; an expired one starts with a warning.
fn certificates_v1_refused_by_name_and_expired_warned() {
    if !have_command("openssl") {
        skip("certificates_v1_refused_by_name_and_expired_warned", "needs openssl");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockwatch-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sh = |script: &str| {
        let o = Command::new("sh").arg("-c").arg(script).current_dir(&dir).output().unwrap();
        assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let key = "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout k.pem -subj /CN=localhost";
    sh(&format!("{key} -out r.csr && openssl x509 -req -in r.csr -signkey k.pem -days 30 -out v1.pem"));
    std::fs::write(dir.join("v1.yml"), "tls_server_config:\n  cert_file: v1.pem\n  key_file: k.pem\n").unwrap();
    // Starting with a web config: refused (exit 2, not a panic's 101) with its message.
    let refused = |yml: &str| {
        let out = Command::new(BIN)
            .args(["--web.config.file", dir.join(yml).to_str().unwrap(), "--web.listen-address", "127.0.0.1:0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "a clean refusal: {err}");
        err
    };
    let err = refused("v1.yml");
    assert!(err.contains("an X.509 v1 certificate") && !err.contains("do not fit together"), "{err}");
    // A v3 certificate whose notAfter is rewritten to 2001-01-01 (rustls does not check the
    // signature of its own certificate, only that the key fits).
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout k3.pem -subj /CN=localhost -days 30 -out v3.pem && openssl x509 -in v3.pem -outform DER -out v3.der");
    let mut der = std::fs::read(dir.join("v3.der")).unwrap();
    let times: Vec<usize> =
        (0..der.len() - 15).filter(|&i| der[i] == 0x17 && der[i + 1] == 13 && der[i + 14] == b'Z').collect();
    assert_eq!(times.len(), 2, "notBefore and notAfter as UTCTime");
    der[times[1] + 2..times[1] + 15].copy_from_slice(b"010101000000Z");
    std::fs::write(dir.join("old.der"), &der).unwrap();
    sh("openssl x509 -inform DER -in old.der -out old.pem");
    std::fs::write(dir.join("old.yml"), "tls_server_config:\n  cert_file: old.pem\n  key_file: k3.pem\n").unwrap();
    let mut d = Served::start(&["--web.config.file", dir.join("old.yml").to_str().unwrap()]);
    assert_eq!(d.log_count("the certificate expired on 2001-01-01"), 1, "{:?}", d.log.lock().unwrap());
    // A crafted notAfter with a two-byte character where two digits belong (same length):
    // refused by name at start, and on SIGHUP the running daemon keeps its old config.
    der[times[1] + 3..times[1] + 5].copy_from_slice("\u{e9}".as_bytes());
    std::fs::write(dir.join("crafted.der"), &der).unwrap();
    sh("(echo '-----BEGIN CERTIFICATE-----'; base64 -w 64 crafted.der; echo '-----END CERTIFICATE-----') > crafted.pem");
    std::fs::write(dir.join("crafted.yml"), "tls_server_config:\n  cert_file: crafted.pem\n  key_file: k3.pem\n")
        .unwrap();
    let err = refused("crafted.yml");
    assert!(err.contains("crafted.pem: the first certificate is not valid DER X.509"), "{err}");
    let sighup_and_wait = |d: &Served, needle: &str, before: usize| {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while d.log_count(needle) <= before {
            assert!(std::time::Instant::now() < deadline, "no {needle:?} logged: {:?}", d.log.lock().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    std::fs::copy(dir.join("crafted.pem"), dir.join("old.pem")).unwrap();
    sighup_and_wait(&d, "not valid DER X.509", 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon died on SIGHUP: {:?}", d.log.lock().unwrap());
    // The certificate replaced by a FIFO: refused at once (it blocked the signal loop for
    // good), and the next SIGHUP, with a good file back, is still heard.
    std::fs::remove_file(dir.join("old.pem")).unwrap();
    sh("mkfifo old.pem");
    sighup_and_wait(&d, "old.pem: cannot read: not a regular file", 0);
    std::fs::remove_file(dir.join("old.pem")).unwrap();
    std::fs::copy(dir.join("v3.pem"), dir.join("old.pem")).unwrap();
    let reloaded = d.log_count("SIGHUP: web config reloaded");
    sighup_and_wait(&d, "SIGHUP: web config reloaded", reloaded);
    let _ = std::fs::remove_dir_all(&dir);
}

test_main!(
    gzip_when_accepted_and_identical_content,
    oversized_requests_are_refused,
    tls_and_basic_auth,
    bad_web_config_is_a_startup_error,
    proc_faults_mark_sources_down_log_once_and_recover,
    load_with_half_a_million_sockets,
    slowloris_does_not_block_scrapes,
    sigterm_removes_the_munin_socket_and_exits_zero,
    a_fifo_in_procfs_cannot_hang_the_sampler_or_shutdown,
    a_stuck_netlink_dump_is_reported_and_shutdown_stays_bounded,
    sighup_reloads_the_web_config,
    a_check_running_at_sighup_is_judged_by_the_new_users,
    a_web_config_that_enables_nothing_is_a_warning,
    certificates_v1_refused_by_name_and_expired_warned,
);
