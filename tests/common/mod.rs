//! Shared harness for the integration tests: skip-or-fail policy, network namespaces,
//! running the daemon inside one, scraping it, and reading the ground truth (`ss`,
//! /proc) from inside the same namespace.
//!
//! Policy: a test that needs root, network namespaces or a Debian package prints why it
//! skips and passes, unless `SOCKWATCH_STRICT_TESTS=1` (set by `.ci/run`), where it fails.
#![allow(dead_code)]

pub mod harness;
pub mod nat;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sockwatch");

/// A copy of the binary that any user can execute, for tests that drop privileges (the
/// checkout may sit under a directory an unprivileged user cannot enter).
pub fn bin_for_any_user() -> String {
    use std::os::unix::fs::PermissionsExt;
    static COPY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sockwatch-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("sockwatch");
        std::fs::copy(BIN, &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_owned()
    })
    .clone()
}

/// The first line of the shipped munin plugin: the kernel runs the file with the installed
/// binary as its interpreter (one exec per fetch, no shell).
pub const PLUGIN_SHEBANG: &str = "#!/usr/bin/sockwatch munin-plugin";

/// The shipped munin plugin with its first line naming the binary under test instead of
/// /usr/bin/sockwatch, as a packager with another prefix installs it; the rest of the file
/// is the shipped one, byte for byte.
pub fn munin_plugin() -> String {
    use std::os::unix::fs::PermissionsExt;
    static COPY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/munin-plugin/sockwatch_")).unwrap();
        let rest =
            shipped.strip_prefix(PLUGIN_SHEBANG).unwrap_or_else(|| panic!("plugin must start {PLUGIN_SHEBANG:?}"));
        let dir = std::env::temp_dir().join(format!("sockwatch-plugin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("sockwatch_");
        std::fs::write(&path, format!("#!{} munin-plugin{rest}", bin_for_any_user())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_owned()
    })
    .clone()
}

/// munin-node's plugin timeout (`timeout 10` in munin-node.conf, its default): a fetch
/// slower than this is a blank graph. Tests of the Munin path hold fetches to it.
pub const MUNIN_PLUGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Prometheus' default `scrape_timeout`: a scrape slower than this reads as `up 0`. Tests
/// of the HTTP path hold scrapes to it.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn strict() -> bool {
    std::env::var("SOCKWATCH_STRICT_TESTS").is_ok_and(|v| v == "1")
}

/// Skips (returns false) or, under strict mode, fails the test.
pub fn skip(test: &str, why: &str) -> bool {
    if strict() {
        panic!("{test}: cannot run: {why} (SOCKWATCH_STRICT_TESTS=1 forbids skipping)");
    }
    record_skip(test, why);
    false
}

/// The opt-in for tests that change a host-wide setting (`nf_conntrack_max` and the like,
/// which the kernel keeps for the whole host: lowering it drops other namespaces' packets).
pub const HOST_SETTINGS_VAR: &str = "SOCKWATCH_TEST_HOST_SETTINGS";

/// True when the test may change a host-wide setting: `SOCKWATCH_TEST_HOST_SETTINGS=1`
/// (set by `.ci/run`). Without it the test skips, whatever the strict mode: a host that is
/// not a lab is the reason to skip, not a missing dependency.
pub fn host_settings_allowed(test: &str, what: &str) -> bool {
    if std::env::var(HOST_SETTINGS_VAR).is_ok_and(|v| v == "1") {
        return true;
    }
    record_skip(test, &format!("changes the host-wide {what}; set {HOST_SETTINGS_VAR}=1 to allow it"));
    false
}

/// Where this run's skips are listed: one file per `cargo test` (keyed by its PID, the
/// parent of every test binary), read and removed by `tests/zz_skipped.rs`, which cargo
/// runs last and which lists them as ignored tests with their reasons.
pub fn skip_list() -> std::path::PathBuf {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("skipped-{parent}.txt"))
}

fn record_skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
    harness::note_skip(why);
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.rsplit_once('-').map_or(s.clone(), |(name, _hash)| name.to_owned()))
        .unwrap_or_default();
    let line = format!("{binary}::{test}\t{}\n", why.replace(['\n', '\t'], " "));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(skip_list());
    if let Ok(mut f) = file {
        let _ = f.write_all(line.as_bytes());
    }
}

pub fn have_command(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

/// True when the test can run without root: every command in `cmds`.
pub fn require_commands(test: &str, cmds: &[&str]) -> bool {
    for cmd in cmds {
        if !have_command(cmd) {
            return skip(test, &format!("needs the `{cmd}` command (see .ci/run for the package)"));
        }
    }
    true
}

/// True when the test can run: root, `ip`, and every command in `cmds`.
pub fn require(test: &str, cmds: &[&str]) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip(test, "needs root (it makes network namespaces, mounts or cgroups of its own)");
    }
    for cmd in std::iter::once(&"ip").chain(cmds) {
        if !have_command(cmd) {
            return skip(test, &format!("needs the `{cmd}` command (see .ci/run for the Debian package)"));
        }
    }
    true
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace with loopback up, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("sw-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        // Deterministic TIME_WAIT counts: loopback TIME_WAIT reuse (the default, 2) would
        // let new connections take over old TIME_WAIT sockets.
        ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
        ns
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Runs a command inside the namespace; it must succeed.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name, cmd];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn exec_stdout(&self, cmd: &str, args: &[&str]) -> String {
        String::from_utf8(self.exec(cmd, args).stdout).expect("utf-8 output")
    }

    /// Runs `f` on a thread that has joined the namespace. Sockets it creates live in
    /// the namespace for their whole life, whichever thread holds them afterwards.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: valid fd; setns affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// Enables connection tracking in the namespace with an nftables `ct` rule.
    pub fn enable_conntrack(&self) {
        let rules = "table inet sockwatch_test {\n chain out {\n  type filter hook output priority 0; policy accept;\n  ct state new counter\n }\n}\n";
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "nft rules failed");
    }

    /// Counts sockets per `ss` state name for one family flag (`-4` or `-6`).
    pub fn ss_states(&self, family: &str) -> HashMap<String, u64> {
        let out = self.exec_stdout("ss", &["-H", "-t", "-a", "-n", family]);
        let mut m = HashMap::new();
        for line in out.lines() {
            if let Some(state) = line.split_whitespace().next() {
                *m.entry(state.to_owned()).or_default() += 1;
            }
        }
        m
    }

    /// Waits until no socket is in a transient closing state (FIN-WAIT, LAST-ACK, ...).
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let transient = ["FIN-WAIT-1", "FIN-WAIT-2", "LAST-ACK", "CLOSING", "SYN-SENT", "SYN-RECV", "CLOSE-WAIT"];
            let busy: u64 = ["-4", "-6"]
                .iter()
                .flat_map(|f| self.ss_states(f))
                .filter(|(s, _)| transient.contains(&s.as_str()))
                .map(|(_, n)| n)
                .sum();
            if busy == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "sockets did not settle: {busy} still closing");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Two namespaces joined by a veth pair: `client` at 10.213.0.1, `server` at 10.213.0.2
/// (addresses that exist only inside these namespaces). Traffic between them is not
/// loopback, so the kernel's loopback-only TIME_WAIT reuse (`tcp_tw_reuse` = 2) cannot
/// hide port exhaustion.
pub struct VethPair {
    pub client: Netns,
    pub server: Netns,
}

impl VethPair {
    pub const CLIENT_IP: &'static str = "10.213.0.1";
    pub const SERVER_IP: &'static str = "10.213.0.2";

    pub fn new(tag: &str) -> VethPair {
        let client = Netns::new(&format!("{tag}-c"));
        let server = Netns::new(&format!("{tag}-s"));
        run(
            "ip",
            &[
                "link",
                "add",
                "sw0",
                "netns",
                &client.name,
                "type",
                "veth",
                "peer",
                "name",
                "sw1",
                "netns",
                &server.name,
            ],
        );
        for (ns, dev, ip) in [(&client, "sw0", Self::CLIENT_IP), (&server, "sw1", Self::SERVER_IP)] {
            run("ip", &["-n", &ns.name, "addr", "add", &format!("{ip}/24"), "dev", dev]);
            run("ip", &["-n", &ns.name, "link", "set", dev, "up"]);
        }
        VethPair { client, server }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Test daemons share the host's filesystem: unless a test names a Munin socket, none is
/// created (the default /run/sockwatch/munin.sock would be contended).
fn default_munin_off(extra: &[&str]) -> &'static [&'static str] {
    if extra.contains(&"--munin.socket") {
        &[]
    } else {
        &["--munin.socket", ""]
    }
}

/// The daemon running inside a namespace; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub stderr_lines: Vec<String>,
}

impl Daemon {
    /// Its `/metrics`, parsed (scraped from inside `ns`).
    pub fn metrics(&self, ns: &Netns) -> HashMap<String, f64> {
        parse_metrics(&self.get(ns, "/metrics").1)
    }

    /// Starts `sockwatch serve` in `ns` on 127.0.0.1:`port` and waits (reading its log,
    /// without touching the network) until the first sample is published.
    pub fn start(ns: &Netns, port: u16, extra: &[&str]) -> Daemon {
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["netns", "exec", &ns.name, BIN, "serve", "--web.listen-address", &addr];
        args.extend_from_slice(extra);
        args.extend_from_slice(default_munin_off(extra));
        let mut child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockwatch");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon { child, port, stderr_lines: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains("first sample published");
                    d.stderr_lines.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => panic!("daemon did not publish a first sample; its log:\n{}", d.stderr_lines.join("\n")),
            }
        }
        // Keep draining so the daemon never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        d
    }

    /// One HTTP/1.0 GET from inside the namespace: (status, body).
    pub fn get(&self, ns: &Netns, path: &str) -> (u16, String) {
        http_get_in(ns, self.port, path)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get_in(ns: &Netns, port: u16, path: &str) -> (u16, String) {
    let path = path.to_owned();
    ns.enter(move || http_get(&format!("127.0.0.1:{port}"), &path))
}

/// Like [`http_get_in`], but `None` while nothing listens yet.
pub fn try_http_get_in(ns: &Netns, port: u16, path: &str) -> Option<(u16, String)> {
    let path = path.to_owned();
    ns.enter(move || {
        TcpStream::connect(("127.0.0.1", port)).ok()?;
        Some(http_get(&format!("127.0.0.1:{port}"), &path))
    })
}

/// A minimal HTTP/1.0 client: enough to assert on status and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// Parses Prometheus text into `series → value`, series written as in the text
/// (`name{a="b",c="d"}`). Panics on a sample line it cannot read.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")))
        })
        .collect()
}

/// Reads a series that must be present.
pub fn value(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| {
        let mut keys: Vec<_> = m.keys().collect();
        keys.sort();
        panic!("series {series} missing; have {keys:?}")
    })
}

/// The `TCP: ... tw N` style fields of /proc/net/sockstat(6) read inside `ns`.
pub fn sockstat_field(ns: &Netns, file: &str, prefix: &str, field: &str) -> u64 {
    let text = ns.exec_stdout("cat", &[file]);
    let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {text}"));
    let toks: Vec<&str> = line.split_whitespace().collect();
    let i = toks.iter().position(|t| *t == field).unwrap_or_else(|| panic!("no {field} in {line}"));
    toks[i + 1].parse().unwrap()
}

/// The daemon on 127.0.0.1, an ephemeral port read back from its log.
pub struct Served {
    pub child: Child,
    pub addr: String,
    /// Every line the daemon logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Served {
    pub fn start(extra: &[&str]) -> Served {
        // Flags win over a config file: leave the interval to the file when there is one.
        let own_interval = extra.contains(&"--interval") || extra.contains(&"--config");
        let interval = if own_interval { &[][..] } else { &["--interval", "1s"][..] };
        // The host's other namespaces are not this test's business unless it asks for them:
        // on a busy host reading them all (as --netns auto does in the host's namespace)
        // makes a 1 s sample slow enough to stretch the interval.
        let own_netns = extra.contains(&"--netns") || extra.contains(&"--config");
        let netns = if own_netns { &[][..] } else { &["--netns", "off"][..] };
        let mut child = Command::new(BIN)
            .args(["--web.listen-address", "127.0.0.1:0"])
            .args(interval)
            .args(netns)
            .args(default_munin_off(extra))
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.split(" serving address=").nth(1) {
                addr = Some(rest.split_whitespace().next().unwrap().to_owned());
            }
            let first = line.contains("first sample published");
            log.lock().unwrap().push(line);
            if first {
                break;
            }
        }
        let sink = log.clone();
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| sink.lock().unwrap().push(l)));
        let addr = addr.unwrap_or_else(|| panic!("daemon logged no address: {:?}", log.lock().unwrap()));
        Served { child, addr, log }
    }

    /// Log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn metrics(&self) -> std::collections::HashMap<String, f64> {
        parse_metrics(&http_get(&self.addr, "/metrics").1)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server in `ns` on `addr` that accepts every connection and closes each once its
/// client has closed it (a read returns 0), so the client side holds the TIME_WAIT and its
/// port. Stops when `stop` is set.
pub fn accept_until_close(
    ns: &Netns,
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let listener = ns.enter(move || std::net::TcpListener::bind(addr).unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut open: Vec<TcpStream> = Vec::new();
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(true).unwrap();
                    open.push(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => std::thread::sleep(Duration::from_millis(2)), // out of descriptors: a moment
            }
            open.retain_mut(|s| !matches!(s.read(&mut buf), Ok(0)));
        }
    })
}

/// Fills `ns` with `n` TIME_WAIT sockets: `threads` workers churn connections (client
/// closes first) to 127.0.0.1:`first_port`.. with one listener per 10,000 sockets: a
/// destination has at most ~55k ports here, and connect()'s search for a free port slows
/// sharply as a destination's range fills. Raises the namespace's port range and
/// tcp_max_tw_buckets to fit. Returns the listeners, to keep the ports busy.
pub fn time_wait_population(ns: &Netns, n: usize, first_port: u16, threads: usize) -> Vec<std::net::TcpListener> {
    ns.sysctl("net.ipv4.ip_local_port_range", "10000 65000");
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", &(2 * n).max(1 << 16).to_string());
    let per_dest = 10_000;
    let dests = n.div_ceil(per_dest);
    let listeners: Vec<std::net::TcpListener> = (0..dests)
        .map(|i| {
            let port = first_port + i as u16;
            ns.enter(move || std::net::TcpListener::bind(("127.0.0.1", port)).unwrap())
        })
        .collect();
    let path = format!("/run/netns/{}", ns.name);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (path, listeners) = (&path, &listeners);
            scope.spawn(move || {
                let f = std::fs::File::open(path).unwrap();
                // SAFETY: valid fd; affects only this thread.
                assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
                let mut buf = [0u8; 1];
                for i in (t..n).step_by(threads) {
                    let l = &listeners[i / per_dest];
                    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
                    // accept() may hand us another worker's connection: fine, any one will do.
                    let (mut a, _) = l.accept().unwrap();
                    drop(c);
                    let _ = a.read(&mut buf);
                }
            });
        }
    });
    listeners
}

/// One keep-alive HTTP/1.1 GET on an open connection: returns the status, or None when
/// the exchange failed.
pub fn keepalive_get(r: &mut std::io::BufReader<TcpStream>, w: &mut TcpStream, path: &str) -> Option<u16> {
    keepalive_get_with(r, w, path, "")
}

/// [`keepalive_get`] with more request header lines (each ending in `\r\n`), e.g.
/// `Accept-Encoding: gzip\r\n` as Prometheus sends.
pub fn keepalive_get_with(
    r: &mut std::io::BufReader<TcpStream>,
    w: &mut TcpStream,
    path: &str,
    headers: &str,
) -> Option<u16> {
    use std::io::BufRead;
    w.write_all(format!("GET {path} HTTP/1.1\r\nHost: sockwatch\r\n{headers}\r\n").as_bytes()).ok()?;
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let (mut length, mut chunked) = (0usize, false);
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    if !chunked {
        let mut body = vec![0u8; length];
        r.read_exact(&mut body).ok()?;
        return Some(status);
    }
    // Chunked (Go's net/http, e.g. node_exporter): size line, data, CRLF; 0 ends it.
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0u8; size + 2];
        if size == 0 {
            r.read_line(&mut line).ok()?; // the CRLF after the last chunk (no trailers)
            return Some(status);
        }
        r.read_exact(&mut chunk).ok()?;
    }
}

/// Kills and reaps a child process when dropped (a helper server a test started).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One connection to `to`, closed by the client first: the client's local port stays in
/// TIME_WAIT for 60 s. Returns the connect error if there was one.
pub fn churn_once(listener: &std::net::TcpListener, to: std::net::SocketAddr) -> std::io::Result<()> {
    let c = TcpStream::connect(to)?;
    let (mut a, _) = listener.accept().unwrap();
    drop(c);
    let mut buf = [0u8; 1];
    assert_eq!(a.read(&mut buf).unwrap(), 0);
    Ok(())
}

/// The PromQL expressions of the Grafana dashboard's panels.
pub fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/sockwatch.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("every target has an expr").to_owned())
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    exprs
}

/// The port a test's Prometheus listens on, inside the test's namespace.
pub const PROM_PORT: u16 = 9090;

/// A real Prometheus in `ns` with the shipped rules (and a sample, evaluation and scrape
/// every second), scraping the daemon on 127.0.0.1:`daemon_port` in the same namespace.
pub struct Prometheus {
    _child: KillOnDrop,
    dir: std::path::PathBuf,
}

impl Prometheus {
    pub fn start(ns: &Netns, tag: &str, daemon_port: u16) -> Prometheus {
        let root = env!("CARGO_MANIFEST_DIR");
        let dir = std::env::temp_dir().join(format!("sockwatch-predict-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {root}/prometheus/alerts.yml\n\
                 scrape_configs:\n  - job_name: sockwatch\n    static_configs:\n      - targets: ['127.0.0.1:{daemon_port}']\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus", "--config.file", config.to_str().unwrap()])
            .args(["--storage.tsdb.path", dir.join("data").to_str().unwrap()])
            .args(["--web.listen-address", &format!("127.0.0.1:{PROM_PORT}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let p = Prometheus { _child: KillOnDrop(child), dir };
        // Ready, and the daemon scraped at least once.
        let deadline = Instant::now() + Duration::from_secs(60);
        while p.query(ns, "up", None) != Some(1.0) {
            assert!(Instant::now() < deadline, "Prometheus did not scrape the daemon within 60 s");
            std::thread::sleep(Duration::from_millis(250));
        }
        p
    }

    /// The one value of an instant query (at `at`, default now), if there is one.
    pub fn query(&self, ns: &Netns, expr: &str, at: Option<std::time::SystemTime>) -> Option<f64> {
        let time = at.map_or(String::new(), |t| {
            format!("&time={:.3}", t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64())
        });
        let (status, body) = try_http_get_in(ns, PROM_PORT, &format!("/api/v1/query?query={expr}{time}"))?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Names of the alerts in state `firing`.
    pub fn firing(&self, ns: &Netns) -> Vec<String> {
        let Some((200, body)) = try_http_get_in(ns, PROM_PORT, "/api/v1/alerts") else { return Vec::new() };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["labels"]["alertname"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An `Authorization: Basic` header value for `user:password`.
pub fn basic_auth(credentials: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("Basic ");
    for c in credentials.as_bytes().chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// The `sockwatch_netns_info` line of namespace `inode` in a rendering.
pub fn netns_info_line(text: &str, inode: u64) -> String {
    text.lines()
        .find(|l| l.starts_with(&format!("sockwatch_netns_info{{netns=\"{inode}\"")))
        .unwrap_or_else(|| panic!("no info series for netns {inode}:\n{text}"))
        .to_owned()
}

/// Sets the host-wide `nf_conntrack_max` and restores it when dropped. The kernel keeps it
/// for the whole host (read-only inside other namespaces) and checks each namespace's
/// count against it, so a test may only lower it under the opt-in: take it with
/// [`ConntrackMax::allowed`] first. Each test binary holds at most one at a time.
pub struct ConntrackMax(String);

impl ConntrackMax {
    /// Whether `test` may lower it ([`host_settings_allowed`]); it skips with the reason if not.
    pub fn allowed(test: &str) -> bool {
        host_settings_allowed(test, "net.netfilter.nf_conntrack_max")
    }

    pub fn set(max: u64) -> ConntrackMax {
        assert!(
            std::env::var(HOST_SETTINGS_VAR).is_ok_and(|v| v == "1"),
            "nf_conntrack_max is host-wide: check ConntrackMax::allowed first"
        );
        let path = "/proc/sys/net/netfilter/nf_conntrack_max";
        let saved = std::fs::read_to_string(path).unwrap().trim().to_owned();
        std::fs::write(path, max.to_string()).unwrap();
        ConntrackMax(saved)
    }
}

impl Drop for ConntrackMax {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/net/netfilter/nf_conntrack_max", &self.0);
    }
}

/// A session on the shim's Unix socket.
pub struct MuninSession {
    r: std::io::BufReader<std::os::unix::net::UnixStream>,
    w: std::os::unix::net::UnixStream,
}

impl MuninSession {
    pub fn open(path: &std::path::Path) -> MuninSession {
        let s = std::os::unix::net::UnixStream::connect(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut session = MuninSession { w: s.try_clone().unwrap(), r: std::io::BufReader::new(s) };
        let greeting = session.line();
        assert!(greeting.starts_with("# munin node at "), "{greeting:?}");
        session
    }
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut self.r, &mut l).unwrap();
        l
    }
    pub fn send(&mut self, cmd: &[u8]) {
        std::io::Write::write_all(&mut self.w, cmd).unwrap();
    }
    /// Sends a command answered by one line.
    pub fn ask_line(&mut self, cmd: &str) -> String {
        self.send(format!("{cmd}\n").as_bytes());
        self.line()
    }
    /// Sends a command answered by lines up to ".".
    pub fn ask(&mut self, cmd: &str) -> Vec<String> {
        self.send(format!("{cmd}\n").as_bytes());
        let mut out = Vec::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "connection closed during {cmd}");
            if l == ".\n" {
                return out;
            }
            out.push(l.trim_end().to_owned());
        }
    }
}

/// A throwaway root for tests that install packages: the host's own root filesystem under
/// an overlay whose writable layer is a tmpfs, in a private mount namespace held by one
/// process, with /dev, /proc and /sys bound in but not /run (so no init system is seen and
/// maintainer scripts start nothing). Whatever `dpkg -i` or `--purge` does in it lands in
/// the tmpfs; the host's dpkg database, /usr and /etc stay as they are. Dropping it ends the
/// process, which takes the namespace and its mounts along.
pub struct ThrowawayRoot {
    holder: Child,
    dir: std::path::PathBuf,
}

impl ThrowawayRoot {
    /// Err names why the kernel would not make one (no overlayfs, no mount namespaces).
    pub fn new(tag: &str) -> Result<ThrowawayRoot, String> {
        let dir = std::env::temp_dir().join(format!("sockwatch-root-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("merged")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir.join("upper")).map_err(|e| e.to_string())?;
        let script = r#"set -e
d=$1
mount -t tmpfs -o size=512m sockwatch-upper "$d/upper"
mkdir "$d/upper/u" "$d/upper/w"
mount -t overlay sockwatch-root -o "lowerdir=/,upperdir=$d/upper/u,workdir=$d/upper/w" "$d/merged"
for m in dev proc sys; do mount --rbind "/$m" "$d/merged/$m"; done
mount -t tmpfs sockwatch-run "$d/merged/run"
mkdir -p "$d/merged/run/lock"
echo ready
exec sleep 3600"#;
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let mut first = String::new();
        let _ = BufReader::new(holder.stdout.take().unwrap()).read_line(&mut first);
        if first.trim() != "ready" {
            let _ = holder.kill();
            let mut err = String::new();
            let _ = holder.stderr.take().unwrap().read_to_string(&mut err);
            let _ = holder.wait();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("cannot make an overlay root: {}", err.trim()));
        }
        let root = ThrowawayRoot { holder, dir };
        // Forbid service starts in the root even where an init system would be seen.
        let rc = root.path("/usr/sbin/policy-rc.d");
        std::fs::write(&rc, "#!/bin/sh\nexit 101\n").map_err(|e| format!("{}: {e}", rc.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        Ok(root)
    }

    /// A path inside the root, as the host reaches it (through the holder's /proc root).
    pub fn path(&self, inside: &str) -> std::path::PathBuf {
        let merged = self.dir.join("merged");
        std::path::PathBuf::from(format!("/proc/{}/root{}{inside}", self.holder.id(), merged.display()))
    }

    /// Runs a command chrooted into the root; returns its output whatever its status.
    pub fn run(&self, cmd: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.holder.id().to_string(), "-m", "chroot"])
            .arg(self.dir.join("merged"))
            .args(cmd)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap_or_else(|e| panic!("nsenter: {e}"))
    }
}

impl Drop for ThrowawayRoot {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
