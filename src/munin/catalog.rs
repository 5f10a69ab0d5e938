//! The list of graphs: every graph of each wing's file, in order, which ones are offered
//! (the NAT and fw_conntrack graphs only with the conntrack breakdown), and the multigraph
//! that carries them all. The shim and the plugin ask here; `graphs` renders one.

use std::fmt::Write;

use super::graphs::{config, fetch, Graph};
use super::{ctnetlink, netns, procfs, tcp, udp};
use crate::snapshot::Snapshot;

/// Every graph, in the order Munin lists them: each from the file of its wing. A wing
/// appears more than once where its graphs have always been listed between another's.
static GRAPHS: [&Graph; 13] = [
    &tcp::STATES,
    &procfs::CONNTRACK,
    &procfs::CONNTRACK_ERRORS,
    &tcp::EPHEMERAL_PORTS,
    &tcp::LISTEN_QUEUE,
    &tcp::LISTEN_DROPS,
    &udp::DROPS,
    &netns::FULLEST,
    &netns::COUNTS,
    &ctnetlink::FW_CONNTRACK,
    &ctnetlink::NAT_PORTS,
    &procfs::RESOURCES,
    &procfs::RESOURCE_FAILURES,
];

/// Every graph.
pub fn all() -> impl Iterator<Item = &'static Graph> {
    GRAPHS.iter().copied()
}

/// The graphs offered, given whether the conntrack breakdown runs.
pub fn graphs(breakdown: bool) -> impl Iterator<Item = &'static Graph> {
    all().filter(move |g| breakdown || !g.needs_breakdown)
}

pub fn find(name: &str, breakdown: bool) -> Option<&'static Graph> {
    graphs(breakdown).find(|g| g.name == name)
}

/// The multigraph form: every graph under its own `multigraph sockwatch_NAME` header.
pub fn multigraph(snap: Option<&Snapshot>, breakdown: bool, with_config: bool, with_values: bool, out: &mut String) {
    for g in graphs(breakdown) {
        let _ = writeln!(out, "multigraph sockwatch_{}", g.name);
        if with_config {
            config(g, snap, out);
        }
        if with_values {
            fetch(g, snap, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::munin::graphs::{clean_fieldname, Field};

    /// munindoc documents every graph: the plugin's POD has an item for each, and no other.
    #[test]
    fn the_plugin_documents_every_graph() {
        let pod = include_str!("../../munin-plugin/sockwatch_");
        let items: Vec<&str> = pod.lines().filter_map(|l| l.strip_prefix("=item B<")?.strip_suffix('>')).collect();
        let names: Vec<&str> = all().map(|g| g.name).collect();
        assert_eq!(items, names, "the POD's =item list against GRAPHS");
    }

    /// One unit per graph: a graph with a percentage field draws no count beside it.
    #[test]
    fn percentages_and_counts_are_never_on_one_axis() {
        for g in all() {
            let drawn: Vec<&Field> = g.fields.iter().filter(|f| f.draw != "no").collect();
            let pct = drawn.iter().filter(|f| f.label.contains('%')).count();
            assert!(pct == 0 || pct == drawn.len(), "{} mixes units", g.name);
        }
    }

    #[test]
    fn field_names_are_clean_and_short() {
        for g in all() {
            for f in g.fields {
                assert_eq!(clean_fieldname(f.name), f.name, "{}: field names are already clean", g.name);
                assert!(f.name.len() <= 19, "{} is long", f.name);
            }
        }
    }

    #[test]
    fn without_a_snapshot_every_field_is_unknown() {
        for g in all() {
            let mut out = String::new();
            fetch(g, None, &mut out);
            assert_eq!(out.lines().count(), g.fields.len());
            assert!(out.lines().all(|l| l.ends_with(".value U")), "{out}");
            let mut cfg = String::new();
            config(g, None, &mut cfg);
            assert!(cfg.contains("graph_category network\n"));
            assert!(!cfg.contains(".warning"), "no thresholds without limits: {cfg}");
        }
    }
}
