//! The sampler: runs every source on a fixed interval, off the async runtime, builds one
//! [`Snapshot`], renders it once with the [`Renderer`] the daemon hands it (the Prometheus
//! text, in practice: the sampler does not know which), and publishes both atomically.
//!
//! Readers (HTTP and the Munin shim) hold a `watch::Receiver` and take an `Arc` of the
//! latest [`Published`]; they never wait for a sample and never cause one.
//!
//! Here: the sample itself ([`Sampler`]). Beside it: `run` (the loop, its watchdog, SIGHUP
//! between samples), `publish` (what readers get, and how), `breakdown` (the conntrack
//! dump's and event mode's own loops) and `tracker` (each source's outcome and log state).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

mod breakdown;
mod publish;
mod run;
mod tracker;

pub use breakdown::{follow_breakdown, run_breakdown, BreakdownSlot};
use publish::publish;
pub use publish::{sample_deadline, Latest, Published, Renderer, MIN_SAMPLE_DEADLINE};
pub use run::run;
use tracker::Tracker;

use crate::config::Config;
use crate::snapshot::{PerSource, Snapshot, Source, SourceStatus};
use crate::sources::ctnetlink::attribution::AttributionConfig;
use crate::sources::ctnetlink::dump::{self as ct_breakdown, Breakdown, CtDump};
use crate::sources::netns::DeepReading;
use crate::sources::netns::{Namespaces, NetnsConfig, NetnsSource};
use crate::sources::procfs::fds::FdScanner;
use crate::sources::tcp::listeners::ListenerDump;
use crate::sources::tcp::ports::{EphemeralRange, PortAggregator, PortsConfig};
use crate::sources::tcp::projection;
use crate::sources::udp::sockets::{UdpConfig, UdpTracker};
use crate::sources::{self, tcp::sockets::SockDiag};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Owns everything a sample needs and reuses it: the netlink socket and its buffer.
/// How often the near namespaces are dumped between samples.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// What refreshes may spend: this fraction of `--sampler.max-share` of each second (16 ms
/// a second at the default 0.25, about 1.6 % of a core at most).
const REFRESH_SHARE_DIVISOR: u32 = 16;

pub struct Sampler {
    proc_root: PathBuf,
    /// The interval asked for (`--interval`).
    configured_interval: Duration,
    /// The interval in force: the configured one, or longer while samples are slow.
    interval: Duration,
    /// Largest share of the interval a sample may take before the interval stretches.
    max_share: f64,
    sockdiag: SockDiag,
    ports_config: PortsConfig,
    ports: PortAggregator,
    udp_config: UdpConfig,
    udp: UdpTracker,
    listeners: ListenerDump,
    fds: FdScanner,
    /// Processes kept by descriptor use (`--fds.top-k`).
    fds_top_k: usize,
    /// Every namespace's counters, when `--netns` is on (or auto decided on).
    netns: Option<(NetnsConfig, NetnsSource)>,
    /// Each source's tracker, indexed by source (the breakdown's and the namespaces' too).
    trackers: PerSource<Tracker>,
    breakdown: BreakdownMode,
    /// What the breakdown dump attributes (top-K, NAT port range).
    attribution: AttributionConfig,
    samples_total: u64,
    inconsistent_total: u64,
    /// [`Source::code`] of the source being read now (0: none), for the watchdog.
    progress: Arc<AtomicUsize>,
    render: Renderer,
}

/// How the optional ctnetlink breakdown is obtained.
enum BreakdownMode {
    Off,
    /// Dumped within each sample: the one-shot `sample` and `doctor` commands.
    Inline(Box<CtDump>),
    /// Dumped by [`run_breakdown`] on its own interval: the daemon.
    Shared(BreakdownSlot),
}

impl Sampler {
    pub fn new(config: &Config, render: Renderer) -> Self {
        Sampler {
            proc_root: config.procfs.clone(),
            configured_interval: config.interval,
            interval: config.interval,
            max_share: config.max_share,
            ports_config: config.ports.clone(),
            ports: PortAggregator::default(),
            udp_config: config.udp.clone(),
            udp: UdpTracker::default(),
            listeners: ListenerDump::default(),
            fds: FdScanner::default(),
            fds_top_k: config.fds_top_k,
            netns: netns_config(config).map(|c| (c, NetnsSource::default())),
            sockdiag: SockDiag::new(),
            trackers: Default::default(),
            breakdown: if config.conntrack_breakdown {
                BreakdownMode::Inline(Box::default())
            } else {
                BreakdownMode::Off
            },
            attribution: config.conntrack_attribution,
            samples_total: 0,
            inconsistent_total: 0,
            progress: Arc::new(AtomicUsize::new(0)),
            render,
        }
    }

    /// Applies a reloaded configuration; returns whether the interval changed.
    pub fn reconfigure(&mut self, config: &Config) -> bool {
        self.proc_root = config.procfs.clone();
        self.ports_config = config.ports.clone();
        self.udp_config = config.udp.clone();
        self.fds_top_k = config.fds_top_k;
        let kept = self.netns.take().map(|(_, n)| n).unwrap_or_default();
        self.netns = netns_config(config).map(|c| (c, kept));
        self.max_share = config.max_share;
        let changed = self.interval != config.interval || self.configured_interval != config.interval;
        self.configured_interval = config.interval;
        self.interval = config.interval;
        changed
    }

    /// Self-protection: the monitor must not hurt the host it watches. When a sample
    /// takes more than `max_share` of the interval, the interval stretches so that it
    /// does not; when samples are quick again it returns to the configured one.
    /// Returns whether the interval changed.
    pub fn adapt(&mut self, took: Duration) -> bool {
        let needed = took.div_f64(self.max_share);
        // Whole tenths of a second, so the exported value does not jitter.
        let needed = Duration::from_millis(needed.as_millis().div_ceil(100) as u64 * 100);
        let want = self.configured_interval.max(needed);
        // Shrink only with a clear margin, so the interval does not flap.
        if want > self.interval || want < self.interval.mul_f64(0.8) {
            if want > self.configured_interval && self.interval == self.configured_interval {
                tracing::warn!(
                    "a sample took {} ms, more than {:.0}% of the {} interval: sampling every {} until samples are quicker",
                    took.as_millis(),
                    self.max_share * 100.0,
                    humantime::format_duration(self.configured_interval),
                    humantime::format_duration(want)
                );
            } else if want == self.configured_interval {
                tracing::info!("samples are quick again: back to the {} interval", humantime::format_duration(want));
            }
            self.interval = want;
            return true;
        }
        false
    }

    /// Has the breakdown come from `slot` (filled by [`run_breakdown`]) instead of
    /// dumping it within every sample. No effect when the breakdown is off.
    pub fn share_breakdown(&mut self, slot: BreakdownSlot) {
        if !matches!(self.breakdown, BreakdownMode::Off) {
            self.breakdown = BreakdownMode::Shared(slot);
        }
    }

    /// Takes one sample. Blocking: call it from a blocking thread.
    pub fn sample(&mut self) -> Snapshot {
        let timestamp = SystemTime::now();
        let start = Instant::now();
        let progress = self.progress.clone();
        // The trackers are the reading's for the sample, and back after it.
        let mut trackers = std::mem::take(&mut self.trackers);
        let mut r = Reading { trackers: &mut trackers, status: PerSource::default(), progress: &progress };
        let host = self.read_host(&mut r);
        let namespaces = self.read_namespaces(&mut r, &host, start);
        let conntrack_breakdown = self.read_breakdown(&mut r);
        // In table order: the sources of every sample, then the breakdown and namespaces.
        let statuses: Vec<SourceStatus> = r.status.into_iter_with_source().filter_map(|(_, s)| s).collect();
        self.trackers = trackers;
        progress.store(0, Ordering::Relaxed);
        let conntrack_projection = project_conntrack(conntrack_breakdown.as_ref(), host.conntrack.as_ref());
        self.samples_total += 1;
        if host.sockets.as_ref().is_some_and(|s| s.interrupted) {
            self.inconsistent_total += 1;
            tracing::debug!("socket dump interrupted by table changes (NLM_F_DUMP_INTR)");
        }
        let duration = start.elapsed();
        tracing::debug!(
            took_ms = duration.as_millis() as u64,
            sample = self.samples_total,
            sources_down = statuses.iter().filter(|s| !s.up).count(),
            namespaces = namespaces.as_ref().map_or(0, |n| n.count),
            "sample taken"
        );
        Snapshot {
            timestamp,
            duration,
            interval: self.interval,
            sockets: host.sockets,
            ports: host.ports,
            sockstat: host.sockstat,
            conntrack: host.conntrack,
            snmp: host.snmp,
            limits: host.limits,
            udp: host.udp,
            namespaces,
            listen_path: host.listen_path,
            descriptors: host.descriptors,
            socket_memory: host.socket_memory,
            softnet: host.softnet,
            neighbours: host.neighbours,
            conntrack_breakdown,
            conntrack_projection,
            process: crate::sources::procfs::process::read()
                .inspect_err(|e| tracing::debug!("process_* metrics absent: {e}"))
                .ok(),
            sources: statuses,
            samples_total: self.samples_total,
            inconsistent_total: self.inconsistent_total,
            overdue: None,
        }
    }

    /// Every source of sockwatch's own namespace, in the order they need each other:
    /// limits first (the socket walk classifies by the port range), UDP after sockstat (its
    /// sockets in use), the listen path after the walk (each port's SYN queue).
    fn read_host(&mut self, r: &mut Reading<'_>) -> Host {
        let root = self.proc_root.as_path();
        let limits = r.observe(Source::Limits, || sources::procfs::limits::read(root));
        let (sockdiag, ports) = (&mut self.sockdiag, &mut self.ports);
        ports.begin_range(limits.as_ref().map(ephemeral_range));
        let sockets = r.observe(Source::Sockets, || sockdiag.read(&mut |m| ports.visit(m)));
        let ports = sockets.as_ref().map(|_| self.ports.finish(&self.ports_config));
        let sockstat = r.observe(Source::Sockstat, || sources::procfs::sockstat::read(root));
        let conntrack = r.observe(Source::Conntrack, || sources::procfs::conntrack::read(root));
        let snmp = r.observe(Source::Snmp, || sources::procfs::snmp::read(root));
        let (udp_tracker, udp_config) = (&mut self.udp, &self.udp_config);
        let inuse = sockstat.as_ref().map_or([None, None], |s| s.udp_inuse);
        let udp = r.observe(Source::Udp, || udp_tracker.read(udp_config, inuse));
        let (listener_dump, aggregator) = (&mut self.listeners, &self.ports);
        let syn_queue = |port: u16| aggregator.syn_recv(port);
        let max_syn = limits.as_ref().and_then(|l| l.tcp_max_syn_backlog);
        let top_k = self.ports_config.listeners_top_k;
        let listen_path = r.observe(Source::Listeners, || listener_dump.read(top_k, &syn_queue, max_syn));
        let (fds, fds_top_k) = (&mut self.fds, self.fds_top_k);
        let descriptors = r.observe(Source::Fds, || fds.read(root, fds_top_k));
        let socket_memory = r.observe(Source::Sockmem, || sources::procfs::sockmem::read(root));
        let softnet = r.observe(Source::Softnet, || sources::procfs::softnet::read(root));
        let neighbours = r.observe(Source::Neighbour, || sources::procfs::neighbour::read(root));
        Host {
            limits,
            sockets,
            ports,
            sockstat,
            conntrack,
            snmp,
            udp,
            listen_path,
            descriptors,
            socket_memory,
            softnet,
            neighbours,
        }
    }

    /// Every other namespace, with half of what self-protection leaves this sample for the
    /// dumps inside them (`start`: when the sample began).
    fn read_namespaces(&mut self, r: &mut Reading<'_>, host: &Host, start: Instant) -> Option<Namespaces> {
        let root = self.proc_root.as_path();
        let (cfg, source) = self.netns.as_mut()?;
        let max = host.conntrack.as_ref().and_then(|c| c.limit);
        let budget = (self.configured_interval.mul_f64(self.max_share) / 2).saturating_sub(start.elapsed());
        let own = own_reading(host.ports.as_ref(), host.sockets.as_ref(), host.limits.as_ref());
        let interval = self.configured_interval;
        r.observe(Source::Netns, || source.read_within(root, cfg, max, budget, own, interval))
    }

    /// The conntrack breakdown: dumped here, or the latest its own loop published (absent
    /// until its first dump finishes; that loop keeps its own tracker).
    fn read_breakdown(&mut self, r: &mut Reading<'_>) -> Option<Breakdown> {
        let root = self.proc_root.as_path();
        match &mut self.breakdown {
            BreakdownMode::Off => None,
            BreakdownMode::Inline(dump) => {
                let timeout = ct_breakdown::time_wait_timeout(root);
                let cfg = self.attribution;
                r.observe(Source::ConntrackBreakdown, || dump.read(timeout, &cfg))
            }
            BreakdownMode::Shared(slot) => {
                let latest = slot.lock().map(|g| g.clone()).unwrap_or(None);
                latest.and_then(|(b, st)| {
                    r.status[Source::ConntrackBreakdown] = Some(st);
                    b
                })
            }
        }
    }

    /// Samples and renders: the unit of work the loop runs on a blocking thread. The
    /// snapshot carries the interval in force after this sample (stretched if it was slow).
    /// Between samples, every [`REFRESH_EVERY`] while some namespace is near its port
    /// range: those namespaces dumped again (within a sixteenth of `--sampler.max-share` of
    /// each second, earned over seconds where one dump costs more) and `last` published again with their readings, so that a step in their
    /// rate shows within a second or two rather than an interval later. Everything else in
    /// `last` stands (its timestamp too: it is still that sample's). `None`: nothing to do.
    pub fn refresh_near(&mut self, last: &Snapshot) -> Option<Published> {
        let (cfg, source) = self.netns.as_mut()?;
        let budget = REFRESH_EVERY.mul_f64(self.max_share) / REFRESH_SHARE_DIVISOR;
        let namespaces = source.refresh_near(cfg, last.namespaces.as_ref()?, budget)?;
        let mut snapshot = last.clone();
        snapshot.namespaces = Some(namespaces);
        Some(publish(snapshot, self.render))
    }

    /// Whether a refresh between samples has work: a namespace near its range, and an
    /// interval longer than the refresh's.
    pub fn wants_refresh(&self, last: &Snapshot) -> bool {
        self.interval > REFRESH_EVERY
            && self.netns.as_ref().is_some_and(|(cfg, _)| cfg.deep)
            && last.namespaces.as_ref().is_some_and(|n| n.deep_needs[0] > 0 && n.deep_down.is_none())
    }

    pub fn sample_and_render(&mut self) -> Published {
        let mut snapshot = self.sample();
        self.adapt(snapshot.duration);
        snapshot.interval = self.interval;
        publish(snapshot, self.render)
    }
}

/// sockwatch's own namespace as the main dump of this sample saw it, in the form of a
/// dump inside a namespace: the deep layer does not walk it a second time.
fn own_reading(
    ports: Option<&sources::tcp::ports::PortUsage>,
    sockets: Option<&sources::tcp::sockets::Sockets>,
    limits: Option<&sources::procfs::limits::Limits>,
) -> Option<DeepReading> {
    DeepReading::of_dump(ephemeral_range(limits?), ports?, sockets?)
}

/// `--netns`: on, off, or auto: on in the host's initial network namespace, told by
/// sharing PID 1's namespace, or, where PID 1's link cannot be read (a sandbox), by the
/// initial namespace's fixed inode (`PROC_NET_INIT_INO`, 0xEFFFFFF9, recent kernels).
/// Off in any other namespace: a container or a test namespace reports itself.
fn netns_config(config: &Config) -> Option<NetnsConfig> {
    const PROC_NET_INIT_INO: u64 = 0xEFFF_FFF9;
    let enabled = config.netns.unwrap_or_else(|| {
        let link = |pid: &str| sources::netns::ns_of(&config.procfs, pid).ok();
        match (link("self"), link("1")) {
            (Some(own), Some(init)) => own == init,
            (Some(own), None) => own == PROC_NET_INIT_INO,
            (None, _) => false,
        }
    });
    let conntrack = config.conntrack_breakdown.then_some(sources::netns::ct::NsConntrackConfig {
        interval: config.conntrack_breakdown_interval,
        attribution: config.conntrack_attribution,
    });
    enabled.then_some(NetnsConfig { top_k: config.netns_top_k, conntrack, deep: config.netns_deep })
}

/// Renders a snapshot for readers, once.
fn project_conntrack(
    b: Option<&Breakdown>,
    ct: Option<&sources::procfs::conntrack::Conntrack>,
) -> Option<projection::Trajectory> {
    let (b, limit) = (b?, ct?.limit?);
    let held = b.total.saturating_sub(b.time_wait.total());
    Some(projection::project(held, &b.time_wait, limit, f64::from(b.time_wait_timeout)))
}

/// The range the socket walk classifies and projects against, from the limits source.
fn ephemeral_range(l: &sources::procfs::limits::Limits) -> EphemeralRange {
    EphemeralRange {
        low: l.port_range_low,
        high: l.port_range_high,
        capacity: l.port_range_size(),
        // Vendor kernels with a tunable TIME_WAIT; mainline's is compiled in.
        time_wait_seconds: l
            .tcp_tw_timeout
            .and_then(|s| u32::try_from(s).ok())
            .filter(|s| (1..=3600).contains(s))
            .unwrap_or(sources::tcp::ports::TIME_WAIT_SECONDS),
    }
}

/// One sample's reading of its sources: each read timed and its outcome kept by the
/// source's tracker, its status noted by source, and the source in progress shown to the
/// watchdog.
struct Reading<'a> {
    trackers: &'a mut PerSource<Tracker>,
    status: PerSource<Option<SourceStatus>>,
    progress: &'a AtomicUsize,
}

impl Reading<'_> {
    fn observe<T>(&mut self, source: Source, read: impl FnOnce() -> Result<T, sources::SourceError>) -> Option<T> {
        self.progress.store(source.code(), Ordering::Relaxed);
        let (value, status) = self.trackers[source].observe(source, read);
        self.status[source] = Some(status);
        value
    }
}

/// What a sample read of sockwatch's own namespace.
struct Host {
    limits: Option<sources::procfs::limits::Limits>,
    sockets: Option<sources::tcp::sockets::Sockets>,
    ports: Option<sources::tcp::ports::PortUsage>,
    sockstat: Option<sources::procfs::sockstat::Sockstat>,
    conntrack: Option<sources::procfs::conntrack::Conntrack>,
    snmp: Option<sources::procfs::snmp::SnmpCounters>,
    udp: Option<sources::udp::sockets::Udp>,
    listen_path: Option<sources::tcp::listeners::ListenPath>,
    descriptors: Option<sources::procfs::fds::Descriptors>,
    socket_memory: Option<sources::procfs::sockmem::SocketMemory>,
    softnet: Option<sources::procfs::softnet::Softnet>,
    neighbours: Option<sources::procfs::neighbour::Neighbours>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(interval_s: u64, share: f64) -> Sampler {
        let mut c = Config::load(&crate::config::Flags::default()).unwrap();
        c.interval = Duration::from_secs(interval_s);
        c.max_share = share;
        Sampler::new(&c, |_| Vec::new())
    }

    #[test]
    fn slow_samples_stretch_the_interval_and_quick_ones_restore_it() {
        let mut s = sampler(10, 0.25);
        assert!(!s.adapt(Duration::from_millis(2400)), "24% of 10 s is fine");
        assert_eq!(s.interval, Duration::from_secs(10));
        assert!(s.adapt(Duration::from_millis(3000)), "30% is too much");
        assert_eq!(s.interval, Duration::from_secs(12), "3 s is 25% of 12 s");
        assert!(s.adapt(Duration::from_millis(5010)));
        assert_eq!(s.interval, Duration::from_millis(20100), "rounded up to a tenth");
        assert!(!s.adapt(Duration::from_millis(4500)), "within the margin: no flapping");
        assert!(s.adapt(Duration::from_millis(100)));
        assert_eq!(s.interval, Duration::from_secs(10), "never below the configured interval");
    }
}
