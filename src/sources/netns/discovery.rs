//! Discovery: every network namespace on the host, at a cost that follows what changed.
//!
//! - Every `/proc/PID/ns/net` link names its namespace by inode (`net:[4026531840]`): one
//!   representative process per inode, kept while it lives; when it exits (or at first),
//!   the namespace's longest-lived process takes over (the earliest start time in
//!   `/proc/PID/stat`), not the lowest PID: once the PID counter has wrapped at `pid_max`,
//!   the lowest PID of a container may be a child living a tenth of a second, and the
//!   namespace would change hands (and owner) every sample. Namespaces pinned by a bind mount
//!   without any process (`/run/netns/*`, `/var/run/docker/netns/*`) are found by the inode
//!   of that file.
//! - A **full scan** reads every PID's link: every [`FULL_SCAN_EVERY`] samples (measured:
//!   52–57 ms of CPU at 10,000 processes, BENCHMARKS.md), and when the PID counter wrapped.
//! - In between, only **new PIDs** have their link read, and they are found without listing
//!   all of `/proc`: the kernel hands out PIDs cyclically upward, and
//!   `/proc/sys/kernel/ns_last_pid` is the last one it gave. Unchanged since the last
//!   sample: no process was created, nothing is listed. Higher: `/proc` is listed from the
//!   previous last PID on (`seekdir`; procfs places PID `p` at a directory position `p` plus
//!   a constant, learnt from the listing itself). Lower: the counter wrapped at `pid_max`,
//!   and the sample is a full scan.
//! - Each namespace's representative is watched through a pidfd (`pidfd_open`, Linux ≥
//!   5.3), all of them polled in one call per sample: readable once the process has exited
//!   (a zombie too), and then the next PID known in its namespace takes over, its link
//!   read. Without a pidfd (none to spare, an older kernel) the representative's link is
//!   read every sample, as a path walk costs 5–10 µs. A new PID is read
//!   again at the sample after the one that found it: `ip netns exec`, `unshare -n` and
//!   `nsenter` start a process first and change its namespace just after.
//! - The pin directories are listed again only when they changed (their mtime) or on a
//!   full scan.
//!
//! Seen at the next full scan only: a process that changes namespace without a new PID
//! (`unshare`, `setns`) after its first two samples, and a PID created below the counter
//! (`clone3` with `set_tid`, or `ns_last_pid` written, as checkpoint/restore tools do).
//! A process whose link may not be read (another user's, without ptrace access) is counted
//! as unreadable until the next full scan even if it exited meanwhile: only links are read
//! between full scans, and its cannot be.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::model::MAX_NAMESPACES;
use crate::sources::kernel::SourceError;

/// Full `/proc` scans happen every this many samples; in between only new processes have
/// their link read, and each namespace's representative is checked.
pub const FULL_SCAN_EVERY: u64 = 30;

/// `net:[4026531840]` → 4026531840.
pub fn parse_ns_link(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The inode of `/proc/PID/ns/net` (`root` is the procfs mount), or why not.
pub fn ns_of(root: &Path, pid: &str) -> std::io::Result<u64> {
    let link = std::fs::read_link(root.join(pid).join("ns/net"))?;
    parse_ns_link(&link.to_string_lossy())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}", link.display())))
}

/// A namespace found by discovery: how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub inode: u64,
    pub pid: Option<u32>,
    /// The pinning file, for a namespace without a process.
    pub pin: Option<PathBuf>,
    pub name: Option<String>,
}

/// How a sample finds its PIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every PID listed and its link read.
    Full,
    /// Every PID listed; links read for PIDs not seen before (no PID counter to follow).
    List,
    /// The PIDs known, plus those listed after this one (the previous `ns_last_pid`).
    After(u32),
    /// The PIDs known: no process was created since the last sample.
    Known,
}

/// What discovery remembers between samples.
#[derive(Default)]
pub struct Discovery {
    /// Each PID's namespace inode (`None`: its link may not be read).
    known: BTreeMap<u32, Option<u64>>,
    samples: u64,
    /// `ns_last_pid` when the previous sample began.
    last_pid: Option<u32>,
    /// Whether `/proc` is this process's PID namespace's (`ns_last_pid` is the reader's).
    same_pid_ns: Option<bool>,
    /// Directory position of PID `p` in `/proc` is `p + pid_pos`: learnt from a listing.
    pid_pos: Option<i64>,
    pins: HashMap<PathBuf, PinDir>,
    /// PIDs first seen in the previous sample: read again in this one, since a process may
    /// enter its namespace just after it starts (`ip netns exec`, `unshare -n`, `nsenter`
    /// fork first, then change namespace).
    fresh: Vec<u32>,
    /// Each representative's pidfd: a live one means the process has not exited.
    pidfds: HashMap<u32, OwnedFd>,
    /// Each namespace's representative, by inode.
    reps: HashMap<u64, u32>,
    /// Descriptors discovery may still open (set by the owner, shared with kept files).
    pub fds_left: usize,
    /// The latest sample's pass (for tests and traces).
    last_pass: Option<Pass>,
}

impl Discovery {
    /// Finds every namespace: one process per inode (its representative), then the pinned
    /// ones. Processes whose link cannot be read (another user's, without ptrace access)
    /// are counted in the second value.
    pub fn scan(&mut self, root: &Path, pin_dirs: &[&str]) -> Result<(Vec<Found>, u64), SourceError> {
        let pass = self.pass(root);
        self.samples += 1;
        self.last_pass = Some(pass);
        let io = |e| SourceError::Io { path: root.to_owned(), source: e };
        let pids: Vec<u32> = match pass {
            Pass::Full | Pass::List => {
                let (pids, pos) = list_pids(root, None).map_err(io)?;
                self.pid_pos = pos.or(self.pid_pos);
                pids
            }
            Pass::Known => self.known.keys().copied().collect(),
            Pass::After(last) => {
                let seek = self.pid_pos.map(|p| p + i64::from(last) + 1);
                let (new, _) = list_pids(root, seek.map(|s| (s, last))).map_err(io)?;
                let mut pids: Vec<u32> = self.known.keys().copied().chain(new).collect();
                pids.sort_unstable();
                pids.dedup();
                pids
            }
        };
        self.drop_exited();
        // Namespaces whose representative lives: their other known PIDs are not read again.
        let live_reps: std::collections::HashSet<u64> =
            self.reps.iter().filter(|(_, pid)| self.pidfds.contains_key(pid)).map(|(&inode, _)| inode).collect();
        let mut by_inode: HashMap<u64, Found> = HashMap::new();
        let mut denied = 0u64;
        let mut seen = BTreeMap::new();
        let mut fresh = Vec::new();
        let mut read_now = std::collections::HashSet::new();
        for pid in pids {
            let again = pass == Pass::Full || self.fresh.binary_search(&pid).is_ok();
            let cached = if again { None } else { self.known.get(&pid).copied() };
            if !self.known.contains_key(&pid) {
                fresh.push(pid);
            }
            let inode = match cached {
                // Not the first of its namespace: not read.
                Some(Some(inode)) if by_inode.contains_key(&inode) => Some(inode),
                // A representative that has not exited (its pidfd says so), or a process of
                // its namespace.
                Some(Some(inode)) if self.pidfds.contains_key(&pid) || live_reps.contains(&inode) => Some(inode),
                Some(None) => None,
                _ => match ns_of(root, &pid.to_string()) {
                    Ok(inode) => {
                        read_now.insert(pid);
                        Some(inode)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => None,
                    Err(_) => continue, // exited
                },
            };
            seen.insert(pid, inode);
            match inode {
                Some(inode) => {
                    by_inode.entry(inode).or_insert(Found { inode, pid: Some(pid), ..Found::default() });
                }
                None => denied += 1,
            }
            if by_inode.len() >= MAX_NAMESPACES {
                break;
            }
        }
        self.choose_representatives(root, &mut by_inode, &seen, &read_now);
        self.known = seen;
        self.fresh = fresh; // ascending, like `pids`
        self.watch(&by_inode);
        for dir in pin_dirs {
            let dir = Path::new(dir);
            let cached = self.pins.entry(dir.to_owned()).or_default();
            cached.refresh(dir, pass == Pass::Full);
            cached.add_to(&mut by_inode);
        }
        let mut all: Vec<Found> = by_inode.into_values().collect();
        all.sort_by_key(|f| f.inode);
        Ok((all, denied))
    }

    /// Which pass this sample makes, from the PID counter (read before listing, so a
    /// process made during the listing is found at the next sample).
    fn pass(&mut self, root: &Path) -> Pass {
        let same = *self.same_pid_ns.get_or_insert_with(|| {
            std::fs::read_link(root.join("self"))
                .is_ok_and(|l| l.to_str().and_then(|s| s.parse().ok()) == Some(std::process::id()))
        });
        let now = if same { read_last_pid(root) } else { None };
        let before = std::mem::replace(&mut self.last_pid, now);
        if self.samples % FULL_SCAN_EVERY == 0 {
            return Pass::Full;
        }
        match (before, now) {
            (Some(b), Some(n)) if n == b => Pass::Known,
            (Some(b), Some(n)) if n > b => Pass::After(b),
            (Some(_), Some(_)) => Pass::Full, // wrapped: a PID may have been reused
            _ => Pass::List,
        }
    }

    /// Each namespace's representative: the previous one while it is known to live (its
    /// pidfd, or its link read in this sample, says it is still there); otherwise the
    /// namespace's process with the earliest start, ties to the lower PID (the lowest PID
    /// when no start time can be read).
    fn choose_representatives(
        &mut self,
        root: &Path,
        by_inode: &mut HashMap<u64, Found>,
        seen: &BTreeMap<u32, Option<u64>>,
        read_now: &std::collections::HashSet<u32>,
    ) {
        let stays = |inode: u64, pid: u32| {
            seen.get(&pid) == Some(&Some(inode)) && (self.pidfds.contains_key(&pid) || read_now.contains(&pid))
        };
        let need: std::collections::HashSet<u64> =
            by_inode.keys().copied().filter(|&i| !self.reps.get(&i).is_some_and(|&p| stays(i, p))).collect();
        let mut members: HashMap<u64, Vec<u32>> = HashMap::new();
        if !need.is_empty() {
            for (&pid, inode) in seen {
                if let Some(inode) = inode.filter(|i| need.contains(i)) {
                    members.entry(inode).or_default().push(pid);
                }
            }
        }
        for (inode, found) in by_inode.iter_mut() {
            found.pid = match members.get(inode) {
                Some(pids) => longest_lived(root, pids).or(found.pid),
                None => self.reps.get(inode).copied(),
            };
        }
        self.reps = by_inode.iter().filter_map(|(&inode, f)| Some((inode, f.pid?))).collect();
    }

    /// Closes the pidfds of representatives that have exited (one `poll` for all).
    fn drop_exited(&mut self) {
        let (pids, mut fds): (Vec<u32>, Vec<libc::pollfd>) = self
            .pidfds
            .iter()
            .map(|(&pid, fd)| (pid, libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }))
            .unzip();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds; a zero timeout never blocks.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) } < 0 {
            self.pidfds.clear(); // cannot tell: every representative is read again
            return;
        }
        for (pid, fd) in pids.iter().zip(&fds) {
            if fd.revents != 0 {
                self.pidfds.remove(pid);
            }
        }
    }

    /// Keeps a pidfd for each representative found (opening the missing ones while
    /// descriptors last), and closes the others.
    fn watch(&mut self, by_inode: &HashMap<u64, Found>) {
        let reps: std::collections::HashSet<u32> = by_inode.values().filter_map(|f| f.pid).collect();
        self.pidfds.retain(|pid, _| reps.contains(pid));
        for pid in reps {
            if self.fds_left == 0 || self.pidfds.contains_key(&pid) {
                continue;
            }
            // SAFETY: pidfd_open takes a PID and flags; a returned fd is ours to own.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
            if fd < 0 {
                continue; // exited since its link was read, or a kernel before 5.3
            }
            // SAFETY: a new descriptor, owned by nothing else.
            self.pidfds.insert(pid, unsafe { OwnedFd::from_raw_fd(fd as i32) });
            self.fds_left -= 1;
        }
    }

    /// Descriptors held (pidfds).
    pub fn open_count(&self) -> usize {
        self.pidfds.len()
    }
}

/// Of `pids` (ascending), the process that started first, ties to the lower PID: the one
/// most likely to stay (a container's init, not a child of it). `None` when no start time
/// could be read (all exited).
fn longest_lived(root: &Path, pids: &[u32]) -> Option<u32> {
    if let [only] = pids {
        return Some(*only);
    }
    pids.iter()
        .filter_map(|&pid| {
            let stat = std::fs::read_to_string(root.join(pid.to_string()).join("stat")).ok()?;
            Some((crate::sources::procfs::process::start_ticks(&stat)?, pid))
        })
        .min()
        .map(|(_, pid)| pid)
}

/// The last PID the kernel gave in the reader's PID namespace.
fn read_last_pid(root: &Path) -> Option<u32> {
    std::fs::read_to_string(root.join("sys/kernel/ns_last_pid")).ok()?.trim().parse().ok()
}

/// The PIDs in `root` (a procfs mount), ascending, and the directory position constant
/// (a PID entry's `d_off` is the next entry's position: next PID + the constant). With
/// `from`, the listing starts at that position and keeps PIDs above the second value only.
fn list_pids(root: &Path, from: Option<(i64, u32)>) -> std::io::Result<(Vec<u32>, Option<i64>)> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(root.as_os_str().as_bytes())?;
    // SAFETY: a valid C string; the stream is closed before returning.
    let dir = unsafe { libc::opendir(path.as_ptr()) };
    if dir.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    if let Some((pos, _)) = from {
        // SAFETY: `dir` is an open stream.
        unsafe { libc::seekdir(dir, pos as libc::c_long) };
    }
    let floor = from.map_or(0, |(_, after)| after.saturating_add(1));
    let (mut pids, mut pid_pos, mut prev_off) = (Vec::new(), None, None::<i64>);
    let result = loop {
        // SAFETY: errno is thread-local; reset to tell the end of the stream from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dir` is an open stream; the entry is read before the next call.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            let err = std::io::Error::last_os_error();
            break if err.raw_os_error() == Some(0) { Ok(()) } else { Err(err) };
        }
        // SAFETY: readdir returned a valid entry whose name is NUL-terminated.
        let (name, off) = unsafe { (CStr::from_ptr((*entry).d_name.as_ptr()), (*entry).d_off) };
        let Some(pid) = std::str::from_utf8(name.to_bytes()).ok().and_then(|s| s.parse::<u32>().ok()) else {
            prev_off = None;
            continue;
        };
        if let Some(o) = prev_off {
            pid_pos.get_or_insert(o - i64::from(pid));
        }
        prev_off = Some(off);
        if pid >= floor {
            pids.push(pid);
        }
    };
    // SAFETY: `dir` is open and not used after this.
    unsafe { libc::closedir(dir) };
    result.map(|()| (pids, pid_pos))
}

/// A pin directory's entries, listed again only when it changed.
#[derive(Default)]
struct PinDir {
    /// The directory's mtime when listed, and when it was listed.
    listed: Option<(SystemTime, SystemTime)>,
    /// (name, path, namespace inode).
    entries: Vec<(String, PathBuf, u64)>,
}

impl PinDir {
    /// Lists `dir` again if it changed since the last listing. A change within the same
    /// timestamp tick as that listing could share its mtime, so a listing is trusted only
    /// once the mtime is older than it by a second.
    fn refresh(&mut self, dir: &Path, force: bool) {
        let mtime = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
        let fresh = match (self.listed, mtime) {
            (Some((was, at)), Some(now)) => {
                now == was && at.duration_since(was).is_ok_and(|d| d >= Duration::from_secs(1))
            }
            _ => false,
        };
        if fresh && !force {
            return;
        }
        self.entries.clear();
        self.listed = mtime.map(|m| (m, SystemTime::now()));
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            // The bind-mounted nsfs file's inode is the namespace's; anything else there
            // (a plain file, a FIFO, an unmounted leftover) is not a namespace.
            let Some(inode) = crate::sources::kernel::namespace::pinned_inode(&e.path()) else { continue };
            self.entries.push((e.file_name().to_string_lossy().into_owned(), e.path(), inode));
        }
    }

    /// Namespaces pinned here: named, and reached through the file when no process is in them.
    fn add_to(&self, by_inode: &mut HashMap<u64, Found>) {
        for (name, path, inode) in &self.entries {
            let found = by_inode.entry(*inode).or_insert(Found { inode: *inode, ..Found::default() });
            found.name.get_or_insert_with(|| name.clone());
            if found.pid.is_none() {
                found.pin.get_or_insert_with(|| path.clone());
            }
        }
    }
}

/// A full scan, without memory: for tests and benchmarks.
pub fn discover(root: &Path, pin_dirs: &[&str]) -> Result<(Vec<Found>, u64), SourceError> {
    Discovery::default().scan(root, pin_dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_links() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_ns_link("mnt:[4026531840]"), None);
        assert_eq!(parse_ns_link("net:[x]"), None);
    }

    /// A child made after a listing is found by listing from the position learnt, and
    /// nothing at or below the previous last PID is listed.
    #[test]
    fn lists_only_pids_after_the_last_one() {
        let root = Path::new("/proc");
        let (all, pos) = list_pids(root, None).unwrap();
        assert!(all.contains(&std::process::id()));
        assert!(all.windows(2).all(|w| w[0] < w[1]), "ascending");
        let pos = pos.expect("a position constant from /proc's PID entries");
        let last = read_last_pid(root).expect("ns_last_pid");
        let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        let (new, _) = list_pids(root, Some((pos + i64::from(last) + 1, last))).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(new.contains(&child.id()), "the new child {} in {new:?}", child.id());
        assert!(new.iter().all(|&p| p > last), "{new:?} after {last}");
        assert!(new.len() < all.len(), "a partial listing: {} of {}", new.len(), all.len());
    }

    /// Between full scans, a new process is found from the PID counter, listing only the
    /// PIDs after the previous last one.
    #[test]
    fn new_processes_between_full_scans() {
        let root = Path::new("/proc");
        let mut d = Discovery::default();
        let (before, _) = d.scan(root, &[]).unwrap();
        assert_eq!(d.last_pass, Some(Pass::Full));
        let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        let (after, _) = d.scan(root, &[]).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(matches!(d.last_pass, Some(Pass::After(_))), "{:?}", d.last_pass);
        assert!(d.known.contains_key(&child.id()), "the child {} was read", child.id());
        assert_eq!(before.len(), after.len(), "same namespaces: the child shares ours");
    }
}
