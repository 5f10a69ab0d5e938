//! Munin request lines: parsing and answering any line never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sockwatch::munin::shim::{parse_request, Session, Shim};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let (_tx, rx) = tokio::sync::watch::channel(None);
    let shim = Shim::new(rx, "fuzz".into(), true, 1, Duration::from_secs(1));
    let mut session = Session::default();
    let mut out = String::new();
    for l in line.split('\n') {
        let req = parse_request(l);
        let _ = shim.respond(&req, &mut session, None, &mut out);
    }
});
