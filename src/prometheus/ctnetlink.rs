//! The families of the `ctnetlink/` sources: the breakdown dump's counts by state and
//! protocol, where the table is heading, who fills it and how full each NAT mapping is
//! (bounded by `--conntrack.top-k`), and event mode's own figures.

use prometheus::proto::MetricType;

use super::families::f;
use super::families::Families;
use super::labels::{ConntrackDestination, Labels};
use crate::snapshot::Snapshot;
use crate::sources::ctnetlink::attribution::{protocol_name, Attribution, DestKey};
use crate::sources::ctnetlink::dump::CT_TCP_STATES;

fn destination_labels(d: &DestKey) -> Labels {
    ConntrackDestination { addr: d.addr, port: d.port, protocol: &protocol_name(d.proto) }.labels()
}

const SRC: &str = "counted in the ctnetlink breakdown dump (--conntrack.breakdown-interval)";

pub(super) fn attribution(out: &mut Families, s: &Snapshot) {
    let Some(a) = s.conntrack_breakdown.as_ref().map(|b| &b.attribution) else { return };
    events(out, s);
    who_fills_the_table(out, a);
    nat(out, a);
}

/// Entries by source and destination, and what the top-K leaves out.
fn who_fills_the_table(out: &mut Families, a: &Attribution) {
    use MetricType::GAUGE;
    out.labelled(
        "sockwatch_conntrack_source_entries",
        &format!(
            "Conntrack entries by original source address: the clients (or pods behind a masquerading node) holding \
             the most entries, the top --conntrack.top-k, {SRC}."
        ),
        GAUGE,
        a.sources.iter().map(|(ip, n)| (vec![("source", ip.to_string())], *n as f64)),
    );
    out.labelled(
        "sockwatch_conntrack_destination_entries",
        &format!(
            "Conntrack entries by original destination address, port and protocol, the top --conntrack.top-k, {SRC}."
        ),
        GAUGE,
        a.destinations.iter().map(|(d, n)| (destination_labels(d), *n as f64)),
    );
    out.labelled(
        "sockwatch_conntrack_distinct_keys",
        &format!(
            "Distinct original sources (kind=source), destinations (destination) and NAT mappings (nat_mapping) among \
             the entries: how much the top-K leaves out. Exact up to 50,000 per kind, {SRC}."
        ),
        GAUGE,
        [("source", a.distinct_sources), ("destination", a.distinct_destinations), ("nat_mapping", a.nat_mappings)]
            .map(|(k, n)| (vec![("kind", k.to_owned())], n as f64)),
    );
    out.labelled(
        "sockwatch_conntrack_untracked_entries",
        &format!(
            "Entries whose source, destination or NAT mapping was met after 50,000 of that kind were tracked: counted \
             in no key (bounded memory). Keys with many entries are met early and stay exact, {SRC}."
        ),
        GAUGE,
        [("source", a.untracked_sources), ("destination", a.untracked_destinations), ("nat_mapping", a.untracked_nat)]
            .map(|(k, n)| (vec![("kind", k.to_owned())], n as f64)),
    );
}

/// Each NAT mapping's ports (used, blocking, projected) against the range.
fn nat(out: &mut Families, a: &Attribution) {
    use MetricType::GAUGE;
    let mapping = |k: &crate::sources::ctnetlink::attribution::NatKey| {
        vec![
            ("nat_ip", k.nat_ip.to_string()),
            ("remote_ip", k.remote_ip.to_string()),
            ("remote_port", k.remote_port.to_string()),
            ("protocol", protocol_name(k.proto).into_owned()),
        ]
    };
    out.labelled(
        "sockwatch_nat_ports_used",
        &format!(
            "Source ports in use per NAT mapping: source-translated entries by (translated source address nat_ip, \
             remote address and port, protocol), read from each entry's reply tuple. nf_nat needs a free port per \
             mapping for every new connection; the top --conntrack.top-k mappings, {SRC}."
        ),
        GAUGE,
        a.nat.iter().map(|(k, n)| (mapping(k), *n as f64)),
    );
    out.labelled(
        "sockwatch_nat_ports_blocking",
        &format!(
            "Of sockwatch_nat_ports_used, the ports a new connection cannot take over: every entry but a TCP one in \
             TIME_WAIT or CLOSE, whose port nf_nat recycles for a new TCP connection when its search runs short \
             (Linux 6.5+; on older kernels every port used blocks). What the utilisation and the alert hold against \
             the range, {SRC}."
        ),
        GAUGE,
        a.nat.iter().zip(&a.nat_blocking).map(|((k, _), b)| (mapping(k), *b as f64)),
    );
    out.labelled(
        "sockwatch_nat_port_seconds_to_exhaustion",
        &format!(
            "Seconds until the mapping has every port of --nat.port-range blocked, at the rate its blocking ports rose \
             over the latest window of at least 10 s (two dumps, or event-mode counts that far apart); 0 when it is \
             full now, +Inf when they are not rising. Linear: held connections keep their ports, {SRC}."
        ),
        GAUGE,
        a.nat.iter().zip(&a.nat_seconds_to_exhaustion).map(|((k, _), s)| (mapping(k), s.unwrap_or(f64::INFINITY))),
    );
    out.gauge(
        "sockwatch_nat_port_range_size",
        "Source ports NAT picks from per mapping (--nat.port-range; 64,512 = 1024-65535, nf_nat's range without \
         \"to :LOW-HIGH\" in the rule).",
        f64::from(a.nat_ports),
    );
    out.gauge(
        "sockwatch_nat_port_utilization_max",
        &format!(
            "The highest blocking NAT ports of any mapping (sockwatch_nat_ports_blocking) divided by --nat.port-range \
             (not capped). nf_nat's search for a free port is bounded, so new connections start failing \
             (insert_failed rises) before 1. Ports held by TCP entries in TIME_WAIT or CLOSE are left out where the \
             kernel recycles them (Linux 6.5+): a range full of closed connections is not a failure, {SRC}."
        ),
        a.nat_utilization_max(),
    );
    out.gauge(
        "sockwatch_nat_entries",
        &format!("Conntrack entries whose source was translated (SNAT or masquerade), {SRC}."),
        a.nat_entries as f64,
    );
}

/// With `--conntrack.events`: how following the events goes.
fn events(out: &mut Families, s: &Snapshot) {
    let Some(e) = s.conntrack_breakdown.as_ref().and_then(|b| b.events.as_ref()) else { return };
    out.counter(
        "sockwatch_conntrack_events_total",
        "Conntrack NEW and DESTROY events (ctnetlink multicast) applied to the attribution since start \
         (--conntrack.events).",
        e.events_total as f64,
    );
    out.counter(
        "sockwatch_conntrack_event_overflows_total",
        "Times the kernel dropped conntrack events because sockwatch's receive buffer was full (ENOBUFS); each is \
         followed by a full dump that resynchronises the counts.",
        e.overflows_total as f64,
    );
    out.counter(
        "sockwatch_conntrack_resyncs_total",
        "Full conntrack dumps after the first, on --conntrack.resync-interval or after an event overflow.",
        e.resyncs_total as f64,
    );
    out.gauge(
        "sockwatch_conntrack_event_buffer_bytes",
        "The receive buffer the kernel granted for conntrack events (--conntrack.event-buffer, doubled by the kernel \
         for its overhead).",
        e.buffer_bytes as f64,
    );
}

/// The ctnetlink breakdown.
pub(super) fn breakdown(out: &mut Families, s: &Snapshot) {
    if let Some(b) = &s.conntrack_breakdown {
        let src =
            "from a ctnetlink dump on its own interval (--conntrack.breakdown-interval), never /proc/net/nf_conntrack";
        out.labelled(
            "sockwatch_conntrack_tcp_entries",
            &format!("TCP conntrack entries by conntrack state, {src}."),
            MetricType::GAUGE,
            CT_TCP_STATES.iter().zip(b.tcp).map(|(st, n)| (vec![("state", (*st).to_owned())], f(n))),
        );
        out.labelled(
            "sockwatch_conntrack_protocol_entries",
            &format!("Conntrack entries by protocol, {src}."),
            MetricType::GAUGE,
            [("tcp", b.tcp_total()), ("udp", b.udp), ("icmp", b.icmp), ("other", b.other)]
                .map(|(p, n)| (vec![("protocol", p.to_owned())], f(n))),
        );
        out.gauge(
            "sockwatch_conntrack_assured_entries",
            &format!("Conntrack entries that saw traffic both ways (ASSURED: not evicted by early drop), {src}."),
            f(b.assured),
        );
        out.gauge(
            "sockwatch_conntrack_nat_entries",
            &format!("Conntrack entries whose reply addresses differ from the original's (NAT, as fw_conntrack counts), {src}."),
            f(b.nated),
        );
    }
}

/// Where the conntrack table is heading (with the breakdown).
pub(super) fn projection(out: &mut Families, s: &Snapshot) {
    if let (Some(p), Some(limit)) = (&s.conntrack_projection, s.conntrack.as_ref().and_then(|c| c.limit)) {
        let src = "from the TCP TIME_WAIT entries' remaining timeouts in the ctnetlink breakdown dump (as old as \
                   --conntrack.breakdown-interval)";
        out.gauge(
            "sockwatch_conntrack_time_wait_rate",
            &format!(
                "Tracked TCP connections entering conntrack TIME_WAIT per second over the youngest sixth of \
                 nf_conntrack_tcp_timeout_time_wait (20 s at the default 120 s), {src}."
            ),
            p.close_rate,
        );
        out.gauge(
            "sockwatch_conntrack_projected_utilization",
            &format!(
                "Where the conntrack table settles if the current close rate holds: entries not in TIME_WAIT plus that \
                 rate x nf_conntrack_tcp_timeout_time_wait, divided by nf_conntrack_max (not capped), {src}."
            ),
            // nf_conntrack_max 0 is no limit: nothing to fill (as sockwatch_conntrack_utilization).
            crate::derived::ratio(p.projected, limit as f64, crate::derived::AtZero::Unlimited),
        );
        out.gauge(
            "sockwatch_conntrack_seconds_to_full",
            &format!(
                "Seconds until the conntrack table reaches nf_conntrack_max at the current close rate and its trend, \
                 as TIME_WAIT entries time out; 0 when full now, +Inf when not within {} s, {src}.",
                crate::sources::tcp::projection::HORIZON_SECONDS
            ),
            p.seconds_to_exhaustion.unwrap_or(f64::INFINITY),
        );
    }
}
