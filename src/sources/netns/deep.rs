//! The deep layer of every network namespace: a sock_diag dump *inside* a namespace gives
//! its ephemeral ports per destination against its own `ip_local_port_range`, which no
//! /proc counter has.
//!
//! - One netlink socket per namespace, opened once from a short-lived thread that enters
//!   the namespace (setns, CAP_SYS_ADMIN) and kept; with it, the namespace's
//!   `ip_local_port_range` file, opened in the namespace and re-read at each dump (a sysctl
//!   file shows the namespace it was opened in).
//! - A dump walks the host's whole socket hash whatever namespace asks (unless the
//!   namespace has its own, `tcp_child_ehash_entries`), so not every namespace is dumped
//!   every sample: the exported namespaces by pressure first, then the others in turn,
//!   until the time budget of this sample is spent. A reading is kept until the next dump
//!   of its namespace, with its age.
//! - A kept socket keeps its namespace alive: a namespace discovery no longer finds has its
//!   socket closed at once.
//! - Without CAP_SYS_ADMIN the layer is down, said once in the log; the cheap layer goes on.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use super::model::DeepReading;
use super::model::Namespace;
use crate::sources::kernel::ratio::{ratio, AtZero};
use crate::sources::tcp::ports::{EphemeralRange, PortAggregator, PortUsage, PortsConfig};
use crate::sources::tcp::sockets::{SockDiag, Sockets};

impl DeepReading {
    /// What one dump of a namespace says: its busiest destination against `range`, its
    /// states, its fullest accept queue. The deep layer's dumps and the sample's main dump
    /// (sockwatch's own namespace) both go through here. `None` without a port range.
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
            states,
            listen_utilization: usage.listen_utilization_max,
            age: 0,
        })
    }
}

struct Kept {
    diag: SockDiag,
    range_file: std::fs::File,
    reading: Option<DeepReading>,
}

/// The kept sockets and the turn of the round-robin.
#[derive(Default)]
pub struct DeepLayer {
    kept: HashMap<u64, Kept>,
    turn: usize,
    /// Why the layer is down, once known (logged once).
    pub down: Option<String>,
    /// Dumps done since start.
    pub dumps_total: u64,
    /// Descriptors this sample may still keep (a namespace's socket and range file take 2).
    fds_left: usize,
    /// Said once: namespaces go without a kept socket for want of descriptors.
    said_fds: bool,
    /// What a dump takes, averaged over the last few.
    dump_estimate: Duration,
}

/// `32768\t60999` → the range.
fn parse_range(text: &str) -> Option<EphemeralRange> {
    let mut it = text.split_ascii_whitespace().map(str::parse::<u16>);
    let (low, high) = (it.next()?.ok()?, it.next()?.ok()?);
    (low <= high).then(|| EphemeralRange::new(low, high))
}

/// This sample's dump order: the exported namespaces (by pressure), then every other one
/// starting at `turn` (wrapping), sockwatch's own never. Returns the order, where the others
/// start in it, and the turn actually used.
fn schedule(
    exported: &[u64],
    all: impl Iterator<Item = u64>,
    own: Option<u64>,
    turn: usize,
) -> (Vec<u64>, usize, usize) {
    let mut order: Vec<u64> = exported.iter().copied().filter(|&i| Some(i) != own).collect();
    let mut rest: Vec<u64> = all.filter(|&i| !order.contains(&i) && Some(i) != own).collect();
    rest.sort_unstable();
    let t = if rest.is_empty() { 0 } else { turn % rest.len() };
    rest.rotate_left(t);
    let first_rest = order.len();
    order.extend(rest);
    (order, first_rest, t)
}

/// Opens a namespace's port range file from inside it.
fn open_range_file(ns: &std::path::Path, inode: u64) -> std::io::Result<std::fs::File> {
    crate::sources::kernel::namespace::in_namespace(ns, Some(inode), || {
        std::fs::File::open("/proc/sys/net/ipv4/ip_local_port_range")
    })
}

impl DeepLayer {
    /// Dumps namespaces inside `budget`, exported ones (`top`, by pressure) first, then
    /// the rest of `reachable` (inode → namespace file) in turn; attaches each exported
    /// namespace's latest reading. Closes the sockets of namespaces no longer reachable.
    /// sockwatch's own namespace (`own`: its inode, and the reading of the sample's main
    /// dump) is never dumped again.
    pub fn run(
        &mut self,
        top: &mut [Namespace],
        reachable: &HashMap<u64, PathBuf>,
        budget: Duration,
        own: Option<(u64, Option<DeepReading>)>,
        fds_left: usize,
    ) {
        let own_inode = own.as_ref().map(|o| o.0);
        self.fds_left = fds_left;
        if let Some(i) = own_inode {
            self.kept.remove(&i);
        }
        self.kept.retain(|inode, _| reachable.contains_key(inode));
        for k in self.kept.values_mut() {
            if let Some(r) = k.reading.as_mut() {
                r.age += 1;
            }
        }
        // No budget, no dump (the cheap layer alone, as `NetnsSource::read` asks).
        if self.down.is_none() && !budget.is_zero() {
            self.dump_within(top, reachable, budget, own_inode);
        }
        for n in top.iter_mut() {
            n.deep = match &own {
                Some((inode, reading)) if *inode == n.inode => reading.clone(),
                _ => self.kept.get(&n.inode).and_then(|k| k.reading.clone()),
            };
        }
    }

    fn dump_within(
        &mut self,
        top: &[Namespace],
        reachable: &HashMap<u64, PathBuf>,
        budget: Duration,
        own_inode: Option<u64>,
    ) {
        let start = Instant::now();
        let exported: Vec<u64> = top.iter().map(|n| n.inode).collect();
        let (order, first_rest, t) = schedule(&exported, reachable.keys().copied(), own_inode, self.turn);
        let mut rest_attempted = 0;
        for (i, inode) in order.into_iter().enumerate() {
            // Stop before a dump that would not fit: every dump walks the host's whole socket
            // hash, so the last one's time is the next one's. One dump per sample always
            // runs, so the readings never stop however small the budget.
            if i > 0 && start.elapsed() + self.dump_estimate >= budget {
                break;
            }
            // The round-robin goes on next sample from the first namespace not reached.
            rest_attempted += usize::from(i >= first_rest);
            self.turn = t + rest_attempted;
            let Some(path) = reachable.get(&inode) else { continue };
            let t = Instant::now();
            let result = self.dump(inode, path);
            if result.is_ok() {
                self.dump_estimate = (self.dump_estimate * 3 + t.elapsed()) / 4;
            }
            if let Err(e) = result {
                if e.raw_os_error() == Some(libc::EPERM) {
                    let why = format!("cannot enter network namespaces ({e}): needs CAP_SYS_ADMIN");
                    tracing::warn!("per-namespace ports (deep layer) down: {why}; the per-namespace counters go on");
                    self.down = Some(why);
                    return;
                }
                self.kept.remove(&inode); // reopened at its next turn
            }
        }
    }

    fn dump(&mut self, inode: u64, path: &std::path::Path) -> std::io::Result<()> {
        let k = match self.kept.entry(inode) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(_) if self.fds_left < 2 => {
                if !std::mem::replace(&mut self.said_fds, true) {
                    tracing::warn!(
                        kept = self.kept.len(),
                        "per-namespace ports (deep layer): no file descriptors to spare for more namespace sockets; \
                         namespaces beyond these go without; raise the open-files limit (LimitNOFILE=)"
                    );
                }
                return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                self.fds_left -= 2;
                let range_file = open_range_file(path, inode)?;
                v.insert(Kept { diag: SockDiag::in_namespace(path.to_owned(), inode), range_file, reading: None })
            }
        };
        let mut buf = [0u8; 64];
        let n = k.range_file.read_at(&mut buf, 0)?;
        let range = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(parse_range)
            .ok_or_else(|| std::io::Error::other("unreadable ip_local_port_range"))?;
        let mut ports = PortAggregator::default();
        ports.begin_range(Some(range));
        let sockets = k.diag.read(&mut |m| ports.visit(m)).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.dumps_total += 1;
        let usage = ports.finish(&PortsConfig { top_k: 1, listeners_top_k: 0, listener_ports: Vec::new() });
        k.reading = DeepReading::of_dump(range, &usage, &sockets);
        Ok(())
    }

    /// The latest reading of a namespace, whenever it was taken.
    pub fn latest(&self, inode: u64) -> Option<&DeepReading> {
        self.kept.get(&inode)?.reading.as_ref()
    }

    /// Namespaces with a kept socket.
    pub fn kept(&self) -> usize {
        self.kept.len()
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
            listen_utilization: 0.0,
            age: 0,
        };
        let mut top = vec![Namespace { inode: 7, own: true, ..Namespace::default() }];
        let reachable = HashMap::from([(7, PathBuf::from("/proc/self/ns/net"))]);
        let mut layer = DeepLayer::default();
        layer.run(&mut top, &reachable, Duration::from_secs(5), Some((7, Some(reading.clone()))), 100);
        assert_eq!((layer.kept(), layer.dumps_total, layer.down.clone()), (0, 0, None));
        assert_eq!(top[0].deep, Some(reading));
    }

    #[test]
    fn the_round_robin_goes_on_where_the_budget_stopped_it() {
        let all = [10, 11, 12, 13, 14, 15, 99];
        // Exported first (own excluded), then the others from the turn.
        let (order, first_rest, t) = schedule(&[14, 99], all.into_iter(), Some(99), 0);
        assert_eq!((order, first_rest, t), (vec![14, 10, 11, 12, 13, 15], 1, 0));
        // A sample that reached 3 of the others: the next starts at the 4th.
        let (order, _, _) = schedule(&[14], all.into_iter(), Some(99), 3);
        assert_eq!(order, [14, 13, 15, 10, 11, 12]);
        // Past the end it wraps.
        let (order, _, t) = schedule(&[], all.into_iter(), Some(99), 8);
        assert_eq!((order[0], t), (12, 2));
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
