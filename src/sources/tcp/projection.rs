//! Where a destination's ephemeral port use is heading, from the kernel's own TIME_WAIT
//! timers.
//!
//! Every TIME_WAIT socket in the inet_diag dump carries its remaining lifetime
//! (`idiag_expires`, ms), and TIME_WAIT lasts a fixed `TCP_TIMEWAIT_LEN` (60 s; vendor
//! kernels with `net.ipv4.tcp_tw_timeout` make it tunable). So the TIME_WAIT sockets of
//! one destination, sorted by remaining lifetime, are the history of how many
//! connections toward it were closed in each of the last 60 seconds. Twelve counters per
//! destination ([`TwHistogram`], one per twelfth of the TIME_WAIT length: 5 s) hold that
//! history; nothing is allocated per socket and no extra kernel walk is needed.
//!
//! From the histogram of one sample:
//! - **close rate**: TIME_WAIT sockets born in the youngest two buckets (10 s) per
//!   second. Ten seconds is short enough to follow a ramp within one or two samples and
//!   long enough that a destination at a dangerous rate (hundreds of closes per second)
//!   has a few thousand sockets in the window, so counting noise is a few percent. After
//!   a step up (a client speeding up, a rate doubling) the window still averages in the
//!   slower seconds before it: when the youngest bucket exceeds the one before it by more
//!   than three standard deviations of their counting noise, the youngest bucket's rate is
//!   the rate now, so a count rising toward the range never reads safe for the window's
//!   length;
//! - **trend**: the slope of the close rate over the whole history (60 s) or, for a ramp
//!   younger than that, over its youngest half (30 s), by least squares. The longer fit's
//!   noise is a third of the shorter's, so it sees a slow ramp at a high rate that the
//!   shorter one cannot tell from noise. A fit is used only when it exceeds three standard
//!   deviations of its counting (Poisson) noise and a straight line explains the history
//!   within that noise (chi-square), so a steady rate, however high, and a step up to one
//!   (a client starting, a burst) never extrapolate to a false exhaustion;
//! - **projected use**: what the destination settles at if the current rate holds:
//!   sockets in other states (ESTABLISHED, SYN_SENT, FIN_WAIT...) plus bound-only ports,
//!   plus rate × TIME_WAIT length;
//! - **seconds to exhaustion**: stepping forward second by second, the held sockets stay,
//!   each TIME_WAIT bucket frees its ports as its timers run out, and new TIME_WAIT
//!   sockets arrive at the current rate plus its trend (those born more than a TIME_WAIT
//!   length ahead leave again). The first second at which use reaches the range, within
//!   [`HORIZON_SECONDS`]; none beyond it.

/// Buckets of the TIME_WAIT history, each a twelfth of the TIME_WAIT length.
pub const BUCKETS: usize = 12;
/// Buckets that make the close-rate window (the youngest 10 s at 60 s).
const RATE_BUCKETS: usize = 2;
/// Buckets of the shorter trend fit (the youngest 30 s at 60 s); the longer one takes all.
const TREND_BUCKETS: usize = 6;
/// How far ahead exhaustion is looked for.
pub const HORIZON_SECONDS: u32 = 900;
/// A trend is believed only above this many standard deviations of counting noise, and
/// only when a straight line fits the history ([`chi2_limit`]).
const TREND_SIGMAS: f64 = 3.0;

/// TIME_WAIT sockets of one destination by remaining lifetime: `counts[j]` holds those
/// with `j/12 <= remaining/length < (j+1)/12`, so `counts[11]` are the youngest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TwHistogram {
    pub counts: [u32; BUCKETS],
}

impl TwHistogram {
    /// Counts one TIME_WAIT socket with `expires_ms` left of a `length_ms` TIME_WAIT.
    /// A timer reading above the length (clock granularity) counts as the youngest.
    #[inline]
    pub fn add(&mut self, expires_ms: u32, length_ms: u32) {
        self.add_scaled(expires_ms, Self::scale(length_ms));
    }

    /// The multiplier [`Self::add_scaled`] takes for a `length_ms` TIME_WAIT: 12/length in
    /// 32.32 fixed point, rounded up, so a timer exactly on a bucket's lower edge lands in
    /// that bucket. A multiply and a shift per socket instead of a division (which cost as
    /// much as the rest of the per-socket work together).
    pub fn scale(length_ms: u32) -> u64 {
        ((BUCKETS as u64) << 32).div_ceil(u64::from(length_ms.max(1)))
    }

    #[inline]
    pub fn add_scaled(&mut self, expires_ms: u32, scale: u64) {
        let j = ((u64::from(expires_ms) * scale) >> 32) as usize;
        let slot = &mut self.counts[j.min(BUCKETS - 1)];
        *slot = slot.saturating_add(1);
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }
}

/// One destination's trajectory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trajectory {
    /// Connections closed per second toward it over the youngest 10 s (TIME_WAIT births).
    pub close_rate: f64,
    /// Growth of that rate per second, when the rise is beyond counting noise; else 0.
    pub trend: f64,
    /// Ports it settles at if the current rate holds.
    pub projected: f64,
    /// Seconds until every port is held, at the current rate and trend; `None` when that
    /// does not happen within [`HORIZON_SECONDS`].
    pub seconds_to_exhaustion: Option<f64>,
}

/// Projects one destination. `held`: its ports held by sockets not in TIME_WAIT (bound-only
/// ports included); `tw`: its TIME_WAIT history; `capacity`: ports connect() can choose
/// from; `length_s`: the TIME_WAIT length.
pub fn project(held: u64, tw: &TwHistogram, capacity: u64, length_s: f64) -> Trajectory {
    let tw_total = tw.total();
    // Use already at the range is exhaustion now, whatever the rate.
    let full_now = held.saturating_add(tw_total) >= capacity;
    if tw_total == 0 {
        // Nothing closing toward it (most destinations of a busy host): no history to fit.
        let seconds_to_exhaustion = full_now.then_some(0.0);
        return Trajectory { close_rate: 0.0, trend: 0.0, projected: held as f64, seconds_to_exhaustion };
    }
    let length_s = length_s.max(1.0);
    let w = length_s / BUCKETS as f64; // bucket width, seconds
    let c = |j: usize| f64::from(tw.counts[j]);
    let recent: f64 = (BUCKETS - RATE_BUCKETS..BUCKETS).map(c).sum::<f64>() / (RATE_BUCKETS as f64 * w);
    let trend = significant_trend(tw, w);
    // The rate window is centred one bucket back; bring the estimate to now.
    let mut rate_now = recent + trend * w * RATE_BUCKETS as f64 / 2.0;
    // A step up inside the rate window (a client that just sped up, a rate doubling): the
    // window still averages in the slower seconds before it, and the projection would read
    // safe (+Inf) for up to its length while the count rises toward the range. The youngest
    // bucket alone, when it is above the bucket before it by more than three standard
    // deviations of their counting noise: a steady rate, however high, stays within them.
    let (youngest, before) = (c(BUCKETS - 1), c(BUCKETS - 2));
    if youngest - before > TREND_SIGMAS * (youngest + before).max(1.0).sqrt() {
        rate_now = rate_now.max(youngest / w);
    }
    let projected = held as f64 + rate_now * length_s;
    let seconds_to_exhaustion =
        if full_now { Some(0.0) } else { exhaustion(held as f64, tw, w, rate_now, trend, capacity as f64, length_s) };
    Trajectory { close_rate: recent, trend, projected, seconds_to_exhaustion }
}

/// The rising trend of the close rate, per second: fitted over the whole history first
/// (the most precise: its noise shrinks with the span), then over the youngest half (a
/// ramp that began less than a TIME_WAIT length ago); 0 when neither fit is a believable
/// rising line.
fn significant_trend(tw: &TwHistogram, w: f64) -> f64 {
    [BUCKETS, TREND_BUCKETS].into_iter().find_map(|n| rising_line(&tw.counts[BUCKETS - n..], w)).unwrap_or(0.0)
}

/// Least-squares slope of the per-second rate over `counts` (oldest first, each bucket
/// `w` seconds), when it rises by more than [`TREND_SIGMAS`] standard deviations of
/// Poisson counting noise and a straight line explains the counts within that noise.
fn rising_line(counts: &[u32], w: f64) -> Option<f64> {
    let n = counts.len() as f64;
    let x_mean = (n - 1.0) / 2.0; // x: bucket index, in bucket units
    let sxx: f64 = (0..counts.len()).map(|i| (i as f64 - x_mean).powi(2)).sum::<f64>() * w * w;
    let (mut slope, mut var) = (0.0, 0.0);
    for (i, &c) in counts.iter().enumerate() {
        let weight = (i as f64 - x_mean) * w / sxx;
        let count = f64::from(c);
        slope += weight * count / w;
        // Poisson: var(count) = count (at least 1, so an empty bucket is not certain).
        var += weight * weight * count.max(1.0) / (w * w);
    }
    if slope <= TREND_SIGMAS * var.sqrt() {
        return None;
    }
    // A straight line must also explain the history within counting noise: a step (a
    // client that started, or a burst) rises too, but it is not a ramp, and extrapolating
    // it would predict an exhaustion that a steady rate never reaches.
    let mean = counts.iter().map(|&c| f64::from(c)).sum::<f64>() / n;
    let chi2: f64 = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let fitted = mean + slope * w * w * (i as f64 - x_mean);
            (f64::from(c) - fitted).powi(2) / f64::from(c).max(1.0)
        })
        .sum();
    (chi2 <= chi2_limit(counts.len() - 2)).then_some(slope)
}

/// The 0.1 % point of the chi-square distribution: a fit worse than this is not a line.
fn chi2_limit(degrees_of_freedom: usize) -> f64 {
    match degrees_of_freedom {
        4 => 18.47,
        10 => 29.59,
        // Wilson-Hilferty, for bucket counts not used today.
        k => {
            let k = k as f64;
            k * (1.0 - 2.0 / (9.0 * k) + 3.09 * (2.0 / (9.0 * k)).sqrt()).powi(3)
        }
    }
}

/// First whole second at which use reaches `capacity`, within the horizon.
fn exhaustion(held: f64, tw: &TwHistogram, w: f64, rate: f64, trend: f64, capacity: f64, length: f64) -> Option<f64> {
    // Births from now until t at a rate rising linearly from `rate`.
    let born = |t: f64| if t <= 0.0 { 0.0 } else { rate * t + trend * t * t / 2.0 };
    let horizon = f64::from(HORIZON_SECONDS);
    // Cheap bound first: the old TIME_WAIT sockets never grow, and new ones alive at any
    // time are at most the births of the busiest `length` window, the last one.
    let bound = held + tw.total() as f64 + born(horizon) - born(horizon - length);
    if bound < capacity {
        return None;
    }
    for t in 0..=HORIZON_SECONDS {
        let t = f64::from(t);
        let old: f64 = (0..BUCKETS)
            .map(|j| {
                // Bucket j's timers run out evenly between j*w and (j+1)*w from now.
                let left = ((j as f64 + 1.0) * w - t) / w;
                f64::from(tw.counts[j]) * left.clamp(0.0, 1.0)
            })
            .sum();
        let new = born(t) - born(t - length);
        if held + old + new >= capacity {
            return Some(t);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: f64 = 60.0;

    /// A histogram of sockets closed at `rate(age_seconds)` per second over the last 60 s.
    fn history(rate: impl Fn(f64) -> f64) -> TwHistogram {
        let mut h = TwHistogram::default();
        // 10 ms steps: exact enough for the rates used here.
        let mut carry = 0.0;
        for step in 0..6000 {
            let age = f64::from(step) / 100.0;
            carry += rate(age) / 100.0;
            while carry >= 1.0 {
                carry -= 1.0;
                h.add(((LEN - age) * 1000.0) as u32, 60_000);
            }
        }
        h
    }

    #[test]
    fn buckets_follow_the_remaining_lifetime() {
        let mut h = TwHistogram::default();
        h.add(59_999, 60_000);
        h.add(60_000, 60_000); // just born, timer rounded up
        h.add(70_000, 60_000); // above the length: youngest
        h.add(0, 60_000);
        h.add(4_999, 60_000);
        h.add(5_000, 60_000);
        assert_eq!(h.counts[11], 3);
        assert_eq!((h.counts[0], h.counts[1]), (2, 1));
        assert_eq!(h.total(), 6);
        h.add(1000, 0); // a zero length never divides by zero
        assert_eq!(h.total(), 7);
    }

    #[test]
    fn a_steady_rate_settles_at_rate_times_sixty() {
        // 85 % of a 6,000-port range: 85 connections/s closed, 10 held open.
        let h = history(|_| 85.0);
        let t = project(10, &h, 6000, LEN);
        assert!((t.close_rate - 85.0).abs() < 0.5, "{t:?}");
        assert_eq!(t.trend, 0.0, "a steady rate has no trend");
        assert!((t.projected - 5110.0).abs() < 30.0, "{t:?}");
        assert_eq!(t.seconds_to_exhaustion, None, "85 % never exhausts");
    }

    #[test]
    fn a_rate_above_the_range_exhausts_when_the_old_sockets_are_replaced() {
        // 50/s for the last minute (3,000 held), now 200/s for the last 10 s: the range of
        // 6,000 fills as new sockets arrive faster than old ones expire.
        let h = history(|age| if age < 10.0 { 200.0 } else { 50.0 });
        let t = project(0, &h, 6000, LEN);
        assert!((t.close_rate - 200.0).abs() < 1.0, "{t:?}");
        assert!(t.projected >= 6000.0 * 1.9, "{t:?}");
        let s = t.seconds_to_exhaustion.expect("heading for exhaustion");
        // Use now: 2,000 + 2,500 = 4,500; +200/s in, -50/s out (oldest first): 10 s. A step
        // is not a ramp: no trend on top.
        assert_eq!(t.trend, 0.0, "{t:?}");
        assert!((9.0..=11.0).contains(&s), "{t:?}");
    }

    #[test]
    fn a_linear_ramp_is_seen_ahead_by_its_trend() {
        // The rate has grown by 1/s every second for 60 s (now 60/s) toward a 6,000-port
        // destination. Held ports follow the rate 30 s behind: the range fills when the
        // rate reaches 6000/60 + 30 = 130/s, 70 s from now.
        let h = history(|age| 60.0 - age);
        let t = project(0, &h, 6000, LEN);
        assert!((t.trend - 1.0).abs() < 0.1, "{t:?}");
        let s = t.seconds_to_exhaustion.expect("a ramp heads for exhaustion");
        assert!((60.0..=80.0).contains(&s), "{t:?}");
        // Without the trend it would read as harmless: 60/s settles at 3,600.
        assert!(t.projected < 6000.0, "{t:?}");
    }

    #[test]
    fn a_slow_ramp_at_a_high_rate_is_seen_over_the_whole_history() {
        // Now 40/s, rising 0.3/s every second for a minute: 1,860 ports held of 3,000. Over
        // the youngest 30 s the rise is within three sigmas of counting noise; over 60 s it
        // is not. Held ports grow 18/s: full in 63.3 s.
        let h = history(|age| 40.0 - 0.3 * age);
        let t = project(0, &h, 3000, LEN);
        assert!((t.trend - 0.3).abs() < 0.03, "{t:?}");
        assert_eq!(rising_line(&h.counts[6..], LEN / 12.0), None, "the short fit alone misses it");
        let s = t.seconds_to_exhaustion.expect("heading for exhaustion");
        assert!((62.0..=66.0).contains(&s), "{t:?}");
    }

    /// True seconds until a destination's ports are full: connections closed at `rate(t)`
    /// per second (t in seconds from now; negative is the past), each holding a port 60 s,
    /// stepped every 100 ms. `None` within the horizon: never.
    fn true_seconds(rate: impl Fn(f64) -> f64, capacity: f64) -> Option<f64> {
        // Ports held at time t: closes within the last 60 s.
        let held = |t: f64| (0..600).map(|i| rate(t - f64::from(i) / 10.0) / 10.0).sum::<f64>();
        (0..=900).map(f64::from).find(|&t| held(t) >= capacity)
    }

    /// The shapes a sampler meets (issue 34): a step, a doubling rate, a linear ramp, all
    /// toward a 2,000-port destination. At every second of their last minute — from one
    /// bucket (5 s) after a change of rate, the earliest its sockets can show it — the
    /// projection is finite whenever the truth at the current rate is within the horizon,
    /// and never later than it by more than the rate window's lag (10 s). The worst error
    /// is printed.
    #[test]
    fn a_rising_count_never_reads_safe() {
        let capacity = 2000.0;
        let step = |t: f64| if t < 0.0 { 5.0 } else { 40.0 }; // 5/s, then 40/s from t=0
        let doubling = |t: f64| 5.0 * 2f64.powf(((t + 120.0) / 40.0).floor().max(0.0)); // x2 every 40 s
        let linear = |t: f64| 20.0 + 0.5 * (t + 60.0);
        // Seconds since the rate last changed as a step (a ramp changes all the time).
        let since_step = |t: f64| (t + 120.0).rem_euclid(40.0);
        /// A shape: its name, its rate at time t, the first second looked at, and the seconds
        /// since its rate last stepped.
        type Shape<'a> = (&'a str, &'a dyn Fn(f64) -> f64, f64, &'a dyn Fn(f64) -> f64);
        let shapes: [Shape; 3] = [
            ("step", &step, 0.0, &|t: f64| t),
            ("doubling", &doubling, -20.0, &since_step),
            ("linear", &linear, -59.0, &|_| f64::INFINITY),
        ];
        for (name, rate, from, changed) in shapes {
            let (mut worst, mut checked) = (0.0f64, 0);
            let mut t0 = from;
            while t0 <= from + 60.0 {
                // The oracle: the history as it was, and from now on the current rate (what
                // "heading for exhaustion at the current rate" means; a trend may see sooner).
                let truth = true_seconds(|t| rate(t.min(0.0) + t0), capacity);
                let Some(truth) = truth.filter(|_| changed(t0) >= 5.0) else {
                    t0 += 1.0;
                    continue;
                };
                let h = history(|age| rate(t0 - age));
                let got = project(0, &h, capacity as u64, LEN).seconds_to_exhaustion;
                let got = got.unwrap_or_else(|| panic!("{name} at {t0} s: +Inf with {truth} s left"));
                assert!(got <= truth + 10.0, "{name} at {t0} s: {got} s against the true {truth} s");
                worst = worst.max((got - truth).abs());
                checked += 1;
                t0 += 1.0;
            }
            eprintln!("{name}: worst error {worst:.1} s over {checked} samples");
            assert!(checked >= 20, "{name}: only {checked} samples headed for exhaustion: the shape is wrong");
        }
    }

    /// A steady rate at 85 % of the range, counts drawn with Poisson noise: the step test
    /// (the youngest bucket against the window) raises no false exhaustion. 2,000 draws.
    #[test]
    fn a_steady_rate_with_counting_noise_raises_no_false_exhaustion() {
        // A small xorshift: deterministic draws, no dependency.
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut uniform = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        // Poisson by inversion (means of a few hundred: normal approximation, rounded).
        let mut poisson = |mean: f64| {
            let (u1, u2) = (uniform().max(1e-12), uniform());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (mean + z * mean.sqrt()).round().max(0.0) as u32
        };
        let (capacity, rate) = (2000u64, 0.85 * 2000.0 / 60.0);
        let mut false_alarms = 0;
        for _ in 0..2000 {
            let mut h = TwHistogram::default();
            for slot in &mut h.counts {
                *slot = poisson(rate * 5.0);
            }
            if project(0, &h, capacity, LEN).seconds_to_exhaustion.is_some() {
                false_alarms += 1;
            }
        }
        eprintln!("steady 85 %: {false_alarms} false exhaustions in 2000 draws");
        // The trend fits' own rate at three sigmas (12 in this draw, the same without the
        // step test): the step test must add none beyond that.
        assert!(false_alarms <= 20, "{false_alarms} of 2000 (1 % allowed)");
    }

    #[test]
    fn a_burst_that_does_not_stay_is_no_trend_once_it_is_over() {
        // 300 connections closed 15-20 s ago, quiet around it.
        let h = history(|age| if (15.0..20.0).contains(&age) { 60.0 } else { 1.0 });
        let t = project(0, &h, 1000, LEN);
        assert_eq!(t.trend, 0.0, "{t:?}");
        assert_eq!(t.seconds_to_exhaustion, None, "{t:?}");
    }

    #[test]
    fn a_step_up_to_a_steady_rate_is_not_a_ramp() {
        // A client that started 20 s ago at 42.5/s (85 % of 3,000 once settled): the
        // history rises from nothing, but flat since the step.
        for started in [12.0, 20.0, 25.0] {
            let h = history(|age| if age < started { 42.5 } else { 0.0 });
            let t = project(0, &h, 3000, LEN);
            assert_eq!(t.trend, 0.0, "started {started} s ago: {t:?}");
            assert_eq!(t.seconds_to_exhaustion, None, "started {started} s ago: {t:?}");
        }
        // A ramp that started 35 s ago from 5/s, rising 0.3/s each second, is one.
        let h = history(|age| if age < 35.0 { 5.0 + 0.3 * (35.0 - age) } else { 0.0 });
        let t = project(0, &h, 3000, LEN);
        assert!((t.trend - 0.3).abs() < 0.05, "{t:?}");
        assert!(t.seconds_to_exhaustion.is_some_and(|s| s < 300.0), "{t:?}");
    }

    #[test]
    fn counting_noise_is_not_a_trend() {
        // A flat 85/s history bent upward by one standard deviation of Poisson noise per
        // bucket, older half down, younger half up: a 2.2-sigma rise, still noise.
        let mut h = history(|_| 85.0);
        for (j, sign) in [(6, -1.0), (7, -1.0), (8, -1.0), (9, 1.0), (10, 1.0), (11, 1.0)] {
            let c = f64::from(h.counts[j]);
            h.counts[j] = (c + sign * c.sqrt()) as u32;
        }
        assert_eq!(project(0, &h, 6000, LEN).trend, 0.0);
        // Twice that bend is beyond three sigmas: a real rise.
        for (j, sign) in [(6, -1.0), (7, -1.0), (8, -1.0), (9, 1.0), (10, 1.0), (11, 1.0)] {
            let c = f64::from(h.counts[j]);
            h.counts[j] = (c + sign * c.sqrt()) as u32;
        }
        assert!(project(0, &h, 6000, LEN).trend > 0.0);
    }

    #[test]
    fn full_now_is_zero_seconds() {
        let h = history(|_| 0.0);
        let t = project(500, &h, 500, LEN);
        assert_eq!(t.seconds_to_exhaustion, Some(0.0));
        assert_eq!(project(0, &h, 0, LEN).seconds_to_exhaustion, Some(0.0), "an empty range is exhausted");
    }

    #[test]
    fn idle_destination() {
        let t = project(3, &TwHistogram::default(), 28_232, LEN);
        assert_eq!((t.close_rate, t.trend, t.projected, t.seconds_to_exhaustion), (0.0, 0.0, 3.0, None));
    }

    #[test]
    fn a_longer_vendor_time_wait_scales_the_buckets() {
        // 120 s TIME_WAIT: 10 s buckets, the rate window is 20 s.
        let mut h = TwHistogram::default();
        for i in 0..1200u32 {
            h.add(119_950 - i * 100, 120_000); // 10/s over the last 120 s
        }
        let t = project(0, &h, 6000, 120.0);
        assert!((t.close_rate - 10.0).abs() < 0.01, "{t:?}");
        assert!((t.projected - 1200.0).abs() < 1.0, "{t:?}");
    }
}
