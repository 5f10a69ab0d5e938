//! The `sockwatch_netns_*` families: every network namespace's O(1) counters, for the
//! top `--netns.top-k` by pressure (plus sockwatch's own and the worst of each kind), and
//! host-wide aggregates that are always present. Bounded whatever the namespace count.

use prometheus::proto::MetricType;

use super::families::Families;
use crate::snapshot::Snapshot;
use crate::sources::netns::{Namespace, NsCounters};

fn netns_label(n: &Namespace) -> Vec<(&'static str, String)> {
    vec![("netns", n.inode.to_string())]
}

/// Who each exported namespace is: join on `netns` to label any `sockwatch_netns_*` series.
fn info(out: &mut Families, top: &[Namespace]) {
    out.labelled(
        "sockwatch_netns_info",
        "One series per exported network namespace, value 1, naming it: netns (the namespace's inode, as in \
         /proc/PID/ns/net and the kernel's 'table full in netns N'), name (its /run/netns or Docker netns file), \
         container_id and runtime (from /proc/PID/cgroup), pod_uid (from a kubepods cgroup), pid (the process it \
         was read through), own (1 for sockwatch's own). Join: * on(netns) group_left(container_id, pod_uid) \
         sockwatch_netns_info.",
        MetricType::GAUGE,
        top.iter().map(|n| {
            let labels = vec![
                ("netns", n.inode.to_string()),
                ("name", n.name.clone().unwrap_or_default()),
                ("container_id", n.owner.container_id.clone().unwrap_or_default()),
                ("runtime", n.owner.runtime.unwrap_or_default().to_owned()),
                ("pod_uid", n.owner.pod_uid.clone().unwrap_or_default()),
                ("pid", n.pid.map(|p| p.to_string()).unwrap_or_default()),
                ("own", u8::from(n.own).to_string()),
            ];
            (labels, 1.0)
        }),
    );
}

type Pick = fn(&NsCounters) -> Option<u64>;

/// One family per counter, one series per exported namespace that has it.
fn per_namespace(out: &mut Families, top: &[Namespace]) {
    use MetricType::{COUNTER, GAUGE};
    let families: [(&str, &str, MetricType, Pick); 11] = [
        (
            "sockwatch_netns_tcp_sockets",
            "TCP sockets in use in the namespace, IPv4 + IPv6 (sockstat TCP inuse + sockstat6 TCP6 inuse).",
            GAUGE,
            |c| Some(c.tcp_inuse),
        ),
        (
            "sockwatch_netns_tcp_time_wait",
            "TIME_WAIT sockets of the namespace (sockstat tw). Each client-side one holds a local port for 60 s.",
            GAUGE,
            |c| Some(c.time_wait),
        ),
        (
            "sockwatch_netns_udp_sockets",
            "UDP sockets in use in the namespace (sockstat UDP inuse + UDP6 inuse).",
            GAUGE,
            |c| c.udp_inuse,
        ),
        (
            "sockwatch_netns_conntrack_entries",
            "Conntrack entries of the namespace (entries of /proc/PID/net/stat/nf_conntrack). The kernel checks each \
             namespace's own count against the host-wide nf_conntrack_max (sockwatch_conntrack_entries_limit): a \
             namespace can drop while the host's count is low.",
            GAUGE,
            |c| c.conntrack_entries,
        ),
        (
            "sockwatch_netns_conntrack_dropped_total",
            "Packets the namespace dropped because its conntrack table was full (drop, per-CPU summed).",
            COUNTER,
            |c| c.conntrack_drop,
        ),
        (
            "sockwatch_netns_conntrack_early_dropped_total",
            "Conntrack entries the namespace evicted to make room (early_drop).",
            COUNTER,
            |c| c.conntrack_early_drop,
        ),
        (
            "sockwatch_netns_conntrack_insert_failed_total",
            "Conntrack inserts that failed in the namespace (insert_failed).",
            COUNTER,
            |c| c.conntrack_insert_failed,
        ),
        (
            "sockwatch_netns_tcp_active_opens_total",
            "Outgoing TCP connections started in the namespace (Tcp: ActiveOpens).",
            COUNTER,
            |c| c.active_opens,
        ),
        (
            "sockwatch_netns_tcp_attempt_fails_total",
            "TCP connection attempts that failed in the namespace (Tcp: AttemptFails).",
            COUNTER,
            |c| c.attempt_fails,
        ),
        (
            "sockwatch_netns_tcp_listen_overflows_total",
            "Connections the namespace dropped on a full accept queue (TcpExt: ListenOverflows).",
            COUNTER,
            |c| c.listen_overflows,
        ),
        (
            "sockwatch_netns_tcp_time_wait_overflow_total",
            "TIME_WAIT sockets the namespace destroyed at tcp_max_tw_buckets (TcpExt: TCPTimeWaitOverflow).",
            COUNTER,
            |c| c.time_wait_overflow,
        ),
    ];
    for (name, help, kind, pick) in families {
        let series = top.iter().filter_map(|n| Some((netns_label(n), pick(n.counters.as_ref()?)? as f64)));
        out.labelled(name, help, kind, series);
    }
}

/// Always present, whatever the top-K: the count, and the worst namespace of each kind.
fn aggregates(out: &mut Families, s: &Snapshot) {
    let Some(n) = &s.namespaces else { return };
    out.gauge(
        "sockwatch_netns_namespaces",
        "Network namespaces found (one per /proc/PID/ns/net inode, plus pinned ones).",
        n.count as f64,
    );
    out.gauge(
        "sockwatch_netns_unreadable",
        "Network namespaces found but not read: another user's processes without ptrace access (CAP_SYS_PTRACE), \
         a pinned namespace without CAP_SYS_ADMIN to enter it, or gone during the sample.",
        n.unreadable as f64,
    );
    let limit = s.conntrack.as_ref().and_then(|c| c.limit).filter(|&m| m > 0);
    if let (Some((inode, entries)), Some(max)) = (n.worst_conntrack, limit) {
        out.labelled(
            "sockwatch_netns_conntrack_utilization_max",
            "The fullest namespace's conntrack entries over the host-wide nf_conntrack_max, with its netns label (join \
             sockwatch_netns_info for its container and pod). At 1 that namespace drops new flows ('table full in \
             netns N') whatever the host's own count says. Not capped.",
            MetricType::GAUGE,
            [(vec![("netns", inode.to_string())], entries as f64 / max as f64)],
        );
    }
    if let Some((inode, tw)) = n.worst_time_wait {
        out.labelled(
            "sockwatch_netns_tcp_time_wait_max",
            "The namespace with the most TIME_WAIT sockets, and how many: a client there without keep-alive holds a \
             port per connection for 60 s, against its own ip_local_port_range (28,232 ports by default in a new \
             namespace).",
            MetricType::GAUGE,
            [(vec![("netns", inode.to_string())], tw as f64)],
        );
    }
}

pub(super) fn render(out: &mut Families, s: &Snapshot) {
    let Some(n) = &s.namespaces else { return };
    aggregates(out, s);
    info(out, &n.top);
    per_namespace(out, &n.top);
}
