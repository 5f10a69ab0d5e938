//! The UDP families: sockets, per-port drops and receive queues (the `udp` source), and
//! the kernel's UDP MIB counters (part of the `snmp` source).

use prometheus::proto::MetricType;

use super::families::Families;
use crate::snapshot::Snapshot;
use crate::sources::udp::sockets::UdpPort;

fn port_labels(p: &UdpPort) -> Vec<(&'static str, String)> {
    vec![("local_ip", p.local_ip.to_string()), ("port", p.port.to_string())]
}

/// Sockets, and per port: drops, receive queue and buffer.
pub(super) fn sockets(out: &mut Families, s: &Snapshot) {
    use MetricType::{COUNTER, GAUGE};
    let Some(u) = &s.udp else { return };
    out.labelled(
        "sockwatch_udp_sockets",
        "UDP sockets by address family, from an inet_diag (NETLINK_SOCK_DIAG) dump per family.",
        GAUGE,
        [("ipv4", u.sockets[0]), ("ipv6", u.sockets[1])]
            .map(|(family, n)| (vec![("family", family.to_owned())], n as f64)),
    );
    out.labelled(
        "sockwatch_udp_drops_total",
        "Datagrams dropped by the UDP sockets on this local address and port because their receive buffer was \
         full (the socket's sk_drops, SK_MEMINFO_DROPS: the d field of ss -uam), summed over the port's sockets and \
         kept monotonic across samples: a socket that closes keeps its drops in the total; drops it counted after \
         the last sample are lost. Ports dropping now first, then by queue fill and --udp.ports (--udp.top-k each).",
        COUNTER,
        u.ports.iter().map(|p| (port_labels(p), p.drops_total as f64)),
    );
    out.labelled(
        "sockwatch_udp_receive_queue_bytes",
        "Bytes waiting in the receive queues of the UDP sockets on this local address and port (SK_MEMINFO_RMEM_ALLOC, \
         the kernel's buffer overhead included: the figure the kernel compares with the receive buffer).",
        GAUGE,
        u.ports.iter().map(|p| (port_labels(p), p.queue_bytes as f64)),
    );
    out.labelled(
        "sockwatch_udp_receive_buffer_bytes",
        "Receive buffer of the UDP sockets on this local address and port, summed (SK_MEMINFO_RCVBUF: SO_RCVBUF as \
         the kernel doubled it, capped by net.core.rmem_max). A datagram that would pass it is dropped.",
        GAUGE,
        u.ports.iter().map(|p| (port_labels(p), p.buffer_bytes as f64)),
    );
    out.gauge(
        "sockwatch_udp_receive_queue_utilization_max",
        "The fullest UDP socket's receive queue divided by its receive buffer, over every UDP socket. Near 1 the \
         socket drops; not capped (the last datagram admitted can pass the buffer).",
        u.queue_utilization_max,
    );
    out.counter(
        "sockwatch_udp_socket_drops_total",
        "Datagrams dropped by every UDP socket (their sk_drops), summed the same monotonic way as \
         sockwatch_udp_drops_total, whether or not their port is exported.",
        u.drops_total as f64,
    );
}

/// The UDP MIBs of /proc/net/snmp and /proc/net/snmp6, by family and protocol.
pub(super) fn counters(out: &mut Families, s: &Snapshot) {
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
