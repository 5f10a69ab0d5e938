//! The deep layer of every network namespace: a sock_diag dump *inside* a namespace gives
//! its ephemeral ports per destination against its own `ip_local_port_range`, which no
//! /proc counter has, and, from every TIME_WAIT socket's remaining lifetime, where each
//! destination is heading: the host's projection (`tcp/projection`), run on the
//! namespace's own sockets against its own range.
//!
//! - **Kept files.** Every reachable namespace's `ip_local_port_range` file is opened once
//!   from a short-lived thread that enters it (setns, CAP_SYS_ADMIN; a sysctl file shows the
//!   namespace it was opened in) and re-read with `pread` each sample: the cheap layer holds
//!   the namespace's sockets against its *own* range without a dump. The netlink socket is
//!   opened at its first dump and kept too. Each takes a descriptor; a namespace discovery
//!   no longer finds has both closed at once (they would keep it alive).
//! - **Who is dumped: by need, not in turn.** A dump walks the host's whole socket hash
//!   whatever namespace asks (unless the namespace has its own,
//!   `net.ipv4.tcp_child_ehash_entries`), so only the namespaces that *could* run out are
//!   dumped. Each sample bounds, from the cheap figures alone, how soon a namespace could
//!   fill its own range even if every new connection went to one destination: the ports a
//!   `connect()` could hold toward one destination now — at most its TCP sockets
//!   (`sockstat`: in use plus TIME_WAIT), or, once dumped, the busiest destination's ports
//!   at that dump plus every connection opened since (`ActiveOpens`) — against its range,
//!   at the rate that count grows (sockets, or connections opened, per second since the
//!   last sample). Within [`NEAR_SECONDS`] (the 300 s a projection warns ahead) it is
//!   **near** and dumped every sample, least recently dumped first; within
//!   [`HORIZON_SECONDS`] it **could** run out and shares what the budget leaves, least
//!   recently dumped first, with one place before the near ones every other sample; beyond
//!   the horizon it is **far** and not dumped at all (an idle pod with a few sockets
//!   against 28,000 ports is never walked for). A step in a namespace's rate moves it at
//!   the next sample. `sockwatch_netns_deep_namespaces{need}` counts each class.
//! - **Near, every second.** Between samples, while any namespace is near, the near ones
//!   are dumped again every second through their kept sockets ([`DeepLayer::refresh_near`],
//!   driven by the sampler's run loop), so that a step in their rate is published within
//!   a second or two rather than at the next sample.
//! - **The revisit bound.** At `k` dumps per sample (the budget over what a dump takes, at
//!   least 1), the near get `k` of them (`2k - 1` every two samples when some could run
//!   out), the others what is left (at least one every two samples): each near namespace
//!   is dumped again within `sockwatch_netns_deep_near_revisit_samples` samples, and every
//!   one that could run out within `sockwatch_netns_deep_revisit_samples`. When that is
//!   longer than the 300 s a projection warns ahead, the log says so once, with what to
//!   change.
//! - **Aging.** A reading is kept until the next dump of its namespace; its projection is
//!   aged by the time since it was taken (the seconds to exhaustion count down), so an old
//!   reading of a ramping namespace does not read safer than it is.
//! - Without CAP_SYS_ADMIN the layer is down, said once; without descriptors to spare it is
//!   degraded (no namespace can be dumped), said once with the limit to raise where it runs.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use super::model::DeepReading;
use super::model::Namespace;
use crate::sources::kernel::ratio::{ratio, AtZero};
use crate::sources::tcp::ports::{EphemeralRange, PortAggregator, PortUsage, PortsConfig};
use crate::sources::tcp::sockets::{SockDiag, Sockets};

/// The projection horizon the warning looks at: a revisit slower than this is said once.
const WARN_AHEAD_SECONDS: f64 = 300.0;

/// A namespace that could fill its own range within this (by the cheap bound) is *near*:
/// dumped every sample. The projection alert warns this far ahead.
pub const NEAR_SECONDS: f64 = WARN_AHEAD_SECONDS;
/// Beyond this a namespace is *far*: even at its current rate, with every new connection
/// toward one destination, it could not fill its range within an hour. Not dumped.
pub const HORIZON_SECONDS: f64 = 3600.0;

/// How much a namespace needs dumping (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Need {
    Near,
    Could,
    Far,
}

impl Need {
    pub const ALL: [Need; 3] = [Need::Near, Need::Could, Need::Far];

    pub fn name(self) -> &'static str {
        match self {
            Need::Near => "near",
            Need::Could => "could",
            Need::Far => "far",
        }
    }
}

/// A namespace's cheap figures at its latest sample, and how fast they grew.
#[derive(Debug, Clone, Copy)]
struct Cheap {
    /// IPv4 TCP sockets in use plus TIME_WAIT (`sockstat`).
    sockets: u64,
    at: Instant,
    /// Sockets per second more than the sample before (0 when falling).
    growth: f64,
    /// `ActiveOpens` (read for the exported namespaces), and its rate per second.
    opens: Option<(u64, Instant)>,
    open_rate: Option<f64>,
}

/// The cheap bound: (the ports a connect() could hold toward one destination now, at
/// most; how fast that can grow per second), then the seconds until `capacity`.
fn bound_seconds(held: u64, rate: f64, capacity: u32) -> f64 {
    let capacity = u64::from(capacity);
    if held >= capacity {
        0.0
    } else if rate > 0.0 {
        (capacity - held) as f64 / rate
    } else {
        f64::INFINITY
    }
}

fn need_of(seconds: f64) -> Need {
    if seconds <= NEAR_SECONDS {
        Need::Near
    } else if seconds <= HORIZON_SECONDS {
        Need::Could
    } else {
        Need::Far
    }
}

impl DeepReading {
    /// What one dump of a namespace says: its busiest destination against `range`, the one
    /// heading for exhaustion soonest, its states, its fullest accept queue. The deep
    /// layer's dumps and the sample's main dump (sockwatch's own namespace) both go through
    /// here. `None` without a port range.
    pub fn of_dump(range: EphemeralRange, usage: &PortUsage, sockets: &Sockets) -> Option<DeepReading> {
        let e = usage.ephemeral.as_ref()?;
        let mut states = sockets.states.ipv4;
        for (n, v6) in states.iter_mut().zip(sockets.states.ipv6) {
            *n += v6;
        }
        Some(DeepReading {
            range,
            busiest: e.top.iter().max_by_key(|d| d.used).cloned(),
            utilization: ratio(e.busiest as f64, f64::from(range.capacity), AtZero::Exhausted).unwrap_or(1.0),
            soonest: e.worst.clone(),
            states,
            listen_utilization: usage.listen_utilization_max,
            age: 0,
            age_seconds: 0.0,
        })
    }
}

struct Kept {
    range_file: std::fs::File,
    /// The range read this sample (or last).
    range: Option<EphemeralRange>,
    /// Opened at the first dump.
    diag: Option<SockDiag>,
    reading: Option<DeepReading>,
    taken: Option<Instant>,
    /// The sample of its latest dump (0: never).
    dumped_at: u64,
    cheap: Option<Cheap>,
    /// `ActiveOpens` as last known when it was dumped.
    opens_at_dump: Option<u64>,
}

impl Kept {
    /// How soon this namespace could fill its own range, by the cheap bound; `None` while
    /// its range or figures are not known yet (it is then dumped as one that could).
    fn bound(&self) -> Option<f64> {
        let capacity = self.range?.capacity;
        let cheap = self.cheap?;
        let busiest = self.reading.as_ref().map(|r| r.busiest.as_ref().map_or(0, |d| d.used));
        let by_opens = match (busiest, self.opens_at_dump, cheap.opens, cheap.open_rate) {
            (Some(b), Some(then), Some((now, _)), Some(rate)) => Some((b + now.saturating_sub(then), rate)),
            _ => None,
        };
        let (held, rate) = by_opens.unwrap_or((cheap.sockets, cheap.growth));
        Some(bound_seconds(held, rate, capacity))
    }
}

/// The kept files and sockets, and the schedule's memory.
#[derive(Default)]
pub struct DeepLayer {
    kept: HashMap<u64, Kept>,
    samples: u64,
    /// Why the layer is down, once known (logged once).
    pub down: Option<String>,
    /// Why no namespace could be dumped for want of descriptors (logged once), if so.
    pub starved: Option<String>,
    /// Dumps done since start.
    pub dumps_total: u64,
    /// Samples within which every namespace is dumped again at the current cost.
    pub revisit_samples: u64,
    said_revisit: bool,
    /// Descriptors this sample may still take (a range file and a socket per namespace).
    fds_left: usize,
    /// What a dump takes, averaged over the last few.
    dump_estimate: Duration,
    /// Namespaces in each class at the latest sample (near, could, far).
    pub needs: [u64; 3],
    /// Samples within which each near namespace is dumped again.
    pub near_revisit_samples: u64,
    /// The near namespaces at the latest sample, soonest first: what a refresh between
    /// samples dumps again.
    near: Vec<u64>,
    /// Dumps of near namespaces between samples, since start.
    pub refresh_dumps_total: u64,
    /// The time refreshes may still spend: each refresh adds its budget (a few refreshes'
    /// worth kept at most), each dump takes what it took.
    refresh_credit: Duration,
    /// Seconds within which each near namespace is refreshed at the current cost: the near
    /// count times what a dump takes over what a second earns (at least 1).
    pub near_refresh_seconds: f64,
}

/// `32768\t60999` → the range.
fn parse_range(text: &str) -> Option<EphemeralRange> {
    let mut it = text.split_ascii_whitespace().map(str::parse::<u16>);
    let (low, high) = (it.next()?.ok()?, it.next()?.ok()?);
    (low <= high).then(|| EphemeralRange::new(low, high))
}

/// This sample's dump order: the near (each list comes least recently dumped first), then
/// those that could run out; every other sample (`could_first`) the first of those goes
/// before the near, so they are never starved however many are near.
fn schedule(near: &[u64], could: &[u64], could_first: bool) -> Vec<u64> {
    let mut order = Vec::with_capacity(near.len() + could.len());
    let (lead, rest) = match could.split_first() {
        Some((first, rest)) if could_first => (Some(*first), rest),
        _ => (None, could),
    };
    order.extend(lead);
    order.extend_from_slice(near);
    order.extend_from_slice(rest);
    order
}

/// Samples within which each namespace is dumped again at `k` dumps per sample, `near` of
/// them near and `could` that could run out: (the near's bound, everyone's).
pub fn revisit_bounds(near: usize, could: usize, k: usize) -> (u64, u64) {
    let k = k.max(1);
    // Per two samples: the near get 2k dumps, less the one place the others take first.
    let near_per_two = if could > 0 { 2 * k - 1 } else { 2 * k };
    let near_bound = if near == 0 { 0 } else { (2 * near).div_ceil(near_per_two) as u64 };
    let left_per_two = (2 * k).saturating_sub(2 * near).max(usize::from(could > 0));
    let could_bound = if could == 0 { 0 } else { (2 * could).div_ceil(left_per_two) as u64 };
    (near_bound, near_bound.max(could_bound))
}

/// Opens a namespace's port range file from inside it.
fn open_range_file(ns: &std::path::Path, inode: u64) -> std::io::Result<std::fs::File> {
    crate::sources::kernel::namespace::in_namespace(ns, Some(inode), || {
        std::fs::File::open("/proc/sys/net/ipv4/ip_local_port_range")
    })
}

fn read_range(file: &std::fs::File) -> Option<EphemeralRange> {
    let mut buf = [0u8; 64];
    let n = file.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok().and_then(parse_range)
}

impl DeepLayer {
    /// Keeps every reachable namespace's port range file (opened once, descriptors
    /// permitting) and re-reads it: what the cheap layer holds each namespace against.
    /// Closes what belongs to namespaces no longer reachable, and to sockwatch's own.
    pub fn refresh_ranges(&mut self, reachable: &HashMap<u64, PathBuf>, own: Option<u64>, fds_left: usize) {
        self.fds_left = fds_left;
        self.kept.retain(|inode, _| reachable.contains_key(inode) && Some(*inode) != own);
        for k in self.kept.values_mut() {
            k.range = read_range(&k.range_file);
        }
        if self.down.is_some() {
            return;
        }
        let mut new: Vec<(&u64, &PathBuf)> =
            reachable.iter().filter(|(i, _)| Some(**i) != own && !self.kept.contains_key(*i)).collect();
        new.sort_unstable_by_key(|(i, _)| **i);
        for (&inode, path) in new {
            if self.fds_left < 2 {
                self.say_starved();
                break; // a range file and, later, a socket: both or neither
            }
            match open_range_file(path, inode) {
                Ok(range_file) => {
                    self.fds_left -= 1;
                    let range = read_range(&range_file);
                    self.kept.insert(
                        inode,
                        Kept {
                            range_file,
                            range,
                            diag: None,
                            reading: None,
                            taken: None,
                            dumped_at: 0,
                            cheap: None,
                            opens_at_dump: None,
                        },
                    );
                }
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    let why = format!("cannot enter network namespaces ({e}): needs CAP_SYS_ADMIN");
                    tracing::warn!("per-namespace ports (deep layer) down: {why}; the per-namespace counters go on");
                    self.down = Some(why);
                    return;
                }
                Err(_) => {} // gone meanwhile, or entered as another inode: next sample
            }
        }
    }

    /// Records each namespace's cheap figures (IPv4 TCP sockets in use and TIME_WAIT, and
    /// `ActiveOpens` where read): what the next dumps are chosen by.
    pub fn observe(&mut self, all: &[Namespace]) {
        let now = Instant::now();
        for n in all {
            let (Some(k), Some(c)) = (self.kept.get_mut(&n.inode), n.counters.as_ref()) else { continue };
            let sockets = c.tcp_inuse.saturating_add(c.time_wait);
            let prev = k.cheap;
            let per_second = |was: u64, then: Instant, is: u64| {
                let dt = now.saturating_duration_since(then).as_secs_f64();
                (dt > 0.0).then(|| is.saturating_sub(was) as f64 / dt)
            };
            let growth = prev.and_then(|p| per_second(p.sockets, p.at, sockets)).unwrap_or(0.0);
            k.cheap = Some(Cheap {
                sockets,
                at: now,
                growth,
                opens: prev.and_then(|p| p.opens),
                open_rate: prev.and_then(|p| p.open_rate),
            });
        }
    }

    /// Records `ActiveOpens` of the namespaces whose details were read (the exported).
    pub fn observe_opens(&mut self, top: &[Namespace]) {
        let now = Instant::now();
        for n in top {
            let (Some(k), Some(opens)) =
                (self.kept.get_mut(&n.inode), n.counters.as_ref().and_then(|c| c.active_opens))
            else {
                continue;
            };
            let Some(cheap) = k.cheap.as_mut() else { continue };
            let rate = cheap.opens.and_then(|(was, then)| {
                let dt = now.saturating_duration_since(then).as_secs_f64();
                (dt > 0.0).then(|| opens.saturating_sub(was) as f64 / dt)
            });
            cheap.open_rate = rate.or(cheap.open_rate.filter(|_| cheap.opens.is_some()));
            cheap.opens = Some((opens, now));
        }
    }

    /// A namespace's own port range, as last read.
    pub fn range_of(&self, inode: u64) -> Option<EphemeralRange> {
        self.kept.get(&inode)?.range
    }

    /// Descriptors the layer holds.
    pub fn fds_held(&self) -> usize {
        self.kept.values().map(|k| 1 + usize::from(k.diag.is_some())).sum()
    }

    fn say_starved(&mut self) {
        if self.starved.is_none() {
            let why = format!(
                "no file descriptors to spare for namespace sockets ({} namespaces kept); {}",
                self.kept.len(),
                crate::sources::kernel::kept::raise_limit_hint()
            );
            tracing::warn!("per-namespace ports (deep layer) degraded: {why}");
            self.starved = Some(why);
        }
    }

    /// Dumps namespaces inside `budget` (see the module doc for the order), then attaches
    /// each exported namespace's latest reading, aged. sockwatch's own namespace (`own`: its
    /// inode, and the reading of the sample's main dump) is never dumped again. `interval`
    /// is the sampling interval, for the revisit warning.
    pub fn run(
        &mut self,
        top: &mut [Namespace],
        reachable: &HashMap<u64, PathBuf>,
        budget: Duration,
        own: Option<(u64, Option<DeepReading>)>,
        interval: Duration,
        fds_left: usize,
    ) {
        self.samples += 1;
        self.fds_left = fds_left;
        for k in self.kept.values_mut() {
            if let Some(r) = k.reading.as_mut() {
                r.age += 1;
            }
        }
        // No budget, no dump (the cheap layer alone, as `NetnsSource::read` asks).
        if self.down.is_none() && !budget.is_zero() {
            self.dump_within(reachable, budget, interval);
        }
        for n in top.iter_mut() {
            n.deep = match &own {
                Some((inode, reading)) if *inode == n.inode => reading.clone(),
                _ => self.latest(n.inode),
            };
        }
    }

    fn dump_within(&mut self, reachable: &HashMap<u64, PathBuf>, budget: Duration, interval: Duration) {
        let start = Instant::now();
        // Each kept namespace by need; within a class the least recently dumped first,
        // then the soonest by the cheap bound.
        let mut classes: [Vec<(u64, f64, u64)>; 3] = Default::default();
        for (&inode, k) in &self.kept {
            let bound = k.bound();
            let need = bound.map_or(Need::Could, need_of);
            classes[need as usize].push((k.dumped_at, bound.unwrap_or(0.0), inode));
        }
        for class in &mut classes {
            class.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        }
        self.needs = [0, 1, 2].map(|i| classes[i].len() as u64);
        let inodes = |i: usize| classes[i].iter().map(|c| c.2).collect::<Vec<u64>>();
        let (near, could) = (inodes(Need::Near as usize), inodes(Need::Could as usize));
        let mut soonest = classes[Need::Near as usize].clone();
        soonest.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)));
        self.near = soonest.iter().map(|c| c.2).collect();
        let order = schedule(&near, &could, self.samples % 2 == 0);
        let mut dumped = 0;
        for (i, inode) in order.into_iter().enumerate() {
            // Stop before a dump that would not fit: every dump walks the host's whole socket
            // hash, so the last one's time is the next one's. One dump per sample always
            // runs, so the readings never stop however small the budget.
            if i > 0 && start.elapsed() + self.dump_estimate >= budget {
                break;
            }
            let Some(path) = reachable.get(&inode) else { continue };
            let t = Instant::now();
            match self.dump(inode, path) {
                Ok(()) => {
                    dumped += 1;
                    self.dump_estimate = (self.dump_estimate * 3 + t.elapsed()) / 4;
                }
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    let why = format!("cannot enter network namespaces ({e}): needs CAP_SYS_ADMIN");
                    tracing::warn!("per-namespace ports (deep layer) down: {why}; the per-namespace counters go on");
                    self.down = Some(why);
                    return;
                }
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {}
                Err(_) => {
                    self.kept.remove(&inode); // reopened next sample
                }
            }
        }
        if dumped > 0 {
            self.starved = None;
        }
        let per_sample = if self.dump_estimate.is_zero() {
            dumped.max(1)
        } else {
            ((budget.as_secs_f64() / self.dump_estimate.as_secs_f64()) as usize).max(1)
        };
        (self.near_revisit_samples, self.revisit_samples) = revisit_bounds(near.len(), could.len(), per_sample);
        let seconds = self.revisit_samples as f64 * interval.as_secs_f64();
        if seconds > WARN_AHEAD_SECONDS && !std::mem::replace(&mut self.said_revisit, true) {
            tracing::warn!(
                namespaces = self.kept.len(),
                dumps_per_sample = per_sample,
                dump_ms = self.dump_estimate.as_millis() as u64,
                "per-namespace ports (deep layer): each namespace is dumped again only every {} samples (~{seconds:.0} s), \
                 longer than the {WARN_AHEAD_SECONDS:.0} s a projection warns ahead; a dump walks the host's whole socket \
                 hash. Give it more time (--sampler.max-share, or a longer --interval), or give namespaces their own \
                 socket hash (sysctl net.ipv4.tcp_child_ehash_entries, set before they are created) so that a dump walks \
                 only its own namespace's sockets",
                self.revisit_samples
            );
        }
    }

    fn dump(&mut self, inode: u64, path: &std::path::Path) -> std::io::Result<()> {
        let fds_left = self.fds_left;
        let samples = self.samples;
        let Some(k) = self.kept.get_mut(&inode) else { return Ok(()) };
        if k.diag.is_none() {
            if fds_left == 0 {
                self.say_starved();
                return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
            }
            self.fds_left -= 1;
        }
        let range = k.range.ok_or_else(|| std::io::Error::other("unreadable ip_local_port_range"))?;
        let diag = k.diag.get_or_insert_with(|| SockDiag::in_namespace(path.to_owned(), inode));
        let mut ports = PortAggregator::default();
        ports.begin_range(Some(range));
        let sockets = diag.read(&mut |m| ports.visit(m)).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.dumps_total += 1;
        let usage = ports.finish(&PortsConfig { top_k: 1, listeners_top_k: 0, listener_ports: Vec::new() });
        k.reading = DeepReading::of_dump(range, &usage, &sockets);
        k.taken = Some(Instant::now());
        k.dumped_at = samples;
        k.opens_at_dump = k.cheap.and_then(|c| c.opens).map(|(o, _)| o);
        Ok(())
    }

    /// Between samples: dumps the near namespaces again (soonest first, each through the
    /// socket its last dump kept) while the time refreshes have earned covers a dump: each
    /// call adds `budget`, so that on a host whose dumps cost more than a refresh's budget
    /// (a large shared socket hash) the near are refreshed every few seconds instead, and
    /// refreshes never cost more than their budget over time. Their readings are then the
    /// latest; the others' are aged by [`DeepLayer::latest`]. Whether any was dumped.
    pub fn refresh_near(&mut self, budget: Duration) -> bool {
        if self.down.is_some() {
            return false;
        }
        self.refresh_credit = (self.refresh_credit + budget).min(budget * 4 + self.dump_estimate);
        let per_dump = self.dump_estimate.as_secs_f64() / budget.as_secs_f64().max(1e-6);
        self.near_refresh_seconds = (self.near.len() as f64 * per_dump).max(1.0).ceil();
        let mut dumped = false;
        for inode in self.near.clone() {
            if self.refresh_credit < self.dump_estimate {
                break;
            }
            let t = Instant::now();
            // Only through a kept socket: a refresh opens no descriptor and enters nothing.
            if self.kept.get(&inode).is_none_or(|k| k.diag.is_none()) {
                continue;
            }
            let samples = self.samples;
            let ok = self.dump(inode, std::path::Path::new("")).is_ok();
            self.refresh_credit = self.refresh_credit.saturating_sub(t.elapsed());
            if ok {
                self.refresh_dumps_total += 1;
                dumped = true;
            } else {
                self.kept.remove(&inode); // reopened at the next sample
            }
            // A refresh is not a sample: the schedule's memory stays the sample's.
            if let Some(k) = self.kept.get_mut(&inode) {
                k.dumped_at = samples;
            }
        }
        dumped
    }

    /// Whether any namespace is near (a refresh between samples has work).
    pub fn any_near(&self) -> bool {
        self.down.is_none() && !self.near.is_empty()
    }

    /// The latest reading of a namespace, whenever it was taken, aged to now.
    pub fn latest(&self, inode: u64) -> Option<DeepReading> {
        let k = self.kept.get(&inode)?;
        let mut r = k.reading.clone()?;
        r.age_seconds = k.taken.map_or(0.0, |t| t.elapsed().as_secs_f64());
        Some(r)
    }

    /// Namespaces with a kept socket.
    pub fn kept(&self) -> usize {
        self.kept.values().filter(|k| k.diag.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockwatchs_own_namespace_is_never_dumped_twice() {
        // Its reading comes from the sample's main dump; no socket is opened for it.
        let reading = DeepReading {
            range: EphemeralRange::new(40000, 40099),
            busiest: None,
            utilization: 0.5,
            states: [0; 13],
            soonest: None,
            listen_utilization: 0.0,
            age: 0,
            age_seconds: 0.0,
        };
        let mut top = vec![Namespace { inode: 7, own: true, ..Namespace::default() }];
        let reachable = HashMap::from([(7, PathBuf::from("/proc/self/ns/net"))]);
        let mut layer = DeepLayer::default();
        layer.refresh_ranges(&reachable, Some(7), 100);
        layer.run(
            &mut top,
            &reachable,
            Duration::from_secs(5),
            Some((7, Some(reading.clone()))),
            Duration::from_secs(10),
            100,
        );
        assert_eq!((layer.kept(), layer.dumps_total, layer.down.clone()), (0, 0, None));
        assert_eq!(top[0].deep, Some(reading));
    }

    #[test]
    fn the_near_go_first_and_the_others_are_never_starved() {
        // Near 1, 2, 3; could 9, 8, 7: the near first, then the others.
        assert_eq!(schedule(&[1, 2, 3], &[9, 8, 7], false), [1, 2, 3, 9, 8, 7]);
        // Every other sample the first that could goes before them: at one dump per sample
        // it still gets one every two samples.
        assert_eq!(schedule(&[1, 2, 3], &[9, 8, 7], true), [9, 1, 2, 3, 8, 7]);
        assert_eq!(schedule(&[], &[4, 5], false), [4, 5]);
        assert_eq!(schedule(&[4, 5], &[], true), [4, 5]);
        assert!(schedule(&[], &[], true).is_empty());
    }

    #[test]
    fn the_revisit_bounds() {
        // 2 near, 10 that could, 5 dumps a sample: the near every sample, the others share 3.
        assert_eq!(revisit_bounds(2, 10, 5), (1, 4));
        // One dump a sample: the others take one of every two, the near the other.
        assert_eq!(revisit_bounds(1, 200, 1), (2, 400));
        assert_eq!(revisit_bounds(3, 0, 1), (3, 3));
        assert_eq!(revisit_bounds(0, 0, 1), (0, 0));
        assert_eq!(revisit_bounds(0, 5, 0), (0, 5), "at least one dump per sample always runs");
    }

    /// The cheap bound: a pod with a few sockets against 28,232 ports is far; one whose
    /// count grows toward its own 1,000 ports is near; one at its range is near at once.
    /// Once dumped, a namespace with many sockets but few toward any destination is far
    /// while it opens few connections, whatever its total.
    #[test]
    fn namespaces_are_classed_by_how_soon_they_could_run_out() {
        assert_eq!(need_of(bound_seconds(12, 0.0, 28_232)), Need::Far, "idle");
        assert_eq!(need_of(bound_seconds(12, 0.5, 28_232)), Need::Far, "28,220 ports at 0.5/s: 15 h");
        assert_eq!(need_of(bound_seconds(100, 5.0, 1000)), Need::Near, "900 ports at 5/s: 180 s");
        assert_eq!(need_of(bound_seconds(100, 1.0, 1000)), Need::Could, "900 s");
        assert_eq!(bound_seconds(1000, 0.0, 1000), 0.0, "at its range: near now");
        let range = EphemeralRange::new(32768, 60999);
        let mut k = Kept {
            range_file: std::fs::File::open("/dev/null").unwrap(),
            range: Some(range),
            diag: None,
            reading: None,
            taken: None,
            dumped_at: 0,
            cheap: Some(Cheap {
                sockets: 50_000,
                at: Instant::now(),
                growth: 0.0,
                opens: Some((1000, Instant::now())),
                open_rate: Some(0.2),
            }),
            opens_at_dump: None,
        };
        assert_eq!(k.bound(), Some(0.0), "never dumped: 50,000 sockets could all be toward one destination");
        k.reading = Some(DeepReading {
            range,
            busiest: None,
            utilization: 0.0,
            soonest: None,
            states: [0; 13],
            listen_utilization: 0.0,
            age: 0,
            age_seconds: 0.0,
        });
        k.opens_at_dump = Some(990);
        let bound = k.bound().unwrap();
        assert_eq!(need_of(bound), Need::Far, "a server: 10 opens since its dump at 0.2/s, {bound} s");
    }

    #[test]
    fn an_older_reading_counts_down() {
        let mut r = DeepReading {
            range: EphemeralRange::new(40000, 40999),
            busiest: None,
            utilization: 0.5,
            soonest: None,
            states: [0; 13],
            listen_utilization: 0.0,
            age: 3,
            age_seconds: 30.0,
        };
        assert_eq!(r.seconds_to_exhaustion(), None, "nothing heading there");
        r.soonest = Some(crate::sources::tcp::ports::Destination {
            local_ip: "10.0.0.1".parse().unwrap(),
            remote_ip: "10.0.0.2".parse().unwrap(),
            remote_port: 80,
            used: 500,
            close_rate: 10.0,
            projected: 1000.0,
            seconds_to_exhaustion: Some(100.0),
        });
        assert_eq!(r.seconds_to_exhaustion(), Some(70.0), "100 s as of a dump 30 s ago");
        r.age_seconds = 120.0;
        assert_eq!(r.seconds_to_exhaustion(), Some(0.0), "never below 0");
    }

    #[test]
    fn port_range_files() {
        assert_eq!(parse_range("32768\t60999\n"), Some(EphemeralRange::new(32768, 60999)));
        assert_eq!(parse_range("40000 40099"), Some(EphemeralRange::new(40000, 40099)));
        assert_eq!(parse_range("60999 32768"), None);
        assert_eq!(parse_range("x"), None);
        assert_eq!(parse_range(""), None);
    }
}
