//! TCP and UDP counters from `/proc/net/snmp` (`Tcp:`, `Udp:`, `UdpLite:`),
//! `/proc/net/netstat` (`TcpExt:`) and `/proc/net/snmp6` (`Udp6…`, `UdpLite6…`).
//!
//! Both files hold pairs of lines, a header of names and a line of values with the same
//! prefix; columns differ between kernels, so values are found by name.
//!
//! ```text
//! Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails ...
//! Tcp: 1 200 120000 -1 6 2 0 ...
//! ```

use std::path::Path;

use crate::sources::kernel::{read_optional, read_required, SourceError};

/// Cumulative counters since boot (per network namespace). `None`: this kernel lacks the column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnmpCounters {
    /// The UDP MIBs: (family, protocol) → counters, for each one the kernel has.
    pub udp: Vec<UdpMib>,
    pub active_opens: Option<u64>,
    pub passive_opens: Option<u64>,
    pub attempt_fails: Option<u64>,
    pub estab_resets: Option<u64>,
    pub retrans_segs: Option<u64>,
    pub time_wait_overflow: Option<u64>,
    pub listen_overflows: Option<u64>,
    pub listen_drops: Option<u64>,
    pub abort_on_memory: Option<u64>,
    /// Times TCP entered memory pressure (`tcp_mem` pressure threshold passed).
    pub memory_pressures: Option<u64>,
    /// Milliseconds spent in TCP memory pressure.
    pub memory_pressures_chrono_ms: Option<u64>,
    pub syncookies_sent: Option<u64>,
    pub syncookies_recv: Option<u64>,
    pub syncookies_failed: Option<u64>,
    /// SYN queue full, a cookie sent instead.
    pub reqq_full_do_cookies: Option<u64>,
    /// SYN queue full, SYN dropped (cookies off).
    pub reqq_full_drop: Option<u64>,
}

/// One UDP MIB (`Udp:` of /proc/net/snmp, or `Udp6…` of /proc/net/snmp6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpMib {
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// `udp` or `udplite`.
    pub protocol: &'static str,
    pub in_datagrams: Option<u64>,
    /// Datagrams to a port nobody listens on.
    pub no_ports: Option<u64>,
    /// Datagrams not delivered: receive buffer full, checksum, memory (RcvbufErrors among them).
    pub in_errors: Option<u64>,
    /// Datagrams dropped because a socket's receive buffer was full.
    pub rcvbuf_errors: Option<u64>,
    pub sndbuf_errors: Option<u64>,
    /// Datagrams dropped because UDP as a whole was at `udp_mem` (not one socket's buffer).
    pub mem_errors: Option<u64>,
}

impl SnmpCounters {
    /// A UDP MIB counter summed over IPv4 and IPv6 (UDP, not UDP-Lite); `None` when a
    /// family lacks it.
    pub fn udp_sum(&self, pick: fn(&UdpMib) -> Option<u64>) -> Option<u64> {
        self.udp.iter().filter(|m| m.protocol == "udp").map(pick).sum()
    }

    /// Where a `Tcp:` column of `snmp` goes, if it is read.
    fn tcp_slot<'a>(&'a mut self, name: &str) -> Option<&'a mut Option<u64>> {
        Some(match name {
            "ActiveOpens" => &mut self.active_opens,
            "PassiveOpens" => &mut self.passive_opens,
            "AttemptFails" => &mut self.attempt_fails,
            "EstabResets" => &mut self.estab_resets,
            "RetransSegs" => &mut self.retrans_segs,
            _ => return None,
        })
    }

    /// Where a `TcpExt:` column of `netstat` goes, if it is read.
    fn tcp_ext_slot<'a>(&'a mut self, name: &str) -> Option<&'a mut Option<u64>> {
        Some(match name {
            "TCPTimeWaitOverflow" => &mut self.time_wait_overflow,
            "ListenOverflows" => &mut self.listen_overflows,
            "ListenDrops" => &mut self.listen_drops,
            "TCPAbortOnMemory" => &mut self.abort_on_memory,
            "TCPMemoryPressures" => &mut self.memory_pressures,
            "TCPMemoryPressuresChrono" => &mut self.memory_pressures_chrono_ms,
            "SyncookiesSent" => &mut self.syncookies_sent,
            "SyncookiesRecv" => &mut self.syncookies_recv,
            "SyncookiesFailed" => &mut self.syncookies_failed,
            "TCPReqQFullDoCookies" => &mut self.reqq_full_do_cookies,
            "TCPReqQFullDrop" => &mut self.reqq_full_drop,
            _ => return None,
        })
    }
}

impl UdpMib {
    fn slot(&mut self, name: &str) -> Option<&mut Option<u64>> {
        Some(match name {
            "InDatagrams" => &mut self.in_datagrams,
            "NoPorts" => &mut self.no_ports,
            "InErrors" => &mut self.in_errors,
            "RcvbufErrors" => &mut self.rcvbuf_errors,
            "SndbufErrors" => &mut self.sndbuf_errors,
            "MemErrors" => &mut self.mem_errors,
            _ => return None,
        })
    }
}

/// Everything: the TCP counters and every UDP MIB.
pub fn read(proc_root: &Path) -> Result<SnmpCounters, SourceError> {
    read_parts(proc_root, true)
}

/// The TCP counters only (`snmp` and `netstat`, not `snmp6`): what a namespace's cheap
/// reading needs.
pub fn read_tcp(proc_root: &Path) -> Result<SnmpCounters, SourceError> {
    read_parts(proc_root, false)
}

fn read_parts(proc_root: &Path, udp: bool) -> Result<SnmpCounters, SourceError> {
    let snmp_path = proc_root.join("net/snmp");
    let snmp = read_required(&snmp_path, "/proc/net/snmp")?;
    // snmp6 is absent with IPv6 disabled: no IPv6 MIBs then.
    let snmp6_path = proc_root.join("net/snmp6");
    let snmp6 = if udp { read_optional(&snmp6_path)? } else { None };
    let netstat_path = proc_root.join("net/netstat");
    let netstat = read_optional(&netstat_path)?;
    let mut c = parse_tcp((&snmp, &snmp_path), netstat.as_deref().map(|t| (t, netstat_path.as_path())))?;
    if udp {
        c.udp = parse_udp(&snmp, &snmp_path)?;
    }
    if let Some(snmp6) = snmp6 {
        c.udp.extend(udp6(&snmp6, &snmp6_path)?);
    }
    Ok(c)
}

/// The TCP counters from the texts of `snmp` and `netstat` (each with its path, for
/// errors). netstat (TcpExt) exists on every kernel we support, but a missing file only
/// loses the TcpExt series; it does not take the Tcp counters down with it.
pub fn parse_tcp(snmp: (&str, &Path), netstat: Option<(&str, &Path)>) -> Result<SnmpCounters, SourceError> {
    let (snmp, snmp_path) = snmp;
    let mut c = SnmpCounters::default();
    if !fill_pair(snmp, "Tcp", snmp_path, &mut c, SnmpCounters::tcp_slot)? {
        return Err(SourceError::parse(snmp_path, "no \"Tcp:\" header and value lines"));
    }
    if let Some((netstat, netstat_path)) = netstat {
        fill_pair(netstat, "TcpExt", netstat_path, &mut c, SnmpCounters::tcp_ext_slot)?;
    }
    Ok(c)
}

/// The `Udp:` and `UdpLite:` MIBs of /proc/net/snmp.
fn parse_udp(snmp: &str, snmp_path: &Path) -> Result<Vec<UdpMib>, SourceError> {
    let mut out = Vec::new();
    for (prefix, protocol) in [("Udp", "udp"), ("UdpLite", "udplite")] {
        let mut mib = UdpMib { family: "ipv4", protocol, ..UdpMib::default() };
        if fill_pair(snmp, prefix, snmp_path, &mut mib, UdpMib::slot)? {
            out.push(mib);
        }
    }
    Ok(out)
}

/// The `Udp6…` and `UdpLite6…` lines of /proc/net/snmp6 (one `Name value` per line).
fn udp6(text: &str, path: &Path) -> Result<Vec<UdpMib>, SourceError> {
    let mut udp = UdpMib { family: "ipv6", protocol: "udp", ..UdpMib::default() };
    let mut lite = UdpMib { family: "ipv6", protocol: "udplite", ..UdpMib::default() };
    let (mut seen_udp, mut seen_lite) = (false, false);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(name), Some(raw)) = (fields.next(), fields.next()) else { continue };
        let (mib, field, seen) = if let Some(f) = name.strip_prefix("UdpLite6") {
            (&mut lite, f, &mut seen_lite)
        } else if let Some(f) = name.strip_prefix("Udp6") {
            (&mut udp, f, &mut seen_udp)
        } else {
            continue;
        };
        *seen = true;
        if let Some(slot) = mib.slot(field) {
            let v = raw.parse().map_err(|_| SourceError::parse(path, format!("{name} = {raw:?} is not a number")))?;
            *slot = Some(v);
        }
    }
    Ok([(seen_udp, udp), (seen_lite, lite)].into_iter().filter_map(|(seen, m)| seen.then_some(m)).collect())
}

/// Fills `target` from the `prefix:` header/value pair: each column that `slot` names a
/// place for is parsed and stored; the others are not parsed (netstat's `TcpExt:` line has
/// over a hundred columns and is read for every exported namespace each sample). Returns
/// whether the pair was found. A negative value (`MaxConn -1`) leaves its place empty: none
/// of the counters read can be negative.
pub fn fill_pair<T>(
    text: &str,
    prefix: &str,
    path: &Path,
    target: &mut T,
    slot: impl for<'a> Fn(&'a mut T, &str) -> Option<&'a mut Option<u64>>,
) -> Result<bool, SourceError> {
    let mut lines = text.lines().filter_map(|l| l.strip_prefix(prefix)?.strip_prefix(':'));
    let Some(header) = lines.next() else {
        return Ok(false);
    };
    let values = lines
        .next()
        .ok_or_else(|| SourceError::parse(path, format!("\"{prefix}:\" header line has no value line after it")))?;
    let (mut names, mut vals) = (header.split_ascii_whitespace(), values.split_ascii_whitespace());
    loop {
        match (names.next(), vals.next()) {
            (Some(name), Some(raw)) => {
                let Some(place) = slot(target, name) else { continue };
                match raw.parse::<u64>() {
                    Ok(v) => *place = Some(v),
                    Err(_) if raw.parse::<i64>().is_ok() => {}
                    Err(_) => {
                        return Err(SourceError::parse(path, format!("\"{prefix}:\" {name} = {raw:?} is not a number")))
                    }
                }
            }
            (None, None) => break,
            _ => {
                let (n, v) = (header.split_ascii_whitespace().count(), values.split_ascii_whitespace().count());
                return Err(SourceError::parse(path, format!("\"{prefix}:\" has {n} names but {v} values")));
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn root(name: &str) -> PathBuf {
        crate::sources::fixture(&format!("proc/{name}"))
    }

    #[test]
    fn linux_6_18() {
        let c = read(&root("linux-6.18")).unwrap();
        assert_eq!(c.active_opens, Some(611));
        assert_eq!(c.passive_opens, Some(608));
        assert_eq!(c.attempt_fails, Some(0));
        assert_eq!(c.estab_resets, Some(0));
        assert_eq!(c.retrans_segs, Some(3));
        assert_eq!(c.time_wait_overflow, Some(0));
        assert_eq!(c.listen_overflows, Some(6));
        assert_eq!(c.listen_drops, Some(6));
        assert_eq!(c.abort_on_memory, Some(0));
        let udp = &c.udp[0];
        assert_eq!((udp.family, udp.protocol), ("ipv4", "udp"));
        assert_eq!((udp.in_datagrams, udp.no_ports, udp.in_errors), (Some(1500), Some(12), Some(7)));
        assert_eq!((udp.rcvbuf_errors, udp.sndbuf_errors), (Some(5), Some(1)));
        let families: Vec<_> = c.udp.iter().map(|m| (m.family, m.protocol)).collect();
        assert_eq!(families, [("ipv4", "udp"), ("ipv4", "udplite"), ("ipv6", "udp"), ("ipv6", "udplite")]);
        let udp6 = &c.udp[2];
        assert_eq!((udp6.in_datagrams, udp6.rcvbuf_errors, udp6.no_ports), (Some(42), Some(3), Some(2)));
    }

    #[test]
    fn snmp6_garbage_is_an_error_naming_the_counter() {
        let e = udp6("Udp6InDatagrams x\n", Path::new("/proc/net/snmp6")).unwrap_err().to_string();
        assert!(e.contains("Udp6InDatagrams = \"x\""), "{e}");
        assert!(udp6("Ip6InReceives 5\nlonely\n", Path::new("p")).unwrap().is_empty());
    }

    #[test]
    fn linux_2_6_18_lacks_newer_columns() {
        // 2.6.18's TcpExt has no TCPTimeWaitOverflow column: its series must be absent, not 0.
        let c = read(&root("linux-2.6.18")).unwrap();
        assert_eq!(c.active_opens, Some(1077003));
        assert_eq!(c.estab_resets, Some(8811));
        assert_eq!(c.retrans_segs, Some(21004));
        assert_eq!(c.listen_overflows, Some(0));
        assert_eq!(c.abort_on_memory, Some(0));
        assert_eq!(c.time_wait_overflow, None);
    }

    #[test]
    fn malformed() {
        let p = Path::new("/proc/net/snmp");
        // Every column wanted, into one place.
        fn every<'a>(t: &'a mut (Option<u64>, u32), _: &str) -> Option<&'a mut Option<u64>> {
            t.1 += 1;
            Some(&mut t.0)
        }
        let mut t = (None, 0);
        let e = fill_pair("Tcp: A B\n", "Tcp", p, &mut t, every).unwrap_err();
        assert!(e.to_string().contains("no value line"), "{e}");
        let e = fill_pair("Tcp: A B\nTcp: 1\n", "Tcp", p, &mut t, every).unwrap_err();
        assert!(e.to_string().contains("2 names but 1 values"), "{e}");
        let e = fill_pair("Tcp: A B\nTcp: 1 x\n", "Tcp", p, &mut t, every).unwrap_err();
        assert!(e.to_string().contains("B = \"x\""), "{e}");
        assert!(!fill_pair("Udp: A\nUdp: 1\n", "Tcp", p, &mut t, every).unwrap());
        // The prefix must match whole: "TcpExt:" is not "Tcp:".
        assert!(!fill_pair("TcpExt: A\nTcpExt: 1\n", "Tcp", p, &mut t, every).unwrap());
        // A column not read is not parsed: an odd value there is no error.
        let mut c = SnmpCounters::default();
        assert!(fill_pair("Tcp: X ActiveOpens\nTcp: ? 7\n", "Tcp", p, &mut c, SnmpCounters::tcp_slot).unwrap());
        assert_eq!(c.active_opens, Some(7));
        assert_eq!(t.1, 3, "called for the columns of the pairs found only (A; A, B)");
    }
}
