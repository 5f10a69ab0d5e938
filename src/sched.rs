//! Scheduling hints for the daemon's threads.
//!
//! On a busy host a scrape's tail latency is the time the answering thread waits for a core
//! after its wakeup, not the answer itself (a copy of pre-rendered bytes). Linux 6.12+ lets a
//! normal (`SCHED_OTHER`) thread ask for a shorter EEVDF slice through `sched_attr::sched_runtime`:
//! it gets the same CPU share, but runs sooner after a wakeup, in shorter turns. The threads
//! that answer requests ask for the shortest slice (0.1 ms); the sampler's thread keeps the
//! default, so its long dump is not cut into many small turns.
//!
//! Measured in BENCHMARKS.md: `/metrics` p99 at 500k sockets under load went from 4.5 to 2.5 ms,
//! sampling CPU unchanged. Unprivileged; on older kernels the field is ignored, and where a
//! seccomp filter refuses the call the daemon runs as before (logged once, at debug).

use std::sync::atomic::{AtomicBool, Ordering};

/// The shortest slice the kernel accepts for a fair task (it clamps to 0.1–100 ms).
const SHORT_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` (include/uapi/linux/sched/types.h), SCHED_ATTR_SIZE_VER1.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

const ATTR_SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;

/// The calling thread's scheduling attributes.
fn get_attr() -> std::io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: `attr` is a valid, writable sched_attr of ATTR_SIZE bytes; tid 0 is this thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, ATTR_SIZE, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr)
}

/// Sets the calling thread's slice, keeping its policy and nice value; 0 = the kernel default.
fn set_slice(runtime_ns: u64) -> std::io::Result<()> {
    let mut attr = get_attr()?;
    if attr.policy != libc::SCHED_OTHER as u32 || attr.runtime == runtime_ns {
        return Ok(()); // an operator's choice (chrt, systemd CPUSchedulingPolicy=) stands
    }
    attr.size = ATTR_SIZE;
    attr.flags = 0;
    attr.runtime = runtime_ns;
    // SAFETY: `attr` is a valid sched_attr of ATTR_SIZE bytes; the kernel only reads it.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn apply(runtime_ns: u64) {
    static REFUSED: AtomicBool = AtomicBool::new(false);
    if REFUSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = set_slice(runtime_ns) {
        if !REFUSED.swap(true, Ordering::Relaxed) {
            tracing::debug!("cannot set the scheduler slice ({e}); threads keep the default");
        }
    }
}

/// For threads that answer requests: wake up and answer sooner.
pub fn latency_sensitive() {
    apply(SHORT_SLICE_NS);
}

/// For the sampler: the kernel's default slice. Once per thread.
pub fn throughput() {
    thread_local!(static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if !DONE.replace(true) {
        apply(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice() -> u64 {
        get_attr().expect("sched_getattr").runtime
    }

    #[test]
    fn slices_are_set_and_restored_on_this_thread_only() {
        std::thread::spawn(|| {
            let default = slice();
            latency_sensitive();
            let short = slice();
            // Kernels before 6.12 ignore sched_runtime for fair tasks.
            if short == default {
                eprintln!("SKIP: this kernel ignores sched_attr::sched_runtime for SCHED_OTHER");
                return;
            }
            assert_eq!(short, SHORT_SLICE_NS);
            throughput();
            assert_eq!(slice(), default, "the default slice comes back");
        })
        .join()
        .unwrap();
    }
}
