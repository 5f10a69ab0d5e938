//! The per-source tracker: times each read, counts failures, logs state changes once.

use std::time::Instant;

use crate::snapshot::{Source, SourceStatus};
use crate::sources::SourceError;

/// Per-source state the sampler keeps between samples.
#[derive(Debug, Default, Clone)]
pub(super) struct Tracker {
    errors_total: u64,
    /// The last up/down state, to log state changes once instead of every sample.
    was_up: Option<bool>,
}

impl Tracker {
    /// Times `read`, records its outcome and logs only when the source changes state.
    pub(super) fn observe<T>(
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
