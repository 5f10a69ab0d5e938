//! The Munin graphs of the `netns/` source: the fullest namespace's figures and the counts.

use super::graphs::{field, pct, pct_crit, pct_warn, Field, Graph, Kind};
use crate::derived::{ratio, AtZero};
use crate::snapshot::Snapshot;

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
            // Dumped with no client socket: heading nowhere, 0. A range with no port left
            // (all reserved) is full, as everywhere else (the one ratio rule).
            let projected = d.soonest.as_ref().map_or(0.0, |w| w.projected);
            ratio(projected, f64::from(d.range.capacity), AtZero::Exhausted)
        })
        .fold(None, |m: Option<f64>, u| Some(m.map_or(u, |m| m.max(u))));
    pct(worst)
}

fn netns_time_wait_max(s: &Snapshot) -> Option<f64> {
    s.namespaces.as_ref()?.worst_time_wait.map(|(_, tw)| tw as f64)
}

pub(super) static FULLEST: Graph = Graph {
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
};

pub(super) static COUNTS: Graph = Graph {
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
};
