//! Renders a [`Snapshot`] as Prometheus text exposition format (0.0.4).
//!
//! The metric names and labels here are a contract: dashboards, alert rules and the
//! Munin side depend on them. Every HELP text says what the number means and where in
//! the kernel it comes from. A source that is down contributes no series at all.

use prometheus::proto::MetricType;
use prometheus::{Encoder, TextEncoder};

use super::families::{f, opt, Families};

use crate::snapshot::Snapshot;
use crate::sources::ctnetlink::dump::CT_TCP_STATES;
use crate::sources::tcp::sockets::TCP_STATES;

/// Renders the snapshot. Called once per sample by the sampler, never per scrape.
pub fn render(s: &Snapshot) -> Vec<u8> {
    let mut out = Families::default();
    sockets(&mut out, s);
    super::ports::ports(&mut out, s);
    sockstat(&mut out, s);
    conntrack(&mut out, s);
    conntrack_breakdown(&mut out, s);
    super::ct_attribution::families(&mut out, s);
    conntrack_projection(&mut out, s);
    snmp(&mut out, s);
    super::udp::sockets(&mut out, s);
    super::udp::counters(&mut out, s);
    super::netns::render(&mut out, s);
    super::resources::listen_path(&mut out, s);
    super::resources::descriptors(&mut out, s);
    super::resources::socket_memory(&mut out, s);
    super::procfs::softnet(&mut out, s);
    super::resources::neighbours(&mut out, s);
    limits(&mut out, s);
    self_monitoring(&mut out, s);
    process(&mut out, s);
    let mut buf = Vec::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode(&out.0, &mut buf) {
        // Only a bug in this file can get here (an invalid name); serve what was written.
        tracing::error!("rendering Prometheus text: {e}");
    }
    spell_infinities(buf)
}

/// sockwatch's own process, under the names every Prometheus client library uses.
fn process(out: &mut Families, s: &Snapshot) {
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

/// TCP sockets by family and state.
fn sockets(out: &mut Families, s: &Snapshot) {
    use MetricType::GAUGE;
    if let Some(sk) = &s.sockets {
        let series = [("ipv4", &sk.states.ipv4), ("ipv6", &sk.states.ipv6)].into_iter().flat_map(|(fam, counts)| {
            (1..TCP_STATES.len())
                .map(move |i| (vec![("family", fam.to_owned()), ("state", TCP_STATES[i].to_owned())], f(counts[i])))
        });
        out.labelled(
            "sockwatch_tcp_sockets",
            "TCP sockets by address family and state, from one inet_diag (NETLINK_SOCK_DIAG) dump of both families. \
             TIME_WAIT sockets are reported in their substate, as ss shows them; half-open request sockets count as syn_recv; close counts sockets bound but neither connected nor listening (Linux 6.5+).",
            GAUGE,
            series,
        );
    }
}

/// The kernel's socket totals.
fn sockstat(out: &mut Families, s: &Snapshot) {
    use MetricType::GAUGE;
    if let Some(st) = &s.sockstat {
        out.labelled(
            "sockwatch_sockstat_tcp_sockets",
            "TCP socket totals kept by the kernel, from /proc/net/sockstat (inuse adds TCP6 inuse from sockstat6). \
             orphan: closed by the application but still held; tw: TIME_WAIT; alloc: allocated, all states.",
            GAUGE,
            [("inuse", st.inuse), ("orphan", st.orphan), ("tw", st.tw), ("alloc", st.alloc)]
                .map(|(k, v)| (vec![("kind", k.to_owned())], f(v))),
        );
        out.gauge(
            "sockwatch_sockstat_tcp_memory_bytes",
            "Memory used by TCP socket buffers, host-wide: /proc/net/sockstat TCP mem (pages) times the page size. Compare with net.ipv4.tcp_mem.",
            f(st.mem_bytes),
        );
    }
}

/// Conntrack counters.
fn conntrack(out: &mut Families, s: &Snapshot) {
    if let Some(ct) = &s.conntrack {
        out.gauge(
            "sockwatch_conntrack_entries",
            "Connection tracking entries in this network namespace, from /proc/sys/net/netfilter/nf_conntrack_count. \
             At nf_conntrack_max the kernel drops new packets (\"nf_conntrack: table full, dropping packet\"; on Linux 6.x \
             \"table full in netns N\").",
            f(ct.entries),
        );
        out.gauge(
            "sockwatch_conntrack_entries_limit",
            "Maximum conntrack entries, from /proc/sys/net/netfilter/nf_conntrack_max (global).",
            opt(ct.limit),
        );
        out.gauge(
            "sockwatch_conntrack_buckets",
            "Conntrack hash table size, from /proc/sys/net/netfilter/nf_conntrack_buckets. Raise it together with nf_conntrack_max.",
            opt(ct.buckets),
        );
        if let Some(cs) = &ct.stats {
            let src = "summed over CPUs from /proc/net/stat/nf_conntrack";
            out.counter(
                "sockwatch_conntrack_dropped_total",
                &format!("Packets dropped because a conntrack entry could not be created (table full), {src}."),
                opt(cs.drop),
            );
            out.counter(
                "sockwatch_conntrack_early_dropped_total",
                &format!("Conntrack entries evicted early to make room in a full table, {src}."),
                opt(cs.early_drop),
            );
            out.counter(
                "sockwatch_conntrack_insert_failed_total",
                &format!("Conntrack entries that could not be inserted (clash on insert), {src}."),
                opt(cs.insert_failed),
            );
            out.counter(
                "sockwatch_conntrack_invalid_total",
                &format!("Packets conntrack could not track (invalid state or malformed), {src}."),
                opt(cs.invalid),
            );
            out.counter(
                "sockwatch_conntrack_search_restart_total",
                &format!("Conntrack hash lookups restarted because of a concurrent resize or deletion, {src}."),
                opt(cs.search_restart),
            );
        }
    }
}

/// The ctnetlink breakdown.
fn conntrack_breakdown(out: &mut Families, s: &Snapshot) {
    if let Some(b) = &s.conntrack_breakdown {
        let src =
            "from a ctnetlink dump on its own interval (--conntrack.breakdown-interval), never /proc/net/nf_conntrack";
        out.labelled(
            "sockwatch_conntrack_tcp_entries",
            &format!("TCP conntrack entries by conntrack state, {src}."),
            MetricType::GAUGE,
            CT_TCP_STATES.iter().zip(b.tcp).map(|(st, n)| (vec![("state", (*st).to_owned())], f(n))),
        );
        out.labelled(
            "sockwatch_conntrack_protocol_entries",
            &format!("Conntrack entries by protocol, {src}."),
            MetricType::GAUGE,
            [("tcp", b.tcp_total()), ("udp", b.udp), ("icmp", b.icmp), ("other", b.other)]
                .map(|(p, n)| (vec![("protocol", p.to_owned())], f(n))),
        );
        out.gauge(
            "sockwatch_conntrack_assured_entries",
            &format!("Conntrack entries that saw traffic both ways (ASSURED: not evicted by early drop), {src}."),
            f(b.assured),
        );
        out.gauge(
            "sockwatch_conntrack_nat_entries",
            &format!("Conntrack entries whose reply addresses differ from the original's (NAT, as fw_conntrack counts), {src}."),
            f(b.nated),
        );
    }
}

/// Where the conntrack table is heading (with the breakdown).
fn conntrack_projection(out: &mut Families, s: &Snapshot) {
    if let (Some(p), Some(limit)) = (&s.conntrack_projection, s.conntrack.as_ref().and_then(|c| c.limit)) {
        let src = "from the TCP TIME_WAIT entries' remaining timeouts in the ctnetlink breakdown dump (as old as \
                   --conntrack.breakdown-interval)";
        out.gauge(
            "sockwatch_conntrack_time_wait_rate",
            &format!(
                "Tracked TCP connections entering conntrack TIME_WAIT per second over the youngest sixth of \
                 nf_conntrack_tcp_timeout_time_wait (20 s at the default 120 s), {src}."
            ),
            p.close_rate,
        );
        out.gauge(
            "sockwatch_conntrack_projected_utilization",
            &format!(
                "Where the conntrack table settles if the current close rate holds: entries not in TIME_WAIT plus that \
                 rate x nf_conntrack_tcp_timeout_time_wait, divided by nf_conntrack_max (not capped), {src}."
            ),
            // nf_conntrack_max 0 is no limit: nothing to fill (as sockwatch_conntrack_utilization).
            crate::derived::ratio(p.projected, limit as f64, crate::derived::AtZero::Unlimited),
        );
        out.gauge(
            "sockwatch_conntrack_seconds_to_full",
            &format!(
                "Seconds until the conntrack table reaches nf_conntrack_max at the current close rate and its trend, \
                 as TIME_WAIT entries time out; 0 when full now, +Inf when not within {} s, {src}.",
                crate::sources::tcp::projection::HORIZON_SECONDS
            ),
            p.seconds_to_exhaustion.unwrap_or(f64::INFINITY),
        );
    }
}

/// TCP counters.
fn snmp(out: &mut Families, s: &Snapshot) {
    if let Some(t) = &s.snmp {
        let snmp = "from /proc/net/snmp (Tcp:)";
        let ext = "from /proc/net/netstat (TcpExt:)";
        for (name, help, value) in [
            ("sockwatch_tcp_active_opens_total", format!("Outgoing TCP connections started, ActiveOpens {snmp}."), t.active_opens),
            ("sockwatch_tcp_passive_opens_total", format!("Incoming TCP connections accepted, PassiveOpens {snmp}."), t.passive_opens),
            ("sockwatch_tcp_attempt_fails_total", format!("TCP connection attempts that failed, AttemptFails {snmp}."), t.attempt_fails),
            ("sockwatch_tcp_estab_resets_total", format!("TCP connections reset from ESTABLISHED or CLOSE_WAIT, EstabResets {snmp}."), t.estab_resets),
            ("sockwatch_tcp_retrans_segments_total", format!("TCP segments retransmitted, RetransSegs {snmp}."), t.retrans_segs),
            (
                "sockwatch_tcp_time_wait_overflow_total",
                format!("TIME_WAIT sockets destroyed at once because tcp_max_tw_buckets was reached, TCPTimeWaitOverflow {ext}."),
                t.time_wait_overflow,
            ),
            ("sockwatch_tcp_listen_overflows_total", format!("Connections dropped because a listener's accept queue was full, ListenOverflows {ext}."), t.listen_overflows),
            ("sockwatch_tcp_listen_drops_total", format!("SYNs dropped at a listener for any reason (overflows included), ListenDrops {ext}."), t.listen_drops),
            ("sockwatch_tcp_aborts_on_memory_total", format!("TCP connections aborted for lack of memory or too many orphans, TCPAbortOnMemory {ext}."), t.abort_on_memory),
        ] {
            out.counter(name, &help, opt(value));
        }
    }
}

/// The sysctl limits.
fn limits(out: &mut Families, s: &Snapshot) {
    if let Some(l) = &s.limits {
        let sysctl = |name: &str| format!("/proc/sys/net/ipv4/{name}");
        out.gauge(
            "sockwatch_ephemeral_port_range_low",
            &format!("Lowest local port connect() may pick, from {}.", sysctl("ip_local_port_range")),
            f(l.port_range_low.into()),
        );
        out.gauge(
            "sockwatch_ephemeral_port_range_high",
            &format!("Highest local port connect() may pick, from {}.", sysctl("ip_local_port_range")),
            f(l.port_range_high.into()),
        );
        out.gauge(
            "sockwatch_ephemeral_port_range_size",
            "Ephemeral ports available per destination (local IP, remote IP, remote port): ports in ip_local_port_range minus ip_local_reserved_ports inside it.",
            f(l.port_range_size().into()),
        );
        out.gauge(
            "sockwatch_tcp_max_tw_buckets",
            &format!(
                "Limit on TIME_WAIT sockets; beyond it they are destroyed early, from {}.",
                sysctl("tcp_max_tw_buckets")
            ),
            opt(l.tcp_max_tw_buckets),
        );
        out.gauge(
            "sockwatch_tcp_fin_timeout_seconds",
            &format!(
                "FIN_WAIT_2 timeout of orphaned sockets, from {}. It does NOT change the 60 s TIME_WAIT length.",
                sysctl("tcp_fin_timeout")
            ),
            opt(l.tcp_fin_timeout),
        );
        out.gauge(
            "sockwatch_tcp_tw_reuse",
            &format!(
                "TIME_WAIT reuse for outgoing connections: 0 off, 1 on, 2 loopback only, from {}.",
                sysctl("tcp_tw_reuse")
            ),
            opt(l.tcp_tw_reuse),
        );
        out.gauge(
            "sockwatch_tcp_max_orphans",
            &format!(
                "Limit on orphaned sockets, from {} (not visible inside a network namespace).",
                sysctl("tcp_max_orphans")
            ),
            opt(l.tcp_max_orphans),
        );
        out.gauge(
            "sockwatch_tcp_max_syn_backlog",
            &format!("Limit on half-open connections per listener, from {}.", sysctl("tcp_max_syn_backlog")),
            opt(l.tcp_max_syn_backlog),
        );
        out.gauge(
            "sockwatch_somaxconn",
            "Upper bound on a listener's accept queue (listen() backlog), from /proc/sys/net/core/somaxconn.",
            opt(l.somaxconn),
        );
        out.gauge(
            "sockwatch_tcp_tw_timeout_seconds",
            &format!("TIME_WAIT length on vendor kernels that make it tunable, from {}; absent on mainline kernels, where it is fixed at 60 s.", sysctl("tcp_tw_timeout")),
            opt(l.tcp_tw_timeout),
        );
    }
}

/// The exporter's own health: always present.
fn self_monitoring(out: &mut Families, s: &Snapshot) {
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

/// The prometheus crate writes values with Rust's `f64` formatting, `inf` and `-inf`; the
/// exposition format (and OpenMetrics) spell them `+Inf` and `-Inf`. A value is the last
/// field of its line, and a newline inside a label value is escaped, so " inf\n" can only
/// be a value.
fn spell_infinities(buf: Vec<u8>) -> Vec<u8> {
    if !buf.windows(5).any(|w| w == b" inf\n" || w == b"-inf\n") {
        return buf;
    }
    let text = String::from_utf8_lossy(&buf);
    text.replace(" inf\n", " +Inf\n").replace(" -inf\n", " -Inf\n").into_bytes()
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
