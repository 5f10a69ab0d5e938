//! The doctor's checks of the `tcp/` sources: ephemeral ports (the busiest destination, and
//! the one heading for exhaustion soonest with the seconds left), the accept queues and the
//! listen path.

use super::words::{check, pct, per_s, plural, rate};
use super::{Check, Level};
use crate::derived::{self, LISTEN_CRIT, PREDICT_CRIT_SECONDS, PREDICT_WARN_SECONDS};
use crate::snapshot::Snapshot;
use crate::sources::tcp::ports::Destination;

/// The ephemeral port check: the busiest destination's use now, and the projection of the
/// destination heading for exhaustion soonest.
pub(super) fn ports_check(now: &Snapshot) -> Option<Check> {
    let (Some(e), Some(l)) = (now.ports.as_ref().and_then(|p| p.ephemeral.as_ref()), now.limits.as_ref()) else {
        return None;
    };
    let size = f64::from(l.port_range_size());
    let u = derived::ratio(e.busiest as f64, size, derived::AtZero::Exhausted).unwrap_or(1.0);
    let projected_level = match e.seconds_to_exhaustion() {
        Some(s) if s < PREDICT_CRIT_SECONDS => Level::Critical,
        Some(s) if s < PREDICT_WARN_SECONDS => Level::Warning,
        _ => Level::Ok,
    };
    let level = Level::of(u).max(projected_level);
    let name = |d: &Destination| format!("{} -> {}:{}", d.local_ip, d.remote_ip, d.remote_port);
    let busiest = e.top.iter().max_by_key(|d| d.used);
    let dest = busiest.map_or("(no client connections)".to_owned(), name);
    let trajectory = e.worst.as_ref().filter(|w| w.close_rate > 0.0 || w.used as f64 >= size).map(|w| {
        let rate = w.close_rate;
        if w.used as f64 >= size {
            format!("; FAILING NOW: every port toward {} is held, connect() to it gets EADDRNOTAVAIL", name(w))
        } else if let Some(s) = w.seconds_to_exhaustion {
            format!(
                "; at the current {rate:.0} connections/s toward {}, its {size} ports are all held in {s:.0} s",
                name(w)
            )
        } else {
            format!(
                "; at the current {rate:.0} connections/s toward {}, it settles near {:.0} of {size} ports ({})",
                name(w),
                w.projected,
                pct(derived::ratio(w.projected, size, derived::AtZero::Exhausted).unwrap_or(1.0))
            )
        }
    });
    Some(Check {
        resource: "ephemeral ports",
        level,
        used: Some(e.busiest as f64),
        limit: Some(size),
        utilization: Some(u),
        projected: e.worst.as_ref().map(|w| w.projected),
        seconds_to_exhaustion: e.seconds_to_exhaustion(),
        detail: format!(
            "busiest destination {dest} holds {} of {} ports ({}); {}{}, range {}-{}{}{}",
            e.busiest,
            size,
            pct(u),
            if e.untracked > 0 { "at least " } else { "" },
            plural(e.destinations, "destination", "destinations"),
            l.port_range_low,
            l.port_range_high,
            if e.bound > 0 {
                format!(", {} held by bound-only sockets", plural(e.bound, "port", "ports"))
            } else {
                String::new()
            },
            trajectory.unwrap_or_default(),
        ),
        advice: (level > Level::Ok).then(|| {
            format!(
                "connect() to {dest} fails with EADDRNOTAVAIL when every port is held. Each connection this host \
                 closes first keeps its port 60 s in TIME_WAIT. Use keep-alive or a connection pool, let the \
                 server close first, spread over more destination addresses or ports, widen \
                 net.ipv4.ip_local_port_range (e.g. \"1024 65535\"), or set net.ipv4.tcp_tw_reuse=1 (outgoing only)."
            )
        }),
    })
}

/// The fullest accept queue, and overflows.
pub(super) fn listen_check(before: &Snapshot, now: &Snapshot, seconds: f64) -> Option<Check> {
    let Some(p) = &now.ports else { return None };
    let overflows = rate(
        before.snmp.as_ref().and_then(|t| t.listen_overflows),
        now.snmp.as_ref().and_then(|t| t.listen_overflows),
        seconds,
    )
    .unwrap_or(0.0);
    let u = p.listen_utilization_max;
    let level = if u >= LISTEN_CRIT || overflows > 0.0 { Level::Critical } else { Level::of(u) };
    let fullest = p
        .listeners
        .iter()
        .filter(|l| l.limit > 0)
        .max_by(|a, b| (a.length as f64 / a.limit as f64).total_cmp(&(b.length as f64 / b.limit as f64)));
    let who = fullest.map_or("no listener".to_owned(), |l| {
        format!("{}:{} with {} of {} queued", l.local_ip, l.port, l.length, l.limit)
    });
    Some(Check {
        resource: "accept queues",
        level,
        used: fullest.map(|l| l.length as f64),
        limit: fullest.map(|l| l.limit as f64),
        utilization: Some(u),
        projected: None,
        seconds_to_exhaustion: None,
        detail: format!(
            "fullest listener {who} ({}); {} listeners{}",
            pct(u),
            p.listener_count,
            if overflows > 0.0 {
                format!(", {} connections/s dropped on full queues", per_s(overflows))
            } else {
                String::new()
            }
        ),
        advice: (level > Level::Ok).then(|| {
            format!(
                "A full accept queue drops new connections (ListenOverflows). The application behind {who} does \
                 not accept() fast enough: check that it is alive, raise its listen() backlog and net.core.somaxconn."
            )
        }),
    })
}

/// The listener that drops, and the SYN queue behind "Possible SYN flooding on port X".
pub(super) fn listen_path(before: &Snapshot, now: &Snapshot, seconds: f64) -> Option<Check> {
    let lp = now.listen_path.as_ref()?;
    let max_syn = now.limits.as_ref().and_then(|l| l.tcp_max_syn_backlog);
    let earlier = |ip, port| {
        before.listen_path.as_ref()?.top.iter().find(|b| (b.local_ip, b.port) == (ip, port)).map(|b| b.drops)
    };
    // The listener whose drops rose most between the samples, else the fullest SYN queue.
    let dropping = lp
        .top
        .iter()
        .map(|l| (l, l.drops.saturating_sub(earlier(l.local_ip, l.port).unwrap_or(l.drops)) as f64 / seconds))
        .filter(|(_, r)| *r > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let fullest_syn = lp.top.iter().max_by(|a, b| a.syn_utilization(max_syn).total_cmp(&b.syn_utilization(max_syn)));
    let snmp_rate = |field: fn(&_) -> Option<u64>| {
        rate(before.snmp.as_ref().and_then(field), now.snmp.as_ref().and_then(field), seconds).unwrap_or(0.0)
    };
    let (cookies, syn_drops) = (snmp_rate(|t| t.reqq_full_do_cookies), snmp_rate(|t| t.reqq_full_drop));
    let u = lp.syn_utilization_max;
    let mut level = Level::of(u);
    if cookies > 0.0 {
        level = level.max(Level::Warning);
    }
    if dropping.is_some() || syn_drops > 0.0 {
        level = Level::Critical;
    }
    let syn_words = fullest_syn.map_or(String::new(), |l| {
        format!(
            "; fullest SYN queue {}:{} with {} half-open ({})",
            l.local_ip,
            l.port,
            l.syn_queue,
            pct(l.syn_utilization(max_syn))
        )
    });
    // Dropping now, else the one that dropped most since it opened (the top is by drops).
    let drop_words = match (dropping, lp.top.first().filter(|l| l.drops > 0)) {
        (Some((l, r)), _) => {
            format!("; {}:{} drops {} connections/s ({} since it opened)", l.local_ip, l.port, per_s(r), l.drops)
        }
        (None, Some(l)) => {
            format!("; most drops: {}:{}, {} since it opened, none in the last second", l.local_ip, l.port, l.drops)
        }
        (None, None) => String::new(),
    };
    let flood = if cookies + syn_drops > 0.0 {
        format!(
            "; the SYN queue overflows: {} cookies/s, {} SYNs dropped/s (\"Possible SYN flooding\")",
            per_s(cookies),
            per_s(syn_drops)
        )
    } else {
        String::new()
    };
    let who = dropping.map(|(l, _)| l).or(fullest_syn).map(|l| format!("{}:{}", l.local_ip, l.port));
    Some(check(
        "listen path",
        level,
        lp.drops as f64,
        None,
        Some(u),
        format!("{} listeners, {} drops on those open now{drop_words}{syn_words}{flood}", lp.listeners, lp.drops),
        &|| {
            format!(
                "The listener {} loses connections: its accept queue is full (the application does not accept() \
                 fast enough) or its SYN queue is (a SYN flood, or a backlog too small for the connection rate; this \
                 is the port of the kernel's \"Possible SYN flooding on port X\"). Raise its listen() backlog, \
                 net.core.somaxconn and net.ipv4.tcp_max_syn_backlog; keep net.ipv4.tcp_syncookies=1.",
                who.clone().unwrap_or_else(|| "behind the counters".into())
            )
        },
    ))
}
