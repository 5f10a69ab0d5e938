//! What the benches share to measure: the calling thread's CPU clock and a median, a bare
//! sock_diag dump read to its end, and a named namespace's inode.
//! Included by path (`#[path = "common/measure.rs"] mod measure;`): each bench is its own crate.

// Each bench that includes this module uses part of it.
#![allow(dead_code)]

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

/// Sends each request on `sock` and reads its dump to the end, counting the sockets of each
/// state (`idiag_state`, the byte after the 16-byte netlink header): what a minimal client
/// does, nothing else.
pub fn dump_counts(sock: &mut netlink_sys::Socket, buf: &mut [u8], requests: &[Vec<u8>]) -> [u64; 16] {
    let mut counts = [0u64; 16];
    for request in requests {
        sock.send(request, 0).unwrap();
        'dump: loop {
            let mut w: &mut [u8] = &mut buf[..];
            let n = sock.recv(&mut w, 0).unwrap();
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
                if ty == 3 || ty == 2 {
                    break 'dump; // NLMSG_DONE or NLMSG_ERROR
                }
                counts[usize::from(buf[off + 17]) & 15] += 1;
                off += (len + 3) & !3;
            }
        }
    }
    counts
}

/// The inode of the namespace pinned at `/run/netns/NAME`.
pub fn netns_inode(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{name}")).unwrap().ino()
}
