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
pub mod ct_breakdown;
pub mod limits;
pub mod netlink;
pub mod ports;
pub mod projection;
pub mod snmp;
pub mod sockets;
pub mod sockstat;

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
}

impl SourceError {
    pub(crate) fn parse(path: &Path, msg: impl Into<String>) -> Self {
        SourceError::Parse { path: path.to_owned(), msg: msg.into() }
    }
}

/// Upper bound on a /proc file we read whole. The files we read are small (one
/// line per CPU at most); a larger one means something is wrong with the input,
/// and we refuse it rather than allocate without bound.
const MAX_PROC_FILE: u64 = 1 << 20;

/// Reads a small /proc file. `Ok(None)` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, SourceError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SourceError::Io { path: path.to_owned(), source: e }),
    };
    let mut text = String::new();
    file.take(MAX_PROC_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| SourceError::Io { path: path.to_owned(), source: e })?;
    if text.len() as u64 > MAX_PROC_FILE {
        return Err(SourceError::parse(path, format!("larger than {MAX_PROC_FILE} bytes")));
    }
    Ok(Some(text))
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

pub(crate) fn parse_u64(s: &str, path: &Path) -> Result<u64, SourceError> {
    s.parse::<u64>().map_err(|_| SourceError::parse(path, format!("expected an unsigned integer, found {s:?}")))
}
