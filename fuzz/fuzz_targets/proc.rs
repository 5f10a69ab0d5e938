//! /proc parsers: any text, including truncated and malformed files, gives a value or
//! an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sockwatch::sources::{conntrack, limits, snmp, sockstat};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let p = Path::new("/proc/fuzz");
    let _ = conntrack::parse_stats(text, p);
    let _ = snmp::for_each_pair(text, "Tcp", p, |_, _| {});
    let _ = snmp::for_each_pair(text, "TcpExt", p, |_, _| {});
    let _ = sockstat::parse_v4(text, p);
    let _ = sockstat::parse_v6_inuse(text, p);
    if let Ok((lo, hi)) = limits::parse_port_range(text, p) {
        let _ = limits::count_reserved_in_range(text, lo, hi, p);
    }
    let _ = limits::count_reserved_in_range(text, 0, 65535, p);
});
