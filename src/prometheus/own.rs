//! sockwatch's own figures: each source's health, the sampler's, the build, and the process
//! under the names every Prometheus client library uses.

use prometheus::proto::MetricType;

use super::families::{f, Families};
use crate::snapshot::Snapshot;

/// The exporter's own health: always present.
pub(super) fn sources_and_sampler(out: &mut Families, s: &Snapshot) {
    use MetricType::{COUNTER, GAUGE};
    // Self-monitoring: always present.
    let per_source = |v: &dyn Fn(&crate::snapshot::SourceStatus) -> f64| -> Vec<(Vec<(&str, String)>, f64)> {
        s.sources.iter().map(|st| (vec![("source", st.source.name().to_owned())], v(st))).collect()
    };
    out.labelled(
        "sockwatch_source_up",
        "1 if the source was read successfully in the latest sample, 0 if not (its series are then absent).",
        GAUGE,
        per_source(&|st| if st.up { 1.0 } else { 0.0 }),
    );
    out.labelled(
        "sockwatch_source_errors_total",
        "Failed reads of the source since sockwatch started (an absent conntrack module is down, not an error).",
        COUNTER,
        per_source(&|st| f(st.errors_total)),
    );
    out.labelled(
        "sockwatch_source_duration_seconds",
        "Time the source took in the latest sample.",
        GAUGE,
        per_source(&|st| st.duration.as_secs_f64()),
    );
    let ts = s.timestamp.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    out.gauge("sockwatch_sample_timestamp_seconds", "Unix time the latest sample started; alert when it gets old.", ts);
    out.gauge(
        "sockwatch_sample_duration_seconds",
        "Time the latest sample took, all sources.",
        s.duration.as_secs_f64(),
    );
    out.gauge(
        "sockwatch_sample_interval_seconds",
        "Interval the sampler runs at: --interval, or longer while samples take more than --sampler.max-share of it (self-protection).",
        s.interval.as_secs_f64(),
    );
    out.gauge(
        "sockwatch_sample_overdue_seconds",
        "0, or how long the sample in progress has run past its deadline (twice the interval, at least 5 s): a kernel \
         read or netlink dump is not returning, and every other figure here is from the previous sample; the stuck \
         source reads as down.",
        s.overdue.map_or(0.0, |o| o.running.as_secs_f64()),
    );
    out.counter("sockwatch_samples_total", "Samples taken since sockwatch started.", f(s.samples_total));
    out.counter(
        "sockwatch_sample_inconsistent_total",
        "Samples whose socket dump the kernel flagged as interrupted (NLM_F_DUMP_INTR): the table changed during the walk, so counts may be off by a few sockets.",
        f(s.inconsistent_total),
    );
    out.labelled(
        "sockwatch_build_info",
        "Constant 1, labelled with the sockwatch version, the git revision it was built from (-dirty: with \
         uncommitted changes) and the rustc version that compiled it.",
        GAUGE,
        [(
            vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("revision", env!("SOCKWATCH_REVISION").to_owned()),
                ("rustc", env!("SOCKWATCH_RUSTC").to_owned()),
            ],
            1.0,
        )],
    );
}

/// sockwatch's own process, under the names every Prometheus client library uses.
pub(super) fn process(out: &mut Families, s: &Snapshot) {
    let Some(p) = &s.process else { return };
    out.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", p.cpu_seconds);
    out.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", f(p.resident_bytes));
    out.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", f(p.virtual_bytes));
    out.gauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    );
    out.gauge("process_open_fds", "Number of open file descriptors.", f(p.open_fds));
    out.gauge("process_max_fds", "Maximum number of open file descriptors (RLIMIT_NOFILE soft limit).", f(p.max_fds));
    out.gauge("process_threads", "Number of OS threads in the process.", f(p.threads));
}
