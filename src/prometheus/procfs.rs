//! The families of the `procfs/` sources: what the kernel keeps in /proc and /proc/sys.

use prometheus::proto::MetricType::{COUNTER, GAUGE};

use prometheus::proto::MetricType;

use super::families::{f, opt, Families};
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

/// The kernel's socket totals.
pub(super) fn sockstat(out: &mut Families, s: &Snapshot) {
    use MetricType::GAUGE;
    if let Some(st) = &s.sockstat {
        out.labelled(
            "sockwatch_sockstat_tcp_sockets",
            "TCP socket totals kept by the kernel, from /proc/net/sockstat (inuse adds TCP6 inuse from sockstat6). \
             orphan: closed by the application but still held; tw: TIME_WAIT; alloc: allocated, all states.",
            GAUGE,
            [("inuse", st.inuse), ("orphan", st.orphan), ("tw", st.tw), ("alloc", st.alloc)]
                .map(|(k, v)| (vec![("kind", k.to_owned())], f(v))),
        );
        out.gauge(
            "sockwatch_sockstat_tcp_memory_bytes",
            "Memory used by TCP socket buffers, host-wide: /proc/net/sockstat TCP mem (pages) times the page size. Compare with net.ipv4.tcp_mem.",
            f(st.mem_bytes),
        );
    }
}

/// Conntrack counters.
pub(super) fn conntrack(out: &mut Families, s: &Snapshot) {
    if let Some(ct) = &s.conntrack {
        out.gauge(
            "sockwatch_conntrack_entries",
            "Connection tracking entries in this network namespace, from /proc/sys/net/netfilter/nf_conntrack_count. \
             At nf_conntrack_max the kernel drops new packets (\"nf_conntrack: table full, dropping packet\"; on Linux 6.x \
             \"table full in netns N\").",
            f(ct.entries),
        );
        out.gauge(
            "sockwatch_conntrack_entries_limit",
            "Maximum conntrack entries, from /proc/sys/net/netfilter/nf_conntrack_max (global).",
            opt(ct.limit),
        );
        out.gauge(
            "sockwatch_conntrack_buckets",
            "Conntrack hash table size, from /proc/sys/net/netfilter/nf_conntrack_buckets. Raise it together with nf_conntrack_max.",
            opt(ct.buckets),
        );
        if let Some(cs) = &ct.stats {
            let src = "summed over CPUs from /proc/net/stat/nf_conntrack";
            out.counter(
                "sockwatch_conntrack_dropped_total",
                &format!("Packets dropped because a conntrack entry could not be created (table full), {src}."),
                opt(cs.drop),
            );
            out.counter(
                "sockwatch_conntrack_early_dropped_total",
                &format!("Conntrack entries evicted early to make room in a full table, {src}."),
                opt(cs.early_drop),
            );
            out.counter(
                "sockwatch_conntrack_insert_failed_total",
                &format!("Conntrack entries that could not be inserted (clash on insert), {src}."),
                opt(cs.insert_failed),
            );
            out.counter(
                "sockwatch_conntrack_invalid_total",
                &format!("Packets conntrack could not track (invalid state or malformed), {src}."),
                opt(cs.invalid),
            );
            out.counter(
                "sockwatch_conntrack_search_restart_total",
                &format!("Conntrack hash lookups restarted because of a concurrent resize or deletion, {src}."),
                opt(cs.search_restart),
            );
        }
    }
}

/// TCP counters.
pub(super) fn snmp(out: &mut Families, s: &Snapshot) {
    if let Some(t) = &s.snmp {
        let snmp = "from /proc/net/snmp (Tcp:)";
        let ext = "from /proc/net/netstat (TcpExt:)";
        for (name, help, value) in [
            ("sockwatch_tcp_active_opens_total", format!("Outgoing TCP connections started, ActiveOpens {snmp}."), t.active_opens),
            ("sockwatch_tcp_passive_opens_total", format!("Incoming TCP connections accepted, PassiveOpens {snmp}."), t.passive_opens),
            ("sockwatch_tcp_attempt_fails_total", format!("TCP connection attempts that failed, AttemptFails {snmp}."), t.attempt_fails),
            ("sockwatch_tcp_estab_resets_total", format!("TCP connections reset from ESTABLISHED or CLOSE_WAIT, EstabResets {snmp}."), t.estab_resets),
            ("sockwatch_tcp_retrans_segments_total", format!("TCP segments retransmitted, RetransSegs {snmp}."), t.retrans_segs),
            (
                "sockwatch_tcp_time_wait_overflow_total",
                format!("TIME_WAIT sockets destroyed at once because tcp_max_tw_buckets was reached, TCPTimeWaitOverflow {ext}."),
                t.time_wait_overflow,
            ),
            ("sockwatch_tcp_listen_overflows_total", format!("Connections dropped because a listener's accept queue was full, ListenOverflows {ext}."), t.listen_overflows),
            ("sockwatch_tcp_listen_drops_total", format!("SYNs dropped at a listener for any reason (overflows included), ListenDrops {ext}."), t.listen_drops),
            ("sockwatch_tcp_aborts_on_memory_total", format!("TCP connections aborted for lack of memory or too many orphans, TCPAbortOnMemory {ext}."), t.abort_on_memory),
        ] {
            out.counter(name, &help, opt(value));
        }
    }
}

/// The sysctl limits.
pub(super) fn limits(out: &mut Families, s: &Snapshot) {
    if let Some(l) = &s.limits {
        let sysctl = |name: &str| format!("/proc/sys/net/ipv4/{name}");
        out.gauge(
            "sockwatch_ephemeral_port_range_low",
            &format!("Lowest local port connect() may pick, from {}.", sysctl("ip_local_port_range")),
            f(l.port_range_low.into()),
        );
        out.gauge(
            "sockwatch_ephemeral_port_range_high",
            &format!("Highest local port connect() may pick, from {}.", sysctl("ip_local_port_range")),
            f(l.port_range_high.into()),
        );
        out.gauge(
            "sockwatch_ephemeral_port_range_size",
            "Ephemeral ports available per destination (local IP, remote IP, remote port): ports in ip_local_port_range minus ip_local_reserved_ports inside it.",
            f(l.port_range_size().into()),
        );
        out.gauge(
            "sockwatch_tcp_max_tw_buckets",
            &format!(
                "Limit on TIME_WAIT sockets; beyond it they are destroyed early, from {}.",
                sysctl("tcp_max_tw_buckets")
            ),
            opt(l.tcp_max_tw_buckets),
        );
        out.gauge(
            "sockwatch_tcp_fin_timeout_seconds",
            &format!(
                "FIN_WAIT_2 timeout of orphaned sockets, from {}. It does NOT change the 60 s TIME_WAIT length.",
                sysctl("tcp_fin_timeout")
            ),
            opt(l.tcp_fin_timeout),
        );
        out.gauge(
            "sockwatch_tcp_tw_reuse",
            &format!(
                "TIME_WAIT reuse for outgoing connections: 0 off, 1 on, 2 loopback only, from {}.",
                sysctl("tcp_tw_reuse")
            ),
            opt(l.tcp_tw_reuse),
        );
        out.gauge(
            "sockwatch_tcp_max_orphans",
            &format!(
                "Limit on orphaned sockets, from {} (not visible inside a network namespace).",
                sysctl("tcp_max_orphans")
            ),
            opt(l.tcp_max_orphans),
        );
        out.gauge(
            "sockwatch_tcp_max_syn_backlog",
            &format!("Limit on half-open connections per listener, from {}.", sysctl("tcp_max_syn_backlog")),
            opt(l.tcp_max_syn_backlog),
        );
        out.gauge(
            "sockwatch_somaxconn",
            "Upper bound on a listener's accept queue (listen() backlog), from /proc/sys/net/core/somaxconn.",
            opt(l.somaxconn),
        );
        out.gauge(
            "sockwatch_tcp_tw_timeout_seconds",
            &format!("TIME_WAIT length on vendor kernels that make it tunable, from {}; absent on mainline kernels, where it is fixed at 60 s.", sysctl("tcp_tw_timeout")),
            opt(l.tcp_tw_timeout),
        );
    }
}

/// Open files: the host's against fs.file-max, the fullest processes against their own limit.
pub(super) fn descriptors(out: &mut Families, s: &Snapshot) {
    let Some(d) = &s.descriptors else { return };
    if let Some(h) = d.host {
        out.gauge(
            "sockwatch_file_handles_allocated",
            "File handles allocated host-wide, the first field of /proc/sys/fs/file-nr; at sockwatch_file_handles_max \
             every open() fails with ENFILE.",
            f(h.allocated),
        );
        out.gauge("sockwatch_file_handles_max", "fs.file-max, the third field of /proc/sys/fs/file-nr.", f(h.max));
    }
    let labels = |p: &crate::sources::procfs::fds::ProcessFds| {
        vec![
            ("pid", p.pid.to_string()),
            ("command", p.command.clone()),
            ("container_id", p.owner.container_id.clone().unwrap_or_default()),
            ("pod_uid", p.owner.pod_uid.clone().unwrap_or_default()),
        ]
    };
    out.labelled(
        "sockwatch_process_fds_open",
        "Open file descriptors of a process (the size of /proc/PID/fd), for the --fds.top-k processes nearest their \
         limit; container_id and pod_uid from /proc/PID/cgroup.",
        GAUGE,
        d.top.iter().map(|p| (labels(p), f(p.open))),
    );
    out.labelled(
        "sockwatch_process_fds_limit",
        "The process's RLIMIT_NOFILE soft limit (Max open files in /proc/PID/limits): at it accept(), socket() and \
         open() fail with EMFILE, \"Too many open files\".",
        GAUGE,
        d.top.iter().map(|p| (labels(p), f(p.limit))),
    );
    out.gauge(
        "sockwatch_process_fd_utilization_max",
        "Highest open descriptors / RLIMIT_NOFILE over every process read; at 1 that process gets EMFILE.",
        d.process_utilization_max(),
    );
    out.gauge("sockwatch_fds_processes", "Processes whose descriptors were counted in this sample.", f(d.processes));
    out.gauge(
        "sockwatch_fds_processes_unreadable",
        "Processes whose /proc/PID/fd or limits could not be read (another user's, without root): not in the ranking.",
        f(d.unreadable),
    );
}

/// TCP and UDP buffer memory against tcp_mem and udp_mem.
pub(super) fn socket_memory(out: &mut Families, s: &Snapshot) {
    let Some(m) = &s.socket_memory else { return };
    let protocols = [("tcp", &m.tcp), ("udp", &m.udp)];
    out.labelled(
        "sockwatch_socket_memory_bytes",
        "Memory held by a protocol's socket buffers, host-wide: the memory column (pages) of /proc/net/protocols \
         times the page size, as sockstat's mem.",
        GAUGE,
        protocols.iter().map(|(p, m)| (vec![("protocol", p.to_string())], f(m.used_bytes))),
    );
    out.labelled(
        "sockwatch_socket_memory_limit_bytes",
        "net.ipv4.tcp_mem / udp_mem in bytes: below min nothing is limited; above pressure the kernel shrinks \
         buffers; at max allocations fail (TCP aborts connections, UDP drops datagrams). Host-wide; absent inside a \
         network namespace, where the kernel hides them.",
        GAUGE,
        protocols.iter().flat_map(|(p, m)| {
            m.limits.into_iter().flat_map(move |l| {
                ["min", "pressure", "max"]
                    .into_iter()
                    .zip(l)
                    .map(move |(t, v)| (vec![("protocol", p.to_string()), ("threshold", t.to_owned())], f(v)))
            })
        }),
    );
    out.labelled(
        "sockwatch_socket_memory_utilization",
        "sockwatch_socket_memory_bytes / its max threshold: at 1 TCP aborts connections (TCPAbortOnMemory) and UDP \
         drops datagrams (MemErrors).",
        GAUGE,
        protocols.iter().filter_map(|(p, m)| Some((vec![("protocol", p.to_string())], m.utilization()?))),
    );
    out.labelled(
        "sockwatch_socket_memory_pressure",
        "1 while the kernel is in memory pressure for the protocol (the press column of /proc/net/protocols): \
         socket buffers are being shrunk. TCP only (UDP reports no pressure state).",
        GAUGE,
        protocols
            .iter()
            .filter_map(|(p, m)| Some((vec![("protocol", p.to_string())], if m.pressure? { 1.0 } else { 0.0 }))),
    );
    if let Some(t) = &s.snmp {
        let ext = "from /proc/net/netstat (TcpExt:)";
        out.counter(
            "sockwatch_tcp_memory_pressures_total",
            &format!(
                "Times TCP entered memory pressure (tcp_mem's pressure threshold passed), TCPMemoryPressures {ext}."
            ),
            t.memory_pressures.map(f),
        );
        out.counter(
            "sockwatch_tcp_memory_pressure_seconds_total",
            &format!("Time spent in TCP memory pressure, TCPMemoryPressuresChrono (milliseconds) {ext}."),
            t.memory_pressures_chrono_ms.map(|ms| ms as f64 / 1000.0),
        );
    }
}

/// The ARP and NDISC tables, host-wide.
pub(super) fn neighbours(out: &mut Families, s: &Snapshot) {
    let Some(n) = &s.neighbours else { return };
    let table = |t: &crate::sources::procfs::neighbour::NeighbourTable| vec![("table", t.table.to_owned())];
    let from = "from /proc/net/stat/arp_cache and ndisc_cache (host-wide: one table for every network namespace)";
    out.labelled(
        "sockwatch_neighbour_entries",
        &format!("Entries in the neighbour table, {from}."),
        GAUGE,
        n.tables.iter().map(|t| (table(t), f(t.entries))),
    );
    out.labelled(
        "sockwatch_neighbour_gc_thresh",
        "The table's limits, /proc/sys/net/ipv{4,6}/neigh/default/gc_thresh1/2/3: below 1 nothing is collected; above \
         2 each new entry forces a collection; at 3 new entries fail (\"neighbour table overflow\").",
        GAUGE,
        n.tables.iter().flat_map(|t| {
            [("1", t.gc_thresh1), ("2", t.gc_thresh2), ("3", t.gc_thresh3)].into_iter().filter_map(move |(lvl, v)| {
                Some((vec![("table", t.table.to_owned()), ("threshold", format!("gc_thresh{lvl}"))], f(v?)))
            })
        }),
    );
    out.labelled(
        "sockwatch_neighbour_utilization",
        "Entries / gc_thresh3: at 1 new neighbours fail and packets to unresolved hosts are dropped. Entries include \
         permanent ones, which gc_thresh does not count (Linux 4.19+): it can read above 1 without failures.",
        GAUGE,
        n.tables.iter().filter_map(|t| Some((table(t), t.utilization()?))),
    );
    out.labelled(
        "sockwatch_neighbour_table_fulls_total",
        &format!("New entries refused because the table stayed at gc_thresh3 after a forced collection, {from}."),
        COUNTER,
        n.tables.iter().filter_map(|t| Some((table(t), f(t.table_fulls?)))),
    );
    out.labelled(
        "sockwatch_neighbour_forced_gc_runs_total",
        &format!("Forced garbage collections (the table above gc_thresh2 or full), {from}."),
        COUNTER,
        n.tables.iter().filter_map(|t| Some((table(t), f(t.forced_gc_runs?)))),
    );
}

/// The UDP MIBs of /proc/net/snmp and /proc/net/snmp6, by family and protocol.
pub(super) fn udp_counters(out: &mut Families, s: &Snapshot) {
    let Some(t) = &s.snmp else { return };
    let from = "from /proc/net/snmp (Udp:, UdpLite:) and /proc/net/snmp6 (Udp6, UdpLite6)";
    type Field = fn(&crate::sources::procfs::snmp::UdpMib) -> Option<u64>;
    let families: [(&str, String, Field); 6] = [
        ("sockwatch_udp_in_datagrams_total", format!("UDP datagrams delivered to sockets, InDatagrams {from}."), |m| {
            m.in_datagrams
        }),
        ("sockwatch_udp_no_ports_total", format!("UDP datagrams to a port with no socket, NoPorts {from}."), |m| {
            m.no_ports
        }),
        (
            "sockwatch_udp_in_errors_total",
            format!("UDP datagrams received but not delivered (full buffers, bad checksums, memory), InErrors {from}."),
            |m| m.in_errors,
        ),
        (
            "sockwatch_udp_rcvbuf_errors_total",
            format!(
                "UDP datagrams dropped because a socket's receive buffer was full, RcvbufErrors {from}: \
                 sockwatch_udp_drops_total says which port."
            ),
            |m| m.rcvbuf_errors,
        ),
        (
            "sockwatch_udp_sndbuf_errors_total",
            format!("UDP datagrams not sent because a socket's send buffer was full, SndbufErrors {from}."),
            |m| m.sndbuf_errors,
        ),
        (
            "sockwatch_udp_mem_errors_total",
            format!(
                "UDP datagrams dropped because UDP as a whole was at net.ipv4.udp_mem (host-wide socket memory), not one \
                 socket's buffer, MemErrors {from}."
            ),
            |m| m.mem_errors,
        ),
    ];
    for (name, help, field) in families {
        out.labelled(
            name,
            &help,
            MetricType::COUNTER,
            t.udp.iter().filter_map(|m| {
                let labels = vec![("family", m.family.to_owned()), ("protocol", m.protocol.to_owned())];
                field(m).map(|v| (labels, v as f64))
            }),
        );
    }
}
