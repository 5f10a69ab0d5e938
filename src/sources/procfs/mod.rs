//! The O(1) files of procfs: sockstat, the SNMP counters, the limits (sysctls), the
//! conntrack counters, socket memory, the per-CPU backlog, the neighbour tables, and
//! processes: descriptors against their limits, who owns a process (cgroup), and
//! sockwatch's own. Each reads a few small files below the
//! procfs root and knows nothing of any output.

pub mod cgroup;
pub mod conntrack;
pub mod fds;
pub mod limits;
pub mod neighbour;
pub mod process;
pub mod snmp;
pub mod sockmem;
pub mod sockstat;
pub mod softnet;
