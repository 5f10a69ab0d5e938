//! The families of the `tcp/` sources: sockets by state, each busy destination's ephemeral
//! ports and where the worst is heading, the per-port server states, the listeners' accept
//! queues and their listen path.

use prometheus::proto::MetricType::{COUNTER, GAUGE};

use super::families::{f, Families};
use super::labels::{Labels, LocalPort, PortDestination};
use crate::derived;
use crate::snapshot::Snapshot;
use crate::sources::tcp::ports::{self, PortUsage};
use crate::sources::tcp::sockets::TCP_STATES;

/// Ephemeral ports, per-port states and accept queues.
pub(super) fn ports(out: &mut Families, s: &Snapshot) {
    if let Some(pu) = &s.ports {
        render_ports(out, s, pu);
    }
}

fn render_ports(out: &mut Families, s: &Snapshot, pu: &PortUsage) {
    if let (Some(e), Some(utilization), Some(projected)) =
        (&pu.ephemeral, derived::port_utilization(s), derived::projected_port_utilization(s))
    {
        ephemeral_destinations(out, e);
        ephemeral_summary(out, e, utilization, projected);
    }
    listening(out, pu);
}

/// The labels of one destination of ephemeral ports.
fn destination_labels(d: &ports::Destination) -> Labels {
    PortDestination { local_ip: d.local_ip, remote_ip: d.remote_ip, remote_port: d.remote_port }.labels()
}

/// The busiest destinations: ports held, where each settles, how fast each closes.
fn ephemeral_destinations(out: &mut Families, e: &ports::Ephemeral) {
    out.labelled(
        "sockwatch_ephemeral_ports_used",
        "Local ports held toward one destination (local IP, remote IP, remote port) by client-side sockets in any \
         state from SYN_SENT to TIME_WAIT, plus bound-only sockets; connect() fails with EADDRNOTAVAIL when it \
         reaches sockwatch_ephemeral_port_range_size. Busiest destinations only (--ports.top-k per family), from the \
         inet_diag dump.",
        GAUGE,
        e.top.iter().map(|d| (destination_labels(d), f(d.used))),
    );
    out.labelled(
        "sockwatch_ephemeral_ports_projected",
        "Ports this destination settles at if its current close rate holds: sockets not in TIME_WAIT, plus bound-only \
         sockets, plus connections closed per second x the TIME_WAIT length (60 s). Same destinations as \
         sockwatch_ephemeral_ports_used, plus the one heading for exhaustion soonest. From the TIME_WAIT timers \
         (idiag_expires) of the same inet_diag dump.",
        GAUGE,
        e.top.iter().map(|d| (destination_labels(d), d.projected)),
    );
    out.labelled(
        "sockwatch_ephemeral_ports_close_rate",
        "Connections toward this destination that this host closed first, per second, over the last 10 s: \
         TIME_WAIT sockets younger than 10 s by their remaining lifetime (idiag_expires). Each holds its port 60 s.",
        GAUGE,
        e.top.iter().map(|d| (destination_labels(d), d.close_rate)),
    );
}

/// The host-wide figures: the busiest's utilisation, where the worst is heading, and
/// how complete the per-destination view is.
fn ephemeral_summary(out: &mut Families, e: &ports::Ephemeral, utilization: f64, projected: f64) {
    out.gauge(
        "sockwatch_ephemeral_port_projected_utilization_max",
        "Highest projected use over all destinations divided by sockwatch_ephemeral_port_range_size: where the \
         worst destination settles if its current close rate holds (not capped: 1.5 means the rate needs 150 % of \
         the range). At 1 or more connect() to it will fail with EADDRNOTAVAIL within a TIME_WAIT length.",
        projected,
    );
    out.gauge(
        "sockwatch_ephemeral_port_seconds_to_exhaustion",
        &format!(
            "Seconds until the first destination has every ephemeral port held, at its current close rate and its \
             trend (a rise beyond counting noise), as its TIME_WAIT timers run out; 0 when one is full now, +Inf when \
             none is within {} s.",
            crate::sources::tcp::projection::HORIZON_SECONDS
        ),
        e.seconds_to_exhaustion().unwrap_or(f64::INFINITY),
    );
    out.gauge(
        "sockwatch_ephemeral_port_utilization_max",
        "Busiest destination's ephemeral port use divided by sockwatch_ephemeral_port_range_size. At 1, connect() \
         to that destination fails with EADDRNOTAVAIL; not capped: above 1 when reserved ports shrank the range \
         under ports already held.",
        utilization,
    );
    out.gauge(
        "sockwatch_ephemeral_port_destinations",
        &format!(
            "Distinct destinations (local IP, remote IP, remote port) holding ephemeral ports; only the busiest are \
             exported. At most {} are tracked per sample (bounded memory): past that, see \
             sockwatch_ephemeral_port_untracked_sockets.",
            ports::MAX_TRACKED
        ),
        f(e.destinations),
    );
    out.gauge(
        "sockwatch_ephemeral_port_untracked_sockets",
        &format!(
            "Client-side sockets toward destinations not tracked in this sample because {} destinations already were \
             (memory bound). 0 on almost every host; when above 0, sockwatch_ephemeral_port_destinations is a lower \
             bound. Busy destinations are still tracked exactly: the dump comes in hash order, so they are met early.",
            ports::MAX_TRACKED
        ),
        f(e.untracked),
    );
    out.gauge(
        "sockwatch_ephemeral_ports_bound",
        "Ephemeral ports held by sockets bound but neither connected nor listening (bind() before connect() without \
         IP_BIND_ADDRESS_NO_PORT); each holds its port for every destination. Reported by Linux 6.5 and later.",
        f(e.bound),
    );
}

/// Server-side sockets per listening port, and the accept queues.
fn listening(out: &mut Families, pu: &PortUsage) {
    out.labelled(
        "sockwatch_tcp_port_sockets",
        "Server-side TCP sockets of a listening port by state (what `netstat -na | grep :PORT | grep STATE | wc -l` \
         counts), for the busiest listening ports (--listeners.top-k) and those named in --listeners.ports.",
        GAUGE,
        pu.ports.iter().flat_map(|p| {
            ports::SERVER_STATES.iter().map(move |&st| {
                (
                    vec![("port", p.port.to_string()), ("state", ports::state_name(st).to_owned())],
                    f(p.states[usize::from(st)]),
                )
            })
        }),
    );
    let listener_labels = |l: &ports::ListenQueue| LocalPort { local_ip: l.local_ip, port: l.port }.labels();
    out.labelled(
        "sockwatch_listen_queue_length",
        "Connections waiting in a listener's accept queue (inet_diag idiag_rqueue of the LISTEN socket; SO_REUSEPORT \
         groups summed). Fullest listeners only (--listeners.top-k).",
        GAUGE,
        pu.listeners.iter().map(|l| (listener_labels(l), f(l.length))),
    );
    out.labelled(
        "sockwatch_listen_queue_limit",
        "Accept queue limit of a listener: its listen() backlog capped by somaxconn (inet_diag idiag_wqueue).",
        GAUGE,
        pu.listeners.iter().map(|l| (listener_labels(l), f(l.limit))),
    );
    out.gauge(
        "sockwatch_listen_queue_utilization_max",
        "Highest accept queue length / limit over all listener sockets. The kernel admits one connection beyond the \
         backlog, so a full queue reads slightly above 1; new connections are then dropped (ListenOverflows).",
        pu.listen_utilization_max,
    );
    out.gauge(
        "sockwatch_listeners",
        "Listening addresses (address, port) in all; only the fullest are exported.",
        f(pu.listener_count),
    );
}

/// TCP sockets by family and state.
pub(super) fn sockets(out: &mut Families, s: &Snapshot) {
    if let Some(sk) = &s.sockets {
        let series = [("ipv4", &sk.states.ipv4), ("ipv6", &sk.states.ipv6)].into_iter().flat_map(|(fam, counts)| {
            (1..TCP_STATES.len())
                .map(move |i| (vec![("family", fam.to_owned()), ("state", TCP_STATES[i].to_owned())], f(counts[i])))
        });
        out.labelled(
            "sockwatch_tcp_sockets",
            "TCP sockets by address family and state, from one inet_diag (NETLINK_SOCK_DIAG) dump of both families. \
             TIME_WAIT sockets are reported in their substate, as ss shows them; half-open request sockets count as syn_recv; close counts sockets bound but neither connected nor listening (Linux 6.5+).",
            GAUGE,
            series,
        );
    }
}

/// Each listener's drops and SYN queue, and the kernel's SYN-queue and cookie counters.
pub(super) fn listen_path(out: &mut Families, s: &Snapshot) {
    if let Some(lp) = &s.listen_path {
        let labels =
            |l: &crate::sources::tcp::listeners::Listener| LocalPort { local_ip: l.local_ip, port: l.port }.labels();
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
