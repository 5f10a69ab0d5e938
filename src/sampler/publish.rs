//! Publishing: what readers see (the snapshot, rendered and gzipped once per sample), how
//! it is handed to them atomically, and how an overdue sample is shown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::snapshot::{Overdue, Snapshot, Source};

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

pub(super) fn publish(snapshot: Snapshot, render: Renderer) -> Published {
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
pub(super) fn overdue(last: &Snapshot, running: Duration, source: Option<Source>, render: Renderer) -> Published {
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
/// Makes a sample the latest; the first one is logged (the daemon is ready from then).
pub(super) fn make_latest(tx: &watch::Sender<Option<Arc<Published>>>, published: Published) {
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
