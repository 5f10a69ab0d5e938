//! The Munin graphs of the `tcp/` sources: sockets by state, ephemeral ports, the listeners'
//! accept queues and the listen path's drops.

use super::graphs::{crit_of, field, pct, pct_crit, pct_warn, warn_of, Field, Graph, Kind};
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

fn port_utilization_pct(s: &Snapshot) -> Option<f64> {
    pct(derived::port_utilization(s))
}

fn projected_utilization_pct(s: &Snapshot) -> Option<f64> {
    pct(derived::projected_port_utilization(s))
}

fn listen_overflows(s: &Snapshot) -> Option<f64> {
    s.snmp.as_ref()?.listen_overflows.map(|v| v as f64)
}

fn listen_drops(s: &Snapshot) -> Option<f64> {
    s.snmp.as_ref()?.listen_drops.map(|v| v as f64)
}

fn listen_queue_pct(s: &Snapshot) -> Option<f64> {
    pct(derived::listen_queue_utilization(s))
}

fn tw_warn(s: &Snapshot) -> Option<f64> {
    warn_of(tw_limit(s))
}

fn tw_crit(s: &Snapshot) -> Option<f64> {
    crit_of(tw_limit(s))
}

fn listen_pct_crit(_: &Snapshot) -> Option<f64> {
    Some(derived::LISTEN_CRIT * 100.0)
}

pub(super) static STATES: Graph = Graph {
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
};

pub(super) static EPHEMERAL_PORTS: Graph = Graph {
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
};

pub(super) static LISTEN_QUEUE: Graph = Graph {
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
};

pub(super) static LISTEN_DROPS: Graph = Graph {
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
};
