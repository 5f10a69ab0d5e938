//! The families of the `procfs/` sources: what the kernel keeps in /proc and /proc/sys.

use prometheus::proto::MetricType::{COUNTER, GAUGE};

use super::families::{f, Families};
use crate::snapshot::Snapshot;

/// The per-CPU receive backlog.
pub(super) fn softnet(out: &mut Families, s: &Snapshot) {
    let Some(sn) = &s.softnet else { return };
    let cpu = |c: &crate::sources::procfs::softnet::CpuBacklog| vec![("cpu", c.cpu.to_string())];
    let from = "from /proc/net/softnet_stat (the cpu label is the CPU's number on Linux 5.10+, its line's place among \
                online CPUs before)";
    out.labelled(
        "sockwatch_softnet_processed_total",
        &format!("Packets this CPU's receive softirq processed, {from}."),
        COUNTER,
        sn.cpus.iter().map(|c| (cpu(c), f(c.processed))),
    );
    out.labelled(
        "sockwatch_softnet_dropped_total",
        &format!(
            "Packets dropped because this CPU's backlog held net.core.netdev_max_backlog packets (drop reason \
             CPU_BACKLOG), {from}."
        ),
        COUNTER,
        sn.cpus.iter().map(|c| (cpu(c), f(c.dropped))),
    );
    out.labelled(
        "sockwatch_softnet_time_squeeze_total",
        &format!("Receive softirq runs that stopped with packets left (budget or time used up), {from}."),
        COUNTER,
        sn.cpus.iter().map(|c| (cpu(c), f(c.time_squeeze))),
    );
    out.labelled(
        "sockwatch_softnet_backlog_packets",
        &format!("Packets waiting in this CPU's backlog now (Linux 5.10+), {from}."),
        GAUGE,
        sn.cpus.iter().filter_map(|c| Some((cpu(c), f(c.backlog?)))),
    );
    out.gauge(
        "sockwatch_netdev_max_backlog",
        "net.core.netdev_max_backlog: packets a CPU's backlog holds before it drops (host-wide).",
        sn.max_backlog.map(f),
    );
    out.gauge(
        "sockwatch_softnet_backlog_utilization_max",
        "The fullest CPU backlog / netdev_max_backlog, now (Linux 5.10+).",
        sn.backlog_utilization_max(),
    );
}

