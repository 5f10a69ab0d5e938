//! Renders a [`Snapshot`] as Prometheus text exposition format (0.0.4).
//!
//! The metric names and labels here are a contract: dashboards, alert rules and the
//! Munin side depend on them. Every HELP text says what the number means and where in
//! the kernel it comes from. A source that is down contributes no series at all.

use prometheus::proto::MetricType;
use prometheus::{Encoder, TextEncoder};

use super::families::Families;

use crate::derived;
use crate::snapshot::Snapshot;
use crate::sources::ct_breakdown::CT_TCP_STATES;
use crate::sources::ports::{self, PortUsage};
use crate::sources::sockets::TCP_STATES;

fn f(v: u64) -> f64 {
    v as f64
}
fn opt(v: Option<u64>) -> Option<f64> {
    v.map(f)
}

fn render_ports(out: &mut Families, s: &Snapshot, pu: &PortUsage) {
    if let (Some(e), Some(utilization), Some(projected)) =
        (&pu.ephemeral, derived::port_utilization(s), derived::projected_port_utilization(s))
    {
        ephemeral_destinations(out, e);
        ephemeral_summary(out, e, utilization, projected);
    }
    listening(out, pu);
}

/// The labels of one destination of ephemeral ports.
fn destination_labels(d: &ports::Destination) -> Vec<(&'static str, String)> {
    vec![
        ("local_ip", d.local_ip.to_string()),
        ("remote_ip", d.remote_ip.to_string()),
        ("remote_port", d.remote_port.to_string()),
    ]
}

/// The busiest destinations: ports held, where each settles, how fast each closes.
fn ephemeral_destinations(out: &mut Families, e: &ports::Ephemeral) {
    use MetricType::GAUGE;
    out.labelled(
        "sockwatch_ephemeral_ports_used",
        "Local ports held toward one destination (local IP, remote IP, remote port) by client-side sockets in any \
         state from SYN_SENT to TIME_WAIT, plus bound-only sockets; connect() fails with EADDRNOTAVAIL when it \
         reaches sockwatch_ephemeral_port_range_size. Busiest destinations only (--ports.top-k per family), from the \
         inet_diag dump.",
        GAUGE,
        e.top.iter().map(|d| (destination_labels(d), f(d.used))),
    );
    out.labelled(
        "sockwatch_ephemeral_ports_projected",
        "Ports this destination settles at if its current close rate holds: sockets not in TIME_WAIT, plus bound-only \
         sockets, plus connections closed per second x the TIME_WAIT length (60 s). Same destinations as \
         sockwatch_ephemeral_ports_used, plus the one heading for exhaustion soonest. From the TIME_WAIT timers \
         (idiag_expires) of the same inet_diag dump.",
        GAUGE,
        e.top.iter().map(|d| (destination_labels(d), d.projected)),
    );
    out.labelled(
        "sockwatch_ephemeral_ports_close_rate",
        "Connections toward this destination that this host closed first, per second, over the last 10 s: \
         TIME_WAIT sockets younger than 10 s by their remaining lifetime (idiag_expires). Each holds its port 60 s.",
        GAUGE,
        e.top.iter().map(|d| (destination_labels(d), d.close_rate)),
    );
}

/// The host-wide figures: the busiest's utilisation, where the worst is heading, and
/// how complete the per-destination view is.
fn ephemeral_summary(out: &mut Families, e: &ports::Ephemeral, utilization: f64, projected: f64) {
    out.gauge(
        "sockwatch_ephemeral_port_projected_utilization_max",
        "Highest projected use over all destinations divided by sockwatch_ephemeral_port_range_size: where the \
         worst destination settles if its current close rate holds (not capped: 1.5 means the rate needs 150 % of \
         the range). At 1 or more connect() to it will fail with EADDRNOTAVAIL within a TIME_WAIT length.",
        projected,
    );
    out.gauge(
        "sockwatch_ephemeral_port_seconds_to_exhaustion",
        &format!(
            "Seconds until the first destination has every ephemeral port held, at its current close rate and its \
             trend (a rise beyond counting noise), as its TIME_WAIT timers run out; 0 when one is full now, +Inf when \
             none is within {} s.",
            crate::sources::projection::HORIZON_SECONDS
        ),
        e.seconds_to_exhaustion().unwrap_or(f64::INFINITY),
    );
    out.gauge(
        "sockwatch_ephemeral_port_utilization_max",
        "Busiest destination's ephemeral port use divided by sockwatch_ephemeral_port_range_size. At 1, connect() \
         to that destination fails with EADDRNOTAVAIL; not capped: above 1 when reserved ports shrank the range \
         under ports already held.",
        utilization,
    );
    out.gauge(
        "sockwatch_ephemeral_port_destinations",
        &format!(
            "Distinct destinations (local IP, remote IP, remote port) holding ephemeral ports; only the busiest are \
             exported. At most {} are tracked per sample (bounded memory): past that, see \
             sockwatch_ephemeral_port_untracked_sockets.",
            ports::MAX_TRACKED
        ),
        f(e.destinations),
    );
    out.gauge(
        "sockwatch_ephemeral_port_untracked_sockets",
        &format!(
            "Client-side sockets toward destinations not tracked in this sample because {} destinations already were \
             (memory bound). 0 on almost every host; when above 0, sockwatch_ephemeral_port_destinations is a lower \
             bound. Busy destinations are still tracked exactly: the dump comes in hash order, so they are met early.",
            ports::MAX_TRACKED
        ),
        f(e.untracked),
    );
    out.gauge(
        "sockwatch_ephemeral_ports_bound",
        "Ephemeral ports held by sockets bound but neither connected nor listening (bind() before connect() without \
         IP_BIND_ADDRESS_NO_PORT); each holds its port for every destination. Reported by Linux 6.5 and later.",
        f(e.bound),
    );
}

/// Server-side sockets per listening port, and the accept queues.
fn listening(out: &mut Families, pu: &PortUsage) {
    use MetricType::GAUGE;
    out.labelled(
        "sockwatch_tcp_port_sockets",
        "Server-side TCP sockets of a listening port by state (what `netstat -na | grep :PORT | grep STATE | wc -l` \
         counts), for the busiest listening ports (--listeners.top-k) and those named in --listeners.ports.",
        GAUGE,
        pu.ports.iter().flat_map(|p| {
            ports::SERVER_STATES.iter().map(move |&st| {
                (
                    vec![("port", p.port.to_string()), ("state", ports::state_name(st).to_owned())],
                    f(p.states[usize::from(st)]),
                )
            })
        }),
    );
    let listener_labels =
        |l: &ports::ListenQueue| vec![("local_ip", l.local_ip.to_string()), ("port", l.port.to_string())];
    out.labelled(
        "sockwatch_listen_queue_length",
        "Connections waiting in a listener's accept queue (inet_diag idiag_rqueue of the LISTEN socket; SO_REUSEPORT \
         groups summed). Fullest listeners only (--listeners.top-k).",
        GAUGE,
        pu.listeners.iter().map(|l| (listener_labels(l), f(l.length))),
    );
    out.labelled(
        "sockwatch_listen_queue_limit",
        "Accept queue limit of a listener: its listen() backlog capped by somaxconn (inet_diag idiag_wqueue).",
        GAUGE,
        pu.listeners.iter().map(|l| (listener_labels(l), f(l.limit))),
    );
    out.gauge(
        "sockwatch_listen_queue_utilization_max",
        "Highest accept queue length / limit over all listener sockets. The kernel admits one connection beyond the \
         backlog, so a full queue reads slightly above 1; new connections are then dropped (ListenOverflows).",
        pu.listen_utilization_max,
    );
    out.gauge(
        "sockwatch_listeners",
        "Listening addresses (address, port) in all; only the fullest are exported.",
        f(pu.listener_count),
    );
}

/// Renders the snapshot. Called once per sample by the sampler, never per scrape.
pub fn render(s: &Snapshot) -> Vec<u8> {
    let mut out = Families::default();
    sockets(&mut out, s);
    ports(&mut out, s);
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
    super::resources::softnet(&mut out, s);
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

/// Ephemeral ports, per-port states and accept queues.
fn ports(out: &mut Families, s: &Snapshot) {
    if let Some(pu) = &s.ports {
        render_ports(out, s, pu);
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
                crate::sources::projection::HORIZON_SECONDS
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
mod tests {
    //! A golden test: a hand-built snapshot with every part present, rendered, against
    //! `tests/fixtures/prometheus/golden.txt` byte for byte, so that a refactor cannot
    //! change the output (names, labels and their order, HELP, TYPE, escaping) unnoticed.
    //! `SOCKWATCH_BLESS=1 cargo test golden` rewrites the file after a deliberate change.

    use std::time::{Duration, SystemTime};

    use super::{render, spell_infinities};
    use crate::snapshot::{Overdue, Snapshot, Source, SourceStatus};
    use crate::sources::conntrack::{Conntrack, ConntrackStats};
    use crate::sources::ct_attribution::{Attribution, DestKey, NatKey};
    use crate::sources::ct_breakdown::Breakdown;

    fn attribution() -> Attribution {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        Attribution {
            sources: vec![(ip("10.0.0.7"), 61), (ip("2001:db8::5"), 3)],
            destinations: vec![(DestKey { addr: ip("192.0.2.10"), port: 443, proto: 6 }, 58)],
            nat: vec![(
                NatKey { nat_ip: ip("203.0.113.1"), remote_ip: ip("192.0.2.10"), remote_port: 443, proto: 6 },
                50,
            )],
            distinct_sources: 9,
            distinct_destinations: 4,
            nat_mappings: 1,
            nat_entries: 50,
            nat_ports: 100,
            ..Attribution::default()
        }
    }
    use crate::sources::limits::Limits;
    use crate::sources::netns::DeepReading;
    use crate::sources::netns::{Namespace, Namespaces, NsCounters, Owner};
    use crate::sources::ports::EphemeralRange;
    use crate::sources::ports::{Destination, Ephemeral, ListenQueue, PortStates, PortUsage};
    use crate::sources::procfs::fds::{Descriptors, FileHandles, ProcessFds};
    use crate::sources::procfs::neighbour::{NeighbourTable, Neighbours};
    use crate::sources::procfs::sockmem::{ProtocolMemory, SocketMemory};
    use crate::sources::procfs::softnet::{CpuBacklog, Softnet};
    use crate::sources::projection::{Trajectory, TwHistogram};
    use crate::sources::snmp::{SnmpCounters, UdpMib};
    use crate::sources::sockets::{Sockets, TcpStates};
    use crate::sources::sockstat::Sockstat;
    use crate::sources::tcp::listeners::{ListenPath, Listener};
    use crate::sources::udp::{Udp, UdpPort};

    fn dest(remote: &str, port: u16, used: u64, rate: f64, projected: f64, seconds: Option<f64>) -> Destination {
        Destination {
            local_ip: "10.0.0.1".parse().unwrap(),
            remote_ip: remote.parse().unwrap(),
            remote_port: port,
            used,
            close_rate: rate,
            projected,
            seconds_to_exhaustion: seconds,
        }
    }

    fn snapshot() -> Snapshot {
        let mut states = TcpStates::default();
        for (i, n) in [0, 120, 3, 4, 5, 6, 2400, 7, 8, 9, 10, 11, 0].into_iter().enumerate() {
            states.ipv4[i] = n;
            states.ipv6[i] = n / 2;
        }
        let heading = dest("10.0.0.2", 80, 2400, 106.0, 6360.0, Some(38.0));
        let mut tcp = [0; 10];
        tcp[3] = 70;
        tcp[7] = 30;
        let mut time_wait = TwHistogram::default();
        time_wait.counts[11] = 30;
        Snapshot {
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_646_199),
            duration: Duration::from_millis(12),
            interval: Duration::from_secs(10),
            sockets: Some(Sockets { states, interrupted: false }),
            ports: Some(PortUsage {
                ephemeral: Some(Ephemeral {
                    top: vec![heading.clone(), dest("2001:db8::9", 443, 3, 0.0, 3.0, None)],
                    destinations: 2,
                    untracked: 0,
                    bound: 1,
                    busiest: 2400,
                    projected_max: 6360.0,
                    worst: Some(heading),
                }),
                ports: vec![PortStates { port: 8080, states: [0, 5, 0, 1, 0, 0, 2, 0, 1, 0, 0, 0, 0] }],
                listeners: vec![ListenQueue {
                    local_ip: "0.0.0.0".parse().unwrap(),
                    port: 8080,
                    length: 3,
                    limit: 128,
                }],
                listener_count: 1,
                listen_utilization_max: 3.0 / 128.0,
            }),
            sockstat: Some(Sockstat {
                inuse: 130,
                orphan: 1,
                tw: 3600,
                alloc: 140,
                mem_bytes: 4096 * 268,
                udp_inuse: [Some(12), Some(3)],
            }),
            conntrack: Some(Conntrack {
                entries: 100,
                limit: Some(262_144),
                buckets: Some(65_536),
                stats: Some(ConntrackStats {
                    entries: Some(100),
                    drop: Some(1),
                    early_drop: Some(2),
                    insert_failed: Some(3),
                    invalid: Some(4),
                    search_restart: Some(5),
                    found: Some(6),
                    insert: Some(7),
                    clash_resolve: None,
                }),
            }),
            snmp: Some(SnmpCounters {
                active_opens: Some(10),
                passive_opens: Some(20),
                attempt_fails: Some(1),
                estab_resets: Some(2),
                retrans_segs: Some(3),
                time_wait_overflow: Some(0),
                listen_overflows: Some(4),
                listen_drops: Some(5),
                abort_on_memory: None,
                syncookies_sent: Some(9),
                memory_pressures: Some(1),
                udp: vec![
                    UdpMib {
                        family: "ipv4",
                        protocol: "udp",
                        in_datagrams: Some(1500),
                        no_ports: Some(12),
                        in_errors: Some(7),
                        rcvbuf_errors: Some(5),
                        sndbuf_errors: Some(1),
                        mem_errors: Some(0),
                    },
                    UdpMib { family: "ipv6", protocol: "udplite", in_datagrams: Some(3), ..UdpMib::default() },
                ],
                ..SnmpCounters::default()
            }),
            conntrack_breakdown: Some(Breakdown {
                tcp,
                udp: 5,
                icmp: 1,
                other: 0,
                assured: 60,
                nated: 2,
                total: 106,
                time_wait,
                time_wait_timeout: 120,
                attribution: attribution(),
                events: Some(crate::sources::ct_events::EventStats {
                    events_total: 5120,
                    overflows_total: 1,
                    resyncs_total: 2,
                    buffer_bytes: 33554432,
                }),
                ..Breakdown::default()
            }),
            conntrack_projection: Some(Trajectory {
                close_rate: 1.5,
                trend: 0.0,
                projected: 256.0,
                seconds_to_exhaustion: None,
            }),
            limits: Some(Limits {
                port_range_low: 40000,
                port_range_high: 45999,
                reserved_in_range: 0,
                tcp_max_tw_buckets: Some(131_072),
                tcp_fin_timeout: Some(60),
                tcp_tw_reuse: Some(2),
                tcp_max_orphans: Some(65_536),
                tcp_max_syn_backlog: Some(512),
                somaxconn: Some(4096),
                tcp_tw_timeout: None,
            }),
            udp: Some(Udp {
                sockets: [12, 3],
                ports: vec![
                    UdpPort {
                        local_ip: "0.0.0.0".parse().unwrap(),
                        port: 53,
                        sockets: 2,
                        drops_total: 1234,
                        drops_recent: 34,
                        queue_bytes: 212_992,
                        buffer_bytes: 425_984,
                    },
                    UdpPort {
                        local_ip: "::1".parse().unwrap(),
                        port: 8125,
                        sockets: 1,
                        drops_total: 0,
                        drops_recent: 0,
                        queue_bytes: 0,
                        buffer_bytes: 212_992,
                    },
                ],
                drops_total: 1240,
                queue_utilization_max: 0.5,
                untracked: 0,
                interrupted: false,
            }),
            listen_path: Some(ListenPath {
                top: vec![Listener {
                    local_ip: "0.0.0.0".parse().unwrap(),
                    port: 8080,
                    drops: 42,
                    accept_queue: 3,
                    backlog: 128,
                    syn_queue: 1,
                }],
                listeners: 1,
                drops: 42,
                syn_utilization_max: 1.0 / 128.0,
            }),
            descriptors: Some(Descriptors {
                host: Some(FileHandles { allocated: 389, max: 2_466_093 }),
                top: vec![ProcessFds {
                    pid: 4242,
                    command: "nginx \"w\"".into(),
                    open: 1000,
                    limit: 1024,
                    owner: Owner { container_id: None, runtime: None, pod_uid: Some("0f9b2c4e".into()) },
                }],
                processes: 120,
                unreadable: 3,
                method: "stat",
            }),
            socket_memory: Some(SocketMemory {
                tcp: ProtocolMemory {
                    used_bytes: 4096 * 103,
                    pressure: Some(false),
                    limits: Some([4096, 8192, 16384]),
                },
                udp: ProtocolMemory { used_bytes: 8192, pressure: None, limits: None },
            }),
            softnet: Some(Softnet {
                cpus: vec![
                    CpuBacklog { cpu: 0, processed: 1000, dropped: 0, time_squeeze: 1, backlog: Some(0) },
                    CpuBacklog { cpu: 2, processed: 900, dropped: 7, time_squeeze: 2, backlog: Some(250) },
                ],
                max_backlog: Some(1000),
                numbered: true,
            }),
            neighbours: Some(Neighbours {
                tables: vec![NeighbourTable {
                    table: "arp",
                    entries: 900,
                    forced_gc_runs: Some(5),
                    table_fulls: Some(0),
                    gc_thresh1: Some(128),
                    gc_thresh2: Some(512),
                    gc_thresh3: Some(1024),
                }],
            }),
            namespaces: Some(Namespaces {
                count: 3,
                unreadable: 1,
                top: vec![
                    Namespace {
                        inode: 4026532247,
                        pid: Some(4242),
                        name: None,
                        owner: Owner {
                            container_id: Some(
                                "4f1c0e2a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e".into(),
                            ),
                            runtime: Some("containerd"),
                            pod_uid: Some("0f9b2c4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f".into()),
                        },
                        own: false,
                        counters: Some(NsCounters {
                            tcp_inuse: 40,
                            time_wait: 27_000,
                            udp_inuse: Some(2),
                            conntrack_entries: Some(250_000),
                            conntrack_drop: Some(17),
                            conntrack_early_drop: Some(3),
                            conntrack_insert_failed: Some(0),
                            active_opens: Some(900_000),
                            attempt_fails: Some(12),
                            listen_overflows: Some(0),
                            time_wait_overflow: None,
                        }),
                        pressure: 0.95,
                        deep: Some(DeepReading {
                            range: EphemeralRange::new(32768, 60999),
                            busiest: Some(dest("10.96.0.10", 443, 21_000, 350.0, 21_000.0, None)),
                            utilization: 21_000.0 / 28_232.0,
                            states: [0, 12, 1, 0, 0, 0, 21_000, 0, 2, 0, 3, 0, 0],
                            listen_utilization: 0.25,
                            age: 2,
                        }),
                        conntrack: Some(attribution()),
                    },
                    Namespace {
                        inode: 4026531833,
                        pid: Some(1),
                        name: Some("host \"quoted\"".into()),
                        own: true,
                        counters: Some(NsCounters { tcp_inuse: 130, time_wait: 3600, ..NsCounters::default() }),
                        pressure: 0.13,
                        ..Namespace::default()
                    },
                ],
                worst_conntrack: Some((4026532247, 250_000)),
                worst_time_wait: Some((4026532247, 27_000)),
                worst_ports: Some((4026532247, 21_000.0 / 28_232.0)),
                deep_down: None,
                deep_dumps_total: 77,
                deep_kept: 2,
            }),
            process: Some(crate::sources::process::ProcessStats {
                cpu_seconds: 2.25,
                resident_bytes: 7_340_032,
                virtual_bytes: 52_609_024,
                threads: 7,
                start_time_seconds: 1_795_640_000.5,
                open_fds: 42,
                max_fds: 65_536,
            }),
            sources: Source::ALL
                .iter()
                .map(|&source| SourceStatus {
                    source,
                    up: source != Source::Snmp,
                    errors_total: u64::from(source == Source::Snmp),
                    duration: Duration::from_micros(250),
                    error: (source == Source::Snmp).then(|| "a \"quoted\" reason\\with a backslash".to_owned()),
                })
                .collect(),
            samples_total: 42,
            inconsistent_total: 1,
            overdue: Some(Overdue { running: Duration::from_secs(7), source: Some(Source::Sockets) }),
        }
    }

    #[test]
    fn infinities_are_spelled_as_the_exposition_format_wants() {
        let text = String::from_utf8(render(&snapshot())).unwrap();
        assert!(text.contains("\nsockwatch_conntrack_seconds_to_full +Inf\n"), "{text}");
        assert!(!text.contains(" inf\n"));
        assert_eq!(spell_infinities(b"a 1\nb -inf\nc{x=\"inf\"} inf\n".to_vec()), b"a 1\nb -Inf\nc{x=\"inf\"} +Inf\n");
    }

    #[test]
    fn golden_rendering_of_every_family() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/prometheus/golden.txt");
        let text = String::from_utf8(render(&snapshot())).unwrap();
        // The build's own facts change with every commit and compiler: placeholders.
        let build = format!("revision=\"{}\",rustc=\"{}\"", env!("SOCKWATCH_REVISION"), env!("SOCKWATCH_RUSTC"));
        assert!(text.contains(&build), "{build} in sockwatch_build_info");
        let text = text.replace(&build, "revision=\"REVISION\",rustc=\"RUSTC\"");
        if std::env::var("SOCKWATCH_BLESS").is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
            std::fs::write(path, &text).unwrap();
        }
        let golden = std::fs::read_to_string(path).expect("golden file: SOCKWATCH_BLESS=1 cargo test golden");
        if text != golden {
            let first = text.lines().zip(golden.lines()).position(|(a, b)| a != b);
            panic!(
                "rendering differs from {path} at line {}:\n  now:    {:?}\n  golden: {:?}",
                first.map_or(text.lines().count().min(golden.lines().count()) + 1, |i| i + 1),
                first.and_then(|i| text.lines().nth(i)),
                first.and_then(|i| golden.lines().nth(i))
            );
        }
    }
}
