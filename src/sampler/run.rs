//! The run loop: a sample every interval on a blocking thread, a watchdog for samples
//! that do not return, and a new configuration (SIGHUP) applied between samples.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::publish::{make_latest, overdue, sample_deadline, Published, Renderer};
use super::Sampler;
use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::snapshot::Source;

pub(super) fn ticker(interval: Duration) -> tokio::time::Interval {
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
    mut shutdown: Shutdown,
) {
    let mut ticks = ticker(sampler.interval);
    let mut refresh = ticker(super::REFRESH_EVERY);
    loop {
        let last = tx.borrow().as_ref().map(|p| p.snapshot.clone());
        let refreshing = last.as_ref().is_some_and(|s| sampler.wants_refresh(s));
        tokio::select! {
            _ = ticks.tick() => {}
            _ = refresh.tick(), if refreshing => {
                let Some(last) = last else { continue };
                match refresh_near(sampler, last, &tx, &mut shutdown).await {
                    Some(s) => sampler = s,
                    None => return,
                }
                continue;
            }
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
            _ = shutdown.recv() => return,
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

/// One refresh of the near namespaces between samples, on a blocking thread under the
/// same watchdog as a sample; what it finds is published at once. `None`: shutting down,
/// or the refresh panicked (a bug: logged, and the sampler task ends as for a sample).
async fn refresh_near(
    mut sampler: Sampler,
    last: Arc<crate::snapshot::Snapshot>,
    tx: &watch::Sender<Option<Arc<Published>>>,
    shutdown: &mut Shutdown,
) -> Option<Sampler> {
    let (progress, render) = (sampler.progress.clone(), sampler.render);
    let mut job = tokio::task::spawn_blocking(move || {
        let published = sampler.refresh_near(&last);
        (sampler, published)
    });
    match watchdog(&mut job, super::REFRESH_EVERY, &progress, render, tx, shutdown).await? {
        Ok((sampler, published)) => {
            if let Some(p) = published {
                tx.send_replace(Some(Arc::new(p)));
            }
            Some(sampler)
        }
        Err(e) => {
            tracing::error!("sampler stopped in a refresh between samples: {e}");
            None
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
    shutdown: &mut Shutdown,
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
            _ = shutdown.recv() => return None,
        }
    };
    if warned {
        tracing::warn!("the overdue sample returned after {} s", started.elapsed().as_secs());
    }
    Some(outcome)
}
