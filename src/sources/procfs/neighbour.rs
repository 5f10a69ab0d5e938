//! The neighbour tables (ARP for IPv4, NDISC for IPv6): `/proc/net/stat/arp_cache` and
//! `ndisc_cache` against `gc_thresh1/2/3`.
//!
//! Each table is **host-wide**: one table for every network namespace, its `entries`
//! counting them all, its limits set once (`/proc/sys/net/ipv4/neigh/default/gc_thresh*`,
//! `ipv6` likewise) and its statistics file present in the host's namespace only. Above
//! `gc_thresh2` the kernel runs a forced garbage collection at each new entry; at
//! `gc_thresh3` a new entry fails when that frees nothing ("neighbour table overflow",
//! `table_fulls`): packets to hosts not yet resolved are dropped. `gc_thresh1` is the
//! count below which entries are never collected.
//!
//! The file: a header line of column names, then one line per CPU in hexadecimal.
//! `entries` is the table's count (the same on every line); the other columns are per-CPU
//! counters, summed here. Columns are found by name, so older layouts (no `table_fulls`
//! before 2.6.x) give `None` for what they lack. Since 4.19 `gc_thresh` applies to
//! `gc_entries`, which leaves out permanent and externally learned entries; `entries`
//! counts all, so it can read above `gc_thresh3` without a failure.

use std::path::Path;

use crate::sources::kernel::{read_optional, read_u64_sysctl, SourceError};

/// One table's statistics and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeighbourTable {
    /// `"arp"` or `"ndisc"`.
    pub table: &'static str,
    pub entries: u64,
    /// Forced garbage collections (the table was above `gc_thresh2` or full).
    pub forced_gc_runs: Option<u64>,
    /// New entries refused: the table stayed at `gc_thresh3` after a forced collection.
    pub table_fulls: Option<u64>,
    pub gc_thresh1: Option<u64>,
    pub gc_thresh2: Option<u64>,
    pub gc_thresh3: Option<u64>,
}

impl NeighbourTable {
    /// `entries` ÷ `gc_thresh3`: at 1 new neighbours fail. A `gc_thresh3` of 0 refuses all.
    pub fn utilization(&self) -> Option<f64> {
        use crate::sources::kernel::ratio::{ratio, AtZero};
        ratio(self.entries as f64, self.gc_thresh3? as f64, AtZero::Exhausted)
    }
}

/// The tables present: none inside a namespace other than the host's (the files are the
/// host's only), one per family the kernel has (no `ndisc_cache` with IPv6 off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Neighbours {
    pub tables: Vec<NeighbourTable>,
}

pub fn read(proc_root: &Path) -> Result<Neighbours, SourceError> {
    let mut out = Neighbours::default();
    for (table, file, family) in [("arp", "arp_cache", "ipv4"), ("ndisc", "ndisc_cache", "ipv6")] {
        let path = proc_root.join("net/stat").join(file);
        let Some(text) = read_optional(&path)? else { continue };
        let mut t = parse(&text, &path, table)?;
        let thresh = |n: u8| read_u64_sysctl(&proc_root.join(format!("sys/net/{family}/neigh/default/gc_thresh{n}")));
        (t.gc_thresh1, t.gc_thresh2, t.gc_thresh3) = (thresh(1)?, thresh(2)?, thresh(3)?);
        out.tables.push(t);
    }
    if out.tables.is_empty() {
        return Err(SourceError::Missing {
            path: proc_root.join("net/stat/arp_cache"),
            what: "/proc/net/stat/arp_cache (the host's network namespace only)",
        });
    }
    Ok(out)
}

/// Parses one statistics file: the header names the columns.
pub fn parse(text: &str, path: &Path, table: &'static str) -> Result<NeighbourTable, SourceError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().ok_or_else(|| SourceError::parse(path, "empty"))?.split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let entries_at = col("entries").ok_or_else(|| SourceError::parse(path, "no \"entries\" column in the header"))?;
    let (gc_at, full_at) = (col("forced_gc_runs"), col("table_fulls"));
    let mut t = NeighbourTable { table, ..NeighbourTable::default() };
    let (mut gc, mut full, mut rows) = (0u64, 0u64, 0);
    for (n, line) in lines.enumerate() {
        let cols: Vec<u64> =
            line.split_whitespace().map(|c| u64::from_str_radix(c, 16)).collect::<Result<_, _>>().map_err(|_| {
                SourceError::parse(path, format!("CPU line {}: {line:?} is not hexadecimal columns", n + 1))
            })?;
        if cols.len() != header.len() {
            return Err(SourceError::parse(
                path,
                format!("CPU line {} has {} columns, the header {}", n + 1, cols.len(), header.len()),
            ));
        }
        t.entries = cols[entries_at];
        gc = gc.saturating_add(gc_at.map_or(0, |i| cols[i]));
        full = full.saturating_add(full_at.map_or(0, |i| cols[i]));
        rows += 1;
    }
    if rows == 0 {
        return Err(SourceError::parse(path, "a header but no CPU line"));
    }
    t.forced_gc_runs = gc_at.map(|_| gc);
    t.table_fulls = full_at.map(|_| full);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_tables() {
        let root = crate::sources::fixture("proc/linux-6.18");
        let n = read(&root).unwrap();
        assert_eq!(n.tables.len(), 2);
        let arp = &n.tables[0];
        assert_eq!((arp.table, arp.entries, arp.forced_gc_runs, arp.table_fulls), ("arp", 2, Some(0), Some(0)));
        assert_eq!((arp.gc_thresh1, arp.gc_thresh2, arp.gc_thresh3), (Some(128), Some(512), Some(1024)));
        assert_eq!(arp.utilization(), Some(2.0 / 1024.0));
        let nd = &n.tables[1];
        assert_eq!((nd.table, nd.entries, nd.table_fulls), ("ndisc", 4, Some(3)));
    }

    #[test]
    fn an_overflowing_table_and_an_old_layout() {
        let p = Path::new("/proc/net/stat/arp_cache");
        let text =
            "entries  allocs forced_gc_runs table_fulls\n00000400 1 0000000a 00000007\n00000400 1 00000001 00000002\n";
        let t = parse(text, p, "arp").unwrap();
        assert_eq!((t.entries, t.forced_gc_runs, t.table_fulls), (1024, Some(11), Some(9)));
        // A layout without table_fulls: None, not 0.
        let t = parse("entries allocs\n00000003 00000001\n", p, "arp").unwrap();
        assert_eq!((t.entries, t.table_fulls), (3, None));
    }

    #[test]
    fn malformed_files_are_named() {
        let p = Path::new("/proc/net/stat/arp_cache");
        for (text, want) in [
            ("", "empty"),
            ("allocs\n1\n", "no \"entries\""),
            ("entries allocs\n", "no CPU line"),
            ("entries allocs\n1\n", "1 columns, the header 2"),
            ("entries allocs\nzz 1\n", "not hexadecimal"),
        ] {
            let e = parse(text, p, "arp").unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("arp_cache"), "{text:?}: {e}");
        }
        // Inside a namespace other than the host's: the source is absent, and says where.
        let e = read(Path::new("/nonexistent")).unwrap_err().to_string();
        assert!(e.contains("host's network namespace"), "{e}");
    }
}
