//! The O(1) files of procfs: sockstat, the SNMP counters, the limits (sysctls), the
//! conntrack counters, and sockwatch's own process. Each reads a few small files below the
//! procfs root and knows nothing of any output.

pub mod conntrack;
pub mod limits;
pub mod process;
pub mod snmp;
pub mod sockstat;
