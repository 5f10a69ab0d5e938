//! The conntrack breakdown's own loops: the periodic dump (`run_breakdown`), or event mode
//! (`follow_breakdown`): a dump every resync interval kept current from ctnetlink events.
//! Both publish into the [`BreakdownSlot`] every sample reads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::run::ticker;
use super::tracker::Tracker;
use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::snapshot::{Source, SourceStatus};
use crate::sources::ctnetlink::attribution::AttributionConfig;
use crate::sources::ctnetlink::dump::{self as ct_breakdown, Breakdown, CtDump};
use crate::sources::ctnetlink::events::{self as ct_events, CtEvents, EventStats, EventsConfig};
use crate::sources::SourceError;

/// The latest breakdown result, written by [`run_breakdown`], read by every sample.
pub type BreakdownSlot = Arc<std::sync::Mutex<Option<(Option<Breakdown>, SourceStatus)>>>;

/// Dumps the conntrack table on its own (slower) interval into `slot`, so the walk of a
/// large table never delays the other sources or a scrape.
pub async fn run_breakdown(
    interval: Duration,
    attribution: AttributionConfig,
    proc_root: PathBuf,
    slot: BreakdownSlot,
    mut shutdown: Shutdown,
) {
    let mut ticker = ticker(interval);
    let mut state = (CtDump::default(), Tracker::default());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.recv() => return,
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
    shutdown: Shutdown,
) {
    crate::sched::throughput();
    let mut f = Follower {
        follow_predating: ct_events::Predating::needed(&proc_root),
        predating: ct_events::Predating::new(events.resync),
        events,
        attribution,
        running,
        proc_root,
        slot,
        tracker: Tracker::default(),
        dump: CtDump::default(),
        stats: EventStats::default(),
        sub: None,
        latest: None,
        next_dump: Instant::now(),
        last_publish: None,
        last_overflow_dump: None,
        last_dump: None,
        said_predating: false,
    };
    while !shutdown.is_shutdown() {
        let now = Instant::now();
        if !f.subscribed(now) {
            std::thread::sleep(ct_events::BATCH * 10);
            continue;
        }
        if now >= f.next_dump {
            f.resync(now);
        }
        f.drain(now);
        // The soonest predating entry due: a resync then, not before an interval after the last.
        if let (Some(due), Some(last)) = (f.predating.next_due(), f.last_dump) {
            f.next_dump = f.next_dump.min(due.max(last + f.running.borrow().interval));
        }
        if f.last_publish.is_none_or(|at| now >= at + f.running.borrow().interval) {
            f.publish(now);
        }
        std::thread::sleep(ct_events::BATCH);
    }
}

/// Event mode's state between batches.
struct Follower {
    events: EventsConfig,
    attribution: AttributionConfig,
    /// The running configuration: its interval paces the publishing.
    running: watch::Receiver<Config>,
    proc_root: PathBuf,
    slot: BreakdownSlot,
    tracker: Tracker,
    dump: CtDump,
    stats: EventStats,
    sub: Option<CtEvents>,
    latest: Option<(Option<Breakdown>, SourceStatus)>,
    next_dump: Instant,
    /// The next publish is the last one plus the interval in force now, so a reload
    /// shortens (or lengthens) the wait already running.
    last_publish: Option<Instant>,
    last_overflow_dump: Option<Instant>,
    /// Entries older than the subscription send no DESTROY (nf_conntrack_events=2):
    /// followed by id, and a resync runs when the soonest is due, at most one per interval.
    predating: ct_events::Predating,
    follow_predating: bool,
    last_dump: Option<Instant>,
    said_predating: bool,
}

impl Follower {
    /// Subscribes if not subscribed yet; a failure is the source's status, published.
    /// Whether there is a subscription to read.
    fn subscribed(&mut self, now: Instant) -> bool {
        if self.sub.is_some() {
            return true;
        }
        match CtEvents::subscribe(self.events.buffer) {
            Ok(s) => {
                self.stats.buffer_bytes = s.granted as u64;
                self.sub = Some(s);
                self.next_dump = now;
                self.predating.subscribed();
                true
            }
            Err(e) => {
                let path = PathBuf::from("ctnetlink events");
                self.latest =
                    Some(self.tracker.observe(Source::ConntrackBreakdown, || Err(SourceError::Io { path, source: e })));
                self.publish_latest();
                false
            }
        }
    }

    /// A full dump, which replaces every count, following the entries that predate the
    /// subscription; published at once.
    fn resync(&mut self, now: Instant) {
        if let Some(ev) = self.sub.as_mut() {
            ev.discard();
        }
        let timeout = ct_breakdown::time_wait_timeout(&self.proc_root);
        let started = Instant::now();
        let (follow, follow_predating, dump, attribution) =
            (&mut self.predating, self.follow_predating, &mut self.dump, &self.attribution);
        let (b, status) = self.tracker.observe(Source::ConntrackBreakdown, || {
            dump.read_visiting(timeout, attribution, &mut |e| {
                if follow_predating {
                    follow.visit(e, started)
                }
            })
        });
        if b.is_none() {
            self.predating.failed();
        } else {
            self.predating.dumped();
            if self.follow_predating && !self.predating.is_empty() && !std::mem::replace(&mut self.said_predating, true)
            {
                tracing::info!(
                    entries = self.predating.len(),
                    "conntrack events: {} entries predate the subscription and will send no DESTROY \
                     (net.netfilter.nf_conntrack_events is not 1); each is resynchronised when its timeout runs out",
                    self.predating.len()
                );
            }
        }
        self.last_dump = Some(now);
        self.stats.resyncs_total += u64::from(self.latest.as_ref().is_some_and(|(b, _)| b.is_some()) && b.is_some());
        // A failed dump leaves the counts unknown: tried again within a minute, not a
        // resync interval later.
        self.next_dump = now + if b.is_some() { self.events.resync } else { self.events.resync.min(FAILED_DUMP_RETRY) };
        self.latest = Some((b, status));
        self.last_publish = None; // publish at once
    }

    /// Applies a batch of events; an overflow brings the next resync forward (at most one
    /// per OVERFLOW_RESYNC_GAP), another error subscribes again.
    fn drain(&mut self, now: Instant) {
        let Some(ev) = self.sub.as_mut() else { return };
        let dump = &mut self.dump;
        match ev.drain(&mut |delta, e| dump.apply(e, delta)) {
            Ok(n) => self.stats.events_total += n,
            Err(ct_events::EventError::Overflow) => {
                self.stats.overflows_total += 1;
                let earliest = self.last_overflow_dump.map_or(now, |t| t + OVERFLOW_RESYNC_GAP);
                self.next_dump = self.next_dump.min(earliest.max(now));
                self.last_overflow_dump = Some(self.next_dump);
            }
            Err(e) => {
                tracing::warn!("{e}; subscribing again");
                self.sub = None;
            }
        }
    }

    /// The latest dump with the attribution the events kept current, into the slot.
    fn publish(&mut self, now: Instant) {
        if let Some((Some(b), _)) = self.latest.as_mut() {
            b.attribution = self.dump.attribution(&self.attribution);
            b.events = Some(self.stats.clone());
        }
        self.publish_latest();
        self.last_publish = Some(now);
    }

    fn publish_latest(&self) {
        if let (Ok(mut g), Some(l)) = (self.slot.lock(), &self.latest) {
            *g = Some(l.clone());
        }
    }
}

/// When a failed dump of event mode is tried again.
const FAILED_DUMP_RETRY: Duration = Duration::from_secs(60);

/// Least time between two dumps that resynchronise after an event overflow.
const OVERFLOW_RESYNC_GAP: Duration = Duration::from_secs(5);
