//! The Munin graph of the `udp/` source: datagrams dropped, by the sockets' own counters and
//! the kernel's UDP MIB.

use super::graphs::{any, field, Field, Graph, Kind};
use crate::snapshot::Snapshot;

fn udp_socket_drops(s: &Snapshot) -> Option<f64> {
    s.udp.as_ref().map(|u| u.drops_total as f64)
}

fn udp_rcvbuf_errors(s: &Snapshot) -> Option<f64> {
    s.snmp.as_ref()?.udp_sum(|m| m.rcvbuf_errors).map(|v| v as f64)
}

fn udp_no_ports(s: &Snapshot) -> Option<f64> {
    s.snmp.as_ref()?.udp_sum(|m| m.no_ports).map(|v| v as f64)
}

pub(super) static DROPS: Graph = Graph {
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
};
