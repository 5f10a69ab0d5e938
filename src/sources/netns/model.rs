//! What the namespaces source finds: each namespace with its counters, owner and latest
//! readings, and the limits it is read within. Plain data every part of the wing shares.

use super::counters::NsCounters;
use crate::sources::ctnetlink::attribution::Attribution;
use crate::sources::tcp::ports::{Destination, EphemeralRange};

/// Directories where namespaces are pinned by bind mounts.
pub const PIN_DIRS: [&str; 2] = ["/run/netns", "/var/run/docker/netns"];

/// Most namespaces read per sample (bounded work and memory on a host gone wrong).
pub const MAX_NAMESPACES: usize = 10_000;

/// The default `ip_local_port_range` (32768–60999) a new namespace starts with: what the
/// cheap layer holds a namespace's sockets against (its own range needs the deep layer).
pub const DEFAULT_PORT_RANGE: f64 = 28_232.0;

pub use crate::sources::procfs::cgroup::Owner;

/// A network namespace and what was read in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Namespace {
    /// The namespace's inode: stable for its life, the `netns` label.
    pub inode: u64,
    /// The process it was read through (`None`: a pinned namespace without processes).
    pub pid: Option<u32>,
    /// Its `/run/netns` (or Docker netns) file name, if pinned.
    pub name: Option<String>,
    pub owner: Owner,
    /// The namespace sockwatch itself runs in.
    pub own: bool,
    /// `None`: it could not be read (permissions, or it went away during the sample).
    pub counters: Option<NsCounters>,
    /// Pressure, 0 to 1 and beyond: the larger of its conntrack use (entries over
    /// `nf_conntrack_max`), its TCP sockets in use and in TIME_WAIT over its own port range
    /// (kept by the deep layer; the default 28,232 where not known), and its busiest
    /// destination's ports over its own range (from the deep layer's latest dump).
    pub pressure: f64,
    /// Its latest dump from inside (the deep layer), if one was taken.
    pub deep: Option<DeepReading>,
    /// Who fills its conntrack table (with `--conntrack.breakdown`, for the fullest few).
    pub conntrack: Option<Attribution>,
}

/// What one sample of every namespace found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Namespaces {
    /// Namespaces found.
    pub count: u64,
    /// Namespaces found but not read (a pinned one without CAP_SYS_ADMIN, one whose
    /// process's files are hidden, or gone during the sample).
    pub unreadable: u64,
    /// Processes whose namespace could not be named (their `/proc/PID/ns/net` needs ptrace
    /// access: another user's, without root). Processes, not namespaces: how many
    /// namespaces they are in cannot be known.
    pub unidentified_processes: u64,
    /// The top-K by pressure, the daemon's own namespace and the worst of each kind always
    /// among them.
    pub top: Vec<Namespace>,
    /// The namespace with the most conntrack entries: (inode, entries).
    pub worst_conntrack: Option<(u64, u64)>,
    /// The namespace with the most TIME_WAIT sockets: (inode, count).
    pub worst_time_wait: Option<(u64, u64)>,
    /// The namespace whose busiest destination holds the largest share of its own port
    /// range (deep layer): (inode, utilization).
    pub worst_ports: Option<(u64, f64)>,
    /// The namespace whose port range runs out soonest by its latest dump, aged: (inode,
    /// seconds).
    pub soonest: Option<(u64, f64)>,
    /// The deep layer: why it is down (no CAP_SYS_ADMIN) or degraded (no descriptor to
    /// spare for any namespace), dumps since start, sockets kept, and the samples within
    /// which every namespace is dumped again.
    pub deep_down: Option<String>,
    /// The deep layer is off by setting (`--no-netns.deep`): the counters only.
    pub deep_off: bool,
    /// Dumps of near namespaces between samples (every second), since start.
    pub deep_refresh_dumps_total: u64,
    /// Seconds within which each near namespace is dumped again between samples.
    pub deep_near_refresh_seconds: f64,
    pub deep_revisit_samples: u64,
    pub deep_dumps_total: u64,
    pub deep_kept: u64,
    /// Namespaces by how soon they could run out (near, could, far: `deep::Need`), and the
    /// samples within which each near one is dumped again.
    pub deep_needs: [u64; 3],
    pub deep_near_revisit_samples: u64,
}

/// What one dump inside a namespace found.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepReading {
    /// The namespace's own `ip_local_port_range`.
    pub range: EphemeralRange,
    /// Its busiest destination (ports used toward it), if it has client sockets.
    pub busiest: Option<Destination>,
    /// Busiest destination's ports over the range size (not capped).
    pub utilization: f64,
    /// TCP sockets by state, both families (indexed like [`crate::sources::tcp::sockets::TCP_STATES`]).
    pub states: [u64; 13],
    /// The destination heading for exhaustion soonest (else the one projected highest),
    /// projected with the host's method from the dump's TIME_WAIT timers against this
    /// namespace's own range; its `seconds_to_exhaustion` is as of the dump.
    pub soonest: Option<Destination>,
    /// The fullest listener's accept queue over its backlog (0 without listeners).
    pub listen_utilization: f64,
    /// Samples since this reading was taken (0: this sample).
    pub age: u64,
    /// Seconds since this reading was taken, when it was attached.
    pub age_seconds: f64,
}

impl DeepReading {
    /// Seconds until the namespace's soonest destination has every port held, aged by the
    /// time since the dump (an older reading counts down, never reads safer); `None` when
    /// nothing is heading there within the projection's horizon.
    pub fn seconds_to_exhaustion(&self) -> Option<f64> {
        let s = self.soonest.as_ref()?.seconds_to_exhaustion?;
        Some((s - self.age_seconds).max(0.0))
    }
}
