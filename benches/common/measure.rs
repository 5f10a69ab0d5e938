//! What the benches share to measure: the calling thread's CPU clock and a median.
//! Included by path (`#[path = "common/measure.rs"] mod measure;`): each bench is its own crate.

use std::time::Duration;

/// CPU time of this thread, kernel time included (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f`; returns the CPU seconds it took on this thread, and its value.
pub fn cpu_of<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = thread_cpu();
    let v = f();
    ((thread_cpu() - t).as_secs_f64(), v)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
