//! The immutable result of one sample: every source's reading, or its absence.
//!
//! A source that failed has `None` here, so its series are absent from the output rather
//! than served stale; its [`SourceStatus`] says it is down and why.

use std::time::{Duration, SystemTime};

use crate::sources::{
    conntrack::Conntrack, ct_breakdown::Breakdown, limits::Limits, ports::PortUsage, projection::Trajectory,
    snmp::TcpCounters, sockets::Sockets, sockstat::Sockstat,
};

/// The kernel sources, in the order they are sampled and exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sockets,
    Sockstat,
    Conntrack,
    Snmp,
    Limits,
    /// The optional ctnetlink dump (`--conntrack.breakdown`), on its own interval.
    ConntrackBreakdown,
}

impl Source {
    pub const ALL: [Source; 5] = [Source::Sockets, Source::Sockstat, Source::Conntrack, Source::Snmp, Source::Limits];

    /// The `source` label value.
    pub fn name(self) -> &'static str {
        match self {
            Source::Sockets => "sockets",
            Source::Sockstat => "sockstat",
            Source::Conntrack => "conntrack",
            Source::Snmp => "snmp",
            Source::Limits => "limits",
            Source::ConntrackBreakdown => "conntrack_breakdown",
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
    pub snmp: Option<TcpCounters>,
    /// The latest ctnetlink breakdown (it may be up to one breakdown interval old).
    pub conntrack_breakdown: Option<Breakdown>,
    /// Where the conntrack table is heading (from the breakdown's TIME_WAIT entries, against
    /// nf_conntrack_max); `None` without the breakdown.
    pub conntrack_projection: Option<Trajectory>,
    pub limits: Option<Limits>,
    /// One entry per [`Source::ALL`], in that order, then the breakdown's when it runs.
    pub sources: Vec<SourceStatus>,
    /// Samples taken since start, this one included.
    pub samples_total: u64,
    /// Samples whose socket dump the kernel flagged as interrupted (`NLM_F_DUMP_INTR`).
    pub inconsistent_total: u64,
}

impl Snapshot {
    pub fn status(&self, source: Source) -> Option<&SourceStatus> {
        self.sources.iter().find(|s| s.source == source)
    }
}
