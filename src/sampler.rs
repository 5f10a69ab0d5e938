//! The sampler: runs every source on a fixed interval, off the async runtime, builds one
//! [`Snapshot`], renders it once with the [`Renderer`] the daemon hands it (the Prometheus
//! text, in practice: the sampler does not know which), and publishes both atomically.
//!
//! Readers (HTTP and the Munin shim) hold a `watch::Receiver` and take an `Arc` of the
//! latest [`Published`]; they never wait for a sample and never cause one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

use crate::config::Config;
use crate::snapshot::{Overdue, Snapshot, Source, SourceStatus};
use crate::sources::ct_attribution::AttributionConfig;
use crate::sources::ct_breakdown::{self, Breakdown, CtDump};
use crate::sources::ct_events::{self, CtEvents, EventStats, EventsConfig};
use crate::sources::netns::DeepReading;
use crate::sources::netns::{NetnsConfig, NetnsSource};
use crate::sources::ports::{EphemeralRange, PortAggregator, PortsConfig};
use crate::sources::projection;
use crate::sources::udp::{UdpConfig, UdpTracker};
use crate::sources::{self, sockets::SockDiag, SourceError};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What readers see: the snapshot and its rendering, plain and gzip-compressed (rendered
/// and compressed once per sample, never per request).
#[derive(Debug)]
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub rendered: Bytes,
    pub rendered_gzip: Bytes,
}

/// Turns a snapshot into the bytes a reader is served; given by whoever runs the sampler.
pub type Renderer = fn(&Snapshot) -> Vec<u8>;

fn gzip(data: &[u8]) -> Bytes {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}

pub type Latest = watch::Receiver<Option<Arc<Published>>>;

/// Per-source state the sampler keeps between samples.
#[derive(Debug, Default, Clone)]
struct Tracker {
    errors_total: u64,
    /// The last up/down state, to log state changes once instead of every sample.
    was_up: Option<bool>,
}

impl Tracker {
    /// Times `read`, records its outcome and logs only when the source changes state.
    fn observe<T>(
        &mut self,
        source: Source,
        read: impl FnOnce() -> Result<T, SourceError>,
    ) -> (Option<T>, SourceStatus) {
        let start = Instant::now();
        let result = read();
        let duration = start.elapsed();
        let name = source.name();
        let (value, error) = match result {
            Ok(v) => {
                if self.was_up == Some(false) {
                    tracing::info!(source = name, "source is up again");
                }
                self.was_up = Some(true);
                (Some(v), None)
            }
            Err(e) => {
                let absent = matches!(e, SourceError::Missing { .. });
                if !absent {
                    self.errors_total += 1;
                }
                if self.was_up != Some(false) {
                    if absent {
                        tracing::info!(source = name, "source not available, its series are absent: {e}");
                    } else {
                        tracing::warn!(source = name, "source down, its series are absent: {e}");
                    }
                } else {
                    tracing::debug!(source = name, "source still down: {e}");
                }
                self.was_up = Some(false);
                (None, Some(e.to_string()))
            }
        };
        tracing::trace!(source = name, took_us = duration.as_micros() as u64, up = value.is_some(), "source read");
        let status = SourceStatus { source, up: value.is_some(), errors_total: self.errors_total, duration, error };
        (value, status)
    }
}

/// Owns everything a sample needs and reuses it: the netlink socket and its buffer.
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
    /// Every namespace's counters, when `--netns` is on (or auto decided on).
    netns: Option<(NetnsConfig, Tracker, NetnsSource)>,
    trackers: [Tracker; Source::ALL.len()],
    breakdown: BreakdownMode,
    /// What the breakdown dump attributes (top-K, NAT port range).
    attribution: AttributionConfig,
    samples_total: u64,
    inconsistent_total: u64,
    /// [`Source::code`] of the source being read now (0: none), for the watchdog.
    progress: Arc<AtomicUsize>,
    render: Renderer,
}

/// The latest breakdown result, written by [`run_breakdown`], read by every sample.
pub type BreakdownSlot = Arc<std::sync::Mutex<Option<(Option<Breakdown>, SourceStatus)>>>;

/// How the optional ctnetlink breakdown is obtained.
enum BreakdownMode {
    Off,
    /// Dumped within each sample: the one-shot `sample` and `doctor` commands.
    Inline(Box<CtDump>, Tracker),
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
            netns: netns_config(config).map(|c| (c, Tracker::default(), NetnsSource::default())),
            sockdiag: SockDiag::new(),
            trackers: Default::default(),
            breakdown: if config.conntrack_breakdown {
                BreakdownMode::Inline(Box::default(), Tracker::default())
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
        let kept = self.netns.take().map(|(_, t, n)| (t, n)).unwrap_or_default();
        self.netns = netns_config(config).map(|c| (c, kept.0, kept.1));
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
        let root = self.proc_root.as_path();
        let [t_sockets, t_sockstat, t_conntrack, t_snmp, t_limits, t_udp] = &mut self.trackers;
        let progress = self.progress.clone();
        let at = |source: Source| progress.store(source.code(), Ordering::Relaxed);
        // Limits first: the socket walk needs the port range to classify sockets.
        at(Source::Limits);
        let (limits, s4) = t_limits.observe(Source::Limits, || sources::limits::read(root));
        let (sockdiag, ports) = (&mut self.sockdiag, &mut self.ports);
        ports.begin_range(limits.as_ref().map(ephemeral_range));
        at(Source::Sockets);
        let (sockets, s0) = t_sockets.observe(Source::Sockets, || sockdiag.read(&mut |m| ports.visit(m)));
        let ports = sockets.as_ref().map(|_| self.ports.finish(&self.ports_config));
        at(Source::Sockstat);
        let (sockstat, s1) = t_sockstat.observe(Source::Sockstat, || sources::sockstat::read(root));
        at(Source::Conntrack);
        let (conntrack, s2) = t_conntrack.observe(Source::Conntrack, || sources::conntrack::read(root));
        at(Source::Snmp);
        let (snmp, s3) = t_snmp.observe(Source::Snmp, || sources::snmp::read(root));
        at(Source::Udp);
        let (udp_tracker, udp_config) = (&mut self.udp, &self.udp_config);
        let inuse = sockstat.as_ref().map_or([None, None], |s| s.udp_inuse);
        let (udp, s5) = t_udp.observe(Source::Udp, || udp_tracker.read(udp_config, inuse));
        let mut statuses = vec![s0, s1, s2, s3, s4, s5];
        let namespaces = self.netns.as_mut().and_then(|(cfg, tracker, source)| {
            at(Source::Netns);
            let max = conntrack.as_ref().and_then(|c| c.limit);
            // Dumps inside namespaces get half of what self-protection leaves this sample.
            let budget = (self.configured_interval.mul_f64(self.max_share) / 2).saturating_sub(start.elapsed());
            let own = own_reading(ports.as_ref(), sockets.as_ref(), limits.as_ref());
            let (n, status) = tracker.observe(Source::Netns, || source.read_within(root, cfg, max, budget, own));
            statuses.push(status);
            n
        });
        let latest_breakdown = match &mut self.breakdown {
            BreakdownMode::Off => None,
            BreakdownMode::Inline(dump, tracker) => {
                at(Source::ConntrackBreakdown);
                let timeout = ct_breakdown::time_wait_timeout(root);
                let cfg = self.attribution;
                Some(tracker.observe(Source::ConntrackBreakdown, || dump.read(timeout, &cfg)))
            }
            // Absent until the first dump finishes, then the latest result.
            BreakdownMode::Shared(slot) => slot.lock().map(|g| g.clone()).unwrap_or(None),
        };
        let conntrack_breakdown = latest_breakdown.and_then(|(b, status)| {
            statuses.push(status);
            b
        });
        progress.store(0, Ordering::Relaxed);
        let conntrack_projection = project_conntrack(conntrack_breakdown.as_ref(), conntrack.as_ref());
        self.samples_total += 1;
        if sockets.as_ref().is_some_and(|s| s.interrupted) {
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
            sockets,
            ports,
            sockstat,
            conntrack,
            snmp,
            limits,
            udp,
            namespaces,
            conntrack_breakdown,
            conntrack_projection,
            process: crate::sources::process::read()
                .inspect_err(|e| tracing::debug!("process_* metrics absent: {e}"))
                .ok(),
            sources: statuses,
            samples_total: self.samples_total,
            inconsistent_total: self.inconsistent_total,
            overdue: None,
        }
    }

    /// Samples and renders: the unit of work the loop runs on a blocking thread. The
    /// snapshot carries the interval in force after this sample (stretched if it was slow).
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
    ports: Option<&sources::ports::PortUsage>,
    sockets: Option<&sources::sockets::Sockets>,
    limits: Option<&sources::limits::Limits>,
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
    enabled.then_some(NetnsConfig { top_k: config.netns_top_k, conntrack })
}

/// Renders a snapshot for readers, once.
fn publish(snapshot: Snapshot, render: Renderer) -> Published {
    let rendered = Bytes::from(render(&snapshot));
    let rendered_gzip = gzip(&rendered);
    Published { snapshot: Arc::new(snapshot), rendered, rendered_gzip }
}

/// How long a sample may run before the watchdog calls it overdue: twice the interval in
/// force, and never less than [`MIN_SAMPLE_DEADLINE`].
pub fn sample_deadline(interval: Duration) -> Duration {
    (interval * 2).max(MIN_SAMPLE_DEADLINE)
}
pub const MIN_SAMPLE_DEADLINE: Duration = Duration::from_secs(5);

/// The latest snapshot again, marked overdue: the sample after it has run `running` and
/// is stuck in `source`, which reads as down. Readers see it at once (`/-/ready` 503,
/// `sockwatch_sample_overdue_seconds`), instead of the old numbers served as fresh.
fn overdue(last: &Snapshot, running: Duration, source: Option<Source>, render: Renderer) -> Published {
    let mut s = last.clone();
    s.overdue = Some(Overdue { running, source });
    for st in s.sources.iter_mut().filter(|st| Some(st.source) == source) {
        st.up = false;
        st.error = Some(format!("stuck: the read has not returned for {} s", running.as_secs()));
    }
    publish(s, render)
}

/// Where the conntrack table is heading, from the breakdown's TIME_WAIT entries, against
/// `nf_conntrack_max`. Only with the breakdown: the O(1) counters carry no timeouts.
fn project_conntrack(
    b: Option<&Breakdown>,
    ct: Option<&sources::conntrack::Conntrack>,
) -> Option<projection::Trajectory> {
    let (b, limit) = (b?, ct?.limit?);
    let held = b.total.saturating_sub(b.time_wait.total());
    Some(projection::project(held, &b.time_wait, limit, f64::from(b.time_wait_timeout)))
}

/// The range the socket walk classifies and projects against, from the limits source.
fn ephemeral_range(l: &sources::limits::Limits) -> EphemeralRange {
    EphemeralRange {
        low: l.port_range_low,
        high: l.port_range_high,
        capacity: l.port_range_size(),
        // Vendor kernels with a tunable TIME_WAIT; mainline's is compiled in.
        time_wait_seconds: l
            .tcp_tw_timeout
            .and_then(|s| u32::try_from(s).ok())
            .filter(|s| (1..=3600).contains(s))
            .unwrap_or(sources::ports::TIME_WAIT_SECONDS),
    }
}

fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(interval);
    // A slow sample delays the next tick instead of causing a burst of catch-up samples.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// Runs the sampler until `shutdown` flips, publishing into `tx`. A new configuration on
/// `config` (SIGHUP) is applied between samples.
pub async fn run(
    mut sampler: Sampler,
    tx: watch::Sender<Option<Arc<Published>>>,
    mut config: watch::Receiver<Config>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = ticker(sampler.interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            changed = config.changed() => {
                if changed.is_err() {
                    return; // the daemon is going away
                }
                let new = config.borrow_and_update().clone();
                if sampler.reconfigure(&new) {
                    ticks = ticker(sampler.interval);
                    ticks.tick().await; // the first tick is immediate: keep the rhythm
                }
                continue;
            }
            _ = shutdown.changed() => return,
        }
        let before = sampler.interval;
        let (progress, render) = (sampler.progress.clone(), sampler.render);
        let mut job = tokio::task::spawn_blocking(move || {
            crate::sched::throughput();
            let published = sampler.sample_and_render();
            (sampler, published)
        });
        let Some(outcome) = watchdog(&mut job, before, &progress, render, &tx, &mut shutdown).await else {
            return; // shutting down: do not wait for a stuck sample
        };
        match outcome {
            Ok((s, published)) => {
                sampler = s;
                if sampler.interval != before {
                    ticks = ticker(sampler.interval);
                    ticks.tick().await; // immediate: the next sample comes one interval from now
                }
                make_latest(&tx, published);
            }
            Err(e) => {
                // Only a bug can get here (a panic in a source). main exits non-zero
                // when this task ends, so the service manager restarts us.
                tracing::error!("sampler stopped: {e}");
                return;
            }
        }
    }
}

/// Waits for a sample. One past its deadline is logged once, and the latest snapshot is
/// re-published marked overdue every few seconds until the sample returns. No second
/// sample starts on top of it. `None`: shutdown came first (it does not wait for it).
async fn watchdog<T>(
    job: &mut tokio::task::JoinHandle<T>,
    interval: Duration,
    progress: &AtomicUsize,
    render: Renderer,
    tx: &watch::Sender<Option<Arc<Published>>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Result<T, tokio::task::JoinError>> {
    let (started, deadline) = (Instant::now(), sample_deadline(interval));
    let mut next_check = tokio::time::Instant::now() + deadline;
    let mut warned = false;
    let outcome = loop {
        tokio::select! {
            r = &mut *job => break r,
            _ = tokio::time::sleep_until(next_check) => {
                let (running, source) = (started.elapsed(), Source::from_code(progress.load(Ordering::Relaxed)));
                if !warned {
                    tracing::error!(
                        source = source.map_or("none", Source::name),
                        "a sample has run {} s, past its {} s deadline: a kernel read or dump is not returning; \
                         serving the previous sample marked overdue (/-/ready fails) until it does",
                        running.as_secs(),
                        deadline.as_secs()
                    );
                    warned = true;
                }
                let last = tx.borrow().as_ref().map(|p| p.snapshot.clone());
                if let Some(last) = last {
                    tx.send_replace(Some(Arc::new(overdue(&last, running, source, render))));
                }
                next_check += Duration::from_secs(5);
            }
            _ = shutdown.changed() => return None,
        }
    };
    if warned {
        tracing::warn!("the overdue sample returned after {} s", started.elapsed().as_secs());
    }
    Some(outcome)
}

/// Makes a sample the latest; the first one is logged (the daemon is ready from then).
fn make_latest(tx: &watch::Sender<Option<Arc<Published>>>, published: Published) {
    let published = Arc::new(published);
    tx.send_replace(Some(published.clone()));
    if published.snapshot.samples_total == 1 {
        let down: Vec<&str> = published.snapshot.sources.iter().filter(|s| !s.up).map(|s| s.source.name()).collect();
        tracing::info!(
            took_ms = published.snapshot.duration.as_millis() as u64,
            ?down,
            "first sample published, /metrics and /-/ready are live"
        );
    }
}

/// Dumps the conntrack table on its own (slower) interval into `slot`, so the walk of a
/// large table never delays the other sources or a scrape.
pub async fn run_breakdown(
    interval: Duration,
    attribution: AttributionConfig,
    proc_root: PathBuf,
    slot: BreakdownSlot,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = ticker(interval);
    let mut state = (CtDump::default(), Tracker::default());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let timeout = ct_breakdown::time_wait_timeout(&proc_root);
        let job = tokio::task::spawn_blocking(move || {
            crate::sched::throughput();
            let (dump, tracker) = &mut state;
            let result = tracker.observe(Source::ConntrackBreakdown, || dump.read(timeout, &attribution));
            (state, result)
        });
        match job.await {
            Ok((s, result)) => {
                state = s;
                if let Ok(mut g) = slot.lock() {
                    *g = Some(result);
                }
            }
            Err(e) => {
                tracing::error!("conntrack breakdown stopped: {e}");
                return;
            }
        }
    }
}

/// With `--conntrack.events`: the breakdown dumped every `events.resync`, and its
/// attribution kept current in between from ctnetlink's NEW and DESTROY events, read in
/// batches ([`ct_events::BATCH`]) and published every sampling interval of the running
/// configuration (`running`: a SIGHUP's new `--interval` applies here too). An overflow of
/// the event buffer triggers a resynchronising dump (at most one per
/// [`OVERFLOW_RESYNC_GAP`], so a host that overflows all the time is not dumped back to
/// back). Blocking: runs on its own thread until `shutdown` flips.
pub fn follow_breakdown(
    events: EventsConfig,
    attribution: AttributionConfig,
    running: watch::Receiver<Config>,
    proc_root: PathBuf,
    slot: BreakdownSlot,
    shutdown: watch::Receiver<bool>,
) {
    crate::sched::throughput();
    let mut tracker = Tracker::default();
    let mut dump = CtDump::default();
    let mut stats = EventStats::default();
    let mut sub: Option<CtEvents> = None;
    let mut latest: Option<(Option<Breakdown>, SourceStatus)> = None;
    // The next publish is the last one plus the interval in force now, so a reload
    // shortens (or lengthens) the wait already running.
    let (mut next_dump, mut last_publish): (Instant, Option<Instant>) = (Instant::now(), None);
    let mut last_overflow_dump: Option<Instant> = None;
    let publish = |latest: &Option<(Option<Breakdown>, SourceStatus)>| {
        if let (Ok(mut g), Some(l)) = (slot.lock(), latest) {
            *g = Some(l.clone());
        }
    };
    while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
        let now = Instant::now();
        if sub.is_none() {
            match CtEvents::subscribe(events.buffer) {
                Ok(s) => {
                    stats.buffer_bytes = s.granted as u64;
                    sub = Some(s);
                    next_dump = now;
                }
                Err(e) => {
                    let path = PathBuf::from("ctnetlink events");
                    latest =
                        Some(tracker.observe(Source::ConntrackBreakdown, || Err(SourceError::Io { path, source: e })));
                    publish(&latest);
                    std::thread::sleep(ct_events::BATCH * 10);
                    continue;
                }
            }
        }
        let Some(ev) = sub.as_mut() else { continue };
        if now >= next_dump {
            ev.discard(); // the dump replaces every count
            let timeout = ct_breakdown::time_wait_timeout(&proc_root);
            let (b, status) = tracker.observe(Source::ConntrackBreakdown, || dump.read(timeout, &attribution));
            stats.resyncs_total += u64::from(latest.as_ref().is_some_and(|(b, _)| b.is_some()) && b.is_some());
            // A failed dump leaves the counts unknown: tried again within a minute, not a
            // resync interval later.
            next_dump = now + if b.is_some() { events.resync } else { events.resync.min(FAILED_DUMP_RETRY) };
            latest = Some((b, status));
            last_publish = None; // publish at once
        }
        match ev.drain(&mut |delta, e| dump.apply(e, delta)) {
            Ok(n) => stats.events_total += n,
            Err(ct_events::EventError::Overflow) => {
                stats.overflows_total += 1;
                let earliest = last_overflow_dump.map_or(now, |t| t + OVERFLOW_RESYNC_GAP);
                next_dump = next_dump.min(earliest.max(now));
                last_overflow_dump = Some(next_dump);
            }
            Err(e) => {
                tracing::warn!("{e}; subscribing again");
                sub = None;
            }
        }
        if last_publish.is_none_or(|at| now >= at + running.borrow().interval) {
            if let Some((Some(b), _)) = latest.as_mut() {
                b.attribution = dump.attribution(&attribution);
                b.events = Some(stats.clone());
            }
            publish(&latest);
            last_publish = Some(now);
        }
        std::thread::sleep(ct_events::BATCH);
    }
}

/// When a failed dump of event mode is tried again.
const FAILED_DUMP_RETRY: Duration = Duration::from_secs(60);

/// Least time between two dumps that resynchronise after an event overflow.
const OVERFLOW_RESYNC_GAP: Duration = Duration::from_secs(5);

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
