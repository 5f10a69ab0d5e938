//! The UDP families: sockets, per-port drops and receive queues (the `udp` source), and
//! the kernel's UDP MIB counters (part of the `snmp` source).

use prometheus::proto::MetricType;

use super::families::Families;
use super::labels::{Labels, LocalPort};
use crate::snapshot::Snapshot;
use crate::sources::udp::sockets::UdpPort;

fn port_labels(p: &UdpPort) -> Labels {
    LocalPort { local_ip: p.local_ip, port: p.port }.labels()
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
