//! Connection tracking, from the kernel's O(1) counters only.
//!
//! - `nf_conntrack_count` / `_max` / `_buckets` under `/proc/sys/net/netfilter/`, with the
//!   fallbacks of old kernels (`/proc/sys/net/ipv4/netfilter/ip_conntrack_*`,
//!   `/proc/sys/net/nf_conntrack_max`);
//! - `/proc/net/stat/nf_conntrack` (old kernels: `ip_conntrack`): one line of hex counters
//!   per CPU, parsed by the header's column names because the column set changed between
//!   kernels (`searched` became `clashres` in ~5.10, `delete_list` became `chainlength`
//!   in ~5.15). `entries` is the global count repeated on every line; the rest are summed.
//!
//! This module must never open `/proc/net/nf_conntrack` or `/proc/net/ip_conntrack`: those
//! list every entry and take seconds to minutes on a full table, which is the failure
//! sockwatch exists to avoid. A test runs the binary under strace to hold us to that.

use std::path::Path;

use crate::sources::kernel::{read_optional, read_u64_sysctl, SourceError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conntrack {
    /// Entries in the table of this network namespace.
    pub entries: u64,
    /// `nf_conntrack_max`: the table limit (global). `None` if the kernel hides it.
    pub limit: Option<u64>,
    /// `nf_conntrack_buckets`: hash table size (global).
    pub buckets: Option<u64>,
    /// Per-CPU statistics summed, `None` when `/proc/net/stat/nf_conntrack` is absent.
    pub stats: Option<ConntrackStats>,
}

/// Counters from `/proc/net/stat/nf_conntrack`, summed over CPUs. A column this kernel
/// does not have is `None`, so its series is absent rather than a false zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    /// This namespace's entry count (`cnet->count`, the same on every CPU's row: taken
    /// once). What a namespace's table is checked against `nf_conntrack_max` with.
    pub entries: Option<u64>,
    pub drop: Option<u64>,
    pub early_drop: Option<u64>,
    pub insert_failed: Option<u64>,
    pub invalid: Option<u64>,
    pub search_restart: Option<u64>,
    pub found: Option<u64>,
    pub insert: Option<u64>,
    pub clash_resolve: Option<u64>,
}

/// Where each value lives, newest layout first.
const COUNT_PATHS: &[&str] = &["sys/net/netfilter/nf_conntrack_count", "sys/net/ipv4/netfilter/ip_conntrack_count"];
const MAX_PATHS: &[&str] =
    &["sys/net/netfilter/nf_conntrack_max", "sys/net/nf_conntrack_max", "sys/net/ipv4/netfilter/ip_conntrack_max"];
const BUCKETS_PATHS: &[&str] =
    &["sys/net/netfilter/nf_conntrack_buckets", "sys/net/ipv4/netfilter/ip_conntrack_buckets"];
const STAT_PATHS: &[&str] = &["net/stat/nf_conntrack", "net/stat/ip_conntrack"];

fn first_u64(root: &Path, candidates: &[&str]) -> Result<Option<u64>, SourceError> {
    for rel in candidates {
        if let Some(v) = read_u64_sysctl(&root.join(rel))? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

pub fn read(proc_root: &Path) -> Result<Conntrack, SourceError> {
    let entries = first_u64(proc_root, COUNT_PATHS)?.ok_or_else(|| SourceError::Missing {
        path: proc_root.join(COUNT_PATHS[0]),
        what: "conntrack module not loaded",
    })?;
    let limit = first_u64(proc_root, MAX_PATHS)?;
    let buckets = first_u64(proc_root, BUCKETS_PATHS)?;
    let mut stats = None;
    for rel in STAT_PATHS {
        let path = proc_root.join(rel);
        if let Some(text) = read_optional(&path)? {
            stats = Some(parse_stats(&text, &path)?);
            break;
        }
    }
    Ok(Conntrack { entries, limit, buckets, stats })
}

/// Parses the per-CPU table by column name. Unknown columns are skipped; a row whose
/// width differs from the header's, or a value that is not hex, is an error naming it.
pub fn parse_stats(text: &str, path: &Path) -> Result<ConntrackStats, SourceError> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| SourceError::parse(path, "empty file, expected a header line"))?
        .split_ascii_whitespace()
        .collect();
    if header.first() != Some(&"entries") {
        return Err(SourceError::parse(
            path,
            format!("unexpected header, expected it to start with \"entries\": {:?}", header.join(" ")),
        ));
    }
    let mut sums = vec![0u64; header.len()];
    let mut rows = 0usize;
    let mut entries = None;
    for (lineno, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut width = 0;
        for (i, tok) in line.split_ascii_whitespace().enumerate() {
            let Some(sum) = sums.get_mut(i) else {
                width = i + 1;
                continue;
            };
            let v = u64::from_str_radix(tok, 16)
                .map_err(|_| SourceError::parse(path, format!("line {}: {tok:?} is not a hex number", lineno + 2)))?;
            if i == 0 && rows == 0 {
                entries = Some(v);
            }
            *sum = sum.checked_add(v).ok_or_else(|| {
                SourceError::parse(path, format!("column {:?}: the per-CPU sum overflows a 64-bit counter", header[i]))
            })?;
            width = i + 1;
        }
        if width != header.len() {
            return Err(SourceError::parse(
                path,
                format!("line {}: {width} columns, header has {}", lineno + 2, header.len()),
            ));
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(SourceError::parse(path, "no per-CPU rows after the header"));
    }
    let col = |name: &str| header.iter().position(|h| *h == name).map(|i| sums[i]);
    Ok(ConntrackStats {
        entries,
        drop: col("drop"),
        early_drop: col("early_drop"),
        insert_failed: col("insert_failed"),
        invalid: col("invalid"),
        search_restart: col("search_restart"),
        found: col("found"),
        insert: col("insert"),
        clash_resolve: col("clashres"),
    })
}

#[cfg(test)]
#[allow(clippy::identity_op)] // the sums spell out each CPU's value
mod tests {
    use super::*;

    #[test]
    fn a_per_cpu_sum_that_overflows_is_an_error() {
        let text = "entries drop\n00000001 ffffffffffffffff\n00000001 00000001\n";
        let e = parse_stats(text, Path::new("/proc/net/stat/nf_conntrack")).unwrap_err().to_string();
        assert!(e.contains("\"drop\"") && e.contains("overflows"), "{e}");
    }

    use crate::sources::fixture;
    fn stats_of(rel: &str) -> ConntrackStats {
        let p = fixture(rel);
        parse_stats(&std::fs::read_to_string(&p).unwrap(), &p).unwrap()
    }

    #[test]
    fn linux_6_18_header_with_clashres_and_chainlength() {
        const ENTRIES_6_18: u64 = 0x00000263;
        let s = stats_of("nf_conntrack_stat/linux-6.18");
        // Two CPUs; values summed from the hex columns of the capture, entries taken once.
        assert_eq!(s.entries, Some(ENTRIES_6_18));
        assert_eq!(s.found, Some(0x1 + 0x2));
        assert_eq!(s.insert, Some(0x60 + 0x3a));
        assert_eq!(s.invalid, Some(0x4 + 0x0));
        assert_eq!(s.drop, Some(0x0 + 0x2));
        assert_eq!(s.early_drop, Some(0x0 + 0x1));
        assert_eq!(s.insert_failed, Some(0x3 + 0x0));
        assert_eq!(s.search_restart, Some(0x10 + 0x0));
        assert_eq!(s.clash_resolve, Some(0x5 + 0x1));
    }

    #[test]
    fn linux_4_19_header_with_searched() {
        let s = stats_of("nf_conntrack_stat/linux-4.19");
        assert_eq!(s.clash_resolve, None, "4.19 has no clashres column; its 'searched' is not it");
        assert_eq!(s.drop, Some(0x1a2 + 0x0 + 0x31 + 0x7));
        assert_eq!(s.search_restart, Some(0x2 + 0x0 + 0x0 + 0x5));
        assert_eq!(s.insert_failed, Some(0x0 + 0x0 + 0x1 + 0x0));
    }

    #[test]
    fn linux_2_6_header_without_search_restart() {
        // 2.6/3.x kernels: no search_restart column, and a trailing space on each row.
        let s = stats_of("nf_conntrack_stat/linux-2.6.32");
        assert_eq!(s.search_restart, None);
        assert_eq!(s.early_drop, Some(0x0 + 0xb));
        assert_eq!(s.drop, Some(0x3e8 + 0x10));
    }

    #[test]
    fn full_tree_with_old_kernel_fallback_paths() {
        // A 2.6.18-era tree: ip_conntrack_* under /proc/sys/net/ipv4/netfilter/.
        let c = read(&fixture("proc/linux-2.6.18")).unwrap();
        assert_eq!(c.entries, 65231);
        assert_eq!(c.limit, Some(65536));
        assert_eq!(c.buckets, Some(8192));
        assert_eq!(c.stats.unwrap().drop, Some(0x2d + 0x11));
    }

    #[test]
    fn modern_tree() {
        let c = read(&fixture("proc/linux-6.18")).unwrap();
        assert_eq!((c.entries, c.limit, c.buckets), (611, Some(262144), Some(262144)));
        // 6.18 no longer increments these per-CPU counters in normal operation.
        assert_eq!(c.stats.unwrap().drop, Some(0));
    }

    #[test]
    fn module_not_loaded_is_missing() {
        let err = read(&fixture("proc/no-conntrack")).unwrap_err();
        assert!(matches!(err, SourceError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("conntrack module not loaded"), "{err}");
    }

    #[test]
    fn malformed_stats_are_named_errors() {
        let p = Path::new("/proc/net/stat/nf_conntrack");
        for (input, want) in [
            ("", "empty file"),
            ("bogus header\n00 00\n", "unexpected header"),
            ("entries drop\n", "no per-CPU rows"),
            ("entries drop\n0000000a zz\n", "\"zz\" is not a hex number"),
            ("entries drop\n0000000a\n", "1 columns, header has 2"),
            ("entries drop\n0000000a 1 2\n", "3 columns, header has 2"),
        ] {
            let e = parse_stats(input, p).unwrap_err().to_string();
            assert!(e.contains(want), "input {input:?}: got {e}");
            assert!(e.contains("/proc/net/stat/nf_conntrack"), "{e}");
        }
    }
}
