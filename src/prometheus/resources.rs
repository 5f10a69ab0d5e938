//! The families of the resources a busy host runs out of besides ports and conntrack:
//! descriptors, socket memory, the listen path, the per-CPU backlog and the neighbour
//! tables. One function per source, each reading its part of the snapshot only.

use prometheus::proto::MetricType::{COUNTER, GAUGE};

use super::families::{f, Families};
use crate::snapshot::Snapshot;

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

/// Each listener's drops and SYN queue, and the kernel's SYN-queue and cookie counters.
pub(super) fn listen_path(out: &mut Families, s: &Snapshot) {
    if let Some(lp) = &s.listen_path {
        let labels = |l: &crate::sources::tcp::listeners::Listener| {
            vec![("local_ip", l.local_ip.to_string()), ("port", l.port.to_string())]
        };
        out.labelled(
            "sockwatch_listener_drops_total",
            "SYNs and handshakes a listener dropped (its sk_drops, SK_MEMINFO_DROPS of a LISTEN-only inet_diag dump): \
             accept queue full, SYN queue full without cookies, or no memory. The same events as ListenDrops, per \
             listener; it restarts at 0 when the listener is reopened. Top --listeners.top-k by drops.",
            COUNTER,
            lp.top.iter().map(|l| (labels(l), f(l.drops))),
        );
        out.labelled(
            "sockwatch_listener_syn_queue",
            "Half-open connections (request sockets in SYN_RECV) on the listener's port; full at its backlog (or \
             tcp_max_syn_backlog if lower), past which the kernel sends SYN cookies or drops SYNs and logs \"Possible \
             SYN flooding on port X\".",
            GAUGE,
            lp.top.iter().map(|l| (labels(l), f(l.syn_queue))),
        );
        out.gauge(
            "sockwatch_listener_syn_queue_utilization_max",
            "Highest SYN queue / its limit (the listener's backlog, or tcp_max_syn_backlog if lower) over all listeners.",
            lp.syn_utilization_max,
        );
        out.counter(
            "sockwatch_listeners_drops_total",
            "Drops summed over every listener open now (resets when a dropping listener closes); compare with \
             sockwatch_tcp_listen_drops_total, which counts closed listeners too.",
            f(lp.drops),
        );
    }
    if let Some(t) = &s.snmp {
        let ext = "from /proc/net/netstat (TcpExt:)";
        for (name, help, v) in [
            (
                "sockwatch_tcp_syncookies_sent_total",
                "SYN cookies sent (SYN queue full, or tcp_syncookies=2), SyncookiesSent",
                t.syncookies_sent,
            ),
            (
                "sockwatch_tcp_syncookies_recv_total",
                "Valid SYN cookies received back (connections made from a cookie), SyncookiesRecv",
                t.syncookies_recv,
            ),
            (
                "sockwatch_tcp_syncookies_failed_total",
                "Invalid SYN cookies received, SyncookiesFailed",
                t.syncookies_failed,
            ),
            (
                "sockwatch_tcp_syn_queue_full_cookies_total",
                "SYNs answered with a cookie because the SYN queue was full, TCPReqQFullDoCookies",
                t.reqq_full_do_cookies,
            ),
            (
                "sockwatch_tcp_syn_queue_full_drops_total",
                "SYNs dropped because the SYN queue was full and cookies are off, TCPReqQFullDrop",
                t.reqq_full_drop,
            ),
        ] {
            out.counter(name, &format!("{help} {ext}."), v.map(f));
        }
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
