//! The doctor's check of the `udp/` source: datagrams dropped, and the ports dropping them.

use super::words::{pct, per_s};
use super::{Check, Level};
use crate::snapshot::Snapshot;
use crate::sources::udp::sockets::UdpPort;

/// UDP receive queues and the ports dropping datagrams. `drops_recent` is what each port
/// dropped since the sample before (the first of the two, a second earlier).
pub(super) fn udp_check(now: &Snapshot, seconds: f64) -> Option<Check> {
    let u = now.udp.as_ref()?;
    let mut dropping: Vec<&UdpPort> = u.ports.iter().filter(|p| p.drops_recent > 0).collect();
    dropping.sort_by_key(|p| std::cmp::Reverse(p.drops_recent));
    let earlier: Vec<&UdpPort> = u.ports.iter().filter(|p| p.drops_recent == 0 && p.drops_total > 0).collect();
    let level = if dropping.is_empty() { Level::of(u.queue_utilization_max) } else { Level::Critical };
    let name = |p: &UdpPort| format!("{}:{}", p.local_ip, p.port);
    let mut detail =
        format!("{} UDP sockets; fullest receive queue {}", u.sockets[0] + u.sockets[1], pct(u.queue_utilization_max));
    if !dropping.is_empty() {
        let list: Vec<String> =
            dropping.iter().map(|p| format!("{} ({}/s)", name(p), per_s(p.drops_recent as f64 / seconds))).collect();
        detail.push_str(&format!("; dropping now: {}", list.join(", ")));
    }
    if !earlier.is_empty() {
        let list: Vec<String> = earlier.iter().map(|p| format!("{} ({})", name(p), p.drops_total)).collect();
        detail.push_str(&format!("; dropped earlier, not now: {}", list.join(", ")));
    }
    Some(Check {
        resource: "udp receive queues",
        level,
        used: None,
        limit: None,
        utilization: Some(u.queue_utilization_max),
        projected: None,
        seconds_to_exhaustion: None,
        detail,
        advice: (level > Level::Ok).then(|| {
            let who = dropping.first().map_or("the fullest UDP socket".to_owned(), |p| name(p));
            format!(
                "A UDP socket whose receive queue reaches its buffer drops datagrams silently (the d of `ss -uam`). \
                 The application on {who} reads too slowly: raise its SO_RCVBUF and net.core.rmem_max (which caps \
                 it), add reader threads or SO_REUSEPORT sockets, or find what stalls it."
            )
        }),
    })
}
