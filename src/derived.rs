//! Figures derived from a [`Snapshot`] and the levels they are judged by, defined once for
//! every reader: the Prometheus text, the Munin graphs and `sockwatch doctor` (and, held to
//! the same numbers by a test, `prometheus/alerts.yml`).
//!
//! **Utilisation is not capped.** Each ratio is use ÷ limit as the kernel reports them.
//! It can exceed 1: ports held beyond a range that `ip_local_reserved_ports` shrank after
//! they were taken, an accept queue at backlog + 1 (the kernel admits one connection
//! more than the backlog), TIME_WAIT sockets past a lowered `tcp_max_tw_buckets`. Capping
//! would hide by how much a resource is over; a reader that draws a gauge can cap it for
//! display. A limit of 0 (a range with every port reserved) reads 1: exhausted.

use crate::snapshot::Snapshot;

/// Share of a limit at which a resource warns, and is critical.
pub const WARN: f64 = 0.8;
pub const CRIT: f64 = 0.9;
/// An accept queue is critical when full: the kernel then drops new connections.
pub const LISTEN_CRIT: f64 = 1.0;
/// Seconds to exhaustion below which the projection warns, and is critical.
pub const PREDICT_WARN_SECONDS: f64 = 300.0;
pub const PREDICT_CRIT_SECONDS: f64 = 90.0;

pub use crate::sources::kernel::ratio::{ratio, AtZero};

/// Ports connect() can choose from per destination.
fn port_capacity(s: &Snapshot) -> Option<f64> {
    s.limits.as_ref().map(|l| f64::from(l.port_range_size()))
}

/// The busiest destination's ephemeral ports in use ÷ the range.
pub fn port_utilization(s: &Snapshot) -> Option<f64> {
    let e = s.ports.as_ref()?.ephemeral.as_ref()?;
    ratio(e.busiest as f64, port_capacity(s)?, AtZero::Exhausted)
}

/// Where the worst destination settles at its current close rate ÷ the range.
pub fn projected_port_utilization(s: &Snapshot) -> Option<f64> {
    let e = s.ports.as_ref()?.ephemeral.as_ref()?;
    ratio(e.projected_max, port_capacity(s)?, AtZero::Exhausted)
}

/// Conntrack entries ÷ `nf_conntrack_max`; none when the limit is 0, which the kernel
/// reads as no limit.
pub fn conntrack_utilization(s: &Snapshot) -> Option<f64> {
    let ct = s.conntrack.as_ref()?;
    ratio(ct.entries as f64, ct.limit? as f64, AtZero::Unlimited)
}

/// TIME_WAIT sockets (the kernel's count) ÷ `tcp_max_tw_buckets`; none when it is 0 (no
/// TIME_WAIT kept at all: nothing fills).
pub fn time_wait_utilization(s: &Snapshot) -> Option<f64> {
    let max = s.limits.as_ref()?.tcp_max_tw_buckets?;
    ratio(s.sockstat.as_ref()?.tw as f64, max as f64, AtZero::Unlimited)
}

/// The fullest namespace's conntrack entries ÷ the host-wide `nf_conntrack_max` (each
/// namespace is held to it with its own count), with that namespace's inode; none without
/// a limit.
pub fn netns_conntrack_utilization(s: &Snapshot) -> Option<(u64, f64)> {
    let (inode, entries) = s.namespaces.as_ref()?.worst_conntrack?;
    let max = s.conntrack.as_ref()?.limit?;
    Some((inode, ratio(entries as f64, max as f64, AtZero::Unlimited)?))
}

/// The fullest listener's accept queue ÷ its backlog.
pub fn listen_queue_utilization(s: &Snapshot) -> Option<f64> {
    Some(s.ports.as_ref()?.listen_utilization_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::procfs::limits::Limits;
    use crate::sources::tcp::ports::{Ephemeral, PortUsage};

    fn with_ports(busiest: u64, low: u16, high: u16, reserved: u32, listen: f64) -> Snapshot {
        let mut s = Snapshot::limits_only(
            Some(Limits {
                port_range_low: low,
                port_range_high: high,
                reserved_in_range: reserved,
                ..Limits::default()
            }),
            None,
        );
        s.ports = Some(PortUsage {
            ephemeral: Some(Ephemeral {
                top: Vec::new(),
                destinations: 1,
                untracked: 0,
                bound: 0,
                busiest,
                projected_max: busiest as f64,
                worst: None,
            }),
            ports: Vec::new(),
            listeners: Vec::new(),
            listener_count: 1,
            listen_utilization_max: listen,
        });
        s
    }

    #[test]
    fn use_above_a_range_that_reserved_ports_shrank_reads_above_one() {
        // 500 ports held, then 100 of the 500 reserved: 500 of 400.
        let s = with_ports(500, 40000, 40499, 100, 0.0);
        assert_eq!(port_utilization(&s), Some(1.25));
        // Every port reserved: exhausted.
        assert_eq!(port_utilization(&with_ports(0, 40000, 40009, 10, 0.0)), Some(1.0));
    }

    #[test]
    fn a_full_accept_queue_at_backlog_plus_one_is_critical() {
        let s = with_ports(0, 40000, 40499, 0, 129.0 / 128.0);
        let u = listen_queue_utilization(&s).unwrap();
        assert_eq!(LISTEN_CRIT, 1.0);
        assert!(u > LISTEN_CRIT, "{u}");
    }

    #[test]
    fn the_alert_rules_use_the_same_levels() {
        let rules = include_str!("../prometheus/alerts.yml");
        for expr in [
            format!("sockwatch_ephemeral_port_utilization_max > {WARN}"),
            format!("sockwatch_ephemeral_port_utilization_max > {CRIT}"),
            format!("sockwatch_conntrack_entries / sockwatch_conntrack_entries_limit > {WARN}"),
            format!("sockwatch_listen_queue_utilization_max >= {LISTEN_CRIT}"),
            format!("sockwatch_ephemeral_port_seconds_to_exhaustion < {PREDICT_WARN_SECONDS}"),
            format!("sockwatch_ephemeral_port_seconds_to_exhaustion < {PREDICT_CRIT_SECONDS}"),
            format!("sockwatch_conntrack_seconds_to_full < {PREDICT_WARN_SECONDS}"),
            format!("sockwatch_process_fds_open / sockwatch_process_fds_limit > {WARN}"),
            format!("sockwatch_file_handles_allocated / sockwatch_file_handles_max > {WARN}"),
            format!("sockwatch_socket_memory_utilization > {CRIT}"),
            format!("sockwatch_softnet_backlog_utilization_max > {WARN}"),
            format!("sockwatch_neighbour_utilization > {WARN}"),
        ] {
            assert!(rules.contains(&format!("expr: {expr}\n")), "alerts.yml lacks `{expr}`");
        }
    }
}
