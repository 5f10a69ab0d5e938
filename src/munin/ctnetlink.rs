//! The Munin graphs of the `ctnetlink/` sources (with `--conntrack.breakdown` only): the
//! table by state as fw_conntrack drew it, and the NAT mappings' ports.

use super::graphs::{ct_crit, ct_warn, field, pct, pct_crit, pct_warn, Field, Graph, Kind};
use crate::snapshot::Snapshot;

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

pub(super) static FW_CONNTRACK: Graph = Graph {
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
        field!(
            "nated",
            "NATed",
            "Entries whose reply addresses differ from the original's.",
            "LINE1",
            Kind::Gauge,
            bd_nated
        ),
        Field {
            warning: Some(ct_warn),
            critical: Some(ct_crit),
            ..field!("total", "Total", "All entries.", "no", Kind::Gauge, bd_total)
        },
    ],
    needs_breakdown: true,
};

pub(super) static NAT_PORTS: Graph = Graph {
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
};
