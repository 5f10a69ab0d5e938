//! The safe file open: every /proc file and config file is read through here, non-blocking
//! (a FIFO or device in its place cannot hang the open), regular files only, bounded.

use std::io;
use std::path::Path;

use super::error::SourceError;

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

pub(crate) fn parse_u64(s: &str, path: &Path) -> Result<u64, SourceError> {
    s.parse::<u64>().map_err(|_| SourceError::parse(path, format!("expected an unsigned integer, found {s:?}")))
}
