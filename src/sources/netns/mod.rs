//! Every network namespace on the host, the cheap way: O(1) kernel counters per namespace,
//! read from `/proc/PID/net/` of one process inside it, no setns, no socket walk.
//!
//! - **Discovery.** Every `/proc/PID/ns/net` link names its namespace by inode
//!   (`net:[4026531840]`): one representative process per inode. Namespaces pinned by a
//!   bind mount without any process (`ip netns add`, `/run/netns/*`; Docker's
//!   `/var/run/docker/netns/*`) are found by the inode of that file; they have no
//!   `/proc/PID/net`, so they are read from a short-lived thread that enters them (`setns`,
//!   needs CAP_SYS_ADMIN) and reads `/proc/thread-self/net/`.
//! - **Attribution.** From the representative's `/proc/PID/cgroup` (cgroup v1 and v2): the
//!   container id of Docker (`docker-<id>.scope`, `/docker/<id>`), containerd
//!   (`cri-containerd-<id>.scope`), CRI-O (`crio-<id>.scope`) and Podman
//!   (`libpod-<id>.scope`), the pod uid from a kubepods path (`pod<uid>` or
//!   `kubepods-…-pod<uid_with_underscores>.slice`), and the `/run/netns` name.
//! - **Per namespace** (all are: the kernel keeps them per namespace): `sockstat` (TCP
//!   inuse and tw, UDP inuse), `stat/nf_conntrack` (this namespace's entries, checked
//!   against the host-wide `nf_conntrack_max`, and its drop, early_drop, insert_failed),
//!   `snmp` and `netstat` (ActiveOpens, AttemptFails, ListenOverflows, TCPTimeWaitOverflow).
//!
//! Reading another user's `/proc/PID/ns/net` needs ptrace access (root or CAP_SYS_PTRACE);
//! `/proc/PID/net/*` is readable by anyone unless `/proc` is mounted with `hidepid` (or
//! the unit has `ProtectProc=invisible`). Namespaces that cannot be identified or read
//! are counted, not guessed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod counters;
pub mod ct;
pub mod deep;
pub mod discovery;
pub mod model;

use crate::sources::kernel::namespace::in_namespace;
use crate::sources::kernel::ratio::{ratio, AtZero};
use crate::sources::kernel::SourceError;
pub use crate::sources::procfs::cgroup::{self, parse_cgroup};
pub use counters::{read_counters, NetFiles, NsCounters};
use ct::{NsConntrack, NsConntrackConfig};
use deep::DeepLayer;
pub use deep::DeepReading;
pub use discovery::{discover, ns_of, parse_ns_link, Discovery, Found, FULL_SCAN_EVERY};
pub use model::{Namespace, Namespaces, Owner, DEFAULT_PORT_RANGE, MAX_NAMESPACES, PIN_DIRS};

/// How many namespaces are exported (the source runs only when `--netns` is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsConfig {
    /// Namespaces exported, by pressure (`--netns.top-k`).
    pub top_k: usize,
    /// With `--conntrack.breakdown`: attribute the fullest namespaces' conntrack entries.
    pub conntrack: Option<NsConntrackConfig>,
    /// The deep layer (`--netns.deep`): socket dumps inside the namespaces that could run
    /// out; off, only the O(1) counters are read.
    pub deep: bool,
}

impl Default for NetnsConfig {
    fn default() -> Self {
        NetnsConfig { top_k: 20, conntrack: None, deep: true }
    }
}

/// A namespace's pressure from its cheap counters: the larger of its conntrack entries
/// against `nf_conntrack_max` and its TCP sockets (in use and TIME_WAIT) against its own
/// port range (kept by the deep layer; the default range where it is not known). Relative
/// to its own range, so a small namespace near the end of a small range ranks above a big
/// one far from the end of a wide one.
fn pressure(c: &NsCounters, conntrack_max: Option<u64>, own_range: Option<u32>) -> f64 {
    let ct = match (c.conntrack_entries, conntrack_max) {
        (Some(e), Some(m)) => ratio(e as f64, m as f64, AtZero::Unlimited).unwrap_or(0.0),
        _ => 0.0,
    };
    let range = own_range.map_or(DEFAULT_PORT_RANGE, f64::from);
    let ports = ratio((c.tcp_inuse + c.time_wait) as f64, range, AtZero::Exhausted).unwrap_or(0.0);
    ct.max(ports)
}

/// The namespaces source: discovery's memory, each namespace's kept files, each
/// namespace's owner (read through its representative, which stays while it lives), the
/// deep layer.
#[derive(Default)]
pub struct NetnsSource {
    discovery: Discovery,
    /// sockwatch's own namespace.
    own: Option<u64>,
    /// Each namespace's owner and the representative it was read from: read again when the
    /// representative changes (a PID reused elsewhere is never given the old container);
    /// kept when the new one vanished before its cgroup could be read.
    owners: HashMap<u64, (u32, Owner)>,
    /// Kept `/proc/PID/net` files by namespace inode; dropped with the namespace.
    files: HashMap<u64, NetFiles>,
    /// Descriptors the kept files and sockets may use ([`crate::sources::kernel::kept::keepable_fds`]),
    /// known at the first sample.
    fd_limit: Option<usize>,
    deep: DeepLayer,
    conntrack: NsConntrack,
}

impl NetnsSource {
    /// One sample of every namespace. `conntrack_max` is the host-wide `nf_conntrack_max`.
    /// Every namespace is ranked by two small files; the exported ones (top-K, own, the
    /// worst of each kind) get the rest of their counters and their owner.
    pub fn read(
        &mut self,
        root: &Path,
        cfg: &NetnsConfig,
        conntrack_max: Option<u64>,
    ) -> Result<Namespaces, SourceError> {
        self.read_within(root, cfg, conntrack_max, Duration::ZERO, None, Duration::ZERO)
    }

    /// The owner of namespace `inode` through its representative `pid` (`dir` its /proc
    /// directory): cached while the representative stays; read when it changed. A cgroup
    /// that cannot be read (the process exited in between) never replaces a known owner
    /// with an empty one, and is tried again at the next sample.
    fn owner(&mut self, inode: u64, pid: u32, dir: &Path) -> Owner {
        match self.owners.get(&inode) {
            Some((from, owner)) if *from == pid => owner.clone(),
            known => match crate::sources::kernel::read_optional(&dir.join("cgroup")).ok().flatten() {
                Some(text) => {
                    let owner = parse_cgroup(&text);
                    self.owners.insert(inode, (pid, owner.clone()));
                    owner
                }
                None => known.map(|(_, o)| o.clone()).unwrap_or_default(),
            },
        }
    }

    /// Descriptors still free for kept files and sockets.
    fn fds_left(&mut self) -> usize {
        let limit = *self.fd_limit.get_or_insert_with(crate::sources::kernel::kept::keepable_fds);
        let held: usize = self.files.values().map(NetFiles::open_count).sum::<usize>()
            + self.deep.fds_held()
            + self.discovery.open_count();
        limit.saturating_sub(held)
    }

    /// A pinned namespace (no process inside): its files opened once from a thread that
    /// entered it (setns, CAP_SYS_ADMIN), then kept and re-read without entering. When
    /// not every file could be kept (no descriptors to spare, a file absent), it is
    /// entered at each sample instead: an unopened file could not be opened later from
    /// outside. `None`: it cannot be entered or read.
    fn read_entered(&mut self, inode: u64, pin: &Path, fds_left: &mut usize) -> Option<NsCounters> {
        let thread_self = Path::new("/proc/thread-self");
        if self.files.get(&inode).is_some_and(|f| !f.entered()) {
            self.files.remove(&inode); // opened through a process that has left it
        }
        if !self.files.contains_key(&inode) && *fds_left >= NetFiles::COUNT {
            let mut left = *fds_left;
            let opened = in_namespace(pin, Some(inode), || {
                NetFiles::open_all(thread_self, &mut left).map_err(std::io::Error::other)
            });
            if let Ok(files) = opened.map(NetFiles::into_entered) {
                if files.open_count() == NetFiles::COUNT {
                    *fds_left = left;
                    self.files.insert(inode, files);
                }
            }
        }
        match self.files.get_mut(&inode) {
            Some(files) => {
                let mut c = files.read_pressure(&mut 0).ok()?;
                files.read_details(&mut c, &mut 0).ok()?;
                Some(c)
            }
            None => in_namespace(pin, Some(inode), || read_counters(thread_self).map_err(std::io::Error::other)).ok(),
        }
    }

    /// Every namespace found, ranked by its two small files (all counters for a pinned one).
    fn read_all(&mut self, root: &Path, found: Vec<Found>, own: Option<u64>, ct_max: Option<u64>) -> Vec<Namespace> {
        let live: std::collections::HashSet<u64> = found.iter().map(|f| f.inode).collect();
        self.files.retain(|inode, _| live.contains(inode)); // a kept file holds its namespace
        let mut fds_left = self.fds_left();
        let mut all = Vec::with_capacity(found.len());
        for f in found {
            let counters = match (f.pid, &f.pin) {
                (Some(pid), _) => {
                    let dir = root.join(pid.to_string());
                    let files = self.files.entry(f.inode).or_insert_with(|| NetFiles::new(dir.clone()));
                    files.set_dir(dir); // the representative may have changed
                    files.read_pressure(&mut fds_left).ok()
                }
                (None, Some(pin)) => self.read_entered(f.inode, pin, &mut fds_left),
                (None, None) => None,
            };
            let deep = self.deep.latest(f.inode);
            let own_range = self.deep.range_of(f.inode).map(|r| r.capacity);
            let pressure = counters.as_ref().map_or(0.0, |c| pressure(c, ct_max, own_range));
            let pressure = pressure.max(deep.as_ref().map_or(0.0, |d| d.utilization));
            all.push(Namespace {
                inode: f.inode,
                pid: f.pid,
                name: f.name,
                owner: Owner::default(),
                own: Some(f.inode) == own,
                counters,
                pressure,
                deep,
                conntrack: None,
            });
        }
        all
    }

    /// [`NetnsSource::read`], with `deep_budget` of time for dumps inside namespaces.
    /// `own_reading` is sockwatch's own namespace as the sample's main dump saw it: that
    /// namespace is never dumped a second time.
    pub fn read_within(
        &mut self,
        root: &Path,
        cfg: &NetnsConfig,
        conntrack_max: Option<u64>,
        deep_budget: Duration,
        own_reading: Option<DeepReading>,
        interval: Duration,
    ) -> Result<Namespaces, SourceError> {
        self.discovery.fds_left = self.fds_left();
        let (found, denied) = self.discovery.scan(root, &PIN_DIRS)?;
        let reachable: HashMap<u64, PathBuf> = found
            .iter()
            .filter_map(|f| {
                let path = f.pin.clone().or_else(|| Some(root.join(f.pid?.to_string()).join("ns/net")))?;
                Some((f.inode, path))
            })
            .collect();
        if self.own.is_none() {
            self.own = ns_of(root, "self").ok(); // sockwatch never changes namespace itself
        }
        let own = self.own;
        if !cfg.deep && self.deep.kept() > 0 {
            self.deep = DeepLayer::default(); // turned off by a reload: its sockets close
        }
        if cfg.deep && !deep_budget.is_zero() {
            // Each namespace's own port range, for its pressure below (and its dumps).
            let fds_left = self.fds_left();
            self.deep.refresh_ranges(&reachable, own, fds_left);
        }
        let mut out = Namespaces { count: found.len() as u64, unidentified_processes: denied, ..Namespaces::default() };
        let all = self.read_all(root, found, own, conntrack_max);
        self.deep.observe(&all);
        select(all, cfg.top_k, &mut out);
        let fds_left = self.fds_left();
        let started = std::time::Instant::now();
        if cfg.deep {
            self.deep.run(&mut out.top, &reachable, deep_budget, own.map(|i| (i, own_reading)), interval, fds_left);
        }
        out.deep_off = !cfg.deep;
        if let Some(ct) = &cfg.conntrack {
            self.conntrack.run(&mut out.top, &reachable, ct, deep_budget.saturating_sub(started.elapsed()));
        }
        self.after_dumps(&mut out);
        self.details_and_owners(root, &mut out);
        self.deep.observe_opens(&out.top);
        Ok(out)
    }

    /// Between samples: the near namespaces dumped again (within `budget`), and `last`,
    /// the latest sample's namespaces, with every exported one's reading brought up to
    /// date (sockwatch's own keeps the sample's main dump). `None` when no namespace is
    /// near, the layer is off or down, nothing could be dumped, or no reading moved enough
    /// to matter ([`moved`]): `last` stands, and nothing is rendered again.
    pub fn refresh_near(&mut self, cfg: &NetnsConfig, last: &Namespaces, budget: Duration) -> Option<Namespaces> {
        if !cfg.deep || !self.deep.any_near() || !self.deep.refresh_near(budget) {
            return None;
        }
        let mut out = last.clone();
        let mut any_moved = false;
        for n in out.top.iter_mut().filter(|n| !n.own) {
            let latest = self.deep.latest(n.inode);
            any_moved |= moved(n.deep.as_ref(), latest.as_ref());
            n.deep = latest;
        }
        if !any_moved {
            return None;
        }
        self.after_dumps(&mut out);
        out.deep_refresh_dumps_total = self.deep.refresh_dumps_total;
        out.deep_near_refresh_seconds = self.deep.near_refresh_seconds;
        Some(out)
    }

    /// What the dumps changed: the fullest port range and the soonest exhaustion among the
    /// exported, each one's pressure, and the deep layer's state.
    fn after_dumps(&self, out: &mut Namespaces) {
        out.worst_ports = out
            .top
            .iter()
            .filter_map(|n| Some((n.inode, n.deep.as_ref()?.utilization)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        for n in &mut out.top {
            if let Some(d) = &n.deep {
                n.pressure = n.pressure.max(d.utilization);
            }
        }
        out.soonest = soonest(&out.top);
        // Degraded counts as down when no namespace has a socket at all.
        let starved = if self.deep.kept() == 0 { self.deep.starved.clone() } else { None };
        (out.deep_down, out.deep_dumps_total, out.deep_kept, out.deep_revisit_samples) = (
            self.deep.down.clone().or(starved),
            self.deep.dumps_total,
            self.deep.kept() as u64,
            self.deep.revisit_samples,
        );
        (out.deep_needs, out.deep_near_revisit_samples) = (self.deep.needs, self.deep.near_revisit_samples);
        out.deep_refresh_dumps_total = self.deep.refresh_dumps_total;
        out.deep_near_refresh_seconds = self.deep.near_refresh_seconds;
    }

    /// The rest of each exported namespace's counters (IPv6, snmp, netstat) and its owner.
    fn details_and_owners(&mut self, root: &Path, out: &mut Namespaces) {
        let live: std::collections::HashSet<u64> = out.top.iter().map(|n| n.inode).collect();
        self.owners.retain(|inode, _| live.contains(inode));
        let mut fds_left = self.fds_left();
        for n in &mut out.top {
            let Some(pid) = n.pid else { continue };
            let dir = root.join(pid.to_string());
            if let (Some(c), Some(files)) = (n.counters.as_mut(), self.files.get_mut(&n.inode)) {
                if files.read_details(c, &mut fds_left).is_err() {
                    n.counters = None; // gone between the two reads
                }
            }
            n.owner = self.owner(n.inode, pid, &dir);
        }
    }
}

/// The namespace whose port range runs out soonest by its latest dump, aged.
fn soonest(list: &[Namespace]) -> Option<(u64, f64)> {
    list.iter()
        .filter_map(|n| Some((n.inode, n.deep.as_ref()?.seconds_to_exhaustion()?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// Ranks every namespace read by pressure and keeps the exported ones in `out.top`: the
/// Whether a namespace's reading moved enough to publish between samples: its busiest
/// destination's ports by 1 % of its range (or one port on a small one), or its soonest
/// exhaustion appearing, going, or moving by more than 10 s and a tenth.
fn moved(old: Option<&DeepReading>, new: Option<&DeepReading>) -> bool {
    let (Some(old), Some(new)) = (old, new) else { return old.is_some() != new.is_some() };
    let used = |r: &DeepReading| r.busiest.as_ref().map_or(0, |d| d.used);
    let step = (u64::from(new.range.capacity) / 100).max(1);
    if used(old).abs_diff(used(new)) >= step {
        return true;
    }
    match (old.seconds_to_exhaustion(), new.seconds_to_exhaustion()) {
        (Some(a), Some(b)) => (a - b).abs() > 10.0_f64.max(a.min(b) / 10.0),
        (a, b) => a.is_some() != b.is_some(),
    }
}

/// `top_k` first, sockwatch's own, and the worst of each kind (conntrack entries, TIME_WAIT,
/// port range, soonest exhaustion), which `out` records too, with how many were unreadable.
fn select(mut all: Vec<Namespace>, top_k: usize, out: &mut Namespaces) {
    out.unreadable = all.iter().filter(|n| n.counters.is_none()).count() as u64;
    let worst = |all: &[Namespace], pick: fn(&NsCounters) -> Option<u64>| {
        all.iter()
            .filter_map(|n| Some((n.inode, pick(n.counters.as_ref()?)?)))
            .max_by_key(|&(i, v)| (v, std::cmp::Reverse(i)))
    };
    out.worst_conntrack = worst(&all, |c| c.conntrack_entries);
    out.worst_time_wait = worst(&all, |c| Some(c.time_wait));
    all.sort_by(|a, b| b.pressure.total_cmp(&a.pressure).then(a.inode.cmp(&b.inode)));
    let worst_ports =
        all.iter().filter_map(|n| Some((n.inode, n.deep.as_ref()?.utilization))).max_by(|a, b| a.1.total_cmp(&b.1));
    let worst_inodes = [
        out.worst_conntrack.map(|w| w.0),
        out.worst_time_wait.map(|w| w.0),
        worst_ports.map(|w| w.0),
        soonest(&all).map(|w| w.0),
    ];
    let keep = |n: &Namespace, i: usize| i < top_k || n.own || worst_inodes.contains(&Some(n.inode));
    out.top = all.into_iter().enumerate().filter(|(i, n)| keep(n, *i)).map(|(_, n)| n).collect();
}

/// One sample without memory between calls: for tests and benchmarks.
pub fn read(root: &Path, cfg: &NetnsConfig, conntrack_max: Option<u64>) -> Result<Namespaces, SourceError> {
    NetnsSource::default().read(root, cfg, conntrack_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_a_captured_proc_net() {
        let c = read_counters(&crate::sources::fixture("proc/linux-6.18")).unwrap();
        assert_eq!((c.tcp_inuse, c.time_wait, c.udp_inuse), (17 + 5, 600, Some(4 + 2)));
        assert_eq!((c.conntrack_entries, c.listen_overflows, c.active_opens), (Some(0x263), Some(6), Some(611)));
        assert!((pressure(&c, Some(0x263 * 2), None) - 0.5).abs() < 1e-9, "conntrack half full");
        // In use and TIME_WAIT against the default range, or against its own.
        assert!((pressure(&c, None, None) - 622.0 / DEFAULT_PORT_RANGE).abs() < 1e-9);
        assert!((pressure(&c, None, Some(1000)) - 0.622).abs() < 1e-9, "a small own range ranks it high");
    }
}
