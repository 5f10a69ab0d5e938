//! The doctor's ephemeral-port check: the busiest destination, and the one heading for
//! exhaustion soonest with the seconds left.

use super::words::{pct, plural};
use super::{Check, Level};
use crate::derived::{self, PREDICT_CRIT_SECONDS, PREDICT_WARN_SECONDS};

/// The ephemeral port check: the busiest destination's use now, and the projection of the
/// destination heading for exhaustion soonest.
pub(super) fn ports_check(
    e: &crate::sources::tcp::ports::Ephemeral,
    l: &crate::sources::procfs::limits::Limits,
) -> Check {
    let size = f64::from(l.port_range_size());
    let u = derived::ratio(e.busiest as f64, size, derived::AtZero::Exhausted).unwrap_or(1.0);
    let projected_level = match e.seconds_to_exhaustion() {
        Some(s) if s < PREDICT_CRIT_SECONDS => Level::Critical,
        Some(s) if s < PREDICT_WARN_SECONDS => Level::Warning,
        _ => Level::Ok,
    };
    let level = Level::of(u).max(projected_level);
    let name =
        |d: &crate::sources::tcp::ports::Destination| format!("{} -> {}:{}", d.local_ip, d.remote_ip, d.remote_port);
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
                pct(w.projected / size.max(1.0))
            )
        }
    });
    Check {
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
    }
}
