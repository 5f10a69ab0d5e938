//! /proc parsers: any text, including truncated and malformed files, gives a value or
//! an error, never a panic (overflow checks are on in the fuzz build). Each input is also
//! written into a scratch procfs tree and read through the sources' own `read` entry
//! points, as the sampler calls them: the first byte picks the file, the rest is its text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sockwatch::sources::procfs::{conntrack, fds, limits, neighbour, snmp, sockmem, sockstat, softnet};
use std::path::{Path, PathBuf};

/// Every file a source reads, relative to the procfs root.
const FILES: [&str; 17] = [
    "net/sockstat",
    "net/sockstat6",
    "net/snmp",
    "net/netstat",
    "net/stat/nf_conntrack",
    "sys/net/netfilter/nf_conntrack_count",
    "sys/net/netfilter/nf_conntrack_max",
    "sys/net/ipv4/ip_local_port_range",
    "sys/net/ipv4/ip_local_reserved_ports",
    "net/softnet_stat",
    "net/protocols",
    "net/stat/arp_cache",
    "net/stat/ndisc_cache",
    "sys/net/ipv4/tcp_mem",
    "sys/net/ipv4/udp_mem",
    "sys/net/ipv4/neigh/default/gc_thresh3",
    "sys/fs/file-nr",
];

/// A scratch tree holding a valid file for each, from the 6.18 fixture.
fn tree() -> &'static PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("sockwatch-fuzz-proc-{}", std::process::id()));
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/proc/linux-6.18");
        for f in FILES {
            let dst = root.join(f);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            let _ = std::fs::copy(fixture.join(f), &dst);
        }
        root
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some((&pick, rest)) = data.split_first() {
        let root = tree();
        let file = root.join(FILES[usize::from(pick) % FILES.len()]);
        let saved = std::fs::read(&file).ok();
        std::fs::write(&file, rest).unwrap();
        let _ = sockstat::read(root);
        let _ = conntrack::read(root);
        let _ = snmp::read(root);
        let _ = limits::read(root);
        let _ = softnet::read(root);
        let _ = neighbour::read(root);
        let _ = sockmem::read_with_page(root, 4096);
        let _ = fds::FdScanner::with_count(fds::Count::List).read(root, 3);
        match saved {
            Some(good) => std::fs::write(&file, good).unwrap(),
            None => std::fs::remove_file(&file).unwrap(),
        }
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let p = Path::new("/proc/fuzz");
    let _ = conntrack::parse_stats(text, p);
    // Every column wanted: each value is parsed.
    fn every<'a>(v: &'a mut Option<u64>, _: &str) -> Option<&'a mut Option<u64>> {
        Some(v)
    }
    let _ = snmp::fill_pair(text, "Tcp", p, &mut None, every);
    let _ = snmp::fill_pair(text, "TcpExt", p, &mut None, every);
    let _ = sockstat::parse_v4(text, p);
    let _ = sockstat::parse_v6_inuse(text, p);
    if let Ok((lo, hi)) = limits::parse_port_range(text, p) {
        let _ = limits::count_reserved_in_range(text, lo, hi, p);
    }
    let _ = limits::count_reserved_in_range(text, 0, 65535, p);
    let _ = softnet::parse(text, p);
    let _ = neighbour::parse(text, p, "arp");
    let _ = sockmem::protocol_line(text, "TCP", p);
    let _ = sockmem::parse_limits(text, p);
    let _ = fds::parse_file_nr(text, p);
    let _ = fds::parse_nofile(text);
});
