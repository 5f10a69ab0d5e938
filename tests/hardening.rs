//! Hardening: the HTTP limits, gzip, TLS and basic auth from a web config file, kernel
//! faults (missing, truncated and odd /proc files, conntrack disappearing), load, and
//! slow clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
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

#[test]
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

#[test]
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

#[test]
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

#[test]
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

/// Waits until `cond` holds on a fresh scrape, for at most 5 s.
fn eventually(d: &Served, what: &str, cond: impl Fn(&std::collections::HashMap<String, f64>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if cond(&d.metrics()) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within 5 s; log: {:?}", d.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn up(m: &std::collections::HashMap<String, f64>, source: &str) -> f64 {
    value(m, &format!("sockwatch_source_up{{source=\"{source}\"}}"))
}
fn errors(m: &std::collections::HashMap<String, f64>, source: &str) -> f64 {
    value(m, &format!("sockwatch_source_errors_total{{source=\"{source}\"}}"))
}

#[test]
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
