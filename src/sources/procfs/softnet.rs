//! `/proc/net/softnet_stat`: the per-CPU receive backlog. A packet handed to the stack by
//! a driver without NAPI, by RPS or by a veth pair waits in its CPU's backlog; when that
//! queue holds `net.core.netdev_max_backlog` packets the next is dropped
//! (`enqueue_to_backlog`, drop reason `CPU_BACKLOG`) and counted in `dropped`.
//! `time_squeeze` counts the softirq runs that stopped with work left (budget or time
//! used up): packets then wait longer and the queues grow.
//!
//! One line per online CPU, hexadecimal columns (`softnet_seq_show`,
//! `net/core/net-procfs.c`), which grew with the kernel:
//! - 1 processed, 2 dropped, 3 time_squeeze, 4–9 zeros (fastroute and cpu_collision,
//!   gone), 10 received_rps (2.6.35), 11 flow_limit_count (3.11);
//! - 12 backlog length and 13 the CPU's number (5.10, commit 7d58e6555870);
//! - 14 input_pkt_queue length and 15 process_queue length (6.x).
//!
//! Before 5.10 the line's place is the CPU's place among *online* CPUs, not its number:
//! the series are then labelled by that place. Host-wide: every network namespace shows
//! the same lines, and `netdev_max_backlog` is a host-wide sysctl (absent inside a
//! namespace other than the host's).

use std::path::Path;

use crate::sources::kernel::{read_required, read_u64_sysctl, SourceError};

/// One CPU's line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuBacklog {
    /// The CPU's number (column 13), or the line's place before 5.10.
    pub cpu: u32,
    pub processed: u64,
    /// Packets dropped because this CPU's backlog held `netdev_max_backlog`.
    pub dropped: u64,
    pub time_squeeze: u64,
    /// Packets in the backlog now (column 12, 5.10+).
    pub backlog: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Softnet {
    pub cpus: Vec<CpuBacklog>,
    /// `net.core.netdev_max_backlog` (`None` inside a namespace, where it is hidden).
    pub max_backlog: Option<u64>,
    /// Whether column 13 gave the CPU numbers (5.10+), or lines are numbered by place.
    pub numbered: bool,
}

impl Softnet {
    /// Drops over all CPUs.
    pub fn dropped(&self) -> u64 {
        self.cpus.iter().map(|c| c.dropped).sum()
    }

    pub fn time_squeeze(&self) -> u64 {
        self.cpus.iter().map(|c| c.time_squeeze).sum()
    }

    /// The fullest CPU backlog now ÷ `netdev_max_backlog` (5.10+, with the limit known).
    pub fn backlog_utilization_max(&self) -> Option<f64> {
        let max = self.max_backlog?;
        let fullest = self.cpus.iter().filter_map(|c| c.backlog).max()?;
        crate::sources::kernel::ratio::ratio(
            fullest as f64,
            max as f64,
            crate::sources::kernel::ratio::AtZero::Exhausted,
        )
    }
}

pub fn read(proc_root: &Path) -> Result<Softnet, SourceError> {
    let path = proc_root.join("net/softnet_stat");
    let text = read_required(&path, "/proc/net/softnet_stat")?;
    let mut s = parse(&text, &path)?;
    s.max_backlog = read_u64_sysctl(&proc_root.join("sys/net/core/netdev_max_backlog"))?;
    Ok(s)
}

/// The most CPUs a Linux kernel can be built for (`CONFIG_NR_CPUS` is at most 8,192): a file
/// with more lines is not the kernel's, and each line would be a series.
pub const MAX_CPUS: usize = 8192;

/// Parses the file's lines; every line must have the same number of columns, at least 9,
/// each CPU number once and below 2^32, and no more lines than [`MAX_CPUS`].
pub fn parse(text: &str, path: &Path) -> Result<Softnet, SourceError> {
    let mut out = Softnet::default();
    let mut width = None;
    let mut lines_of: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for (place, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        if place == MAX_CPUS {
            return Err(SourceError::parse(
                path,
                format!("more than {MAX_CPUS} lines, more CPUs than a kernel can have: not the kernel's file"),
            ));
        }
        let cols: Vec<u64> =
            line.split_ascii_whitespace().map(|c| u64::from_str_radix(c, 16)).collect::<Result<_, _>>().map_err(
                |_| SourceError::parse(path, format!("line {}: {line:?} is not hexadecimal columns", place + 1)),
            )?;
        if cols.len() < 9 {
            return Err(SourceError::parse(
                path,
                format!("line {}: {} columns, expected at least 9", place + 1, cols.len()),
            ));
        }
        if *width.get_or_insert(cols.len()) != cols.len() {
            return Err(SourceError::parse(
                path,
                format!("line {} has {} columns, line 1 {width:?}", place + 1, cols.len()),
            ));
        }
        let numbered = cols.len() >= 13;
        out.numbered = numbered;
        let cpu = if numbered {
            u32::try_from(cols[12]).map_err(|_| {
                SourceError::parse(path, format!("line {}: CPU number {:#x} is out of range", place + 1, cols[12]))
            })?
        } else {
            place as u32
        };
        if let Some(first) = lines_of.insert(cpu, place + 1) {
            return Err(SourceError::parse(path, format!("line {} repeats CPU {cpu} of line {first}", place + 1)));
        }
        out.cpus.push(CpuBacklog {
            cpu,
            processed: cols[0],
            dropped: cols[1],
            time_squeeze: cols[2],
            backlog: numbered.then(|| cols[11]),
        });
    }
    if out.cpus.is_empty() {
        return Err(SourceError::parse(path, "no CPU lines"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(kernel: &str) -> Softnet {
        let root = crate::sources::fixture(&format!("proc/softnet/{kernel}"));
        read(&root).unwrap()
    }

    #[test]
    fn every_kernel_layout() {
        // 3.10: 10 columns, CPUs by place; 4.19: 11; 5.10: 13 with the CPU number; 6.18: 15.
        let old = fixture("linux-3.10");
        assert!(!old.numbered);
        assert_eq!(old.cpus.iter().map(|c| c.cpu).collect::<Vec<_>>(), [0, 1]);
        assert_eq!((old.cpus[1].processed, old.cpus[1].dropped, old.cpus[1].time_squeeze), (0x1f, 0x2, 0x3));
        assert_eq!(old.backlog_utilization_max(), None, "no backlog column before 5.10");
        let k419 = fixture("linux-4.19");
        assert_eq!((k419.dropped(), k419.time_squeeze()), (0x10 + 0x20, 0x5));
        // 5.10: CPU 1 offline, so the second line is CPU 2.
        let k510 = fixture("linux-5.10");
        assert!(k510.numbered);
        assert_eq!(k510.cpus.iter().map(|c| c.cpu).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(k510.cpus[1].backlog, Some(0x3e8));
        assert_eq!(k510.max_backlog, Some(1000));
        assert_eq!(k510.backlog_utilization_max(), Some(1.0));
        let k618 = fixture("linux-6.18");
        assert_eq!(k618.cpus.len(), 2);
        assert_eq!((k618.cpus[0].processed, k618.cpus[0].dropped), (0x03baeeb6, 0x193));
        assert_eq!(k618.backlog_utilization_max(), Some(0.0));
    }

    #[test]
    fn malformed_lines_are_named() {
        let p = Path::new("/proc/net/softnet_stat");
        for (text, want) in [
            ("", "no CPU lines"),
            ("0000000g 0 0 0 0 0 0 0 0 0\n", "line 1"),
            ("1 2 3\n", "3 columns"),
            ("0 0 0 0 0 0 0 0 0 0\n0 0 0 0 0 0 0 0 0 0 0\n", "line 2 has 11 columns"),
            // A CPU number twice would be two series of one name and labels; one past
            // 2^32 was once clamped into a duplicate.
            ("0 0 0 0 0 0 0 0 0 0 0 0 1\n0 0 0 0 0 0 0 0 0 0 0 0 1\n", "line 2 repeats CPU 1 of line 1"),
            ("0 0 0 0 0 0 0 0 0 0 0 0 100000000\n", "CPU number 0x100000000 is out of range"),
        ] {
            let e = parse(text, p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("softnet_stat"), "{text:?}: {e}");
        }
    }

    /// A megabyte of short lines was 144,001 series: past the most CPUs a kernel can have
    /// it is refused whole.
    #[test]
    fn more_lines_than_cpus_are_refused() {
        let p = Path::new("/proc/net/softnet_stat");
        let line = "0 0 0 0 0 0 0 0 0\n";
        let e = parse(&line.repeat((1 << 20) / line.len()), p).unwrap_err().to_string();
        assert!(e.contains("more than 8192 lines"), "{e}");
        assert_eq!(parse(&line.repeat(MAX_CPUS), p).unwrap().cpus.len(), MAX_CPUS);
    }

    #[test]
    fn this_host() {
        let s = read(Path::new("/proc")).unwrap();
        assert!(!s.cpus.is_empty());
        assert!(s.cpus.iter().all(|c| c.dropped <= c.processed + c.dropped));
    }
}
