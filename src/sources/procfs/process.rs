//! sockwatch's own process, as every Prometheus exporter reports it (`process_*`): CPU
//! time, memory, descriptors against their limit, threads and start time, from
//! `/proc/self/stat`, `/proc/self/fd`, `getrlimit` and `/proc/stat`'s `btime`. Always the
//! real `/proc/self`, whatever `--path.procfs` says (that names the host's tree to read).

use std::path::Path;

use crate::sources::kernel::SourceError;

/// The figures `process_*` exports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    /// Unix time the process started, seconds.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    /// `RLIMIT_NOFILE`'s soft limit: past it `accept()` fails with EMFILE.
    pub max_fds: u64,
}

/// The fields of `/proc/PID/stat` after the command (which may hold spaces and parentheses:
/// everything up to the last `)` is skipped).
fn fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_ascii_whitespace().collect())
}

/// When a process started, in clock ticks since boot (field 22 of `/proc/PID/stat`): with
/// its PID, what tells one process from a later one that reused the PID.
pub fn start_ticks(stat: &str) -> Option<u64> {
    fields(stat)?.get(22 - 3)?.parse().ok()
}

/// Parses `/proc/self/stat` with the clock tick, page size and boot time it needs.
pub fn parse_stat(stat: &str, ticks_per_second: f64, page_size: u64, boot_time: u64) -> Option<ProcessStats> {
    // After the command: field 3 (state) is index 0, so field N is index N - 3.
    let f = fields(stat)?;
    let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    let ticks = |v: u64| v as f64 / ticks_per_second;
    Some(ProcessStats {
        cpu_seconds: ticks(n(14)? + n(15)?),
        threads: n(20)?,
        start_time_seconds: boot_time as f64 + ticks(n(22)?),
        virtual_bytes: n(23)?,
        resident_bytes: n(24)?.saturating_mul(page_size),
        open_fds: 0,
        max_fds: 0,
    })
}

/// `btime` of `/proc/stat`: when the system booted, Unix seconds.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// Reads this process's figures.
pub fn read() -> Result<ProcessStats, SourceError> {
    let stat_path = Path::new("/proc/self/stat");
    let stat = crate::sources::kernel::read_required(stat_path, "/proc/self/stat")?;
    // The boot time does not change: /proc/stat (a line per CPU) is read once.
    static BOOT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let btime = BOOT
        .get_or_init(|| {
            let text = crate::sources::kernel::read_required(Path::new("/proc/stat"), "/proc/stat").ok()?;
            boot_time(&text)
        })
        .ok_or_else(|| SourceError::parse(Path::new("/proc/stat"), "unreadable, or no btime line"))?;
    // SAFETY: sysconf has no preconditions.
    let (tck, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let mut s = parse_stat(&stat, tck.max(1) as f64, page.max(1) as u64, btime)
        .ok_or_else(|| SourceError::parse(stat_path, "too few fields"))?;
    // Counted as the descriptor scan counts (`fds`): the size stat() reports on Linux 6.2+,
    // a listing before (less its own descriptor).
    let fd_dir = Path::new("/proc/self/fd");
    let io = |e| SourceError::Io { path: fd_dir.to_owned(), source: e };
    s.open_fds = match std::fs::metadata(fd_dir).map_err(io)?.len() {
        0 => super::fds::count_fds(fd_dir, super::fds::Count::List).map_err(io)?.saturating_sub(1),
        n => n,
    };
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        s.max_fds = limit.rlim_cur;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_captured_stat_line() {
        // A command with a space and a parenthesis in it, as a process may name itself.
        let stat = "4242 (sock (watch) x) S 1 4242 4242 0 -1 4194560 2370 0 0 0 150 75 0 0 20 0 7 0 123400 \
                    52609024 2140 18446744073709551615 1 1 0 0 0 0 0 4096 17664 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(stat, 100.0, 4096, 1_700_000_000).unwrap();
        assert_eq!(s.cpu_seconds, 2.25);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_time_seconds, 1_700_000_000.0 + 1234.0);
        assert_eq!(start_ticks(stat), Some(123_400));
        assert_eq!((s.virtual_bytes, s.resident_bytes), (52_609_024, 2140 * 4096));
        assert_eq!(parse_stat("4242 (x) S 1 2", 100.0, 4096, 0), None, "truncated");
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000));
    }

    #[test]
    fn this_process() {
        let s = read().unwrap();
        assert!(s.threads >= 1 && s.resident_bytes > 0 && s.open_fds >= 3 && s.max_fds >= s.open_fds);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 3600.0, "{s:?}");
    }
}
