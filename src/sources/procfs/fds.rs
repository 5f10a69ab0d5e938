//! File descriptors: the host's open files against `fs.file-max`, and every process's open
//! descriptors against its own `RLIMIT_NOFILE` soft limit, where `accept()`, `socket()`
//! and `open()` fail with EMFILE ("too many open files") long before the host runs short.
//!
//! - **Host**: `/proc/sys/fs/file-nr` is `allocated 0 max` (`fs.file-max`): at `max`
//!   every process gets ENFILE. One count for the whole host, whatever the namespace.
//! - **Per process**: one walk of `/proc/[pid]`. The count is the size `stat()` reports
//!   for `/proc/PID/fd` on Linux 6.2 and later (the kernel counts the open descriptors; no
//!   listing); on older kernels, or a tree that is not procfs (test fixtures), the
//!   directory is listed. The limit is the soft `Max open files` of `/proc/PID/limits`,
//!   kept per process and read again every [`LIMIT_REFRESH`] samples (spread over the
//!   samples by pid), at once for a new process, and every sample for a process past half
//!   its kept limit: a `prlimit` that lowers it is seen within that many samples, and at
//!   once where it matters. A process is told from an earlier one of the same PID by the
//!   inode of its `/proc/PID/fd` (procfs numbers each process's anew, and the `stat` that
//!   counts gives it for free): a reused PID never inherits the old process's limit.
//! - Only the top processes by utilisation are kept, with their command and their
//!   container and pod (from `/proc/PID/cgroup`, read for those only). A user other than
//!   root holds at most half of those places ([`per_user_cap`]): any user can start
//!   processes at their own tiny limits (`RLIMIT_NOFILE` 2), and they must not push a
//!   service at 900 of 1,024 out of the list.
//!
//! Another user's `/proc/PID/fd` is readable by root (CAP_SYS_PTRACE) only: processes that
//! cannot be read are counted, not guessed.

use std::path::{Path, PathBuf};

use super::cgroup::{owner_of, Owner};
use crate::sources::kernel::maps::FxMap;
use crate::sources::kernel::{read_optional, SourceError};

/// Samples between two reads of a process's limit (see the module doc).
pub const LIMIT_REFRESH: u64 = 16;

/// The host's file handles (`fs.file-nr`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileHandles {
    pub allocated: u64,
    pub max: u64,
}

/// One process's descriptors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessFds {
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub command: String,
    pub open: u64,
    /// The soft `RLIMIT_NOFILE`: at it the next descriptor fails with EMFILE.
    pub limit: u64,
    pub owner: Owner,
    /// The process's user (the owner of `/proc/PID/fd`): places in the list are shared out
    /// by it.
    pub uid: u32,
}

impl ProcessFds {
    pub fn utilization(&self) -> f64 {
        use crate::sources::kernel::ratio::{ratio, AtZero};
        ratio(self.open as f64, self.limit as f64, AtZero::Exhausted).unwrap_or(1.0)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Descriptors {
    pub host: Option<FileHandles>,
    /// The processes nearest their limit, fullest first.
    pub top: Vec<ProcessFds>,
    /// Processes whose descriptors were counted.
    pub processes: u64,
    /// Processes whose descriptors or limit could not be read (another user's, as non-root).
    pub unreadable: u64,
    /// How the counts were taken: `"stat"` or `"list"`.
    pub method: &'static str,
}

impl Descriptors {
    pub fn host_utilization(&self) -> Option<f64> {
        use crate::sources::kernel::ratio::{ratio, AtZero};
        let h = self.host?;
        ratio(h.allocated as f64, h.max as f64, AtZero::Exhausted)
    }

    /// The fullest process's open ÷ limit.
    pub fn process_utilization_max(&self) -> Option<f64> {
        self.top.first().map(ProcessFds::utilization)
    }
}

/// How to count a process's descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// `stat("/proc/PID/fd").st_size` (Linux 6.2+ on procfs).
    Stat,
    /// List the directory.
    List,
}

/// Walks the processes each sample; keeps each one's limit between samples.
#[derive(Debug, Default)]
pub struct FdScanner {
    /// pid → (the inode of its `/proc/PID/fd`, limit, the sample it was read in).
    limits: FxMap<u32, (u64, Option<u64>, u64)>,
    samples: u64,
    /// Decided at the first sample for its procfs root; forced by [`FdScanner::with_count`].
    count: Option<(PathBuf, Count)>,
    forced: Option<Count>,
}

impl FdScanner {
    /// A scanner that counts one way whatever the kernel offers (the benchmark).
    pub fn with_count(count: Count) -> Self {
        FdScanner { forced: Some(count), ..FdScanner::default() }
    }

    /// One sample: the host's figures and the `top_k` fullest processes.
    pub fn read(&mut self, proc_root: &Path, top_k: usize) -> Result<Descriptors, SourceError> {
        self.samples += 1;
        let count = self.count_method(proc_root);
        let mut out = Descriptors { method: if count == Count::Stat { "stat" } else { "list" }, ..Default::default() };
        let nr_path = proc_root.join("sys/fs/file-nr");
        if let Some(text) = read_optional(&nr_path)? {
            out.host = Some(parse_file_nr(&text, &nr_path)?);
        }
        if top_k == 0 {
            return Ok(out); // the per-process walk is off
        }
        let dir =
            std::fs::read_dir(proc_root).map_err(|e| SourceError::Io { path: proc_root.to_owned(), source: e })?;
        let mut all: Vec<ProcessFds> = Vec::new();
        let mut seen: FxMap<u32, (u64, Option<u64>, u64)> = FxMap::default();
        let mut path = proc_root.to_path_buf();
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            path.push(&name);
            path.push("fd");
            let counted = count_fds_of(&path, count);
            path.pop();
            let Ok(Counted { open, inode, uid }) = counted else {
                path.pop();
                // Gone since the listing, or another user's (EACCES): counted apart.
                if proc_root.join(pid.to_string()).exists() {
                    out.unreadable += 1;
                }
                continue;
            };
            if open == 0 {
                path.pop();
                continue; // a kernel thread, or a process on its way out
            }
            // Another process that reused the PID: its limit is read at once.
            let kept = self.limits.get(&pid).copied().filter(|k| k.0 == inode);
            let due = match kept {
                None => true,
                Some((_, limit, at)) => {
                    (self.samples + u64::from(pid)) % LIMIT_REFRESH == 0
                        || at + LIMIT_REFRESH <= self.samples
                        || limit.is_some_and(|l| open.saturating_mul(2) >= l)
                }
            };
            let limit = if due {
                path.push("limits");
                let limit = read_optional(&path).ok().flatten().and_then(|t| parse_nofile(&t));
                path.pop();
                seen.insert(pid, (inode, limit, self.samples));
                limit
            } else {
                let (_, limit, at) = kept.unwrap_or((inode, None, 0));
                seen.insert(pid, (inode, limit, at));
                limit
            };
            path.pop();
            let Some(limit) = limit else {
                out.unreadable += 1;
                continue;
            };
            out.processes += 1;
            all.push(ProcessFds { pid, command: String::new(), open, limit, owner: Owner::default(), uid });
        }
        self.limits = seen;
        fullest_shared_by_user(&mut all, top_k);
        for p in &mut all {
            let comm = proc_root.join(p.pid.to_string()).join("comm");
            p.command = read_optional(&comm).ok().flatten().map(|c| c.trim_end().to_owned()).unwrap_or_default();
            p.owner = owner_of(proc_root, p.pid);
        }
        out.top = all;
        Ok(out)
    }

    /// `stat` where the root is procfs on a kernel whose `/proc/PID/fd` reports its count
    /// (its own `fd` directory then has a size of at least 3), else listing.
    fn count_method(&mut self, proc_root: &Path) -> Count {
        if let Some(c) = self.forced {
            return c;
        }
        if let Some((root, c)) = &self.count {
            if root == proc_root {
                return *c;
            }
        }
        let own = proc_root.join(std::process::id().to_string()).join("fd");
        let c = if is_procfs(proc_root) && std::fs::metadata(&own).is_ok_and(|m| m.len() >= 3) {
            Count::Stat
        } else {
            Count::List
        };
        self.count = Some((proc_root.to_owned(), c));
        c
    }
}

fn is_procfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a NUL-terminated path and a statfs buffer.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type == libc::PROC_SUPER_MAGIC }
}

/// At most this many of the `top_k` places go to processes of one user other than root:
/// half, rounded up.
pub fn per_user_cap(top_k: usize) -> usize {
    top_k.div_ceil(2)
}

/// Keeps the `top_k` fullest processes, fullest first, no user but root holding more than
/// [`per_user_cap`] of the places.
fn fullest_shared_by_user(all: &mut Vec<ProcessFds>, top_k: usize) {
    let order = |a: &ProcessFds, b: &ProcessFds| {
        b.utilization().total_cmp(&a.utilization()).then(b.open.cmp(&a.open)).then(a.pid.cmp(&b.pid))
    };
    all.sort_unstable_by(order);
    let (cap, mut held) = (per_user_cap(top_k), FxMap::<u32, usize>::default());
    all.retain(|p| {
        let n = held.entry(p.uid).or_default();
        *n += 1;
        p.uid == 0 || *n <= cap
    });
    all.truncate(top_k);
}

/// A process's descriptors as counted: how many are open, the inode of its `fd` directory
/// (a new one for every process, whatever its PID), and its user.
struct Counted {
    open: u64,
    inode: u64,
    uid: u32,
}

fn count_fds_of(fd_dir: &Path, how: Count) -> std::io::Result<Counted> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(fd_dir)?;
    let open = match how {
        Count::Stat => m.len(),
        Count::List => std::fs::read_dir(fd_dir)?.count() as u64,
    };
    Ok(Counted { open, inode: m.ino(), uid: m.uid() })
}

/// A process's open descriptors.
pub fn count_fds(fd_dir: &Path, how: Count) -> std::io::Result<u64> {
    count_fds_of(fd_dir, how).map(|c| c.open)
}

/// `fs.file-nr`: `allocated  unused(0)  max`.
pub fn parse_file_nr(text: &str, path: &Path) -> Result<FileHandles, SourceError> {
    let v: Vec<u64> =
        text.split_whitespace().map(|s| crate::sources::kernel::parse_u64(s, path)).collect::<Result<_, _>>()?;
    match v[..] {
        [allocated, _, max] => Ok(FileHandles { allocated, max }),
        _ => Err(SourceError::parse(path, format!("expected three numbers (allocated, free, max), found {}", v.len()))),
    }
}

/// The soft limit of the `Max open files` line of `/proc/PID/limits`; `None` if absent or
/// `unlimited` (which the kernel does not allow for descriptors).
pub fn parse_nofile(limits: &str) -> Option<u64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max cpu time              unlimited            unlimited            seconds   \n\
        Max open files            1024                 524288               files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn limits_and_file_nr() {
        assert_eq!(parse_nofile(LIMITS), Some(1024));
        assert_eq!(parse_nofile("Max open files  unlimited unlimited files\n"), None);
        assert_eq!(parse_nofile(""), None);
        let p = Path::new("/proc/sys/fs/file-nr");
        assert_eq!(parse_file_nr("389\t0\t2466093\n", p).unwrap(), FileHandles { allocated: 389, max: 2_466_093 });
        let e = parse_file_nr("389 0\n", p).unwrap_err().to_string();
        assert!(e.contains("three numbers") && e.contains("file-nr"), "{e}");
        assert!(parse_file_nr("a b c", p).is_err());
    }

    /// A made-up tree: two processes with descriptor directories and limits, a kernel
    /// thread with none, a process whose limits file is missing.
    #[test]
    fn a_fixture_tree_is_listed_and_ranked() {
        let root = std::env::temp_dir().join(format!("sockwatch-fds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let proc = |pid: u32, fds: usize, limit: Option<u64>, comm: &str| {
            let d = root.join(pid.to_string());
            std::fs::create_dir_all(d.join("fd")).unwrap();
            for i in 0..fds {
                std::fs::write(d.join("fd").join(i.to_string()), "").unwrap();
            }
            if let Some(l) = limit {
                std::fs::write(d.join("limits"), format!("Max open files {l} {l} files\n")).unwrap();
            }
            std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        };
        proc(10, 6, Some(8), "nearly");
        proc(11, 20, Some(1024), "roomy");
        proc(12, 0, Some(1024), "kthread");
        proc(13, 3, None, "secret");
        std::fs::create_dir_all(root.join("sys/fs")).unwrap();
        std::fs::write(root.join("sys/fs/file-nr"), "500 0 1000\n").unwrap();
        let mut s = FdScanner::default();
        let d = s.read(&root, 1).unwrap();
        assert_eq!(d.method, "list", "not procfs");
        assert_eq!((d.processes, d.unreadable), (2, 1));
        assert_eq!(d.top.len(), 1);
        assert_eq!((d.top[0].pid, d.top[0].open, d.top[0].limit, d.top[0].command.as_str()), (10, 6, 8, "nearly"));
        assert_eq!(d.process_utilization_max(), Some(0.75));
        assert_eq!(d.host_utilization(), Some(0.5));
        // A lowered limit on a process past half its kept limit is read at once.
        std::fs::write(root.join("10/limits"), "Max open files 6 6 files\n").unwrap();
        assert_eq!(s.read(&root, 1).unwrap().top[0].limit, 6);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A PID reused by another process with a far lower limit (16, 12 open, where the old
    /// one had 20,000): its own limit is read in the very next sample, not up to
    /// LIMIT_REFRESH samples later. The new process's `fd` directory is another inode.
    #[test]
    fn a_reused_pid_does_not_inherit_the_old_limit() {
        let root = std::env::temp_dir().join(format!("sockwatch-fds-reuse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let make = |dir: &Path, fds: usize, limit: u64| {
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            for i in 0..fds {
                std::fs::write(dir.join("fd").join(i.to_string()), "").unwrap();
            }
            std::fs::write(dir.join("limits"), format!("Max open files {limit} {limit} files\n")).unwrap();
            std::fs::write(dir.join("comm"), "p\n").unwrap();
        };
        make(&root.join("20"), 4, 20_000);
        let mut s = FdScanner::default();
        // Past the first sample and clear of the spread-out refresh of PID 20.
        for _ in 0..3 {
            assert_eq!(s.read(&root, 5).unwrap().top[0].limit, 20_000);
        }
        // The process exits and another takes its PID: made beside, then moved in, so the
        // two directories are never one inode.
        make(&root.join("new"), 12, 16);
        std::fs::remove_dir_all(root.join("20")).unwrap();
        std::fs::rename(root.join("new"), root.join("20")).unwrap();
        let p = s.read(&root, 5).unwrap().top[0].clone();
        assert_eq!((p.open, p.limit), (12, 16), "the new process's own limit");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Ten processes of one user at their own limit of 2 take at most half of the ten
    /// places: a service at 900 of 1,024 and one at 19,006 of 20,000 stay listed. Root's
    /// processes are not capped.
    #[test]
    fn one_user_holds_at_most_half_of_the_places() {
        let p = |pid: u32, uid: u32, open: u64, limit: u64| ProcessFds { pid, uid, open, limit, ..Default::default() };
        let mut all: Vec<ProcessFds> = (0..10).map(|i| p(100 + i, 1000, 2, 2)).collect();
        all.push(p(7, 33, 900, 1024));
        all.push(p(8, 0, 19_006, 20_000));
        all.extend((0..20).map(|i| p(300 + i, 0, 1, 10)));
        fullest_shared_by_user(&mut all, 10);
        assert_eq!(all.len(), 10);
        assert!(all.iter().any(|p| p.pid == 7) && all.iter().any(|p| p.pid == 8), "{all:?}");
        assert!(all.iter().filter(|p| p.uid == 1000).count() <= per_user_cap(10));
        assert!(all.iter().filter(|p| p.uid == 0).count() >= 4, "root is not capped");
        assert!(all.windows(2).all(|w| w[0].utilization() >= w[1].utilization()), "fullest first");
    }

    #[test]
    fn a_process_is_counted_both_ways_alike() {
        // An idle child, not this process: the other tests' threads open and close
        // descriptors here while it is counted.
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let dir = PathBuf::from(format!("/proc/{}/fd", child.id()));
        let mut s = FdScanner::default();
        if s.count_method(Path::new("/proc")) == Count::Stat {
            // The child's loader opens and closes its libraries just after exec: the two
            // counts must agree once it has settled into its sleep.
            let mut seen = Vec::new();
            let agree = (0..100).any(|_| {
                let both = (count_fds(&dir, Count::List).unwrap(), count_fds(&dir, Count::Stat).unwrap());
                seen.push(both);
                both.0 == both.1 || {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    false
                }
            });
            assert!(agree, "listed and stat counts never agreed: {seen:?}");
        }
        let _ = child.kill();
        let _ = child.wait();
        let d = s.read(Path::new("/proc"), 5).unwrap();
        assert!(d.processes >= 1 && d.host.is_some() && d.top.len() <= 5);
    }
}
