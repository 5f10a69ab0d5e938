//! One hostile local client holding thousands of connections that say nothing (HTTP), or
//! send a newline now and then (Munin), reconnecting as soon as one is closed: a
//! legitimate scrape and a munin fetch must still be answered within the time its client
//! waits (Prometheus' scrape timeout, munin-node's plugin timeout), every time. (Before: 700
//! silent connections denied every scrape for their 10 s header timeout, and 64 trickling
//! Munin sessions locked munin-node out indefinitely.) The floods take a core of their own,
//! so on a busy host a fetch is slower during them than without: what is held to the client's
//! bound is that it is answered, and each figure is printed beside a baseline of the same run.
//!
//! The flood runs in a child process (this test binary, running `flood_child`): a client
//! is a peer address for HTTP (the flood connects from 127.0.0.2) and a process for the
//! Unix socket, and the scraper is another.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const HOSTILE: usize = 2000;
/// Addresses of the served keep-alive flood: twice the daemon's connection slots.
const SERVED_IDLE: usize = 1000;

/// The floods take a core each: one at a time, so a test's timing is its own.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection the flood holds, polled without blocking.
trait Conn: Read + Write + Send + 'static {
    fn nonblocking(&self);
}
impl Conn for TcpStream {
    fn nonblocking(&self) {
        self.set_nonblocking(true).unwrap();
    }
}
impl Conn for UnixStream {
    fn nonblocking(&self) {
        self.set_nonblocking(true).unwrap();
    }
}

/// What each hostile connection does.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Says nothing.
    Silent,
    /// Sends a newline every 200 ms.
    Trickle,
    /// Pipelines Munin fetches and never reads an answer, so the server's writes block.
    Pipeline,
    /// Has one HTTP request answered, then idles on keep-alive.
    ServedIdle,
}

/// Keeps `n` connections open (reconnecting as the server closes them) until `flag` is
/// set. Returns (made, closed by the server).
fn flood<C: Conn>(n: usize, mode: Mode, connect: impl Fn() -> Option<C>, flag: &AtomicBool) -> (u64, u64) {
    let (mut conns, mut made, mut closed) = (Vec::<C>::new(), 0u64, 0u64);
    let mut last_trickle = Instant::now();
    let mut buf = [0u8; 512];
    let fetches = "cap multigraph\n".to_owned() + &"fetch sockwatch\n".repeat(4000);
    while !flag.load(Ordering::Relaxed) {
        while conns.len() < n {
            let Some(mut c) = connect() else { break };
            c.nonblocking();
            if mode == Mode::Pipeline {
                let _ = c.write(fetches.as_bytes());
            }
            if mode == Mode::ServedIdle {
                let _ = c.write(b"GET /-/healthy HTTP/1.1\r\nHost: sockwatch\r\n\r\n");
            }
            conns.push(c);
            made += 1;
        }
        let before = conns.len();
        conns.retain_mut(|c| {
            if mode == Mode::Pipeline {
                // Never reads: a closed session shows as a failed write.
                return match c.write(b"fetch sockwatch\n") {
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                };
            }
            loop {
                match c.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => continue, // a greeting or a goodbye line: read on
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        });
        closed += (before - conns.len()) as u64;
        if mode == Mode::Trickle && last_trickle.elapsed() > Duration::from_millis(200) {
            for c in &mut conns {
                let _ = c.write(b"\n");
            }
            last_trickle = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (made, closed)
}

/// A TCP connection from `local` (bind before connect), so the flood is its own peer.
fn connect_from(local: std::net::Ipv4Addr, to: std::net::SocketAddrV4) -> Option<TcpStream> {
    use std::os::fd::FromRawFd;
    let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned by the TcpStream from here on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let stream = TcpStream::from_raw_fd(fd);
        let (from, dest) = (sa(local, 0), sa(*to.ip(), to.port()));
        if libc::bind(fd, (&raw const from).cast(), len) != 0 || libc::connect(fd, (&raw const dest).cast(), len) != 0 {
            return None;
        }
        Some(stream)
    }
}

/// The flood, as a child process: started by [`Flood::start`], stopped by closing its
/// standard input, then it prints what it did.
fn flood_child() {
    let Ok(target) = std::env::var("SOCKWATCH_FLOOD") else { return };
    raise_fd_limit();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        flag.store(true, Ordering::Relaxed);
    });
    // Addresses from `first` on, one connection each, reconnecting from the next address as
    // the server closes them.
    let many = |first: [u8; 4], n: usize| {
        let next = std::sync::atomic::AtomicU32::new(0);
        move || {
            let i = next.fetch_add(1, Ordering::Relaxed) % n as u32;
            std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::from(first)) + i)
        }
    };
    if let Some(addr) = target.strip_prefix("tcpidle:") {
        // One served keep-alive session from each of SERVED_IDLE addresses.
        let to: std::net::SocketAddrV4 = addr.parse().unwrap();
        let from = many([127, 0, 12, 0], SERVED_IDLE);
        let (made, closed) = flood(SERVED_IDLE, Mode::ServedIdle, || connect_from(from(), to), &stop);
        println!("FLOOD made={made} closed={closed}");
        return;
    }
    let (made, closed) = match target.strip_prefix("tcpmany:") {
        // One silent connection from each of HOSTILE addresses (127.0.8.0 on), reconnecting
        // from the next address as the server closes them.
        Some(addr) => {
            let to: std::net::SocketAddrV4 = addr.parse().unwrap();
            let next = std::sync::atomic::AtomicU32::new(0);
            let from = || {
                let i = next.fetch_add(1, Ordering::Relaxed) % HOSTILE as u32;
                std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 0, 8, 0)) + i)
            };
            flood(HOSTILE, Mode::Silent, || connect_from(from(), to), &stop)
        }
        None => match target.strip_prefix("tcp:") {
            Some(addr) => {
                let to: std::net::SocketAddrV4 = addr.parse().unwrap();
                flood(HOSTILE, Mode::Silent, || connect_from([127, 0, 0, 2].into(), to), &stop)
            }
            None => match target.strip_prefix("pipeline:") {
                Some(path) => flood(200, Mode::Pipeline, || UnixStream::connect(path).ok(), &stop),
                None => {
                    let path = target.strip_prefix("unix:").unwrap().to_owned();
                    flood(HOSTILE, Mode::Trickle, || UnixStream::connect(&path).ok(), &stop)
                }
            },
        },
    };
    println!("FLOOD made={made} closed={closed}");
}

struct Flood(Option<std::process::Child>);

impl Flood {
    /// Starts the flood child against `target` (`tcp:ADDR` or `unix:PATH`) and lets it fill
    /// every slot.
    fn start(target: &str) -> Flood {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["flood_child", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
            .env("SOCKWATCH_FLOOD", target)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        Flood(Some(child))
    }

    /// Stops it: (connections made, closed by the server).
    fn finish(mut self) -> (u64, u64) {
        let mut child = self.0.take().unwrap();
        drop(child.stdin.take());
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        child.wait().unwrap();
        let line =
            out.split("FLOOD ").nth(1).and_then(|l| l.lines().next()).unwrap_or_else(|| panic!("flood said {out:?}"));
        let num = |k: &str| line.split(' ').find_map(|kv| kv.strip_prefix(k)).unwrap().parse().unwrap();
        (num("made="), num("closed="))
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The flood needs a few thousand descriptors: the soft limit up to the hard one.
fn raise_fd_limit() {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointer to an rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    assert!(l.rlim_cur >= 3 * HOSTILE as u64, "RLIMIT_NOFILE {} is too low for the flood", l.rlim_cur);
}

fn silent_connections_from_one_client_cannot_deny_a_scrape() {
    let _serial = one_at_a_time();
    let d = Served::start(&[]);
    let baseline = worst_scrape(&d.addr);
    let flood = Flood::start(&format!("tcp:{}", d.addr));
    let mut slow = Vec::new();
    for i in 0..8 {
        let t = Instant::now();
        let (status, body) = http_get(&d.addr, "/metrics");
        let took = t.elapsed();
        eprintln!("scrape {i} during the flood: {took:?} (without it: {baseline:?})");
        assert_eq!(status, 200);
        assert!(body.contains("sockwatch_samples_total"));
        slow.extend((took >= SCRAPE_TIMEOUT).then_some(took));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(slow.is_empty(), "scrapes past the scrape timeout with {HOSTILE} hostile connections: {slow:?}");
    let (made, closed) = flood.finish();
    eprintln!("flood: {made} connections made, {closed} closed by the server");
    assert!(closed > 0, "the server never closed a silent connection to make room");
}

/// The same flood spread over 2,000 source addresses, one connection each, as many as the
/// scraper holds: 30 scrapes are each answered within the scrape timeout. (Before: ties
/// between clients of one connection evicted the scraper's new connection; 12 to 18 of 30
/// reset.)
fn silent_connections_from_many_addresses_cannot_deny_a_scrape() {
    let (made, closed) = thirty_scrapes_during("tcpmany", Duration::from_millis(100));
    eprintln!("flood from {HOSTILE} addresses: {made} connections made, {closed} closed by the server");
    assert!(made > HOSTILE as u64 && closed > 0, "the flood filled the table and was evicted ({made}, {closed})");
}

/// 1,000 addresses that each have one request answered and then idle on keep-alive,
/// reconnecting from the next address when closed (twice the 512 slots): 30 scrapes from
/// 127.0.0.1, every 0.5 s, are each answered. (Before: a new connection that had not yet
/// sent its request went before every served idle session, so the scraper's was evicted:
/// 10-15 of 30 reset.)
fn served_idle_sessions_from_many_addresses_cannot_deny_a_scrape() {
    let (made, closed) = thirty_scrapes_during("tcpidle", Duration::from_millis(500));
    eprintln!("served idle flood from {SERVED_IDLE} addresses: {made} connections made, {closed} closed by the server");
    assert!(closed > 0, "the flood filled the table and was evicted ({made}, {closed})");
}

/// Thirty scrapes, `pause` apart, while a flood of `kind` runs: each must be answered with
/// the metrics within the scrape timeout. The flood's (connections made, closed by the
/// server).
fn thirty_scrapes_during(kind: &str, pause: Duration) -> (u64, u64) {
    let _serial = one_at_a_time();
    let d = Served::start(&[]);
    let baseline = worst_scrape(&d.addr);
    let flood = Flood::start(&format!("{kind}:{}", d.addr));
    let mut failed = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let t = Instant::now();
        let answer = std::panic::catch_unwind(|| http_get(&d.addr, "/metrics"));
        let took = t.elapsed();
        slowest = slowest.max(took);
        match answer {
            Ok((200, body)) if body.contains("sockwatch_samples_total") && took < SCRAPE_TIMEOUT => {}
            Ok((status, _)) => failed.push(format!("scrape {i}: {status} in {took:?}")),
            Err(_) => failed.push(format!("scrape {i}: reset after {took:?}")),
        }
        std::thread::sleep(pause);
    }
    let counts = flood.finish();
    eprintln!("slowest scrape during the {kind} flood {slowest:?}, without it {baseline:?}");
    assert!(failed.is_empty(), "{} of 30 scrapes failed during the {kind} flood: {failed:?}", failed.len());
    counts
}

fn trickling_munin_sessions_cannot_lock_out_a_fetch() {
    let _serial = one_at_a_time();
    munin_fetches_during("unix");
}

/// Sessions that pipeline fetches and never read an answer used to stay "busy" while the
/// shim's write blocked, for the whole idle timeout: 64 of them locked munin-node out.
fn munin_sessions_that_never_read_cannot_lock_out_a_fetch() {
    let _serial = one_at_a_time();
    munin_fetches_during("pipeline");
}

/// Four fetches, each answered within munin-node's plugin timeout, while a flood of `kind`
/// holds the shim.
fn munin_fetches_during(kind: &str) {
    let dir = std::env::temp_dir().join(format!("sockwatch-flood-{kind}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("munin.sock");
    let _d = Served::start(&["--munin.socket", sock.to_str().unwrap()]);
    let baseline = (0..4).map(|_| munin_fetch(&sock)).max().unwrap();
    let flood = Flood::start(&format!("{kind}:{}", sock.display()));
    for i in 0..4 {
        let took = munin_fetch(&sock);
        eprintln!("munin fetch {i} during the {kind} flood: {took:?} (without it: {baseline:?})");
        assert!(
            took < MUNIN_PLUGIN_TIMEOUT,
            "fetch {i} took {took:?} during a {kind} flood (without it: {baseline:?})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (made, closed) = flood.finish();
    eprintln!("munin {kind} flood: {made} sessions made, {closed} closed by the shim");
    assert!(closed > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One Munin session: connect, read the greeting, fetch a graph to its end. How long it took.
fn munin_fetch(sock: &std::path::Path) -> Duration {
    let t = Instant::now();
    let s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(MUNIN_PLUGIN_TIMEOUT * 3)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("# munin node at "), "{line:?}");
    (&s).write_all(b"fetch sockwatch_tcp_states\n").unwrap();
    let mut values = 0;
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "session closed before the fetch ended");
        if line == ".\n" {
            break;
        }
        values += usize::from(line.contains(".value "));
    }
    assert!(values > 5, "{values} values");
    t.elapsed()
}

/// The slowest of four scrapes with nothing else going on: the baseline a test prints its
/// figures beside.
fn worst_scrape(addr: &str) -> Duration {
    (0..4)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(http_get(addr, "/metrics").0, 200);
            t.elapsed()
        })
        .max()
        .unwrap()
}

/// 100 connections from one address, each guessing a different password at once, right
/// after a restart (nothing cached): a scraper from another address with the right one is
/// answered in the time of a few password checks, not after every guess has paid for
/// bcrypt. (Before: 5.1 s, a hundred checks.) The baseline is this run's own: scrapes by
/// users never seen before, each paying for one check.
fn password_guessing_from_one_address_does_not_starve_a_scrape() {
    let _serial = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("sockwatch-guess-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("web.yml");
    let baseline_users: String =
        (0..3).map(|i| format!("  baseline{i}: {}\n", bcrypt::hash(format!("pw{i}"), 8).unwrap())).collect();
    std::fs::write(
        &cfg,
        format!("basic_auth_users:\n  prometheus: {}\n{baseline_users}", bcrypt::hash("right", 8).unwrap()),
    )
    .unwrap();
    let d = Served::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let to: std::net::SocketAddrV4 = d.addr.parse().unwrap();
    let header_for = |user: &str, pw: &str| {
        format!("GET /metrics HTTP/1.0\r\nAuthorization: {}\r\n\r\n", basic_auth(&format!("{user}:{pw}")))
    };
    let header = |pw: &str| header_for("prometheus", pw);
    // One check's time on this host now: the slowest of three first scrapes.
    let one_check = (0..3)
        .map(|i| {
            let t = Instant::now();
            let mut s = TcpStream::connect(&d.addr).unwrap();
            s.write_all(header_for(&format!("baseline{i}"), &format!("pw{i}")).as_bytes()).unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).unwrap();
            assert!(resp.starts_with("HTTP/1.0 200"), "{}", resp.lines().next().unwrap_or(""));
            t.elapsed()
        })
        .max()
        .unwrap();
    let guesses: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = connect_from([127, 0, 0, 2].into(), to).expect("connect from 127.0.0.2");
            s.write_all(header(&format!("wrong{i:02}")).as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let mut s = TcpStream::connect(&d.addr).unwrap();
    s.write_all(header("right").as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let took = t.elapsed();
    eprintln!("the right password during 100 guesses: {took:?} (one check without them: {one_check:?})");
    assert!(resp.starts_with("HTTP/1.0 200"), "{}", resp.lines().next().unwrap_or(""));
    // Queued behind every guess it would take a hundred checks; ten is the bound.
    let bound = (one_check * 10).min(SCRAPE_TIMEOUT);
    assert!(took < bound, "answered after {took:?}, more than ten checks' time {bound:?}");
    // The guesser's extra attempts were shed (429) instead of queued for bcrypt.
    let shed = guesses
        .into_iter()
        .filter(|mut g| {
            let mut r = String::new();
            let _ = g.read_to_string(&mut r);
            r.starts_with("HTTP/1.0 429")
        })
        .count();
    assert!(shed >= 90, "{shed} of 100 guesses shed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// 300 addresses guessing passwords two connections at a time, retrying the moment each is
/// answered: six scrapes with the right password, from another address, are each answered
/// within the scrape timeout. (Before: all six timed out at 10 s; checks ran first come
/// first served.)
fn password_guessing_from_300_addresses_does_not_starve_a_scrape() {
    let _serial = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("sockwatch-guess300-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("web.yml");
    // Six scrapers, each with its own user, so that every scrape pays for bcrypt (a verified
    // header is answered from the cache afterwards).
    let users: String =
        (0..6).map(|i| format!("  scraper{i}: {}\n", bcrypt::hash(format!("right{i}"), 6).unwrap())).collect();
    std::fs::write(&cfg, format!("basic_auth_users:\n  prometheus: {}\n{users}", bcrypt::hash("right", 6).unwrap()))
        .unwrap();
    let d = Served::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let to: std::net::SocketAddrV4 = d.addr.parse().unwrap();
    let header_for = |user: &str, pw: &str| {
        format!("GET /metrics HTTP/1.0\r\nAuthorization: {}\r\n\r\n", basic_auth(&format!("{user}:{pw}")))
    };
    let header = |pw: &str| header_for("prometheus", pw);
    let stop = Arc::new(AtomicBool::new(false));
    let guessed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let guessers: Vec<_> = (0..600u32)
        .map(|i| {
            let (stop, guessed) = (stop.clone(), guessed.clone());
            let from = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 0, 20, 0)) + i / 2);
            let guess = header(&format!("wrong{i}"));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(mut s) = connect_from(from, to) else { continue };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                    let _ = s.write_all(guess.as_bytes());
                    let _ = s.read_to_end(&mut Vec::new());
                    guessed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let mut slow = Vec::new();
    for i in 0..6 {
        let t = Instant::now();
        let mut s = connect_from(std::net::Ipv4Addr::new(127, 0, 30, i as u8 + 1), to).unwrap();
        s.set_read_timeout(Some(SCRAPE_TIMEOUT * 2)).unwrap();
        s.write_all(header_for(&format!("scraper{i}"), &format!("right{i}")).as_bytes()).unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        let took = t.elapsed();
        eprintln!("scrape {i} during 300 addresses' guessing: {took:?}");
        let status = resp.lines().next().unwrap_or("").to_owned();
        if !status.starts_with("HTTP/1.0 200") || took >= SCRAPE_TIMEOUT {
            slow.push(format!("scrape {i}: {status:?} after {took:?}"));
        }
        // A new address and user each time: nothing of a previous success helps it.
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    for g in guessers {
        g.join().unwrap();
    }
    eprintln!("{} guesses answered", guessed.load(Ordering::Relaxed));
    assert!(slow.is_empty(), "{slow:?}");
    assert!(guessed.load(Ordering::Relaxed) > 600, "the guessers kept guessing");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Out of file descriptors, every accept() fails until one frees: the failure is logged
/// once, and its end once (it was logged ten times a second).
fn accept_failures_are_logged_once_per_state_change() {
    let _serial = one_at_a_time();
    if !have_command("prlimit") {
        skip("accept_failures_are_logged_once_per_state_change", "needs prlimit (util-linux)");
        return;
    }
    let d = Served::start(&[]);
    // Few descriptors left to the daemon, then more connections than it can take. How many
    // it holds depends on the host (a kept file and socket per namespace): the limit is
    // what it holds now plus a few, never a fixed number.
    let pid = d.child.id().to_string();
    let holds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let limit = format!("--nofile={}:", holds + 10);
    let out = std::process::Command::new("prlimit").args(["--pid", &pid, &limit]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let held: Vec<TcpStream> = (0..60).filter_map(|_| TcpStream::connect(&d.addr).ok()).collect();
    // accept() retries every 100 ms and fails each time for these 1.5 s: one line.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.log_count("accept failed"), 1, "{:?}", d.log.lock().unwrap());
    drop(held);
    let t = Instant::now();
    while d.log_count("accepting connections again") == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", d.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = std::process::Command::new("prlimit").args(["--pid", &pid, "--nofile=4096:"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(http_get(&d.addr, "/metrics").0, 200);
}

test_main!(
    silent_connections_from_one_client_cannot_deny_a_scrape,
    silent_connections_from_many_addresses_cannot_deny_a_scrape,
    served_idle_sessions_from_many_addresses_cannot_deny_a_scrape,
    trickling_munin_sessions_cannot_lock_out_a_fetch,
    munin_sessions_that_never_read_cannot_lock_out_a_fetch,
    password_guessing_from_one_address_does_not_starve_a_scrape,
    password_guessing_from_300_addresses_does_not_starve_a_scrape,
    accept_failures_are_logged_once_per_state_change,
    ; only_when_asked: flood_child
);
