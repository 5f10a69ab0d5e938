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
    let mut tracker = Tracker::default();
    let mut dump = CtDump::default();
    let mut stats = EventStats::default();
    let mut sub: Option<CtEvents> = None;
    let mut latest: Option<(Option<Breakdown>, SourceStatus)> = None;
    // The next publish is the last one plus the interval in force now, so a reload
    // shortens (or lengthens) the wait already running.
    let (mut next_dump, mut last_publish): (Instant, Option<Instant>) = (Instant::now(), None);
    let mut last_overflow_dump: Option<Instant> = None;
    // Entries older than the subscription send no DESTROY (nf_conntrack_events=2): followed
    // by id, and a resync runs when the soonest is due, at most one per interval.
    let mut predating = ct_events::Predating::new(events.resync);
    let follow_predating = ct_events::Predating::needed(&proc_root);
    let mut last_dump: Option<Instant> = None;
    let mut said_predating = false;
    let publish = |latest: &Option<(Option<Breakdown>, SourceStatus)>| {
        if let (Ok(mut g), Some(l)) = (slot.lock(), latest) {
            *g = Some(l.clone());
        }
    };
    while !shutdown.is_shutdown() {
        let now = Instant::now();
        if sub.is_none() {
            match CtEvents::subscribe(events.buffer) {
                Ok(s) => {
                    stats.buffer_bytes = s.granted as u64;
                    sub = Some(s);
                    next_dump = now;
                    predating.subscribed();
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
            let started = Instant::now();
            let follow = &mut predating;
            let (b, status) = tracker.observe(Source::ConntrackBreakdown, || {
                dump.read_visiting(timeout, &attribution, &mut |e| {
                    if follow_predating {
                        follow.visit(e, started)
                    }
                })
            });
            if b.is_none() {
                predating.failed();
            } else {
                predating.dumped();
                if follow_predating && !predating.is_empty() && !std::mem::replace(&mut said_predating, true) {
                    tracing::info!(
                        entries = predating.len(),
                        "conntrack events: {} entries predate the subscription and will send no DESTROY \
                         (net.netfilter.nf_conntrack_events is not 1); each is resynchronised when its timeout runs out",
                        predating.len()
                    );
                }
            }
            last_dump = Some(now);
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
        // The soonest predating entry due: a resync then, not before an interval after the last.
        if let (Some(due), Some(last)) = (predating.next_due(), last_dump) {
            next_dump = next_dump.min(due.max(last + running.borrow().interval));
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
