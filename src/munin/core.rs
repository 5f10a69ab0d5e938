//! The graphs of sockets, ports, conntrack, accept queues, UDP and namespaces: each one's
//! fields, and the function that reads each field's value (or threshold) from a snapshot.

use super::graphs::{any, crit_of, field, pct, pct_crit, pct_warn, warn_of, Field, Graph, Kind};
use crate::derived;
use crate::snapshot::Snapshot;
use crate::sources::tcp::sockets::TCP_STATES;

fn state(s: &Snapshot, i: usize) -> Option<f64> {
    s.sockets.as_ref().map(|k| k.states.total(i) as f64)
}

macro_rules! state_field {
    ($i:expr, $draw:expr, $info:expr) => {
        field!(TCP_STATES[$i], TCP_STATES[$i], $info, $draw, Kind::Gauge, |s| state(s, $i))
    };
}

fn tw_limit(s: &Snapshot) -> Option<f64> {
    s.limits.as_ref()?.tcp_max_tw_buckets.map(|v| v as f64)
}
fn ct_limit(s: &Snapshot) -> Option<f64> {
    s.conntrack.as_ref()?.limit.map(|v| v as f64)
}
fn ct_stat(s: &Snapshot, pick: fn(&crate::sources::procfs::conntrack::ConntrackStats) -> Option<u64>) -> Option<f64> {
    pick(s.conntrack.as_ref()?.stats.as_ref()?).map(|v| v as f64)
}
fn snmp(s: &Snapshot, pick: fn(&crate::sources::procfs::snmp::SnmpCounters) -> Option<u64>) -> Option<f64> {
    pick(s.snmp.as_ref()?).map(|v| v as f64)
}
fn port_utilization_pct(s: &Snapshot) -> Option<f64> {
    pct(derived::port_utilization(s))
}
fn projected_utilization_pct(s: &Snapshot) -> Option<f64> {
    pct(derived::projected_port_utilization(s))
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
fn listen_overflows(s: &Snapshot) -> Option<f64> {
    snmp(s, |t| t.listen_overflows)
}
fn listen_drops(s: &Snapshot) -> Option<f64> {
    snmp(s, |t| t.listen_drops)
}
fn listen_queue_pct(s: &Snapshot) -> Option<f64> {
    pct(derived::listen_queue_utilization(s))
}
fn bd_established(s: &Snapshot) -> Option<f64> {
    breakdown(s, |b| b.tcp[3])
}
fn bd_fin_wait(s: &Snapshot) -> Option<f64> {
    breakdown(s, |b| b.tcp[4])
}
fn bd_time_wait(s: &Snapshot) -> Option<f64> {
    breakdown(s, |b| b.tcp[7])
}
fn bd_syn_sent(s: &Snapshot) -> Option<f64> {
    breakdown(s, |b| b.tcp[1])
}
fn bd_udp(s: &Snapshot) -> Option<f64> {
    breakdown(s, |b| b.udp)
}
fn bd_assured(s: &Snapshot) -> Option<f64> {
    breakdown(s, |b| b.assured)
}
fn bd_nated(s: &Snapshot) -> Option<f64> {
    breakdown(s, |b| b.nated)
}
fn bd_total(s: &Snapshot) -> Option<f64> {
    breakdown(s, |b| b.total)
}
fn tw_warn(s: &Snapshot) -> Option<f64> {
    warn_of(tw_limit(s))
}
fn tw_crit(s: &Snapshot) -> Option<f64> {
    crit_of(tw_limit(s))
}
fn ct_warn(s: &Snapshot) -> Option<f64> {
    warn_of(ct_limit(s))
}
fn ct_crit(s: &Snapshot) -> Option<f64> {
    crit_of(ct_limit(s))
}
fn listen_pct_crit(_: &Snapshot) -> Option<f64> {
    Some(derived::LISTEN_CRIT * 100.0)
}
fn udp_socket_drops(s: &Snapshot) -> Option<f64> {
    s.udp.as_ref().map(|u| u.drops_total as f64)
}
/// A UDP MIB counter summed over IPv4 and IPv6 (UDP, not UDP-Lite).
fn udp_mib(s: &Snapshot, pick: fn(&crate::sources::procfs::snmp::UdpMib) -> Option<u64>) -> Option<f64> {
    let mibs = s.snmp.as_ref()?.udp.iter().filter(|m| m.protocol == "udp");
    mibs.map(pick).sum::<Option<u64>>().map(|v| v as f64)
}
fn udp_rcvbuf_errors(s: &Snapshot) -> Option<f64> {
    udp_mib(s, |m| m.rcvbuf_errors)
}
fn udp_no_ports(s: &Snapshot) -> Option<f64> {
    udp_mib(s, |m| m.no_ports)
}
fn netns_count(s: &Snapshot) -> Option<f64> {
    s.namespaces.as_ref().map(|n| n.count as f64)
}
fn netns_conntrack_pct(s: &Snapshot) -> Option<f64> {
    pct(crate::derived::netns_conntrack_utilization(s).map(|(_, u)| u))
}
fn netns_ports_pct(s: &Snapshot) -> Option<f64> {
    pct(Some(s.namespaces.as_ref()?.worst_ports?.1))
}
/// Where the worst namespace settles at its close rate, % of its own range: the highest
/// projection of any exported namespace's latest dump (each dump's worst destination: the
/// one heading for exhaustion soonest, else the one projected highest). Unknown only
/// without any dump.
fn netns_projected_pct(s: &Snapshot) -> Option<f64> {
    let n = s.namespaces.as_ref()?;
    let worst = n
        .top
        .iter()
        .filter_map(|ns| {
            let d = ns.deep.as_ref()?;
            // Dumped with no client socket: heading nowhere, 0.
            Some(d.soonest.as_ref().map_or(0.0, |w| w.projected) / f64::from(d.range.capacity.max(1)))
        })
        .fold(None, |m: Option<f64>, u| Some(m.map_or(u, |m| m.max(u))));
    pct(worst)
}
fn netns_time_wait_max(s: &Snapshot) -> Option<f64> {
    s.namespaces.as_ref()?.worst_time_wait.map(|(_, tw)| tw as f64)
}
fn nat_busiest(s: &Snapshot) -> Option<f64> {
    let a = &s.conntrack_breakdown.as_ref()?.attribution;
    Some(a.nat.first().map_or(0.0, |(_, used)| *used as f64))
}
fn nat_blocking(s: &Snapshot) -> Option<f64> {
    s.conntrack_breakdown.as_ref().map(|b| b.attribution.nat_blocking_max as f64)
}
fn nat_range(s: &Snapshot) -> Option<f64> {
    s.conntrack_breakdown.as_ref().map(|b| f64::from(b.attribution.nat_ports))
}
fn nat_pct(s: &Snapshot) -> Option<f64> {
    pct(s.conntrack_breakdown.as_ref().map(|b| b.attribution.nat_utilization_max()))
}
fn nat_entries(s: &Snapshot) -> Option<f64> {
    breakdown(s, |b| b.attribution.nat_entries)
}
fn breakdown(s: &Snapshot, pick: fn(&crate::sources::ctnetlink::dump::Breakdown) -> u64) -> Option<f64> {
    s.conntrack_breakdown.as_ref().map(|b| pick(b) as f64)
}

pub static GRAPHS: &[Graph] = &[
    Graph {
        name: "tcp_states",
        title: "TCP sockets by state",
        vlabel: "sockets",
        args: "--base 1000 -l 0",
        info: "TCP sockets of this host by state, IPv4 and IPv6, from the kernel's inet_diag dump (what ss -tan \
               shows), sampled in the background by sockwatch. time_wait warns at 80 % and is critical at 90 % of \
               tcp_max_tw_buckets; the limit itself is not drawn, so it does not squash the states into the \
               bottom of the scale (131,072 by default against a few thousand sockets).",
        fields: &[
            state_field!(1, "AREA", "Open connections."),
            state_field!(2, "STACK", "Client connections waiting for the server's SYN-ACK."),
            state_field!(3, "STACK", "Half-open server connections (SYN received); high under SYN floods."),
            state_field!(4, "STACK", "Closed locally, FIN sent, not yet acknowledged."),
            state_field!(5, "STACK", "Closed locally, waiting for the peer's FIN."),
            Field {
                warning: Some(tw_warn),
                critical: Some(tw_crit),
                ..state_field!(
                    6,
                    "STACK",
                    "Closed by this side first; each holds its local port for 60 s whatever tcp_fin_timeout says."
                )
            },
            state_field!(7, "STACK", "Bound but neither connected nor listening (reported by Linux 6.5+)."),
            state_field!(8, "STACK", "Closed by the peer, waiting for the application to close: a leak if it grows."),
            state_field!(9, "STACK", "Closed after the peer, waiting for the last ACK."),
            state_field!(10, "STACK", "Listening sockets."),
            state_field!(11, "STACK", "Both sides closed at once."),
        ],
        needs_breakdown: false,
    },
    Graph {
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
    },
    Graph {
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
    },
    Graph {
        name: "ephemeral_ports",
        title: "Ephemeral ports of the busiest destination",
        vlabel: "% of the port range",
        args: "--base 1000 -l 0 -u 100",
        info: "Local ports held toward the busiest destination (local IP, remote IP, remote port), as a share of \
               ip_local_port_range minus reserved ports, and where the worst destination is heading at its current \
               connection rate. At 100 % connect() fails with EADDRNOTAVAIL.",
        fields: &[
            Field {
                warning: Some(pct_warn),
                critical: Some(pct_crit),
                ..field!(
                    "busiest",
                    "busiest destination",
                    "Ports in use toward the busiest destination, including bound-only sockets.",
                    "AREA",
                    Kind::Gauge,
                    port_utilization_pct
                )
            },
            field!(
                "projected",
                "projected at the current rate",
                "Where the worst destination settles if its current close rate holds: held sockets plus connections \
                 closed per second x 60 s (TIME_WAIT), from the TIME_WAIT timers. Above 100 % it runs out within a \
                 minute at this rate; not capped.",
                "LINE2",
                Kind::Gauge,
                projected_utilization_pct
            ),
        ],
        needs_breakdown: false,
    },
    Graph {
        name: "listen_queue",
        title: "Accept queue of the fullest listener",
        vlabel: "% of the backlog",
        args: "--base 1000 -l 0",
        info: "Connections waiting to be accepted, as a share of the listener's backlog, for the fullest listener. \
               Above 100 % the kernel drops new connections.",
        fields: &[Field {
            warning: Some(pct_warn),
            critical: Some(listen_pct_crit),
            ..field!(
                "fullest",
                "fullest listener",
                "Highest accept queue length / backlog over all listeners.",
                "AREA",
                Kind::Gauge,
                listen_queue_pct
            )
        }],
        needs_breakdown: false,
    },
    Graph {
        name: "listen_drops",
        title: "Listen queue overflows and drops",
        vlabel: "connections per ${graph_period}",
        args: "--base 1000 -l 0",
        info: "TcpExt ListenOverflows (accept queue full) and ListenDrops (all SYNs dropped at a listener) from \
               /proc/net/netstat.",
        fields: &[
            field!("overflows", "overflows", "Accept queue full.", "LINE2", Kind::Derive, listen_overflows),
            field!("drops", "drops", "SYNs dropped at a listener, any reason.", "LINE1", Kind::Derive, listen_drops),
        ],
        needs_breakdown: false,
    },
    Graph {
        name: "udp_drops",
        title: "UDP receive drops",
        vlabel: "datagrams per ${graph_period}",
        args: "--base 1000 -l 0",
        info: "Datagrams the UDP sockets of this host dropped on a full receive buffer, from each socket's own drop \
               counter (sk_drops, the d of ss -uam) summed by sockwatch so that closed sockets do not take it \
               backwards, with the kernel's host-wide RcvbufErrors beside it. Which port drops: the \
               sockwatch_udp_drops_total series in Prometheus, or sockwatch doctor. Munin cannot add a field per \
               port, so this graph is the host's total.",
        fields: &[
            Field {
                warning: Some(any),
                ..field!(
                    "socket_drops",
                    "dropped by sockets",
                    "Every UDP socket's drops: the application reads too slowly. Raise SO_RCVBUF and \
                     net.core.rmem_max, add readers or SO_REUSEPORT sockets.",
                    "LINE2",
                    Kind::Derive,
                    udp_socket_drops
                )
            },
            field!(
                "rcvbuf_errors",
                "RcvbufErrors",
                "Udp: RcvbufErrors (IPv4 + IPv6) from /proc/net/snmp and snmp6: the host's count of the same drops.",
                "LINE1",
                Kind::Derive,
                udp_rcvbuf_errors
            ),
            field!(
                "no_ports",
                "to a closed port",
                "Udp: NoPorts: datagrams to a port with no socket (a service down, or scans).",
                "LINE1",
                Kind::Derive,
                udp_no_ports
            ),
        ],
        needs_breakdown: false,
    },
    Graph {
        name: "netns",
        title: "Network namespaces: the fullest one",
        vlabel: "% of its limit",
        args: "--base 1000 -l 0",
        info: "Every network namespace on the host (containers, pods), read from /proc/PID/net by sockwatch: the \
               fullest one's conntrack table against the host-wide nf_conntrack_max (each namespace is held to it \
               with its own count), and the fullest own port range. Counts are on sockwatch_netns_counts. Munin \
               cannot add a field per pod: which namespace it is, with its container and pod, is in \
               sockwatch_netns_info (Prometheus) and sockwatch doctor.",
        fields: &[
            Field {
                warning: Some(pct_warn),
                critical: Some(pct_crit),
                ..field!(
                    "conntrack_max",
                    "fullest conntrack table (%)",
                    "The namespace with the most conntrack entries, as a share of nf_conntrack_max. At 100 % it drops \
                     new flows (table full in netns N) while the host's own count may be low.",
                    "LINE2",
                    Kind::Gauge,
                    netns_conntrack_pct
                )
            },
            Field {
                warning: Some(pct_warn),
                critical: Some(pct_crit),
                ..field!(
                    "ports_max",
                    "fullest port range (%)",
                    "The namespace whose busiest destination holds the largest share of its own ip_local_port_range \
                     (from dumps inside namespaces: needs CAP_SYS_ADMIN). At 100 % connect() fails there.",
                    "LINE2",
                    Kind::Gauge,
                    netns_ports_pct
                )
            },
            field!(
                "ports_projected",
                "worst namespace, projected (%)",
                "Where the worst namespace settles at its current close rate, as a share of its own range (the \
                 highest projection of any namespace's latest dump). Above 100 % its ports run out within a minute \
                 at that rate; how soon is sockwatch_netns_ephemeral_port_seconds_to_exhaustion_min or sockwatch doctor.",
                "LINE1",
                Kind::Gauge,
                netns_projected_pct
            ),
        ],
        needs_breakdown: false,
    },
    Graph {
        name: "netns_counts",
        title: "Network namespaces: how many, and the most TIME_WAIT in one",
        vlabel: "count",
        args: "--base 1000 -l 0",
        info: "How many network namespaces sockwatch found (containers, pods, pinned ones), and the most TIME_WAIT \
               sockets any one of them holds: each client-side one holds a local port for 60 s against that \
               namespace's own port range (28,232 ports by default in a new namespace).",
        fields: &[
            field!(
                "time_wait_max",
                "most TIME_WAIT in one",
                "TIME_WAIT sockets of the namespace holding the most; a new namespace has 28,232 ephemeral ports.",
                "LINE1",
                Kind::Gauge,
                netns_time_wait_max
            ),
            field!("namespaces", "namespaces", "Network namespaces found.", "LINE1", Kind::Gauge, netns_count),
        ],
        needs_breakdown: false,
    },
    Graph {
        name: "fw_conntrack",
        title: "Connections through firewall",
        vlabel: "Connections",
        args: "-l 0",
        info: "Conntrack entries by state, as munin's fw_conntrack plugin draws them, from a ctnetlink dump taken \
               by sockwatch on its own slower interval (never /proc/net/nf_conntrack).",
        fields: &[
            field!("established", "Established", "TCP entries in ESTABLISHED.", "AREA", Kind::Gauge, bd_established),
            field!("fin_wait", "FIN_WAIT", "TCP entries in FIN_WAIT.", "STACK", Kind::Gauge, bd_fin_wait),
            field!("time_wait", "TIME_WAIT", "TCP entries in TIME_WAIT.", "STACK", Kind::Gauge, bd_time_wait),
            field!("syn_sent", "SYN_SENT", "TCP entries in SYN_SENT.", "STACK", Kind::Gauge, bd_syn_sent),
            field!("udp", "UDP connections", "UDP entries.", "STACK", Kind::Gauge, bd_udp),
            field!("assured", "Assured", "Entries that saw traffic both ways.", "LINE2", Kind::Gauge, bd_assured),
            field!("nated", "NATed", "Entries whose reply addresses differ from the original's.", "LINE1", Kind::Gauge, bd_nated),
            Field {
                warning: Some(ct_warn),
                critical: Some(ct_crit),
                ..field!("total", "Total", "All entries.", "no", Kind::Gauge, bd_total)
            },
        ],
        needs_breakdown: true,
    },
    Graph {
        name: "nat_ports",
        title: "NAT source ports of the busiest mapping",
        vlabel: "ports",
        args: "--base 1000 -l 0",
        info: "Source ports in use by the busiest NAT mapping (one NAT address toward one remote address and port,                by protocol), from the source-translated entries of the conntrack breakdown dump. nf_nat needs a free                port of the mapping for each new connection; its search is bounded, so connections start failing                before the range is full. Which mapping it is, Munin cannot show (its fields are fixed):                sockwatch_nat_ports_used in Prometheus or sockwatch doctor name it.",
        fields: &[
            field!("busiest", "busiest mapping", "Ports used by the busiest NAT mapping.", "AREA", Kind::Gauge, nat_busiest),
            field!(
                "blocking",
                "most blocking",
                "The most ports any mapping holds with entries a new connection cannot take over (not TCP TIME_WAIT or \
                 CLOSE, which nf_nat recycles on Linux 6.5+): what the percentage holds against the range.",
                "LINE2",
                Kind::Gauge,
                nat_blocking
            ),
            field!("range", "port range", "Ports NAT picks from per mapping (--nat.port-range).", "LINE1", Kind::Gauge, nat_range),
            Field {
                warning: Some(pct_warn),
                critical: Some(pct_crit),
                ..field!("pct", "% of range", "The most blocking ports of any mapping, as a share of the range, percent.", "no", Kind::Gauge, nat_pct)
            },
            field!("nat_entries", "NATed entries", "Source-translated conntrack entries in all.", "LINE1", Kind::Gauge, nat_entries),
        ],
        needs_breakdown: true,
    },
];
