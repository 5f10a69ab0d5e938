//! Why a source could not produce a reading: one error type for every source.

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
