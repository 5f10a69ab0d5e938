//! The doctor's checks of the `procfs/` sources.

use super::words::{check, per_s, rate};
use super::{Check, Level};
use crate::snapshot::Snapshot;

/// The per-CPU backlog: drops between the samples, and the fullest queue now.
pub(super) fn softnet(before: &Snapshot, now: &Snapshot, seconds: f64) -> Option<Check> {
    let sn = now.softnet.as_ref()?;
    let dropped = rate(before.softnet.as_ref().map(|s| s.dropped()), Some(sn.dropped()), seconds).unwrap_or(0.0);
    let u = sn.backlog_utilization_max();
    let level = if dropped > 0.0 { Level::Critical } else { u.map_or(Level::Ok, Level::of) };
    Some(check(
        "CPU backlog",
        level,
        sn.cpus.iter().filter_map(|c| c.backlog).max().unwrap_or(0) as f64,
        sn.max_backlog.map(|m| m as f64),
        u,
        format!(
            "{} CPUs, {} packets dropped at full backlogs since boot{}; netdev_max_backlog {}",
            sn.cpus.len(),
            sn.dropped(),
            if dropped > 0.0 { format!(", {}/s now", per_s(dropped)) } else { String::new() },
            sn.max_backlog.map_or("not visible".to_owned(), |m| m.to_string())
        ),
        &|| {
            "A CPU's receive backlog is full, so packets are dropped before any socket sees them. Spread receive \
             work over more CPUs (RSS queues, RPS, irqbalance) or raise net.core.netdev_max_backlog; a rising \
             time_squeeze says the softirq runs out of budget (net.core.netdev_budget)."
                .to_owned()
        },
    ))
}
