//! The conntrack breakdown dump with attribution (issue 17) at 100k and 1M entries, side by
//! side in one run:
//!
//! 1. sockwatch's dump (per-state counts, top sources, destinations, NAT mappings), on the
//!    measuring thread's CPU clock (the kernel's work for the dump included: it fills the
//!    replies in our `recv`);
//! 2. a minimal ctnetlink client making the same dump and counting messages (the floor);
//! 3. `conntrack -L > /dev/null` (CPU of the process, user + system);
//! 4. what an operator runs to find who fills the table:
//!    `conntrack -L | awk '{print $5}' | sort | uniq -c | sort -rn | head` (CPU of the
//!    whole pipeline);
//! 5. the daemon's peak RSS (VmHWM) with the breakdown on, after it has dumped the table.
//!
//! The entries are created through ctnetlink (`IPCTNL_MSG_CT_NEW`) in a namespace the bench
//! makes, ESTABLISHED with a 1 h timeout: 4,096 clients toward 50 servers on port 443, a
//! third of them source-translated to one NAT address. `nf_conntrack_max` (host-wide) is
//! raised for the run and restored. Needs root; prints why and exits 0 otherwise.
//!
//!     cargo bench --bench conntrack                      # 100k and 1M entries
//!     cargo bench --bench conntrack -- --sizes 100000 --rounds 3

#[path = "common/measure.rs"]
mod measure;
use measure::{cpu_of, median};

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use sockwatch::sources::ctnetlink::attribution::AttributionConfig;
use sockwatch::sources::ctnetlink::dump::CtDump;
use sockwatch::sources::kernel::netlink::{walk_datagram, DumpSocket};

const NLM_F_REQUEST: u16 = 1;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const CT_NEW: u16 = 1 << 8; // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
const CT_GET: u16 = (1 << 8) | 1;

fn nla(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize((out.len() + 3) & !3, 0);
}

fn nested(out: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    f(out);
    let len = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    out[start + 2..start + 4].copy_from_slice(&(kind | 0x8000).to_ne_bytes());
}

fn tuple(out: &mut Vec<u8>, kind: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) {
    nested(out, kind, |t| {
        nested(t, 1, |ip| {
            nla(ip, 1, &src);
            nla(ip, 2, &dst);
        });
        nested(t, 2, |p| {
            nla(p, 1, &[6]);
            nla(p, 2, &sport.to_be_bytes());
            nla(p, 3, &dport.to_be_bytes());
        });
    });
}

/// Entry `i`: client 10.9.x.y (4,096 of them) → 192.0.2.(i % 50):443; every third one
/// translated to 203.0.113.1 with a NAT port unique per server.
fn entry(out: &mut Vec<u8>, i: u32) {
    let start = out.len();
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&[2, 0, 0, 0]); // nfgenmsg: AF_INET
    let c = i % 4096;
    let src = [10, 9, (c >> 8) as u8, c as u8];
    let sport = 1024 + ((i / 4096) % 64000) as u16;
    let server = [192, 0, 2, (i % 50) as u8];
    tuple(out, 1, src, server, sport, 443);
    if i % 3 == 0 {
        let k = i / 3;
        tuple(out, 2, server, [203, 0, 113, 1], 443, 1024 + ((k / 50) % 64000) as u16);
    } else {
        tuple(out, 2, server, src, 443, sport);
    }
    nla(out, 7, &3600u32.to_be_bytes()); // CTA_TIMEOUT
    nested(out, 4, |p| nested(p, 1, |tcp| nla(tcp, 1, &[3]))); // ESTABLISHED
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    out[start + 4..start + 6].copy_from_slice(&CT_NEW.to_ne_bytes());
    out[start + 6..start + 8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_CREATE).to_ne_bytes());
    out[start + 8..start + 12].copy_from_slice(&i.to_ne_bytes());
}

/// Creates entries `from..to` through ctnetlink; returns how many the kernel refused.
fn create(from: u32, to: u32) -> u64 {
    let mut sock = Socket::new(NETLINK_NETFILTER).unwrap();
    sock.bind_auto().unwrap();
    sock.connect(&SocketAddr::new(0, 0)).unwrap();
    sock.set_non_blocking(true).unwrap();
    let mut refused = 0;
    let mut buf = vec![0u8; 1 << 16];
    let mut batch = Vec::with_capacity(64 * 1024);
    let drain = |sock: &mut Socket, buf: &mut Vec<u8>, refused: &mut u64| {
        while let Ok(n) = sock.recv(&mut &mut buf[..], 0) {
            let _ = walk_datagram("ctnetlink", &buf[..n], 0, |_| Ok(()));
            *refused += buf[..n].len().min(1) as u64; // an error reply
        }
    };
    for i in from..to {
        entry(&mut batch, i);
        if batch.len() > 60 * 1024 || i + 1 == to {
            sock.send(&batch, 0).unwrap();
            batch.clear();
            drain(&mut sock, &mut buf, &mut refused);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    drain(&mut sock, &mut buf, &mut refused);
    refused
}

/// The floor: the same dump, messages counted, nothing parsed.
fn minimal_dump() -> u64 {
    let mut nl = DumpSocket::new("ctnetlink", NETLINK_NETFILTER, Duration::from_secs(30));
    let mut n = 0u64;
    let request = |seq: u32| {
        let mut r = vec![0u8; 20];
        r[0..4].copy_from_slice(&20u32.to_ne_bytes());
        r[4..6].copy_from_slice(&CT_GET.to_ne_bytes());
        r[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        r[8..12].copy_from_slice(&seq.to_ne_bytes());
        r
    };
    nl.dump(request, None, &mut |data, seq| {
        let p = walk_datagram("ctnetlink", data, seq, |_| {
            n += 1;
            Ok(())
        })?;
        Ok(p)
    })
    .unwrap();
    n
}

/// CPU seconds (user + system) of the children waited for during `f`.
fn children_cpu(f: impl FnOnce()) -> f64 {
    let usage = || {
        // SAFETY: valid out-pointer.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
        t(ru.ru_utime) + t(ru.ru_stime)
    };
    let before = usage();
    f();
    usage() - before
}

fn sh_in(ns: &str, script: &str) {
    let ok = Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]).status().unwrap().success();
    assert!(ok, "{script}");
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix(" kB")?.trim().parse().ok()).unwrap_or(0)
}

/// Runs `f` on a thread inside namespace `ns`.
fn inside<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).unwrap();
        // SAFETY: valid fd; this thread only.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        f()
    })
    .join()
    .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<u32> =
        arg("--sizes").unwrap_or_else(|| "100000,1000000".into()).split(',').map(|s| s.parse().unwrap()).collect();
    let rounds: usize = arg("--rounds").map_or(5, |r| r.parse().unwrap());
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0
        || !Command::new("conntrack").arg("--version").output().is_ok_and(|o| o.status.success())
    {
        println!("SKIP benches/conntrack: needs root and conntrack (conntrack-tools)");
        return;
    }
    let max_path = "/proc/sys/net/netfilter/nf_conntrack_max";
    let saved_max = std::fs::read_to_string(max_path).unwrap_or_default();
    println!("| entries | sockwatch dump + attribution | minimal client (floor) | ÷ floor | `conntrack -L > /dev/null` | ÷ it | `conntrack -L \\| awk \\| sort \\| uniq -c` | ÷ it | daemon VmHWM |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        let ns = format!("swct-{n}-{}", std::process::id());
        assert!(Command::new("ip").args(["netns", "add", &ns]).status().unwrap().success());
        // Raised, never lowered (a lower max makes other namespaces drop), and only with the
        // opt-in for host-wide settings.
        let want = n + n / 10 + 1000;
        let now: u32 = std::fs::read_to_string(max_path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        if now < want {
            if !std::env::var("SOCKWATCH_TEST_HOST_SETTINGS").is_ok_and(|v| v == "1") {
                println!(
                    "SKIP {n} entries: nf_conntrack_max {now} < {want}; set SOCKWATCH_TEST_HOST_SETTINGS=1 to raise it"
                );
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
                continue;
            }
            std::fs::write(max_path, want.to_string()).unwrap();
        }
        let refused = inside(&ns, move || create(0, n));
        let count: u64 = Command::new("ip")
            .args(["netns", "exec", &ns, "cat", "/proc/sys/net/netfilter/nf_conntrack_count"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0))
            .unwrap();
        let (mut ours, mut floor, mut list, mut pipeline) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut top = String::new();
        for _ in 0..rounds {
            let (t, b) = inside(&ns, || {
                let mut dump = CtDump::default();
                cpu_of(|| dump.read(120, &AttributionConfig::default()).unwrap())
            });
            assert_eq!(b.total, count, "the dump saw every entry");
            top = format!("{:?}", b.attribution.sources.first());
            ours.push(t);
            floor.push(inside(&ns, || cpu_of(minimal_dump).0));
            list.push(children_cpu(|| sh_in(&ns, "conntrack -L >/dev/null 2>&1")));
            pipeline.push(children_cpu(|| {
                sh_in(
                    &ns,
                    "conntrack -L 2>/dev/null | awk '{print $5}' | sort | uniq -c | sort -rn | head -20 >/dev/null",
                )
            }));
        }
        // The daemon with the breakdown on, in that namespace: its peak RSS after dumping.
        let mut d = Command::new("ip")
            .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_sockwatch"), "serve", "--conntrack.breakdown"])
            .args(["--conntrack.breakdown-interval", "5s", "--web.listen-address", "127.0.0.1:0"])
            .args(["--munin.socket", "", "--log.level", "error"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(12));
        let hwm = vm_hwm_kib(d.id()) as f64 / 1024.0;
        let _ = d.kill();
        let _ = d.wait();
        let (o, f, l, p) = (median(ours), median(floor), median(list), median(pipeline));
        println!(
            "| {count} | {:.0} ms | {:.0} ms | {:.2}× | {:.0} ms | {:.2}× | {:.0} ms | {:.3}× | {hwm:.1} MiB |",
            o * 1e3,
            f * 1e3,
            o / f,
            l * 1e3,
            o / l,
            p * 1e3,
            o / p
        );
        eprintln!("({n} asked, {refused} refused; top source {top})");
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
    if std::fs::read_to_string(max_path).unwrap_or_default().trim() != saved_max.trim() {
        std::fs::write(max_path, saved_max.trim()).unwrap();
    }
}
