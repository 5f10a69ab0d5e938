//! The sysctl limits that the other numbers are measured against.
//!
//! All files are under `/proc/sys/net/`. `ip_local_port_range` is required (it exists on
//! every kernel with IPv4); the rest are optional, and a sysctl this kernel lacks is `None`.

use std::path::Path;

use crate::sources::kernel::{read_optional, read_required, read_u64_sysctl, SourceError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `ip_local_port_range`, inclusive.
    pub port_range_low: u16,
    pub port_range_high: u16,
    /// Ports of `ip_local_reserved_ports` that fall inside the range.
    pub reserved_in_range: u32,
    pub tcp_max_tw_buckets: Option<u64>,
    pub tcp_fin_timeout: Option<u64>,
    pub tcp_tw_reuse: Option<u64>,
    pub tcp_max_orphans: Option<u64>,
    pub tcp_max_syn_backlog: Option<u64>,
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_tw_timeout`: only on vendor kernels that patch the TIME_WAIT length.
    pub tcp_tw_timeout: Option<u64>,
}

impl Limits {
    /// Ephemeral ports `connect()` can choose from for one destination: the range minus
    /// the reserved ports inside it.
    pub fn port_range_size(&self) -> u32 {
        let span = u32::from(self.port_range_high) + 1 - u32::from(self.port_range_low);
        span.saturating_sub(self.reserved_in_range)
    }

    pub fn in_port_range(&self, port: u16) -> bool {
        (self.port_range_low..=self.port_range_high).contains(&port)
    }
}

pub fn read(proc_root: &Path) -> Result<Limits, SourceError> {
    let ipv4 = proc_root.join("sys/net/ipv4");
    let range_path = ipv4.join("ip_local_port_range");
    let (low, high) = parse_port_range(&read_required(&range_path, "ip_local_port_range")?, &range_path)?;
    let reserved_path = ipv4.join("ip_local_reserved_ports");
    let reserved_in_range = match read_optional(&reserved_path)? {
        Some(text) => count_reserved_in_range(&text, low, high, &reserved_path)?,
        None => 0,
    };
    let sysctl = |rel: &str| read_u64_sysctl(&proc_root.join("sys/net").join(rel));
    Ok(Limits {
        port_range_low: low,
        port_range_high: high,
        reserved_in_range,
        tcp_max_tw_buckets: sysctl("ipv4/tcp_max_tw_buckets")?,
        tcp_fin_timeout: sysctl("ipv4/tcp_fin_timeout")?,
        tcp_tw_reuse: sysctl("ipv4/tcp_tw_reuse")?,
        tcp_max_orphans: sysctl("ipv4/tcp_max_orphans")?,
        tcp_max_syn_backlog: sysctl("ipv4/tcp_max_syn_backlog")?,
        somaxconn: sysctl("core/somaxconn")?,
        tcp_tw_timeout: sysctl("ipv4/tcp_tw_timeout")?,
    })
}

fn parse_port(s: &str, path: &Path) -> Result<u16, SourceError> {
    s.trim().parse::<u16>().map_err(|_| SourceError::parse(path, format!("{s:?} is not a port number")))
}

/// `"32768\t60999\n"` → `(32768, 60999)`.
pub fn parse_port_range(text: &str, path: &Path) -> Result<(u16, u16), SourceError> {
    let mut it = text.split_ascii_whitespace();
    let (Some(lo), Some(hi), None) = (it.next(), it.next(), it.next()) else {
        return Err(SourceError::parse(path, format!("expected two port numbers, found {:?}", text.trim())));
    };
    let (lo, hi) = (parse_port(lo, path)?, parse_port(hi, path)?);
    if lo > hi {
        return Err(SourceError::parse(path, format!("low port {lo} is above high port {hi}")));
    }
    Ok((lo, hi))
}

/// Counts the ports of a reserved-port list (`"8080,9000-9010"`, or empty) that lie in
/// `[low, high]`. Overlapping entries are counted once.
pub fn count_reserved_in_range(text: &str, low: u16, high: u16, path: &Path) -> Result<u32, SourceError> {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for item in text.trim().split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (parse_port(a, path)?, parse_port(b, path)?),
            None => {
                let p = parse_port(item, path)?;
                (p, p)
            }
        };
        if a > b {
            return Err(SourceError::parse(path, format!("reserved range {item:?} is reversed")));
        }
        let (a, b) = (a.max(low), b.min(high));
        if a <= b {
            ranges.push((a, b));
        }
    }
    ranges.sort_unstable();
    let (mut total, mut covered_to) = (0u32, None::<u16>);
    for (a, b) in ranges {
        let start = match covered_to {
            Some(c) if c >= b => continue,
            Some(c) if c >= a => c + 1,
            _ => a,
        };
        total += u32::from(b) - u32::from(start) + 1;
        covered_to = Some(b);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

    #[test]
    fn reserved_ports_counted_inside_range_only() {
        let p = Path::new(P);
        assert_eq!(count_reserved_in_range("\n", 32768, 60999, p).unwrap(), 0);
        assert_eq!(count_reserved_in_range("8080,9000-9010\n", 32768, 60999, p).unwrap(), 0);
        assert_eq!(count_reserved_in_range("40000\n", 32768, 60999, p).unwrap(), 1);
        // Straddles the low edge: 32768..=32770 counts 3.
        assert_eq!(count_reserved_in_range("32000-32770\n", 32768, 60999, p).unwrap(), 3);
        // Overlaps are counted once: 40000..=40010 ∪ 40005..=40020 = 21.
        assert_eq!(count_reserved_in_range("40000-40010,40005-40020", 32768, 60999, p).unwrap(), 21);
        assert_eq!(count_reserved_in_range("40000-40010,40002", 32768, 60999, p).unwrap(), 11);
        assert_eq!(count_reserved_in_range("0-65535", 32768, 60999, p).unwrap(), 28232);
    }

    #[test]
    fn reserved_ports_malformed() {
        let p = Path::new(P);
        for (input, want) in [("abc", "\"abc\" is not a port"), ("70000", "\"70000\""), ("9-3", "reversed")] {
            let e = count_reserved_in_range(input, 1, 65535, p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(P), "{input}: {e}");
        }
    }

    #[test]
    fn port_range() {
        let p = Path::new("/proc/sys/net/ipv4/ip_local_port_range");
        assert_eq!(parse_port_range("32768\t60999\n", p).unwrap(), (32768, 60999));
        for bad in ["", "32768", "1 2 3", "60999 32768", "a b"] {
            assert!(parse_port_range(bad, p).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn range_size_subtracts_reserved() {
        let l = Limits { port_range_low: 32768, port_range_high: 61000, reserved_in_range: 0, ..Default::default() };
        // The operators' example range "32768 61000": 61000 - 32768 = 28232, plus one, the
        // range being inclusive.
        assert_eq!(l.port_range_size(), 28233);
        let l = Limits { reserved_in_range: 233, ..l };
        assert_eq!(l.port_range_size(), 28000);
    }

    #[test]
    fn full_tree() {
        let root = crate::sources::fixture("proc/linux-6.18");
        let l = read(&root).unwrap();
        assert_eq!((l.port_range_low, l.port_range_high, l.reserved_in_range), (32768, 60999, 11));
        assert_eq!(l.tcp_max_tw_buckets, Some(131072));
        assert_eq!(l.tcp_fin_timeout, Some(60));
        assert_eq!(l.tcp_tw_reuse, Some(0));
        // Global sysctl, hidden inside a network namespace: absent, not an error.
        assert_eq!(l.tcp_max_orphans, None);
        assert_eq!(l.tcp_max_syn_backlog, Some(2048));
        assert_eq!(l.somaxconn, Some(4096));
        assert_eq!(l.tcp_tw_timeout, None);
        assert_eq!(l.port_range_size(), 28232 - 11);
    }
}
