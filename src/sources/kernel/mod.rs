//! The kernel layer: what every source stands on, and nothing above it. The netlink dump
//! socket and its walk, the kept /proc files, entering a namespace, the safe file open and
//! the small shared maps. Nothing here imports a source.

pub mod error;
pub mod files;
pub mod inet_diag;
pub mod kept;
pub mod maps;
pub mod namespace;
pub mod netlink;
pub mod ratio;

pub use error::SourceError;

/// `TCP_TIMEWAIT_LEN`, compiled into mainline kernels: how long a socket closed first holds
/// its local port, whatever `tcp_fin_timeout` says (vendor kernels with `tcp_tw_timeout`
/// excepted).
pub const TIME_WAIT_SECONDS: u32 = 60;
pub(crate) use files::{parse_u64, read_optional, read_required, read_u64_sysctl};
pub use files::{read_small_file, ReadError};
