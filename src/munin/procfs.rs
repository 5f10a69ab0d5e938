//! The Munin graphs of the `procfs/` sources: the conntrack table and its errors, and the
//! resources beside ports and conntrack (each one's fullest use as a percentage of its limit
//! on one graph, the counters of their failures on another). Munin fields are fixed, so
//! which process, listener or CPU it is lives in Prometheus (`sockwatch_process_fds_open`,
//! `sockwatch_listener_drops_total`, …) and `sockwatch doctor`.

use super::graphs::{any, ct_crit, ct_limit, ct_warn, field, pct, pct_crit, pct_warn, Field, Graph, Kind};
use crate::snapshot::Snapshot;

pub(super) fn cpu_backlog(s: &Snapshot) -> Option<f64> {
    pct(s.softnet.as_ref()?.backlog_utilization_max())
}

pub(super) fn softnet_dropped(s: &Snapshot) -> Option<f64> {
    s.softnet.as_ref().map(|n| n.dropped() as f64)
}

fn ct_stat(s: &Snapshot, pick: fn(&crate::sources::procfs::conntrack::ConntrackStats) -> Option<u64>) -> Option<f64> {
    pick(s.conntrack.as_ref()?.stats.as_ref()?).map(|v| v as f64)
}

// The value and threshold functions of the graphs below, by name (a table of closures is
// what rustfmt cannot lay out).
fn ct_entries(s: &Snapshot) -> Option<f64> {
    s.conntrack.as_ref().map(|c| c.entries as f64)
}

fn ct_drop(s: &Snapshot) -> Option<f64> {
    ct_stat(s, |c| c.drop)
}

fn ct_early_drop(s: &Snapshot) -> Option<f64> {
    ct_stat(s, |c| c.early_drop)
}

fn ct_insert_failed(s: &Snapshot) -> Option<f64> {
    ct_stat(s, |c| c.insert_failed)
}

fn file_handles(s: &Snapshot) -> Option<f64> {
    pct(s.descriptors.as_ref()?.host_utilization())
}

fn process_fds(s: &Snapshot) -> Option<f64> {
    pct(s.descriptors.as_ref()?.process_utilization_max())
}

fn tcp_memory(s: &Snapshot) -> Option<f64> {
    pct(s.socket_memory.as_ref()?.tcp.utilization())
}

fn udp_memory(s: &Snapshot) -> Option<f64> {
    pct(s.socket_memory.as_ref()?.udp.utilization())
}

fn syn_queue(s: &Snapshot) -> Option<f64> {
    pct(Some(s.listen_path.as_ref()?.syn_utilization_max))
}

fn table(s: &Snapshot, name: &str) -> Option<f64> {
    pct(s.neighbours.as_ref()?.tables.iter().find(|t| t.table == name)?.utilization())
}

fn arp(s: &Snapshot) -> Option<f64> {
    table(s, "arp")
}

fn ndisc(s: &Snapshot) -> Option<f64> {
    table(s, "ndisc")
}

fn snmp(s: &Snapshot, pick: fn(&crate::sources::procfs::snmp::SnmpCounters) -> Option<u64>) -> Option<f64> {
    pick(s.snmp.as_ref()?).map(|v| v as f64)
}

fn syn_cookies(s: &Snapshot) -> Option<f64> {
    snmp(s, |t| t.reqq_full_do_cookies)
}

fn syn_drops(s: &Snapshot) -> Option<f64> {
    snmp(s, |t| t.reqq_full_drop)
}

fn tcp_mem_aborts(s: &Snapshot) -> Option<f64> {
    snmp(s, |t| t.abort_on_memory)
}

fn udp_mem_errors(s: &Snapshot) -> Option<f64> {
    s.snmp.as_ref()?.udp_sum(|m| m.mem_errors).map(|v| v as f64)
}

fn neighbour_fulls(s: &Snapshot) -> Option<f64> {
    s.neighbours.as_ref()?.tables.iter().map(|t| t.table_fulls).sum::<Option<u64>>().map(|v| v as f64)
}

macro_rules! percent {
    ($name:expr, $label:expr, $info:expr, $value:expr) => {
        Field {
            warning: Some(pct_warn),
            critical: Some(pct_crit),
            ..field!($name, $label, $info, "LINE2", Kind::Gauge, $value)
        }
    };
}

macro_rules! failures {
    ($name:expr, $label:expr, $info:expr, $value:expr) => {
        Field { warning: Some(any), ..field!($name, $label, $info, "LINE2", Kind::Derive, $value) }
    };
}

pub(super) static CONNTRACK: Graph = Graph {
    name: "conntrack",
    title: "Conntrack table",
    vlabel: "entries",
    args: "--base 1000 -l 0",
    info: "Connection tracking entries from nf_conntrack_count, against nf_conntrack_max. When the table is \
           full the kernel drops new packets (nf_conntrack: table full, dropping packet; on Linux 6.x: table full in netns N).",
    fields: &[
        Field {
            warning: Some(ct_warn),
            critical: Some(ct_crit),
            ..field!(
                "entries",
                "entries",
                "nf_conntrack_count. Raise nf_conntrack_max together with the hash size if it nears the limit.",
                "AREA",
                Kind::Gauge,
                ct_entries
            )
        },
        field!("max", "nf_conntrack_max", "The table limit.", "LINE2", Kind::Gauge, ct_limit),
    ],
    needs_breakdown: false,
};

pub(super) static CONNTRACK_ERRORS: Graph = Graph {
    name: "conntrack_errors",
    title: "Conntrack drops",
    vlabel: "events per ${graph_period}",
    args: "--base 1000 -l 0",
    info: "Per-CPU counters of /proc/net/stat/nf_conntrack, summed. Any drop means packets are being lost now.",
    fields: &[
        field!("drop", "dropped", "Packets dropped: no entry could be created.", "LINE2", Kind::Derive, ct_drop),
        field!("early_drop", "early dropped", "Entries evicted to make room.", "LINE1", Kind::Derive, ct_early_drop),
        field!(
            "insert_failed",
            "insert failed",
            "Entries that clashed on insert.",
            "LINE1",
            Kind::Derive,
            ct_insert_failed
        ),
    ],
    needs_breakdown: false,
};

pub(super) static RESOURCES: Graph = Graph {
    name: "resources",
    title: "Other kernel limits: the fullest use of each",
    vlabel: "% of its limit",
    args: "--base 1000 -l 0",
    info: "Descriptors, socket memory, SYN queues, CPU backlogs and neighbour tables, each the fullest one as a \
           percentage of its own limit. At 100 % the kernel refuses: EMFILE or ENFILE, TCP aborts and UDP drops, \
           SYN cookies or drops, packets dropped before any socket, neighbour table overflow.",
    fields: &[
        percent!("file_handles", "host file handles (%)", "fs.file-nr allocated against fs.file-max: at 100 % open() fails with ENFILE host-wide.", file_handles),
        percent!("process_fds", "fullest process descriptors (%)", "The process nearest its RLIMIT_NOFILE soft limit: at 100 % it gets EMFILE (Too many open files).", process_fds),
        percent!("tcp_memory", "TCP buffer memory (%)", "TCP socket buffers against tcp_mem's max: at 100 % TCP aborts connections.", tcp_memory),
        percent!("udp_memory", "UDP buffer memory (%)", "UDP socket buffers against udp_mem's max: at 100 % UDP drops datagrams (MemErrors).", udp_memory),
        percent!("syn_queue", "fullest SYN queue (%)", "Half-open connections of the fullest listener against its backlog (or tcp_max_syn_backlog): at 100 % SYN cookies or drops.", syn_queue),
        percent!("cpu_backlog", "fullest CPU backlog (%)", "Packets waiting in the fullest CPU's receive backlog against netdev_max_backlog (Linux 5.10+).", cpu_backlog),
        percent!("arp", "ARP table (%)", "IPv4 neighbour entries against gc_thresh3 (host-wide): at 100 % neighbour table overflow.", arp),
        percent!("ndisc", "NDISC table (%)", "IPv6 neighbour entries against gc_thresh3 (host-wide).", ndisc),
    ],
    needs_breakdown: false,
};

pub(super) static RESOURCE_FAILURES: Graph = Graph {
    name: "resource_failures",
    title: "Refused for lack of a kernel resource",
    vlabel: "events per ${graph_period}",
    args: "--base 1000 -l 0",
    info: "The kernel's own counters of the moments a resource ran out: any non-zero rate means connections or \
           packets are being lost now.",
    fields: &[
        failures!(
            "syn_cookies",
            "SYN queue full, cookie sent",
            "TcpExt TCPReqQFullDoCookies: a listener's SYN queue was full (Possible SYN flooding).",
            syn_cookies
        ),
        failures!(
            "syn_drops",
            "SYN queue full, dropped",
            "TcpExt TCPReqQFullDrop: SYNs dropped at a full SYN queue with cookies off.",
            syn_drops
        ),
        failures!(
            "tcp_mem_aborts",
            "TCP aborts on memory",
            "TcpExt TCPAbortOnMemory: connections aborted at tcp_mem or tcp_max_orphans.",
            tcp_mem_aborts
        ),
        failures!(
            "udp_mem_errors",
            "UDP memory errors",
            "Udp MemErrors: datagrams dropped at udp_mem.",
            udp_mem_errors
        ),
        failures!(
            "cpu_backlog_drops",
            "CPU backlog drops",
            "softnet_stat dropped, all CPUs: packets dropped at a full backlog (netdev_max_backlog).",
            softnet_dropped
        ),
        failures!(
            "neighbour_full",
            "neighbour table full",
            "arp_cache and ndisc_cache table_fulls: new neighbours refused at gc_thresh3.",
            neighbour_fulls
        ),
    ],
    needs_breakdown: false,
};
