//! The `sockwatch_netns_*` families: every network namespace's O(1) counters, for the
//! top `--netns.top-k` by pressure (plus sockwatch's own and the worst of each kind), and
//! host-wide aggregates that are always present. Bounded whatever the namespace count.

use prometheus::proto::MetricType;

use super::families::Families;
use super::labels::{in_netns, ConntrackDestination, Labels, Netns, PortDestination};
use crate::snapshot::Snapshot;
use crate::sources::ctnetlink::attribution::protocol_name;
use crate::sources::netns::{Namespace, NsCounters};
use crate::sources::tcp::sockets::TCP_STATES;

fn netns_label(n: &Namespace) -> Labels {
    Netns(n.inode).labels()
}

/// Who each exported namespace is: join on `netns` to label any `sockwatch_netns_*` series.
fn info(out: &mut Families, top: &[Namespace]) {
    out.labelled(
        "sockwatch_netns_info",
        "One series per exported network namespace, value 1, naming it: netns (the namespace's inode, as in \
         /proc/PID/ns/net and the kernel's 'table full in netns N'), name (its /run/netns or Docker netns file), \
         container_id and runtime (from /proc/PID/cgroup), pod_uid (from a kubepods cgroup), own (1 for \
         sockwatch's own). Join: * on(netns) group_left(container_id, pod_uid) sockwatch_netns_info. The process \
         it was read through is sockwatch_netns_pid's value, not a label: short-lived processes (ip netns exec in \
         a loop) would make a new series each scrape.",
        MetricType::GAUGE,
        top.iter().map(|n| {
            let labels = vec![
                ("netns", n.inode.to_string()),
                ("name", n.name.clone().unwrap_or_default()),
                ("container_id", n.owner.container_id.clone().unwrap_or_default()),
                ("runtime", n.owner.runtime.unwrap_or_default().to_owned()),
                ("pod_uid", n.owner.pod_uid.clone().unwrap_or_default()),
                ("own", u8::from(n.own).to_string()),
            ];
            (labels, 1.0)
        }),
    );
    out.labelled(
        "sockwatch_netns_pid",
        "The process an exported namespace was read through (its /proc/PID/net files): a value, so that a \
         namespace whose processes come and go keeps one series. Absent for a namespace read through its \
         /run/netns file, with no process in it.",
        MetricType::GAUGE,
        top.iter().filter_map(|n| Some((netns_label(n), f64::from(n.pid?)))),
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
        "Network namespaces found but not read: a pinned namespace without CAP_SYS_ADMIN to enter it, one whose \
         process's /proc files are hidden, or one gone during the sample. Namespaces, not processes.",
        n.unreadable as f64,
    );
    out.gauge(
        "sockwatch_netns_unidentified_processes",
        "Processes whose network namespace could not be named: their /proc/PID/ns/net needs ptrace access (root, or \
         CAP_SYS_PTRACE for another user's). Processes, not namespaces: how many namespaces they are in is unknown.",
        n.unidentified_processes as f64,
    );
    if let Some((inode, utilization)) = crate::derived::netns_conntrack_utilization(s) {
        out.labelled(
            "sockwatch_netns_conntrack_utilization_max",
            "The fullest namespace's conntrack entries over the host-wide nf_conntrack_max, with its netns label (join \
             sockwatch_netns_info for its container and pod). At 1 that namespace drops new flows ('table full in \
             netns N') whatever the host's own count says. Not capped.",
            MetricType::GAUGE,
            [(Netns(inode).labels(), utilization)],
        );
    }
    if let Some((inode, tw)) = n.worst_time_wait {
        out.labelled(
            "sockwatch_netns_tcp_time_wait_max",
            "The namespace with the most TIME_WAIT sockets, and how many: a client there without keep-alive holds a \
             port per connection for 60 s, against its own ip_local_port_range (28,232 ports by default in a new \
             namespace).",
            MetricType::GAUGE,
            [(Netns(inode).labels(), tw as f64)],
        );
    }
}

/// The deep layer's health: whether it can dump inside namespaces, how much it has, and
/// the sockets it keeps; then each namespace's readings.
fn deep(out: &mut Families, n: &crate::sources::netns::Namespaces) {
    if n.deep_off {
        return; // turned off by setting: no layer, no series (as a source that is off)
    }
    out.gauge(
        "sockwatch_netns_deep_up",
        "1 when sockwatch can dump sockets inside other network namespaces; 0 when it cannot: no CAP_SYS_ADMIN for \
         setns, or no file descriptor to spare for any namespace's socket under its open-files limit (the \
         per-namespace ports are then absent; the O(1) counters go on). The log says why, once, and what to raise \
         where it runs (a container's nofile, systemd's LimitNOFILE=).",
        if n.deep_down.is_some() { 0.0 } else { 1.0 },
    );
    out.counter(
        "sockwatch_netns_deep_dumps_total",
        "sock_diag dumps taken inside namespaces, within half of what --sampler.max-share leaves of each sample (a \
         dump walks the host's whole socket hash unless the namespace has its own): only those that could run out \
         (sockwatch_netns_deep_namespaces), the near every sample.",
        n.deep_dumps_total as f64,
    );
    out.counter(
        "sockwatch_netns_deep_refresh_dumps_total",
        "Dumps of near namespaces between samples: while a namespace is near its port range (sockwatch_netns_deep_namespaces{need=\"near\"}), it is dumped again every second (every few seconds where one dump costs more than a sixteenth of --sampler.max-share of a second: refreshes never spend more), and the readings published at once, so that a step in its rate shows within a second or two.",
        n.deep_refresh_dumps_total as f64,
    );
    out.gauge(
        "sockwatch_netns_deep_near_refresh_seconds",
        "Seconds within which each near namespace is dumped again between samples at the current cost: 1 while the \
         refreshes' budget holds a dump of every near namespace each second; more on a host whose dumps walk a large \
         shared socket hash. 0 before the first refresh.",
        n.deep_near_refresh_seconds,
    );
    out.gauge(
        "sockwatch_netns_deep_sockets",
        "Netlink sockets kept open inside namespaces (one each; closed as soon as its namespace is gone).",
        n.deep_kept as f64,
    );
    out.gauge(
        "sockwatch_netns_deep_revisit_samples",
        "Samples within which every namespace that could run out (near or could) is dumped again at the current \
         cost, the dumps per sample being the deep layer's budget over what a dump takes (at least 1). Multiply by \
         the interval for seconds; the log says once when that is longer than the 300 s a projection warns ahead.",
        n.deep_revisit_samples as f64,
    );
    out.gauge(
        "sockwatch_netns_deep_near_revisit_samples",
        "Samples within which each near namespace is dumped again: 1 while the budget holds every near one each \
         sample.",
        n.deep_near_revisit_samples as f64,
    );
    out.labelled(
        "sockwatch_netns_deep_namespaces",
        "Namespaces by how soon they could fill their own port range even if every new connection went to one \
         destination (need: near within 300 s, dumped every sample; could within an hour, dumped in turn; far, \
         not dumped). The bound: at most their TCP sockets (sockstat), or once dumped the busiest destination's \
         ports then plus every connection opened since (ActiveOpens), growing at its rate since the last sample.",
        MetricType::GAUGE,
        crate::sources::netns::deep::Need::ALL
            .iter()
            .map(|need| (vec![("need", need.name().to_owned())], n.deep_needs[*need as usize] as f64)),
    );
    deep_readings(out, n);
    deep_projection(out, n);
}

/// Each exported namespace's latest dump inside it: its busiest destination against its own
/// range, its states and fullest listener, how old the dump is; and the worst namespace.
fn deep_readings(out: &mut Families, n: &crate::sources::netns::Namespaces) {
    use MetricType::GAUGE;
    let with_deep = || n.top.iter().filter_map(|ns| Some((ns, ns.deep.as_ref()?)));
    out.labelled(
        "sockwatch_netns_ephemeral_port_utilization",
        "The namespace's busiest destination's ephemeral ports over its own ip_local_port_range (a new namespace starts \
         at 32768-60999, not the host's), from its latest dump inside it (see sockwatch_netns_deep_age_samples). At 1 \
         connect() in it fails with EADDRNOTAVAIL. Not capped.",
        GAUGE,
        with_deep().map(|(ns, d)| (netns_label(ns), d.utilization)),
    );
    out.labelled(
        "sockwatch_netns_ephemeral_ports_used",
        "Local ports held toward the namespace's busiest destination (local IP, remote IP, remote port), every state \
         from SYN_SENT to TIME_WAIT, from its latest dump inside it.",
        GAUGE,
        with_deep().filter_map(|(ns, d)| {
            let b = d.busiest.as_ref()?;
            let to = PortDestination { local_ip: b.local_ip, remote_ip: b.remote_ip, remote_port: b.remote_port };
            Some((in_netns(ns.inode, to.labels()), b.used as f64))
        }),
    );
    out.labelled(
        "sockwatch_netns_ephemeral_port_range_size",
        "The namespace's own ip_local_port_range size, read inside it at its latest dump.",
        GAUGE,
        with_deep().map(|(ns, d)| (netns_label(ns), f64::from(d.range.capacity))),
    );
    out.labelled(
        "sockwatch_netns_tcp_states",
        "TCP sockets of the namespace by state (both families), from its latest dump inside it. TIME_WAIT sockets in \
         their substate, as ss shows them.",
        GAUGE,
        with_deep().flat_map(|(ns, d)| {
            (1..TCP_STATES.len()).map(move |i| {
                let mut labels = netns_label(ns);
                labels.push(("state", TCP_STATES[i].to_owned()));
                (labels, d.states[i] as f64)
            })
        }),
    );
    out.labelled(
        "sockwatch_netns_listen_queue_utilization",
        "The namespace's fullest listener: its accept queue over its backlog, from its latest dump inside it. At 1 \
         the kernel drops new connections to it (ListenOverflows).",
        GAUGE,
        with_deep().map(|(ns, d)| (netns_label(ns), d.listen_utilization)),
    );
    out.labelled(
        "sockwatch_netns_deep_age_samples",
        "Samples since the namespace's latest dump inside it (0: this sample). The most urgent namespaces are dumped \
         about every sample; every namespace within sockwatch_netns_deep_revisit_samples.",
        GAUGE,
        with_deep().map(|(ns, d)| (netns_label(ns), d.age as f64)),
    );
    if let Some((inode, u)) = n.worst_ports {
        out.labelled(
            "sockwatch_netns_ephemeral_port_utilization_max",
            "The highest sockwatch_netns_ephemeral_port_utilization of any namespace, with its netns: a container or pod \
             whose busiest destination is running out of local ports inside its own namespace, where the host's figures \
             do not see it.",
            GAUGE,
            [(Netns(inode).labels(), u)],
        );
    }
}

/// Where each exported namespace's ports are heading, from its latest dump, aged.
fn deep_projection(out: &mut Families, n: &crate::sources::netns::Namespaces) {
    out.labelled(
        "sockwatch_netns_ephemeral_port_seconds_to_exhaustion",
        &format!(
            "Seconds until the namespace's first destination has every port of its own ip_local_port_range held, at its \
             close rate and trend: the host's projection (sockwatch_ephemeral_port_seconds_to_exhaustion) run on the \
             TIME_WAIT timers of the namespace's latest dump, aged by the time since that dump (it counts down between \
             dumps). 0 when one is full now, +Inf when none is within {} s.",
            crate::sources::tcp::projection::HORIZON_SECONDS
        ),
        MetricType::GAUGE,
        n.top.iter().filter_map(|ns| {
            let d = ns.deep.as_ref()?;
            Some((netns_label(ns), d.seconds_to_exhaustion().unwrap_or(f64::INFINITY)))
        }),
    );
    let Some((inode, seconds)) = n.soonest else { return };
    let Some(d) = n.top.iter().find(|ns| ns.inode == inode).and_then(|ns| ns.deep.as_ref()?.soonest.as_ref()) else {
        return;
    };
    out.labelled(
        "sockwatch_netns_ephemeral_port_seconds_to_exhaustion_min",
        "The soonest of sockwatch_netns_ephemeral_port_seconds_to_exhaustion, with its namespace and the destination \
         heading there (join sockwatch_netns_info on netns for the container and pod). Absent while no namespace is \
         heading for exhaustion.",
        MetricType::GAUGE,
        [(
            in_netns(
                inode,
                PortDestination { local_ip: d.local_ip, remote_ip: d.remote_ip, remote_port: d.remote_port }.labels(),
            ),
            seconds,
        )],
    );
}

/// With `--conntrack.breakdown`: who fills the fullest namespaces' conntrack tables.
fn conntrack(out: &mut Families, top: &[Namespace]) {
    use MetricType::GAUGE;
    let with = || top.iter().filter_map(|ns| Some((ns, ns.conntrack.as_ref()?)));
    let src =
        "from a ctnetlink dump inside the namespace (the 3 namespaces with the most conntrack entries, at most once \
               per --conntrack.breakdown-interval; top 5 each)";
    out.labelled(
        "sockwatch_netns_conntrack_source_entries",
        &format!("Conntrack entries of the namespace by original source address, {src}."),
        GAUGE,
        with().flat_map(|(ns, a)| {
            a.sources.iter().map(move |(ip, n)| {
                let mut labels = netns_label(ns);
                labels.push(("source", ip.to_string()));
                (labels, *n as f64)
            })
        }),
    );
    out.labelled(
        "sockwatch_netns_conntrack_destination_entries",
        &format!("Conntrack entries of the namespace by original destination address, port and protocol, {src}."),
        GAUGE,
        with().flat_map(|(ns, a)| {
            a.destinations.iter().map(move |(d, n)| {
                let to = ConntrackDestination { addr: d.addr, port: d.port, protocol: &protocol_name(d.proto) };
                (in_netns(ns.inode, to.labels()), *n as f64)
            })
        }),
    );
    out.labelled(
        "sockwatch_netns_nat_port_utilization_max",
        &format!("The namespace's busiest NAT mapping's source ports over --nat.port-range (not capped), {src}."),
        GAUGE,
        with().map(|(ns, a)| (netns_label(ns), a.nat_utilization_max())),
    );
}

pub(super) fn render(out: &mut Families, s: &Snapshot) {
    let Some(n) = &s.namespaces else { return };
    aggregates(out, s);
    info(out, &n.top);
    per_namespace(out, &n.top);
    deep(out, n);
    conntrack(out, &n.top);
}
