//! The Munin fields of the `procfs/` sources.

use super::graphs::pct;
use crate::snapshot::Snapshot;

pub(super) fn cpu_backlog(s: &Snapshot) -> Option<f64> {
    pct(s.softnet.as_ref()?.backlog_utilization_max())
}

pub(super) fn softnet_dropped(s: &Snapshot) -> Option<f64> {
    s.softnet.as_ref().map(|n| n.dropped() as f64)
}

