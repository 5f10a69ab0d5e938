//! The one ratio: use ÷ limit as the kernel reports them, uncapped (above 1 says by how
//! much a resource is over), with what a limit of 0 means said at each call, since the
//! kernel gives 0 two meanings:
//! - [`AtZero::Exhausted`]: nothing may be used (an `ip_local_port_range` with every port
//!   reserved, a backlog of 0): the ratio reads 1, full;
//! - [`AtZero::Unlimited`]: no limit is set (`nf_conntrack_max` 0 is no limit,
//!   `tcp_max_tw_buckets` 0 keeps no TIME_WAIT at all): there is no ratio.

/// What a limit of 0 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtZero {
    Exhausted,
    Unlimited,
}

/// `used / limit`, uncapped; at a limit of 0 (or below), as `at_zero` says.
pub fn ratio(used: f64, limit: f64, at_zero: AtZero) -> Option<f64> {
    if limit > 0.0 {
        Some(used / limit)
    } else {
        match at_zero {
            AtZero::Exhausted => Some(1.0),
            AtZero::Unlimited => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_say_what_they_mean() {
        assert_eq!(ratio(3.0, 4.0, AtZero::Exhausted), Some(0.75));
        assert_eq!(ratio(5.0, 4.0, AtZero::Unlimited), Some(1.25), "not capped");
        assert_eq!(ratio(0.0, 0.0, AtZero::Exhausted), Some(1.0));
        assert_eq!(ratio(7.0, 0.0, AtZero::Unlimited), None);
    }
}
