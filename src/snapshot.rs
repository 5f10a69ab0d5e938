//! The immutable result of one sample: every source's reading, or its absence.
//!
//! A source that failed has `None` here, so its series are absent from the output rather
//! than served stale; its [`SourceStatus`] says it is down and why.

use std::time::{Duration, SystemTime};

use crate::sources::ctnetlink::dump::Breakdown;
use crate::sources::procfs::{conntrack::Conntrack, limits::Limits, snmp::SnmpCounters, sockstat::Sockstat};
use crate::sources::procfs::{fds::Descriptors, neighbour::Neighbours, sockmem::SocketMemory, softnet::Softnet};
use crate::sources::tcp::listeners::ListenPath;
use crate::sources::tcp::{ports::PortUsage, projection::Trajectory, sockets::Sockets};
use crate::sources::{netns::Namespaces, udp::sockets::Udp};

/// The source table: one row per kernel source, generating [`Source`], its lists and its
/// names, in the style of `config/settings.rs`. A row is `Variant = "label", When, "doc"`:
/// the `source` label value, and whether it runs every sample (`Always`) or only when a
/// setting turns it on (`Optional`). The order is the order of export (and of
/// [`Snapshot::sources`]). Adding a source: a module in its wing of `src/sources/`, a row
/// here, a field on [`Snapshot`], and one small function per output (README, "How it works").
macro_rules! sources {
    ($($(#[doc = $doc:literal])* $variant:ident = $label:literal, $when:ident;)*) => {
        /// The kernel sources, in the order they are sampled and exported.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Source {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Source {
            /// Every source, in table order: [`Source::code`] indexes it from 1.
            pub const EVERY: [Source; [$(Source::$variant),*].len()] = [$(Source::$variant),*];

            /// The `source` label value.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Source::$variant => $label,)*
                }
            }

            /// Whether it runs every sample (not only when a setting turns it on).
            pub const fn always(self) -> bool {
                match self {
                    $(Source::$variant => matches!(When::$when, When::Always),)*
                }
            }
        }
    };
}

/// When a source runs.
enum When {
    Always,
    #[allow(dead_code)] // named in the table only
    Optional,
}

sources! {
    Sockets = "sockets", Always;
    Sockstat = "sockstat", Always;
    Conntrack = "conntrack", Always;
    Snmp = "snmp", Always;
    Limits = "limits", Always;
    /// UDP sockets: a second sock_diag dump (per family), with memory info.
    Udp = "udp", Always;
    /// Each listener's drops and SYN queue: a LISTEN-only sock_diag dump.
    Listeners = "listeners", Always;
    /// Open files host-wide (`fs.file-nr`) and per process against RLIMIT_NOFILE.
    Fds = "fds", Always;
    /// TCP and UDP buffer memory against `tcp_mem` / `udp_mem`, and the pressure flag.
    Sockmem = "sockmem", Always;
    /// The per-CPU receive backlog (`/proc/net/softnet_stat`).
    Softnet = "softnet", Always;
    /// The ARP and NDISC neighbour tables (host-wide; the host's namespace only).
    Neighbour = "neighbour", Always;
    /// The optional ctnetlink dump (`--conntrack.breakdown`), on its own interval.
    ConntrackBreakdown = "conntrack_breakdown", Optional;
    /// Every network namespace's O(1) counters (`--netns`).
    Netns = "netns", Optional;
}

impl Source {
    /// The sources that run every sample, in table order.
    pub const ALL: [Source; Self::always_count()] = {
        let mut out = [Source::Sockets; Self::always_count()];
        let (mut i, mut j) = (0, 0);
        while i < Self::EVERY.len() {
            if Self::EVERY[i].always() {
                out[j] = Self::EVERY[i];
                j += 1;
            }
            i += 1;
        }
        out
    };

    const fn always_count() -> usize {
        let (mut i, mut n) = (0, 0);
        while i < Self::EVERY.len() {
            n += Self::EVERY[i].always() as usize;
            i += 1;
        }
        n
    }

    /// Its place in the table, from 0: what [`PerSource`] is indexed by.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A small number for an atomic progress marker (0 is "none").
    pub fn code(self) -> usize {
        self.index() + 1
    }

    pub fn from_code(code: usize) -> Option<Source> {
        code.checked_sub(1).and_then(|i| Self::EVERY.get(i).copied())
    }
}

/// One `T` per source, indexed by [`Source`] (never by position in a destructuring).
#[derive(Debug, Clone)]
pub struct PerSource<T>([T; Source::EVERY.len()]);

impl<T: Default> Default for PerSource<T> {
    fn default() -> Self {
        PerSource(std::array::from_fn(|_| T::default()))
    }
}

impl<T> std::ops::Index<Source> for PerSource<T> {
    type Output = T;
    fn index(&self, s: Source) -> &T {
        &self.0[s.index()]
    }
}

impl<T> std::ops::IndexMut<Source> for PerSource<T> {
    fn index_mut(&mut self, s: Source) -> &mut T {
        &mut self.0[s.index()]
    }
}

impl<T> PerSource<T> {
    /// The values in table order, with their source.
    pub fn into_iter_with_source(self) -> impl Iterator<Item = (Source, T)> {
        Source::EVERY.into_iter().zip(self.0)
    }
}

/// How one source fared in this sample, and over the sampler's life.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStatus {
    pub source: Source,
    pub up: bool,
    /// Failed reads since start. A source that is merely absent (conntrack with the
    /// module not loaded) is down but does not count as failing.
    pub errors_total: u64,
    pub duration: Duration,
    /// Why it is down, when it is.
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the sample started.
    pub timestamp: SystemTime,
    /// Wall time the whole sample took.
    pub duration: Duration,
    /// The interval the sampler runs at.
    pub interval: Duration,
    pub sockets: Option<Sockets>,
    /// Port and accept-queue exhaustion, from the same dump as `sockets`.
    pub ports: Option<PortUsage>,
    pub sockstat: Option<Sockstat>,
    pub conntrack: Option<Conntrack>,
    pub snmp: Option<SnmpCounters>,
    /// The latest ctnetlink breakdown (it may be up to one breakdown interval old).
    pub conntrack_breakdown: Option<Breakdown>,
    /// Where the conntrack table is heading (from the breakdown's TIME_WAIT entries, against
    /// nf_conntrack_max); `None` without the breakdown.
    pub conntrack_projection: Option<Trajectory>,
    pub limits: Option<Limits>,
    /// UDP sockets, per-port receive queues and drops.
    pub udp: Option<Udp>,
    /// Every network namespace (`--netns`); `None` when off or down.
    pub namespaces: Option<Namespaces>,
    /// Each listener's drops and SYN queue.
    pub listen_path: Option<ListenPath>,
    /// Open files, host-wide and per process.
    pub descriptors: Option<Descriptors>,
    pub socket_memory: Option<SocketMemory>,
    pub softnet: Option<Softnet>,
    pub neighbours: Option<Neighbours>,
    /// sockwatch's own process (`process_*`); `None` when /proc/self could not be read.
    pub process: Option<crate::sources::procfs::process::ProcessStats>,
    /// One entry per [`Source::ALL`], in that order, then the breakdown's and the
    /// namespaces' when they run.
    pub sources: Vec<SourceStatus>,
    /// Samples taken since start, this one included.
    pub samples_total: u64,
    /// Samples whose socket dump the kernel flagged as interrupted (`NLM_F_DUMP_INTR`).
    pub inconsistent_total: u64,
    /// Set on a re-publication of this snapshot while the next sample is past its deadline
    /// (a kernel read or dump that does not return): how long it has run, and in which
    /// source. `None` on every ordinary sample.
    pub overdue: Option<Overdue>,
}

/// A sample in progress past its deadline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overdue {
    pub running: Duration,
    pub source: Option<Source>,
}

impl Snapshot {
    /// No sample, only limits: what the Munin plugin builds for its `config` thresholds
    /// when the daemon is down. Not for values: `entries` is a placeholder.
    pub fn limits_only(limits: Option<Limits>, conntrack_max: Option<u64>) -> Snapshot {
        Snapshot {
            timestamp: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            interval: Duration::ZERO,
            sockets: None,
            ports: None,
            sockstat: None,
            // Only the limit is meant: `config` prints thresholds, never values.
            conntrack: conntrack_max.map(|m| Conntrack { entries: 0, limit: Some(m), buckets: None, stats: None }),
            snmp: None,
            conntrack_breakdown: None,
            conntrack_projection: None,
            limits,
            udp: None,
            namespaces: None,
            listen_path: None,
            descriptors: None,
            socket_memory: None,
            softnet: None,
            neighbours: None,
            process: None,
            sources: Vec::new(),
            samples_total: 0,
            inconsistent_total: 0,
            overdue: None,
        }
    }

    pub fn status(&self, source: Source) -> Option<&SourceStatus> {
        self.sources.iter().find(|s| s.source == source)
    }
}

#[cfg(test)]
mod source_table_tests {
    use super::*;

    #[test]
    fn the_table_makes_the_lists_and_names() {
        assert_eq!(
            Source::ALL,
            [
                Source::Sockets,
                Source::Sockstat,
                Source::Conntrack,
                Source::Snmp,
                Source::Limits,
                Source::Udp,
                Source::Listeners,
                Source::Fds,
                Source::Sockmem,
                Source::Softnet,
                Source::Neighbour
            ]
        );
        assert_eq!(Source::EVERY.len(), 13);
        assert_eq!(&Source::EVERY[11..], &[Source::ConntrackBreakdown, Source::Netns]);
        let mut names: Vec<&str> = Source::EVERY.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Source::EVERY.len(), "label values are unique");
        for s in Source::EVERY {
            assert_eq!(Source::from_code(s.code()), Some(s));
            assert_eq!(Source::EVERY[s.index()], s);
        }
        assert_eq!(Source::from_code(0), None);
        let mut per: PerSource<u32> = PerSource::default();
        per[Source::Netns] = 7;
        per[Source::Sockets] = 1;
        let seen: Vec<(Source, u32)> = per.into_iter_with_source().filter(|&(_, v)| v > 0).collect();
        assert_eq!(seen, [(Source::Sockets, 1), (Source::Netns, 7)]);
    }
}
