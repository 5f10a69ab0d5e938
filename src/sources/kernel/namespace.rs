//! Entering a network namespace, and opening the files that name one, safely: the paths are
//! ones someone else controls (`/run/netns/NAME`, a procfs `ns/net` link under
//! `--path.procfs`), so every open is non-blocking and checked to be on nsfs.

use std::path::Path;

/// `NSFS_MAGIC`: the filesystem of namespace files (`/proc/PID/ns/*`, and their bind mounts
/// in `/run/netns`).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Whether an open file is a namespace file: its filesystem is nsfs.
fn is_nsfs(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: statfs is plain data; fstatfs fills it for a valid fd.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == NSFS_MAGIC)
}

/// Opens a namespace file that someone else may control (`/run/netns/NAME`, a procfs
/// `ns/net` link under `--path.procfs`): non-blocking, so a FIFO put there cannot hang the
/// open, and refused unless it is on nsfs (a FIFO, device or plain file is not a namespace).
pub fn open_namespace(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    if !is_nsfs(&file)? {
        let msg = format!("{} is not a namespace file (not on nsfs)", path.display());
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
    }
    Ok(file)
}

/// The namespace inode of a file in a pin directory, or `None` when it is no namespace
/// file (stat only: nothing is opened, so a FIFO there cannot block).
pub fn pinned_inode(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a NUL-terminated path and a zeroed plain-data statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 || st.f_type as i64 != NSFS_MAGIC {
        return None;
    }
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Runs `f` on a short-lived thread that has entered the network namespace of `ns` (a
/// `/proc/PID/ns/net` link or a pinning file; setns needs CAP_SYS_ADMIN). The thread ends
/// with the call, so no thread of ours ever goes on in the wrong namespace; what `f` opens
/// there (a netlink socket, a sysctl file) keeps that namespace. With `expect`, the
/// namespace entered must be that inode: a `/proc/PID/ns/net` whose process died and whose
/// PID was reused elsewhere is refused, not read as the old one.
pub fn in_namespace<T: Send>(
    ns: &Path,
    expect: Option<u64>,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd;
            use std::os::unix::fs::MetadataExt;
            let file = open_namespace(ns)?;
            let inode = file.metadata()?.ino();
            if expect.is_some_and(|e| e != inode) {
                let msg = format!("{} is now namespace {inode}, not {}", ns.display(), expect.unwrap_or(0));
                return Err(std::io::Error::new(std::io::ErrorKind::NotFound, msg));
            }
            // SAFETY: a valid fd; setns changes this scoped, short-lived thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_file_that_now_names_another_namespace_is_refused() {
        // A /proc/PID/ns/net whose PID was reused: the inode differs from the one discovered.
        let e = in_namespace(Path::new("/proc/self/ns/net"), Some(1), || Ok(())).unwrap_err();
        assert!(e.to_string().contains("not 1"), "{e}");
        assert!(in_namespace(Path::new("/nonexistent/ns"), None, || Ok(())).is_err());
    }

    /// Only nsfs files are namespaces: a FIFO is refused without blocking (it used to hang
    /// the open for good), a plain file is refused, and neither counts as pinned.
    #[test]
    fn a_fifo_or_plain_file_is_no_namespace_and_never_blocks() {
        let (dir, fifo) = crate::sources::dir_with_fifo("nsfs");
        let plain = dir.join("plain");
        std::fs::write(&plain, b"").unwrap();
        for path in [&fifo, &plain] {
            let e = in_namespace(path, None, || Ok(())).unwrap_err();
            assert!(e.to_string().contains("is not a namespace file"), "{e}");
            assert_eq!(pinned_inode(path), None);
        }
        assert!(pinned_inode(Path::new("/proc/self/ns/net")).is_some());
        assert!(open_namespace(Path::new("/proc/self/ns/net")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
