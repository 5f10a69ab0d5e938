//! Socket memory: what TCP and UDP buffers hold, host-wide, against `net.ipv4.tcp_mem` and
//! `udp_mem`, and whether the kernel is under memory pressure for them.
//!
//! `/proc/net/protocols` has one line per protocol; its `memory` column is the protocol's
//! `sk_memory_allocated` in pages (TCP and TCPv6 share one count, as do UDP and UDPv6:
//! the same figure as sockstat's `mem`), its `press` column `yes`/`no` (`NI`: not
//! implemented). `tcp_mem` and `udp_mem` are three page counts, `min pressure max`:
//! - above *pressure* the kernel enters memory pressure: buffers are shrunk, new
//!   allocations held to their minimum (TcpExt `TCPMemoryPressures` counts the entries);
//! - at *max* allocations fail: TCP drops incoming segments and aborts connections
//!   (`TCPAbortOnMemory`, "out of memory -- consider tuning tcp_mem"), UDP drops datagrams
//!   (Udp `MemErrors`).
//!
//! All of it is **host-wide**: one count and one set of limits for every network namespace;
//! the sysctls exist in the host's namespace only (inside another, the limits are `None`).

use std::path::Path;

use crate::sources::kernel::{read_optional, read_required, SourceError};

/// One protocol's use and limits, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProtocolMemory {
    pub used_bytes: u64,
    /// The kernel is in memory pressure for this protocol now.
    pub pressure: Option<bool>,
    /// `tcp_mem` / `udp_mem` in bytes: (min, pressure, max).
    pub limits: Option<[u64; 3]>,
}

impl ProtocolMemory {
    /// Use ÷ the hard limit (`max`): at 1 allocations fail.
    pub fn utilization(&self) -> Option<f64> {
        use crate::sources::kernel::ratio::{ratio, AtZero};
        ratio(self.used_bytes as f64, self.limits?[2] as f64, AtZero::Exhausted)
    }

    /// Use ÷ the pressure threshold: at 1 the kernel starts shrinking buffers.
    pub fn pressure_utilization(&self) -> Option<f64> {
        use crate::sources::kernel::ratio::{ratio, AtZero};
        ratio(self.used_bytes as f64, self.limits?[1] as f64, AtZero::Exhausted)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SocketMemory {
    pub tcp: ProtocolMemory,
    pub udp: ProtocolMemory,
}

pub fn read(proc_root: &Path) -> Result<SocketMemory, SourceError> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    read_with_page(proc_root, page)
}

pub fn read_with_page(proc_root: &Path, page: u64) -> Result<SocketMemory, SourceError> {
    let path = proc_root.join("net/protocols");
    let text = read_required(&path, "/proc/net/protocols")?;
    let mut out = SocketMemory::default();
    for (name, slot, sysctl) in [("TCP", &mut out.tcp, "tcp_mem"), ("UDP", &mut out.udp, "udp_mem")] {
        let (pages, pressure) = protocol_line(&text, name, &path)?;
        slot.used_bytes = pages.saturating_mul(page);
        slot.pressure = pressure;
        let limit_path = proc_root.join("sys/net/ipv4").join(sysctl);
        if let Some(text) = read_optional(&limit_path)? {
            slot.limits = Some(parse_limits(&text, &limit_path)?.map(|p| p.saturating_mul(page)));
        }
    }
    Ok(out)
}

/// The `memory` (pages) and `press` columns of one protocol's line, found by the header's
/// names.
pub fn protocol_line(text: &str, protocol: &str, path: &Path) -> Result<(u64, Option<bool>), SourceError> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let (Some(mem_at), Some(press_at)) =
        (header.iter().position(|h| *h == "memory"), header.iter().position(|h| *h == "press"))
    else {
        return Err(SourceError::parse(path, "the header has no \"memory\" and \"press\" columns"));
    };
    let line = lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&protocol))
        .ok_or_else(|| SourceError::parse(path, format!("no {protocol} line")))?;
    let (Some(mem), Some(press)) = (line.get(mem_at), line.get(press_at)) else {
        return Err(SourceError::parse(path, format!("the {protocol} line is short")));
    };
    // -1: the protocol keeps no count (not TCP or UDP on any kernel we know).
    let pages = if *mem == "-1" { 0 } else { crate::sources::kernel::parse_u64(mem, path)? };
    let pressure = match *press {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    };
    Ok((pages, pressure))
}

/// `"287889\t383855\t575778\n"` → the three page counts.
pub fn parse_limits(text: &str, path: &Path) -> Result<[u64; 3], SourceError> {
    let v: Vec<u64> =
        text.split_whitespace().map(|s| crate::sources::kernel::parse_u64(s, path)).collect::<Result<_, _>>()?;
    match v[..] {
        [min, pressure, max] => Ok([min, pressure, max]),
        _ => Err(SourceError::parse(path, format!("expected three page counts (min pressure max), found {}", v.len()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_files() {
        let root = crate::sources::fixture("proc/linux-6.18");
        let m = read_with_page(&root, 4096).unwrap();
        assert_eq!(m.tcp.used_bytes, 103 * 4096);
        assert_eq!(m.tcp.pressure, Some(false));
        assert_eq!(m.tcp.limits, Some([287_889 * 4096, 383_855 * 4096, 575_778 * 4096]));
        assert_eq!(m.udp.used_bytes, 2 * 4096);
        assert_eq!(m.udp.pressure, None, "UDP has no pressure state (NI)");
        assert_eq!(m.tcp.utilization(), Some(103.0 / 575_778.0));
        assert_eq!(m.udp.pressure_utilization(), Some(2.0 / 767_710.0));
    }

    #[test]
    fn malformed_files_are_named() {
        let p = Path::new("/proc/net/protocols");
        let hdr = "protocol  size sockets  memory press maxhdr\n";
        for (text, want) in [
            ("protocol size\nTCP 1\n", "no \"memory\""),
            (hdr, "no TCP line"),
            (&format!("{hdr}TCP 2 3\n") as &str, "short"),
            (&format!("{hdr}TCP 2 3 x no 0\n"), "\"x\""),
        ] {
            let e = protocol_line(text, "TCP", p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("protocols"), "{text:?}: {e}");
        }
        let l = Path::new("/proc/sys/net/ipv4/tcp_mem");
        assert!(parse_limits("1 2\n", l).unwrap_err().to_string().contains("three page counts"));
        assert!(parse_limits("1 2 x\n", l).is_err());
        // Inside a namespace: use and pressure, no limits.
        let (pages, press) = protocol_line(&format!("{hdr}UDP 1 0 -1 NI 0\n"), "UDP", p).unwrap();
        assert_eq!((pages, press), (0, None));
    }
}
