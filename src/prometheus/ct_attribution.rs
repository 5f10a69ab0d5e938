//! Who fills the conntrack table and how full each NAT mapping is (the breakdown dump's
//! attribution): bounded by `--conntrack.top-k`.

use prometheus::proto::MetricType;

use super::families::Families;
use crate::snapshot::Snapshot;
use crate::sources::ctnetlink::attribution::{protocol_name, Attribution, DestKey};

/// `destination`, `port`, `protocol`: one conntrack destination's labels.
pub(super) fn destination_labels(d: &DestKey) -> Vec<(&'static str, String)> {
    vec![
        ("destination", d.addr.to_string()),
        ("port", d.port.to_string()),
        ("protocol", protocol_name(d.proto).into_owned()),
    ]
}

const SRC: &str = "counted in the ctnetlink breakdown dump (--conntrack.breakdown-interval)";

pub(super) fn families(out: &mut Families, s: &Snapshot) {
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
