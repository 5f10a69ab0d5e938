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
//! - **Who is dumped.** A dump walks the host's whole socket hash whatever namespace asks
//!   (unless the namespace has its own, `net.ipv4.tcp_child_ehash_entries`), so each sample
//!   dumps as many as its budget allows, taking turns between two lists: the *urgent* (the
//!   exported namespaces, soonest projected exhaustion first, then by pressure against
//!   their own range) and the *oldest* (every namespace, least recently dumped first, never
//!   dumped before all). Which list goes first alternates between samples, so even at one
//!   dump per sample neither starves.
//! - **The revisit bound.** At `k` dumps per sample (the budget over what a dump takes,
//!   at least 1) the oldest list gets `k` dumps every two samples, so each of `n`
//!   namespaces is dumped again within `ceil(2n / k)` samples
//!   (`sockwatch_netns_deep_revisit_samples`). When that is longer than the 300 s a
//!   projection warns ahead, the log says so once, with what to change.
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
}

/// `32768\t60999` → the range.
fn parse_range(text: &str) -> Option<EphemeralRange> {
    let mut it = text.split_ascii_whitespace().map(str::parse::<u16>);
    let (low, high) = (it.next()?.ok()?, it.next()?.ok()?);
    (low <= high).then(|| EphemeralRange::new(low, high))
}

/// This sample's dump order: the two lists taken in turn, `oldest` first or not, each
/// namespace once.
fn schedule(urgent: &[u64], oldest: &[u64], oldest_first: bool) -> Vec<u64> {
    let (mut a, mut b) = if oldest_first { (oldest.iter(), urgent.iter()) } else { (urgent.iter(), oldest.iter()) };
    let mut order: Vec<u64> = Vec::with_capacity(urgent.len() + oldest.len());
    let mut seen = std::collections::HashSet::new();
    loop {
        let mut took = false;
        for list in [&mut a, &mut b] {
            if let Some(&i) = list.by_ref().find(|i| !seen.contains(*i)) {
                seen.insert(i);
                order.push(i);
                took = true;
            }
        }
        if !took {
            return order;
        }
    }
}

/// Samples within which each of `n` namespaces is dumped again at `k` dumps per sample:
/// the oldest list gets `k` of every two samples' dumps.
pub fn revisit_bound(n: usize, k: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    (2 * n).div_ceil(k.max(1)) as u64
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
                        Kept { range_file, range, diag: None, reading: None, taken: None, dumped_at: 0 },
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
            self.dump_within(top, reachable, budget, interval);
        }
        for n in top.iter_mut() {
            n.deep = match &own {
                Some((inode, reading)) if *inode == n.inode => reading.clone(),
                _ => self.latest(n.inode),
            };
        }
    }

    fn dump_within(
        &mut self,
        top: &[Namespace],
        reachable: &HashMap<u64, PathBuf>,
        budget: Duration,
        interval: Duration,
    ) {
        let start = Instant::now();
        // Urgent: the exported, soonest projected exhaustion first, then by pressure (`top`
        // comes sorted by it). Oldest: every kept namespace, least recently dumped first.
        let mut urgent: Vec<(f64, u64)> = top
            .iter()
            .filter(|n| self.kept.contains_key(&n.inode))
            .map(|n| (n.deep.as_ref().and_then(DeepReading::seconds_to_exhaustion).unwrap_or(f64::INFINITY), n.inode))
            .collect();
        urgent.sort_by(|a, b| a.0.total_cmp(&b.0)); // stable: pressure order within
        let urgent: Vec<u64> = urgent.into_iter().map(|(_, i)| i).collect();
        let mut oldest: Vec<(u64, u64)> = self.kept.iter().map(|(i, k)| (k.dumped_at, *i)).collect();
        oldest.sort_unstable();
        let oldest: Vec<u64> = oldest.into_iter().map(|(_, i)| i).collect();
        let order = schedule(&urgent, &oldest, self.samples % 2 == 0);
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
        self.revisit_samples = revisit_bound(self.kept.len(), per_sample);
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
        Ok(())
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
    fn the_two_lists_take_turns_so_neither_starves() {
        // Urgent 1, 2, 3 (soonest first); oldest 9, 8, 2, 7: taken in turn, each once.
        assert_eq!(schedule(&[1, 2, 3], &[9, 8, 2, 7], false), [1, 9, 2, 8, 3, 7]);
        // The next sample the oldest list goes first: at one dump per sample it alternates.
        assert_eq!(schedule(&[1, 2, 3], &[9, 8, 2, 7], true)[0], 9);
        assert_eq!(schedule(&[], &[4, 5], false), [4, 5]);
        assert!(schedule(&[], &[], true).is_empty());
    }

    #[test]
    fn the_revisit_bound() {
        // 200 namespaces at one dump per sample: the oldest list gets one every two samples.
        assert_eq!(revisit_bound(200, 1), 400);
        assert_eq!(revisit_bound(200, 10), 40);
        assert_eq!(revisit_bound(3, 100), 1);
        assert_eq!(revisit_bound(0, 1), 0);
        assert_eq!(revisit_bound(5, 0), 10, "at least one dump per sample always runs");
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
