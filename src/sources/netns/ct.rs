//! Who fills the conntrack table of the namespaces fullest by conntrack use: the
//! breakdown's attribution (top sources, destinations, NAT mappings), from a ctnetlink dump
//! *inside* each of them, with `--conntrack.breakdown` and `--netns` both on.
//!
//! - One ctnetlink socket per such namespace, opened from a short-lived thread that enters
//!   it (as the deep layer's sock_diag sockets are) and kept while the namespace stays
//!   among the fullest; closed at once when it leaves them or disappears.
//! - The conntrack hash is shared by every namespace: a dump from any of them walks the
//!   whole host's table, so each namespace is dumped at most once per
//!   `--conntrack.breakdown-interval`, and not when its last dump (its time scaled by how
//!   the namespace's entry count changed since) would take longer than what is left of the
//!   sample's budget for work inside namespaces. A dump skipped for its cost is still
//!   retried once `RETRY_FACTOR` times its last duration has passed: a table that was huge
//!   once and then flushed is never left with the old attribution.
//! - sockwatch's own namespace is the breakdown's own dump: never dumped here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::model::Namespace;
use crate::sources::ctnetlink::attribution::{Attribution, AttributionConfig};
use crate::sources::ctnetlink::dump::CtDump;
use crate::sources::kernel::SourceError;

/// How many namespaces are attributed (the fullest by conntrack entries).
pub const NAMESPACES: usize = 3;

/// `--conntrack.breakdown` as the namespaces source uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsConntrackConfig {
    /// `--conntrack.breakdown-interval`: each namespace's dump is at most this frequent.
    pub interval: Duration,
    pub attribution: AttributionConfig,
}

/// A dump too slow for the sample's budget is still tried after this many times its last
/// duration (so dumping this namespace takes at most about 1/RETRY_FACTOR of the time).
pub const RETRY_FACTOR: u32 = 10;

/// The last dump tried in a namespace.
#[derive(Debug, Clone, Copy)]
struct Tried {
    at: Instant,
    took: Duration,
    /// The namespace's entry count then.
    entries: u64,
}

/// Whether a namespace's dump is due now: `interval` has passed since the last try and its
/// expected duration (the last one, scaled by the entry count since) fits in `left` of the
/// budget; or, whatever the budget, `RETRY_FACTOR` times the last duration has passed.
fn due(last: Option<Tried>, entries: u64, interval: Duration, left: Duration, now: Instant) -> bool {
    let Some(t) = last else { return true };
    let since = now.saturating_duration_since(t.at);
    if since < interval {
        return false;
    }
    let scale = (entries as f64 / t.entries.max(1) as f64).min(1.0);
    let expected = t.took.mul_f64(scale);
    expected <= left || since >= t.took * RETRY_FACTOR
}

struct Kept {
    dump: CtDump,
    /// When a dump was last tried, how long it took, with how many entries.
    tried: Option<Tried>,
    /// What the last dump that worked found.
    last: Option<Attribution>,
}

/// The kept sockets, by namespace inode.
#[derive(Default)]
pub struct NsConntrack {
    kept: HashMap<u64, Kept>,
    /// Why dumps inside namespaces fail (no CAP_NET_ADMIN there), once known.
    pub down: Option<String>,
}

impl NsConntrack {
    /// Dumps the fullest namespaces of `top` that are due, within `budget`, and attaches
    /// each one's latest attribution. `reachable`: inode → namespace file.
    pub fn run(
        &mut self,
        top: &mut [Namespace],
        reachable: &HashMap<u64, PathBuf>,
        cfg: &NsConntrackConfig,
        budget: Duration,
    ) {
        let mut fullest: Vec<(u64, u64)> = top
            .iter()
            .filter(|n| !n.own)
            .filter_map(|n| Some((n.inode, n.counters.as_ref()?.conntrack_entries?)))
            .filter(|&(_, entries)| entries > 0)
            .collect();
        fullest.sort_by_key(|&(inode, entries)| (std::cmp::Reverse(entries), inode));
        fullest.truncate(NAMESPACES);
        // A kept socket holds its namespace: only the fullest keep one.
        self.kept.retain(|inode, _| fullest.iter().any(|(i, _)| i == inode));
        let start = Instant::now();
        // `--conntrack.top-k` as on the host (it was silently cut to 5 here): series stay
        // bounded, NAMESPACES x 3 maps x top-K.
        let attribution = cfg.attribution;
        for (inode, entries) in fullest {
            let Some(path) = reachable.get(&inode) else { continue };
            if self.down.is_some() {
                break;
            }
            let k = self.kept.entry(inode).or_insert_with(|| Kept {
                dump: CtDump::in_namespace(path.clone(), inode),
                tried: None,
                last: None,
            });
            if !due(k.tried, entries, cfg.interval, budget.saturating_sub(start.elapsed()), Instant::now()) {
                continue;
            }
            let t = Instant::now();
            let result = k.dump.read(crate::sources::ctnetlink::entry::DEFAULT_TIME_WAIT_TIMEOUT, &attribution);
            k.tried = Some(Tried { at: t, took: t.elapsed(), entries });
            match result {
                Ok(b) => k.last = Some(b.attribution),
                Err(SourceError::Kernel { errno, .. }) if errno == libc::EPERM => {
                    let why = "ctnetlink refused inside the namespace: needs CAP_NET_ADMIN there".to_owned();
                    tracing::warn!("conntrack attribution inside namespaces down: {why}");
                    self.down = Some(why);
                }
                // Entering it failed, or it went away: tried again after an interval.
                Err(_) => k.last = None,
            }
        }
        for n in top.iter_mut() {
            n.conntrack = self.kept.get(&n.inode).and_then(|k| k.last.clone());
        }
    }

    /// Namespaces with a kept ctnetlink socket.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a dump slower than the budget (300,000 entries), a flushed table is dumped again
    /// at once (the cost scales with the entries), and even a still-full one after
    /// RETRY_FACTOR times its duration: the attribution never freezes.
    #[test]
    fn a_dump_too_slow_for_the_budget_is_retried() {
        let t0 = Instant::now();
        let slow = Some(Tried { at: t0, took: Duration::from_secs(3), entries: 300_000 });
        let (interval, left) = (Duration::from_secs(10), Duration::from_millis(500));
        assert!(due(None, 1, interval, left, t0), "never tried: due");
        assert!(!due(slow, 300_000, interval, left, t0 + Duration::from_secs(5)), "within the interval");
        assert!(!due(slow, 300_000, interval, left, t0 + Duration::from_secs(20)), "still full, too slow");
        assert!(due(slow, 500, interval, left, t0 + Duration::from_secs(10)), "flushed: cheap again");
        assert!(due(slow, 300_000, interval, left, t0 + Duration::from_secs(30)), "retried after 10 x 3 s");
        let quick = Some(Tried { at: t0, took: Duration::from_millis(20), entries: 1_000 });
        assert!(due(quick, 5_000, interval, left, t0 + interval), "fits the budget");
    }
}
