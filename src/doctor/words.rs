//! How the doctor says things: percentages, rates and counts in words, a check's level when
//! it saw only part, and the plain check that most resources make. Shared by every wing's
//! checks, below them (they import this, never each other).

use super::{Check, Level};

pub(super) fn pct(u: f64) -> String {
    format!("{:.0}%", u * 100.0)
}

/// What would let the doctor read what it could not: root, unless it already is.
pub(super) fn to_read_more() -> &'static str {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        "not readable even as root: a /proc mounted with hidepid, or no CAP_SYS_PTRACE"
    } else {
        "run as root to read them"
    }
}

/// A check's level when part of what it covers could not be read: never "ok" for what it
/// could not see; a warning or worse among what it did see stands.
pub(super) fn seen_in_part(level: Level, unread: u64) -> Level {
    if unread > 0 && level == Level::Ok {
        Level::CannotTell
    } else {
        level
    }
}

/// A rate of events per second in words: a rate above zero never reads "0" (one drop in
/// the last second is 1, one in ten seconds 0.1).
pub(super) fn per_s(r: f64) -> String {
    match r {
        r if r >= 10.0 || r == 0.0 => format!("{r:.0}"),
        r if r >= 1.0 => format!("{r:.1}"),
        r if r >= 0.01 => format!("{r:.2}"),
        _ => "< 0.01".to_owned(),
    }
}

pub(super) fn rate(before: Option<u64>, after: Option<u64>, seconds: f64) -> Option<f64> {
    Some(after?.saturating_sub(before?) as f64 / seconds)
}

pub(super) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A check with no projection (the resources here have none of their own).
pub(super) fn check(
    resource: &'static str,
    level: Level,
    used: f64,
    limit: Option<f64>,
    u: Option<f64>,
    detail: String,
    advice: &dyn Fn() -> String,
) -> Check {
    Check {
        resource,
        level,
        used: Some(used),
        limit,
        utilization: u,
        projected: None,
        seconds_to_exhaustion: None,
        detail,
        // What to do about a full table; a check that could not see is told in its detail.
        advice: (level >= Level::Warning).then(advice),
    }
}
