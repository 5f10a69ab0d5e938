//! /proc files kept open and re-read, and how many file descriptors may be kept.
//!
//! procfs builds a `/proc/PID/net/*` file afresh on every read from offset 0, so a file
//! opened once and re-read with `pread(fd, buf, 0)` shows the current counters. That is
//! cheaper than an open and a read every sample (measured, per file: `netstat` 42.8 µs →
//! 19.9 µs, `sockstat` 5.5 → 0.7 µs): no path walk through `/proc/PID`, one read into a
//! buffer large enough for the file (a fresh `seq_file` starts with one page and builds a
//! file larger than that twice).
//!
//! Such a file holds a reference on the network namespace it was opened in, as a kept
//! netlink socket does: its owner must drop it when the namespace is no longer found.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::SourceError;
use super::files::{open_regular, ReadError, MAX_PROC_FILE};

/// One kept file, with the path it was opened at (for errors).
#[derive(Debug)]
pub struct KeptFile {
    file: File,
    path: PathBuf,
}

impl KeptFile {
    /// Opens `path` as [`super::read_small_file`] does ([`super::open_regular`]).
    /// `Ok(None)` when it does not exist.
    pub fn open(path: &Path) -> Result<Option<KeptFile>, SourceError> {
        match open_regular(path) {
            Ok(file) => Ok(Some(KeptFile { file, path: path.to_owned() })),
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(ReadError::Io(e)) => Err(SourceError::Io { path: path.to_owned(), source: e }),
            Err(e) => Err(SourceError::parse(path, e.to_string())),
        }
    }

    /// The file's current text, read from offset 0 into `buf` (reused between calls).
    pub fn read<'b>(&self, buf: &'b mut Vec<u8>) -> Result<&'b str, SourceError> {
        let io = |e| SourceError::Io { path: self.path.clone(), source: e };
        buf.clear();
        let mut chunk = [0u8; 8192];
        loop {
            let n = self.file.read_at(&mut chunk, buf.len() as u64).map_err(io)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() as u64 > MAX_PROC_FILE {
                return Err(SourceError::parse(&self.path, ReadError::TooLarge(MAX_PROC_FILE).to_string()));
            }
        }
        std::str::from_utf8(buf).map_err(|_| SourceError::parse(&self.path, ReadError::NotText.to_string()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Descriptors kept apart for everything else: HTTP and Munin connections (their slot
/// table), the sources' own files and sockets, the log.
const FD_RESERVE: u64 = 1024;

/// How many file descriptors the namespace layers may keep open (kept files, kept
/// namespace sockets): the soft `RLIMIT_NOFILE` less a reserve. 0 under the common soft
/// limit of 1024 if it could not be raised: kept files then fall back to an open per read,
/// and the deep layer keeps no socket (it says so). The daemon raises the soft limit to the
/// hard one at start ([`raise_fd_limit`]); the systemd unit sets `LimitNOFILE=`.
pub fn keepable_fds() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    usize::try_from(lim.rlim_cur.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX)
}

/// What to raise, and where, when sockwatch runs out of descriptors: the hint depends on
/// what started it (a container runtime, systemd, a shell), since each sets the limit in
/// its own place.
pub fn raise_limit_hint() -> String {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let now = format!("the open-files limit is {} (hard {})", lim.rlim_cur, lim.rlim_max);
    let in_container = std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("container").is_some();
    if in_container {
        format!(
            "{now}: raise the container's nofile limit (docker/podman run --ulimit nofile=65536:65536; in Kubernetes \
             the container runtime's default: LimitNOFILE= of containerd.service or CRI-O's default_ulimits)"
        )
    } else if std::env::var_os("INVOCATION_ID").is_some() {
        format!("{now}: raise LimitNOFILE= in the unit (systemctl edit sockwatch)")
    } else {
        format!("{now}: raise it (ulimit -n) before starting sockwatch")
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as Go programs do at start; a
/// seccomp filter or a missing privilege that refuses it leaves the limit as it was.
/// Returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: valid pointer to an initialised rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_proc_file_shows_the_current_counters() {
        // Tcp ActiveOpens (a counter: other tests can only add to it) rises by at least the
        // three connections made between two reads of the same descriptor.
        let kept = KeptFile::open(Path::new("/proc/self/net/snmp")).unwrap().unwrap();
        let mut buf = Vec::new();
        let active_opens = |t: &str| -> u64 {
            let mut tcp = t.lines().filter(|l| l.starts_with("Tcp:"));
            let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
            let i = names.split_whitespace().position(|n| n == "ActiveOpens").unwrap();
            values.split_whitespace().nth(i).unwrap().parse().unwrap()
        };
        let before = active_opens(kept.read(&mut buf).unwrap());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let conns: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap()).collect();
        let after = active_opens(kept.read(&mut buf).unwrap());
        assert!(after >= before + 3, "ActiveOpens {before} then {after} on the kept descriptor");
        drop(conns);
    }

    #[test]
    fn a_larger_than_a_page_file_is_read_whole() {
        let kept = KeptFile::open(Path::new("/proc/self/net/netstat")).unwrap().unwrap();
        let mut buf = Vec::new();
        let text = kept.read(&mut buf).unwrap().to_owned();
        let fresh = std::fs::read_to_string("/proc/self/net/netstat").unwrap();
        assert_eq!(text.lines().count(), fresh.lines().count());
        assert_eq!(text.lines().next(), fresh.lines().next());
    }

    #[test]
    fn absent_and_irregular_files() {
        assert!(KeptFile::open(Path::new("/proc/self/net/no-such-file")).unwrap().is_none());
        let e = KeptFile::open(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
