//! Kernel sources. Every source turns kernel data into plain Rust values and knows nothing
//! about Prometheus or Munin. Every source reads below a configurable procfs root
//! (`--path.procfs`, default `/proc`) so that tests can point it at captured files.
//!
//! Floors, each importing only those below it (no import circle, no arrow back up):
//! - `kernel/`: the ground. The netlink dump socket and walk, the inet_diag message code TCP
//!   and UDP share, kept /proc files, entering a
//!   namespace and opening its file safely, the safe file open, the one error type, and the
//!   small maps (Fx hash map, top-K). It imports no source.
//! - the wings, one per kernel family: `procfs/` (sockstat, snmp, limits, conntrack
//!   counters, own process), `tcp/` (sockets, ports, projection), `udp/` (sockets), `ctnetlink/` (entry,
//!   attribution, dump, events), and `netns/` on top (model, cgroup, discovery, counters, deep
//!   layer, per-namespace conntrack), which reads the others inside each namespace.
//!
//! The names at this level (`sources::tcp::ports`, `sources::ctnetlink::dump`, ...) are the wings'
//! modules under their older paths, for the readers above (sampler, outputs, benches).
//!
//! Error policy, shared by all sources:
//! - the source's primary file missing → [`SourceError::Missing`] (the source is down,
//!   e.g. conntrack with the module not loaded);
//! - a file that exists but cannot be read or parsed → [`SourceError::Io`] /
//!   [`SourceError::Parse`], naming the file and what was wrong;
//! - a secondary file missing (a sysctl an older kernel lacks) → that value is `None`
//!   and its series is simply absent.

pub mod ctnetlink;
pub mod kernel;
pub mod netns;
pub mod procfs;
pub mod tcp;
pub mod udp;

pub use kernel::error::SourceError;
pub(crate) use kernel::files::open_regular;
pub use kernel::files::{read_small_file, ReadError};

/// A file or tree under `tests/fixtures/`, for the sources' tests.
#[cfg(test)]
pub(crate) fn fixture(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// A fresh directory with a FIFO in it (what an attacker puts where a file is expected),
/// for the tests of code that must never block on one: (directory, FIFO path).
#[cfg(test)]
pub(crate) fn dir_with_fifo(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sockwatch-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    (dir, fifo)
}
