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

use super::kernel::namespace::in_namespace;
pub use super::netns_counters::{read_counters, NetFiles, NsCounters};
use super::netns_ct::{NsConntrack, NsConntrackConfig};
use super::netns_deep::{DeepLayer, DeepReading};
pub use super::netns_discovery::{discover, ns_of, parse_ns_link, Discovery, Found, FULL_SCAN_EVERY};
use super::SourceError;

/// Directories where namespaces are pinned by bind mounts.
pub const PIN_DIRS: [&str; 2] = ["/run/netns", "/var/run/docker/netns"];

/// Most namespaces read per sample (bounded work and memory on a host gone wrong).
pub const MAX_NAMESPACES: usize = 10_000;

/// How many namespaces are exported (the source runs only when `--netns` is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsConfig {
    /// Namespaces exported, by pressure (`--netns.top-k`).
    pub top_k: usize,
    /// With `--conntrack.breakdown`: attribute the fullest namespaces' conntrack entries.
    pub conntrack: Option<NsConntrackConfig>,
}

impl Default for NetnsConfig {
    fn default() -> Self {
        NetnsConfig { top_k: 20, conntrack: None }
    }
}

/// Who a namespace belongs to, where it could be found out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `crio`, `podman`.
    pub runtime: Option<&'static str>,
    pub pod_uid: Option<String>,
}

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
    /// `nf_conntrack_max`), its TCP sockets in use or TIME_WAIT over a default ephemeral
    /// port range (28,232), and its busiest destination's ports over its own range (from
    /// the deep layer's latest dump).
    pub pressure: f64,
    /// Its latest dump from inside (the deep layer), if one was taken.
    pub deep: Option<DeepReading>,
    /// Who fills its conntrack table (with `--conntrack.breakdown`, for the fullest few).
    pub conntrack: Option<super::ct_attribution::Attribution>,
}

/// What one sample of every namespace found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Namespaces {
    /// Namespaces found.
    pub count: u64,
    /// Found but not read (no access, or gone).
    pub unreadable: u64,
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
    /// The deep layer: why it is down (no CAP_SYS_ADMIN), dumps since start, sockets kept.
    pub deep_down: Option<String>,
    pub deep_dumps_total: u64,
    pub deep_kept: u64,
}

/// The owner named by a `/proc/PID/cgroup` file (v1 lines `N:controllers:/path`, the v2
/// line `0::/path`). The last container-id-looking component wins: it is the innermost.
pub fn parse_cgroup(text: &str) -> Owner {
    let mut owner = Owner::default();
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else { continue };
        let mut parent = "";
        for part in path.split('/') {
            if let Some((runtime, id)) = container_id(part, parent) {
                owner.container_id = Some(id.to_owned());
                owner.runtime = runtime.or(owner.runtime);
            }
            if let Some(uid) = pod_uid(part) {
                owner.pod_uid = Some(uid);
            }
            parent = part;
        }
    }
    owner
}

/// A container id as the runtimes write it: 64 lower-case hex digits. A cgroup name is a
/// claim by whoever could create that cgroup (anyone delegated a subtree can name one
/// `docker-<id>.scope`); only the canonical form is accepted, so at least a variant
/// spelling of a victim's id (upper case) is not taken as that container.
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A cgroup path component naming a container: `<prefix>-<id>.scope` (systemd driver),
/// or the bare id under `docker/`, `libpod_parent/` or a pod's directory (cgroupfs driver).
/// Conmon (the monitor process of CRI-O and Podman) is not the container.
fn container_id<'a>(part: &'a str, parent: &str) -> Option<(Option<&'static str>, &'a str)> {
    let stem = part.strip_suffix(".scope").unwrap_or(part);
    for (prefix, runtime) in
        [("docker-", "docker"), ("cri-containerd-", "containerd"), ("crio-", "crio"), ("libpod-", "podman")]
    {
        if let Some(id) = stem.strip_prefix(prefix) {
            return is_id(id).then_some((Some(runtime), id));
        }
    }
    if !is_id(stem) {
        return None;
    }
    let runtime = match parent {
        "docker" => Some("docker"),
        "libpod_parent" => Some("podman"),
        _ => None, // kubepods/<qos>/pod<uid>/<id>: the runtime is not in the path
    };
    Some((runtime, stem))
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(part: &str) -> Option<String> {
    let stem = part.strip_suffix(".slice").unwrap_or(part);
    let uid = stem.rsplit_once("-pod").map_or_else(|| stem.strip_prefix("pod"), |(_, u)| Some(u))?;
    let uid = uid.replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                matches!(b, b'0'..=b'9' | b'a'..=b'f')
            }
        });
    ok.then_some(uid)
}

/// The default `ip_local_port_range` (32768–60999) a new namespace starts with: what the
/// cheap layer holds a namespace's sockets against (its own range needs the deep layer).
pub const DEFAULT_PORT_RANGE: f64 = 28_232.0;

fn pressure(c: &NsCounters, conntrack_max: Option<u64>) -> f64 {
    let ct = match (c.conntrack_entries, conntrack_max) {
        (Some(e), Some(m)) if m > 0 => e as f64 / m as f64,
        _ => 0.0,
    };
    ct.max(c.tcp_inuse.max(c.time_wait) as f64 / DEFAULT_PORT_RANGE)
}

/// Runs `f` on a short-lived thread that has entered the network namespace of `ns` (a
/// `/proc/PID/ns/net` link or a pinning file; setns needs CAP_SYS_ADMIN). The thread ends
/// with the call, so no thread of ours ever goes on in the wrong namespace; what `f` opens
/// there (a netlink socket, a sysctl file) keeps that namespace.
/// With `expect`, the namespace entered must be that inode: a `/proc/PID/ns/net` whose
/// process died and whose PID was reused elsewhere is refused, not read as the old one.
/// The namespaces source: discovery's memory, each namespace's kept files, each
/// representative's owner (its cgroup does not change while it lives), the deep layer.
#[derive(Default)]
pub struct NetnsSource {
    discovery: Discovery,
    /// sockwatch's own namespace.
    own: Option<u64>,
    /// Each representative's owner, keyed by PID and namespace: a PID reused by a process
    /// in another namespace is read again, never given the old process's container.
    owners: HashMap<(u32, u64), Owner>,
    /// Kept `/proc/PID/net` files by namespace inode; dropped with the namespace.
    files: HashMap<u64, NetFiles>,
    /// Descriptors the kept files and sockets may use ([`super::kept::keepable_fds`]),
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
        self.read_within(root, cfg, conntrack_max, Duration::ZERO, None)
    }

    /// Descriptors still free for kept files and sockets.
    fn fds_left(&mut self) -> usize {
        let limit = *self.fd_limit.get_or_insert_with(super::kept::keepable_fds);
        let held: usize = self.files.values().map(NetFiles::open_count).sum::<usize>()
            + 2 * self.deep.kept()
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
            let deep = self.deep.latest(f.inode).cloned();
            let pressure = counters.as_ref().map_or(0.0, |c| pressure(c, ct_max));
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
        let mut out = Namespaces { count: found.len() as u64, unreadable: denied, ..Namespaces::default() };
        let mut all = self.read_all(root, found, own, conntrack_max);
        out.unreadable += all.iter().filter(|n| n.counters.is_none()).count() as u64;
        let worst = |pick: fn(&NsCounters) -> Option<u64>| {
            all.iter()
                .filter_map(|n| Some((n.inode, pick(n.counters.as_ref()?)?)))
                .max_by_key(|&(i, v)| (v, std::cmp::Reverse(i)))
        };
        out.worst_conntrack = worst(|c| c.conntrack_entries);
        out.worst_time_wait = worst(|c| Some(c.time_wait));
        all.sort_by(|a, b| b.pressure.total_cmp(&a.pressure).then(a.inode.cmp(&b.inode)));
        let worst_ports =
            all.iter().filter_map(|n| Some((n.inode, n.deep.as_ref()?.utilization))).max_by(|a, b| a.1.total_cmp(&b.1));
        let worst_inodes =
            [out.worst_conntrack.map(|w| w.0), out.worst_time_wait.map(|w| w.0), worst_ports.map(|w| w.0)];
        let keep = |n: &Namespace, i: usize| i < cfg.top_k || n.own || worst_inodes.contains(&Some(n.inode));
        out.top = all.into_iter().enumerate().filter(|(i, n)| keep(n, *i)).map(|(_, n)| n).collect();
        let fds_left = self.fds_left();
        let started = std::time::Instant::now();
        self.deep.run(&mut out.top, &reachable, deep_budget, own.map(|i| (i, own_reading)), fds_left);
        if let Some(ct) = &cfg.conntrack {
            self.conntrack.run(&mut out.top, &reachable, ct, deep_budget.saturating_sub(started.elapsed()));
        }
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
        (out.deep_down, out.deep_dumps_total, out.deep_kept) =
            (self.deep.down.clone(), self.deep.dumps_total, self.deep.kept() as u64);
        let live: std::collections::HashSet<(u32, u64)> =
            out.top.iter().filter_map(|n| Some((n.pid?, n.inode))).collect();
        self.owners.retain(|key, _| live.contains(key));
        let mut fds_left = self.fds_left();
        for n in &mut out.top {
            let Some(pid) = n.pid else { continue };
            let dir = root.join(pid.to_string());
            if let (Some(c), Some(files)) = (n.counters.as_mut(), self.files.get_mut(&n.inode)) {
                if files.read_details(c, &mut fds_left).is_err() {
                    n.counters = None; // gone between the two reads
                }
            }
            n.owner = self
                .owners
                .entry((pid, n.inode))
                .or_insert_with(|| {
                    super::read_optional(&dir.join("cgroup"))
                        .ok()
                        .flatten()
                        .map_or_else(Owner::default, |t| parse_cgroup(&t))
                })
                .clone();
        }
        Ok(out)
    }
}

/// One sample without memory between calls: for tests and benchmarks.
pub fn read(root: &Path, cfg: &NetnsConfig, conntrack_max: Option<u64>) -> Result<Namespaces, SourceError> {
    NetnsSource::default().read(root, cfg, conntrack_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c0e2a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e";

    #[test]
    fn container_ids_of_every_runtime_and_driver() {
        for (cgroup, runtime) in [
            (format!("0::/system.slice/docker-{ID}.scope"), Some("docker")),
            (format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}"), Some("docker")),
            (
                format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f9b2c4e_1a2b_4c3d_8e9f_0a1b2c3d4e5f.slice/cri-containerd-{ID}.scope"),
                Some("containerd"),
            ),
            (format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f9b2c4e_1a2b_4c3d_8e9f_0a1b2c3d4e5f.slice/crio-{ID}.scope"), Some("crio")),
            (format!("0::/machine.slice/libpod-{ID}.scope/container"), Some("podman")),
            (format!("1:name=systemd:/libpod_parent/{ID}"), Some("podman")),
            (format!("4:memory:/kubepods/burstable/pod0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f/{ID}"), None),
        ] {
            let o = parse_cgroup(&cgroup);
            assert_eq!(o.container_id.as_deref(), Some(ID), "{cgroup}");
            assert_eq!(o.runtime, runtime, "{cgroup}");
            if cgroup.contains("pod0f9b") {
                assert_eq!(o.pod_uid.as_deref(), Some("0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"), "{cgroup}");
            }
        }
    }

    #[test]
    fn not_containers() {
        for cgroup in [
            "0::/init.scope",
            "0::/system.slice/sshd.service",
            "0::/user.slice/user-1000.slice/session-3.scope",
            &format!("0::/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("0::/system.slice/crio-conmon-{ID}.scope"),
            "0::/system.slice/docker-short.scope",
            // Not the runtimes' canonical spelling: refused, not taken as that container.
            &format!("0::/system.slice/docker-{}.scope", ID.to_uppercase()),
            &format!("4:memory:/kubepods/burstable/pod0F9B2C4E-1A2B-4C3D-8E9F-0A1B2C3D4E5F/{}", ID.to_uppercase()),
            "garbage without colons",
            "",
        ] {
            assert_eq!(parse_cgroup(cgroup), Owner::default(), "{cgroup}");
        }
        // A pod's sandbox (pause) cgroup without a container id still names the pod.
        let o = parse_cgroup("0::/kubepods/besteffort/pod0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f");
        assert_eq!((o.container_id, o.pod_uid.as_deref()), (None, Some("0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f")));
    }

    #[test]
    fn counters_from_a_captured_proc_net() {
        let c = read_counters(&crate::sources::fixture("proc/linux-6.18")).unwrap();
        assert_eq!((c.tcp_inuse, c.time_wait, c.udp_inuse), (17 + 5, 600, Some(4 + 2)));
        assert_eq!((c.conntrack_entries, c.listen_overflows, c.active_opens), (Some(0x263), Some(6), Some(611)));
        assert!((pressure(&c, Some(0x263 * 2)) - 0.5).abs() < 1e-9, "conntrack half full");
        assert!((pressure(&c, None) - 600.0 / DEFAULT_PORT_RANGE).abs() < 1e-9);
    }
}
