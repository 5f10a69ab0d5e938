//! The immutable result of one sample: every source's reading, or its absence.
//!
//! A source that failed has `None` here, so its series are absent from the output rather
//! than served stale; its [`SourceStatus`] says it is down and why.

use std::time::{Duration, SystemTime};

use crate::sources::{
    conntrack::Conntrack, ct_breakdown::Breakdown, limits::Limits, netns::Namespaces, ports::PortUsage,
    projection::Trajectory, snmp::SnmpCounters, sockets::Sockets, sockstat::Sockstat, udp::Udp,
};

/// The kernel sources, in the order they are sampled and exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sockets,
    Sockstat,
    Conntrack,
    Snmp,
    Limits,
    /// UDP sockets: a second sock_diag dump (per family), with memory info.
    Udp,
    /// The optional ctnetlink dump (`--conntrack.breakdown`), on its own interval.
    ConntrackBreakdown,
    /// Every network namespace's O(1) counters (`--netns`).
    Netns,
}

impl Source {
    pub const ALL: [Source; 6] =
        [Source::Sockets, Source::Sockstat, Source::Conntrack, Source::Snmp, Source::Limits, Source::Udp];
    /// Every source, the breakdown included: [`Source::code`] indexes it from 1.
    const EVERY: [Source; 8] = [
        Source::Sockets,
        Source::Sockstat,
        Source::Conntrack,
        Source::Snmp,
        Source::Limits,
        Source::Udp,
        Source::ConntrackBreakdown,
        Source::Netns,
    ];

    /// A small number for an atomic progress marker (0 is "none").
    pub fn code(self) -> usize {
        Self::EVERY.iter().position(|&s| s == self).map_or(0, |i| i + 1)
    }

    pub fn from_code(code: usize) -> Option<Source> {
        code.checked_sub(1).and_then(|i| Self::EVERY.get(i).copied())
    }

    /// The `source` label value.
    pub fn name(self) -> &'static str {
        match self {
            Source::Sockets => "sockets",
            Source::Sockstat => "sockstat",
            Source::Conntrack => "conntrack",
            Source::Snmp => "snmp",
            Source::Limits => "limits",
            Source::Udp => "udp",
            Source::ConntrackBreakdown => "conntrack_breakdown",
            Source::Netns => "netns",
        }
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
    /// sockwatch's own process (`process_*`); `None` when /proc/self could not be read.
    pub process: Option<crate::sources::process::ProcessStats>,
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
