//! `/proc/net/sockstat` and `/proc/net/sockstat6`: O(1) TCP totals kept by the kernel.
//!
//! ```text
//! sockets: used 11
//! TCP: inuse 1 orphan 0 tw 1 alloc 1 mem 268
//! ```
//! `inuse` is per family (`TCP:` counts IPv4, `TCP6:` in sockstat6 counts IPv6); `orphan`,
//! `tw` and `alloc` are shared by both families; `mem` is in pages, for the whole host.
//! Since Linux 6.x `inuse` and `tw` are per network namespace, `alloc` and `mem` are global.

use std::path::Path;

use crate::sources::kernel::{read_optional, read_required, SourceError};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sockstat {
    /// TCP sockets in use, IPv4 plus IPv6 (`TCP: inuse` + `TCP6: inuse`).
    pub inuse: u64,
    /// Orphaned sockets: closed by the application, still held by the kernel.
    pub orphan: u64,
    /// TIME_WAIT sockets (the kernel's `tw_count`).
    pub tw: u64,
    /// Allocated TCP sockets, all states, all families.
    pub alloc: u64,
    /// Memory used by TCP buffers, in bytes (`mem` pages × page size).
    pub mem_bytes: u64,
    /// UDP sockets in use, `[IPv4, IPv6]` (`UDP: inuse`, `UDP6: inuse`; per namespace).
    /// `None` when the line is missing. The UDP source skips a family's dump at 0.
    pub udp_inuse: [Option<u64>; 2],
}

pub fn read(proc_root: &Path) -> Result<Sockstat, SourceError> {
    let path = proc_root.join("net/sockstat");
    let text = read_required(&path, "/proc/net/sockstat")?;
    let mut s = parse_v4(&text, &path)?;
    s.udp_inuse[0] = udp_inuse(&text, "UDP", &path)?;
    // sockstat6 is absent when IPv6 is disabled: then there are no IPv6 sockets.
    let path6 = proc_root.join("net/sockstat6");
    if let Some(text6) = read_optional(&path6)? {
        let v6 = parse_v6_inuse(&text6, &path6)?;
        s.udp_inuse[1] = udp_inuse(&text6, "UDP6", &path6)?;
        // Kernel numbers are added with a check: a wrapped sum would be served as true.
        s.inuse = s.inuse.checked_add(v6).ok_or_else(|| {
            SourceError::parse(&path6, format!("TCP inuse {} + TCP6 inuse {v6} overflows a 64-bit counter", s.inuse))
        })?;
    } else {
        s.udp_inuse[1] = Some(0); // IPv6 disabled: no IPv6 UDP sockets either
    }
    Ok(s)
}

/// `inuse` of the `UDP:` / `UDP6:` line, if the line is there.
pub fn udp_inuse(text: &str, prefix: &str, path: &Path) -> Result<Option<u64>, SourceError> {
    match fields(text, prefix).and_then(|mut pairs| pairs.find(|(name, _)| *name == "inuse")) {
        Some((_, v)) => crate::sources::kernel::parse_u64(v, path).map(Some),
        None => Ok(None),
    }
}

/// The `name value name value` pairs after `prefix:` on the line that starts with it.
fn fields<'a>(text: &'a str, prefix: &str) -> Option<impl Iterator<Item = (&'a str, &'a str)>> {
    let line = text.lines().find_map(|l| l.strip_prefix(prefix)?.strip_prefix(':'))?;
    let mut it = line.split_ascii_whitespace();
    Some(std::iter::from_fn(move || Some((it.next()?, it.next()?))))
}

/// Parses `/proc/net/sockstat` (the `TCP:` line).
pub fn parse_v4(text: &str, path: &Path) -> Result<Sockstat, SourceError> {
    let pairs = fields(text, "TCP").ok_or_else(|| SourceError::parse(path, "no \"TCP:\" line"))?;
    let (mut inuse, mut orphan, mut tw, mut alloc, mut mem) = (None, None, None, None, None);
    for (name, value) in pairs {
        let slot = match name {
            "inuse" => &mut inuse,
            "orphan" => &mut orphan,
            "tw" => &mut tw,
            "alloc" => &mut alloc,
            "mem" => &mut mem,
            _ => continue, // newer kernels may add fields: ignore them
        };
        *slot = Some(crate::sources::kernel::parse_u64(value, path)?);
    }
    let need = |v: Option<u64>, name: &str| {
        v.ok_or_else(|| SourceError::parse(path, format!("\"TCP:\" line has no {name:?} field")))
    };
    Ok(Sockstat {
        inuse: need(inuse, "inuse")?,
        orphan: need(orphan, "orphan")?,
        tw: need(tw, "tw")?,
        alloc: need(alloc, "alloc")?,
        mem_bytes: {
            let pages = need(mem, "mem")?;
            pages.checked_mul(page_size()).ok_or_else(|| {
                SourceError::parse(path, format!("\"TCP:\" mem {pages} pages overflows a 64-bit byte count"))
            })?
        },
        udp_inuse: [None, None],
    })
}

/// Parses `/proc/net/sockstat6` (`TCP6: inuse`).
pub fn parse_v6_inuse(text: &str, path: &Path) -> Result<u64, SourceError> {
    let mut pairs = fields(text, "TCP6").ok_or_else(|| SourceError::parse(path, "no \"TCP6:\" line"))?;
    match pairs.find(|(name, _)| *name == "inuse") {
        Some((_, v)) => crate::sources::kernel::parse_u64(v, path),
        None => Err(SourceError::parse(path, "\"TCP6:\" line has no \"inuse\" field")),
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 only for unknown names.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn sums_that_overflow_are_parse_errors_not_wrapped_values() {
        let root = std::env::temp_dir().join(format!("sockwatch-sockstat-overflow-{}", std::process::id()));
        std::fs::create_dir_all(root.join("net")).unwrap();
        std::fs::write(root.join("net/sockstat"), "TCP: inuse 18446744073709551615 orphan 0 tw 0 alloc 0 mem 1\n")
            .unwrap();
        std::fs::write(root.join("net/sockstat6"), "TCP6: inuse 1\n").unwrap();
        let e = read(&root).unwrap_err().to_string();
        assert!(e.contains("sockstat6") && e.contains("overflows"), "{e}");
        std::fs::write(root.join("net/sockstat"), format!("TCP: inuse 1 orphan 0 tw 0 alloc 0 mem {}\n", u64::MAX / 2))
            .unwrap();
        let e = read(&root).unwrap_err().to_string();
        assert!(e.contains("mem") && e.contains("overflows"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    fn fixture_root(name: &str) -> PathBuf {
        crate::sources::fixture(&format!("proc/{name}"))
    }

    #[test]
    fn linux_6_18_with_ipv6() {
        let s = read(&fixture_root("linux-6.18")).unwrap();
        assert_eq!(s.inuse, 17 + 5, "TCP inuse + TCP6 inuse");
        assert_eq!(s.orphan, 0);
        assert_eq!(s.tw, 600);
        assert_eq!(s.alloc, 23);
        assert_eq!(s.mem_bytes, 0);
        assert_eq!(s.udp_inuse, [Some(4), Some(2)], "UDP: inuse, UDP6: inuse");
        let s = parse_v4("TCP: inuse 1 orphan 0 tw 1 alloc 1 mem 268\n", Path::new("x")).unwrap();
        assert_eq!(s.mem_bytes, 268 * page_size(), "mem is in pages");
    }

    #[test]
    fn linux_4_19_without_sockstat6() {
        // IPv6 disabled: no sockstat6 file, inuse is the IPv4 count alone.
        let s = read(&fixture_root("linux-4.19")).unwrap();
        assert_eq!((s.inuse, s.orphan, s.tw, s.alloc), (28140, 17, 28051, 28160));
        assert_eq!(s.udp_inuse[1], Some(0), "no IPv6, no IPv6 UDP dump");
    }

    #[test]
    fn missing_file_is_missing_error() {
        let err = read(Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(err, SourceError::Missing { .. }), "{err}");
    }

    #[test]
    fn bad_contents_name_the_problem() {
        let p = Path::new("/proc/net/sockstat");
        let e = parse_v4("sockets: used 3\n", p).unwrap_err().to_string();
        assert!(e.contains("no \"TCP:\" line"), "{e}");
        let e = parse_v4("TCP: inuse 1 orphan x tw 1 alloc 1 mem 2\n", p).unwrap_err().to_string();
        assert!(e.contains("\"x\""), "{e}");
        let e = parse_v4("TCP: inuse 1 orphan 0 tw 1 alloc 1\n", p).unwrap_err().to_string();
        assert!(e.contains("\"mem\""), "{e}");
        // Truncated line: odd number of tokens, last name has no value.
        let e = parse_v4("TCP: inuse 1 orphan 0 tw 1 alloc 1 mem\n", p).unwrap_err().to_string();
        assert!(e.contains("\"mem\""), "{e}");
    }

    #[test]
    fn extra_fields_are_ignored() {
        let p = Path::new("x");
        let s = parse_v4("TCP: inuse 1 orphan 2 tw 3 alloc 4 mem 5 future 9\n", p).unwrap();
        assert_eq!((s.inuse, s.orphan, s.tw, s.alloc), (1, 2, 3, 4));
    }
}
