//! The doctor's word on sockwatch's own sources: each one that could not be read, and
//! whether that is an answer (a module not loaded, a host-wide table seen only from the
//! host) or a gap (cannot tell).

use super::{Check, Level};
use crate::snapshot::Snapshot;

/// One check per source that was not read.
pub(super) fn sources_not_read(now: &Snapshot) -> Vec<Check> {
    let mut checks = Vec::new();
    // The conntrack counters are absent when the module is not loaded: an answer (nothing
    // is tracked), not a gap, provided /proc/sys/net itself was read (the limits come from it).
    let sys_net_read = now.limits.is_some();
    for s in now.sources.iter().filter(|s| !s.up) {
        if let Some(e) = &s.error {
            let not_loaded = s.source == crate::snapshot::Source::Conntrack && sys_net_read && s.errors_total == 0;
            // The neighbour tables are the host's: their files exist in its namespace only.
            let elsewhere = s.source == crate::snapshot::Source::Neighbour && sys_net_read && s.errors_total == 0;
            let (level, detail) = if not_loaded {
                (Level::Ok, format!("not loaded, nothing tracked ({e})"))
            } else if elsewhere {
                (Level::Ok, format!("host-wide tables, seen from the host's network namespace only ({e})"))
            } else {
                (Level::CannotTell, format!("cannot tell, not read: {e}"))
            };
            checks.push(Check {
                resource: s.source.name(),
                level,
                used: None,
                limit: None,
                utilization: None,
                projected: None,
                seconds_to_exhaustion: None,
                detail,
                advice: (level == Level::CannotTell)
                    .then(|| "Checks that need this source did not run. Run doctor as the daemon runs (root or CAP_NET_ADMIN), against the real /proc (--path.procfs).".to_owned()),
            });
        }
    }
    checks
}
