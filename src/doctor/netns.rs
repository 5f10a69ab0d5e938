//! The doctor's check of every network namespace: the fullest conntrack table and port
//! range among them, named with their container and pod.

use super::words::{pct, per_s, rate, seen_in_part, to_read_more};
use super::{Check, Level};
use crate::derived;
use crate::snapshot::Snapshot;
use crate::sources::netns::{Namespace, Namespaces};
use crate::sources::tcp::ports::Destination;

/// A namespace in words: its inode and whatever names it.
pub(super) fn namespace_name(n: &Namespace) -> String {
    let mut parts = vec![format!("netns {}", n.inode)];
    if let Some(name) = &n.name {
        parts.push(format!("name {name}"));
    }
    if let Some(id) = &n.owner.container_id {
        let short = &id[..id.len().min(12)];
        parts.push(format!("container {short}{}", n.owner.runtime.map(|r| format!(" ({r})")).unwrap_or_default()));
    }
    if let Some(uid) = &n.owner.pod_uid {
        parts.push(format!("pod uid {uid}"));
    }
    if n.own {
        parts.push("sockwatch's own".into());
    }
    parts.join(", ")
}

/// What the namespaces check found in two samples: the namespaces dropping now (with their
/// rate), the fullest conntrack table, the fullest port range and the one heading for port
/// exhaustion soonest.
struct Found<'a> {
    dropping: Vec<(&'a Namespace, f64)>,
    worst: Option<(&'a Namespace, u64)>,
    utilization: Option<f64>,
    ports: Option<(&'a Namespace, f64)>,
    soonest: Option<(&'a Namespace, Destination, f64)>,
}

impl<'a> Found<'a> {
    fn of(n: &'a Namespaces, before: &Snapshot, now: &Snapshot, seconds: f64) -> Found<'a> {
        let find = |inode: u64| n.top.iter().find(|x| x.inode == inode);
        let drops = |s: &Snapshot, inode: u64| {
            let ns = s.namespaces.as_ref()?.top.iter().find(|x| x.inode == inode)?;
            ns.counters.as_ref()?.conntrack_drop
        };
        Found {
            dropping: n
                .top
                .iter()
                .filter_map(|ns| Some((ns, rate(drops(before, ns.inode), drops(now, ns.inode), seconds)?)))
                .filter(|&(_, r)| r > 0.0)
                .collect(),
            worst: n.worst_conntrack.and_then(|(inode, entries)| Some((find(inode)?, entries))),
            utilization: derived::netns_conntrack_utilization(now).map(|(_, u)| u),
            ports: n.worst_ports.and_then(|(inode, u)| Some((find(inode)?, u))),
            // Its latest dump, aged, with the host's levels in seconds.
            soonest: n.soonest.and_then(|(inode, s)| {
                let ns = find(inode)?;
                Some((ns, ns.deep.as_ref()?.soonest.clone()?, s))
            }),
        }
    }

    /// Critical while a namespace drops; else the worst of its use and its projection; and
    /// a namespace found but not read is not "ok" (a process whose namespace could not be
    /// named is counted: its namespace is usually read through another of its processes).
    fn level(&self, n: &Namespaces) -> Level {
        let used = self.utilization.into_iter().chain(self.ports.map(|(_, u)| u)).fold(0.0, f64::max);
        let projected = self.soonest.as_ref().map_or(Level::Ok, |(_, _, s)| {
            if *s < derived::PREDICT_CRIT_SECONDS {
                Level::Critical
            } else if *s < derived::PREDICT_WARN_SECONDS {
                Level::Warning
            } else {
                Level::Ok
            }
        });
        let level = if self.dropping.is_empty() { Level::of(used).max(projected) } else { Level::Critical };
        seen_in_part(level, n.unreadable)
    }

    /// The check's words: what could not be read, then what was found.
    fn detail(&self, n: &Namespaces) -> String {
        let mut detail = format!("{} network namespaces", n.count);
        if n.unreadable > 0 {
            detail.push_str(&format!("; cannot tell for {} of them ({})", n.unreadable, to_read_more()));
        }
        // Which layers run, and why.
        if n.deep_off {
            detail.push_str("; O(1) counters only: per-namespace port dumps off by setting (netns.deep = false)");
        } else if let Some(why) = &n.deep_down {
            detail.push_str(&format!("; per-namespace port dumps down: {why}"));
        } else {
            let [near, could, far] = n.deep_needs;
            detail.push_str(&format!(
                "; O(1) counters and port dumps: {near} near their range (dumped every sample), {could} could run out \
                 within the hour, {far} far (not dumped)"
            ));
        }
        if n.unidentified_processes > 0 {
            detail.push_str(&format!(
                "; cannot tell which namespace {} processes are in ({})",
                n.unidentified_processes,
                to_read_more()
            ));
        }
        if let (Some((ns, entries)), Some(u)) = (self.worst, self.utilization) {
            detail.push_str(&format!(
                "; fullest conntrack table: {} with {entries} entries ({})",
                namespace_name(ns),
                pct(u)
            ));
        }
        if let Some((ns, u)) = self.ports {
            let toward = ns
                .deep
                .as_ref()
                .and_then(|d| d.busiest.as_ref())
                .map_or(String::new(), |b| format!(" toward {}:{} ({} ports)", b.remote_ip, b.remote_port, b.used));
            detail.push_str(&format!("; fullest port range: {}{toward} ({})", namespace_name(ns), pct(u)));
        }
        if let Some((ns, d, s)) = &self.soonest {
            let when = if *s <= 0.0 { "FAILING NOW".to_owned() } else { format!("in {s:.0} s") };
            detail.push_str(&format!(
                "; {} runs out of its own ports toward {} -> {}:{} {when} at {:.0} connections/s closed (its range {})",
                namespace_name(ns),
                d.local_ip,
                d.remote_ip,
                d.remote_port,
                d.close_rate,
                ns.deep.as_ref().map_or(0, |r| r.range.capacity),
            ));
        }
        for (ns, r) in &self.dropping {
            detail.push_str(&format!("; DROPPING {} packets/s: {}", per_s(*r), namespace_name(ns)));
        }
        detail
    }
}

/// Every network namespace: the fullest conntrack table against nf_conntrack_max (each
/// namespace is held to it on its own), and the namespaces dropping now.
pub(super) fn netns_check(before: &Snapshot, now: &Snapshot, seconds: f64) -> Option<Check> {
    let n = now.namespaces.as_ref()?;
    let max = now.conntrack.as_ref().and_then(|c| c.limit).filter(|&m| m > 0);
    let found = Found::of(n, before, now, seconds);
    let level = found.level(n);
    Some(Check {
        resource: "network namespaces",
        level,
        used: found.worst.map(|(_, e)| e as f64),
        limit: max.map(|m| m as f64),
        utilization: found.utilization,
        projected: None,
        seconds_to_exhaustion: found.soonest.as_ref().map(|(_, _, s)| *s),
        detail: found.detail(n),
        advice: (level >= Level::Warning).then(|| {
            "Each network namespace (container, pod) is held to the host-wide nf_conntrack_max with its own count, \
             so it drops new flows ('table full in netns N') while the host's count may be low; and it has its own \
             ephemeral port range, where a client without keep-alive runs out of ports (EADDRNOTAVAIL) unseen by \
             the host's figures. Find what opens so many flows or connections in the namespace named above; raise \
             nf_conntrack_max (and the hash size) on the host, or use keep-alive in that pod. If namespaces are \
             dumped too rarely to warn in time (sockwatch_netns_deep_revisit_samples x the interval above 300 s), \
             give new namespaces a socket hash of their own (sysctl net.ipv4.tcp_child_ehash_entries=1024 before \
             they are created: a dump then walks only its namespace's sockets, 11x cheaper at 300,000 host sockets \
             in BENCHMARKS.md)."
                .to_owned()
        }),
    })
}
