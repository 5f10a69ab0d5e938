//! Who fills the conntrack table of the namespaces fullest by conntrack use: the
//! breakdown's attribution (top sources, destinations, NAT mappings), from a ctnetlink dump
//! *inside* each of them, with `--conntrack.breakdown` and `--netns` both on.
//!
//! - One ctnetlink socket per such namespace, opened from a short-lived thread that enters
//!   it (as the deep layer's sock_diag sockets are) and kept while the namespace stays
//!   among the fullest; closed at once when it leaves them or disappears.
//! - The conntrack hash is shared by every namespace: a dump from any of them walks the
//!   whole host's table, so each namespace is dumped at most once per
//!   `--conntrack.breakdown-interval`, and not when its last dump took longer than what is
//!   left of the sample's budget for work inside namespaces.
//! - sockwatch's own namespace is the breakdown's own dump: never dumped here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::ct_attribution::{Attribution, AttributionConfig};
use super::ct_breakdown::CtDump;
use super::netns::Namespace;
use super::SourceError;

/// How many namespaces are attributed (the fullest by conntrack entries).
pub const NAMESPACES: usize = 3;

/// Sources and destinations exported per namespace (and NAT mappings).
pub const TOP_K: usize = 5;

/// `--conntrack.breakdown` as the namespaces source uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsConntrackConfig {
    /// `--conntrack.breakdown-interval`: each namespace's dump is at most this frequent.
    pub interval: Duration,
    pub attribution: AttributionConfig,
}

struct Kept {
    dump: CtDump,
    /// When a dump was last tried, and how long it took.
    tried: Option<(Instant, Duration)>,
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
        let attribution = AttributionConfig { top_k: cfg.attribution.top_k.min(TOP_K), ..cfg.attribution };
        for (inode, _) in fullest {
            let Some(path) = reachable.get(&inode) else { continue };
            if self.down.is_some() {
                break;
            }
            let k = self.kept.entry(inode).or_insert_with(|| Kept {
                dump: CtDump::in_namespace(path.clone(), inode),
                tried: None,
                last: None,
            });
            let due = k.tried.is_none_or(|(at, took)| {
                at.elapsed() >= cfg.interval && took <= budget.saturating_sub(start.elapsed())
            });
            if !due {
                continue;
            }
            let t = Instant::now();
            let result = k.dump.read(super::ct_breakdown::DEFAULT_TIME_WAIT_TIMEOUT, &attribution);
            k.tried = Some((t, t.elapsed()));
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
