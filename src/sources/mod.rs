//! Kernel sources. One module per place the kernel publishes something we need.
//!
//! Every source turns kernel data into plain Rust values and knows nothing about
//! Prometheus or Munin. Every source reads below a configurable procfs root
//! (`--path.procfs`, default `/proc`) so that tests can point it at captured files.
//!
//! Error policy, shared by all sources:
//! - the source's primary file missing → [`SourceError::Missing`] (the source is down,
//!   e.g. conntrack with the module not loaded);
//! - a file that exists but cannot be read or parsed → [`SourceError::Io`] /
//!   [`SourceError::Parse`], naming the file and what was wrong;
//! - a secondary file missing (a sysctl an older kernel lacks) → that value is `None`
//!   and its series is simply absent.

pub mod conntrack;
pub mod ct_attribution;
pub mod ct_breakdown;
pub mod ct_events;
pub mod kept;
pub mod limits;
pub mod netlink;
pub mod netns;
pub mod netns_counters;
pub mod netns_ct;
pub mod netns_deep;
pub mod netns_discovery;
pub mod ports;
pub mod process;
pub mod projection;
pub mod snmp;
pub mod sockets;
pub mod sockstat;
pub mod udp;

use std::io;
use std::path::{Path, PathBuf};

/// Why a source could not produce a reading.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: not present ({what})", path.display())]
    Missing { path: PathBuf, what: &'static str },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {msg}", path.display())]
    Parse { path: PathBuf, msg: String },
    #[error("netlink {0}")]
    Netlink(String),
    /// The kernel answered a dump with an error code (`NLMSG_ERROR`, or `NLMSG_DONE`
    /// carrying one). Typed, so callers decide on the errno, never on a message's wording.
    #[error("{}", kernel_message(what, *errno))]
    Kernel { what: &'static str, errno: i32 },
}

/// The kernel's refusal in words, with what an operator can do about it.
fn kernel_message(what: &str, errno: i32) -> String {
    let err = io::Error::from_raw_os_error(errno);
    match what {
        "ctnetlink" if errno == libc::EPERM => format!("netlink ctnetlink: dump refused: {err} (needs CAP_NET_ADMIN)"),
        "ctnetlink" => format!("netlink ctnetlink: dump refused: {err}"),
        "sock_diag udp" if errno == libc::ENOENT => {
            "netlink sock_diag udp: this kernel has no UDP socket dump (module udp_diag not loaded: modprobe udp_diag, \
             or CONFIG_INET_UDP_DIAG off)"
                .to_owned()
        }
        _ => format!("netlink {what}: kernel answered the dump with an error: {err}"),
    }
}

impl SourceError {
    pub(crate) fn parse(path: &Path, msg: impl Into<String>) -> Self {
        SourceError::Parse { path: path.to_owned(), msg: msg.into() }
    }
}

/// Upper bound on a /proc file we read whole. The files we read are small (one
/// line per CPU at most); a larger one means something is wrong with the input,
/// and we refuse it rather than allocate without bound.
pub(crate) const MAX_PROC_FILE: u64 = 1 << 20;

/// Why [`read_small_file`] refused a file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a regular file (a FIFO, device or socket there could block forever or never end)")]
    NotRegular,
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    #[error("not UTF-8 text")]
    NotText,
}

/// Reads a small regular file whole, without ever blocking on it: opened non-blocking
/// (a FIFO or device then cannot hang the open), refused unless it is a regular file
/// (procfs files are), and at most `max` bytes. Shared by the sources and the
/// configuration files.
pub fn read_small_file(path: &Path, max: u64) -> Result<String, ReadError> {
    use std::io::Read;
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge(max));
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText)
}

/// Opens a file for reading without ever blocking on it (non-blocking, so a FIFO or device
/// cannot hang the open), refused unless it is a regular file (procfs files are).
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File, ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(ReadError::NotRegular);
    }
    Ok(file)
}

/// Reads a small /proc file. `Ok(None)` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, SourceError> {
    match read_small_file(path, MAX_PROC_FILE) {
        Ok(text) => Ok(Some(text)),
        Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(ReadError::Io(e)) => Err(SourceError::Io { path: path.to_owned(), source: e }),
        Err(e) => Err(SourceError::parse(path, e.to_string())),
    }
}

/// Reads a file that must exist.
pub(crate) fn read_required(path: &Path, what: &'static str) -> Result<String, SourceError> {
    read_optional(path)?.ok_or_else(|| SourceError::Missing { path: path.to_owned(), what })
}

/// Parses a sysctl holding one unsigned integer. `Ok(None)` when the file is absent.
pub(crate) fn read_u64_sysctl(path: &Path) -> Result<Option<u64>, SourceError> {
    match read_optional(path)? {
        None => Ok(None),
        Some(text) => parse_u64(text.trim(), path).map(Some),
    }
}

/// A file or tree under `tests/fixtures/`, for the sources' tests.
#[cfg(test)]
pub(crate) fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// A fresh directory with a FIFO in it (what an attacker puts where a file is expected),
/// for the tests of code that must never block on one: (directory, FIFO path).
#[cfg(test)]
pub(crate) fn dir_with_fifo(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("sockwatch-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    (dir, fifo)
}

pub(crate) fn parse_u64(s: &str, path: &Path) -> Result<u64, SourceError> {
    s.parse::<u64>().map_err(|_| SourceError::parse(path, format!("expected an unsigned integer, found {s:?}")))
}
