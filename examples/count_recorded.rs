//! Parses, counts and aggregates a recorded inet_diag dump `N` times: a fixed amount of
//! work for `valgrind --tool=callgrind`, whose instruction counts repeat exactly where
//! criterion's timings on a shared 2-vCPU host wander by ±20 %. BENCHMARKS.md runs it on
//! this tree and on an earlier commit side by side to give the per-socket cost of a change.
//!
//! `cargo run --release --example count_recorded -- [FIXTURE] [N]`

use sockwatch::sources::kernel::inet_diag;
use sockwatch::sources::tcp::ports::{PortAggregator, PortsConfig};
use sockwatch::sources::tcp::sockets::{self, TcpStates};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sockdiag/ipv4-multipart.bin").to_owned()
    });
    let rounds: u64 = args.next().map_or(1000, |n| n.parse().expect("N: a number of rounds"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (seq, dgrams) = sockets::recorded_datagrams(&raw).expect("a complete recording");
    let (mut ports, cfg) = (PortAggregator::default(), PortsConfig::default());
    let mut sockets = 0u64;
    for _ in 0..rounds {
        let mut states = TcpStates::default();
        let mut intr = false;
        ports.begin(Some((32768, 60999)));
        for d in &dgrams {
            let _ = inet_diag::parse_datagram(d, seq, &mut intr, &mut |m| {
                states.count(m);
                ports.visit(m);
                sockets += 1;
            });
        }
        std::hint::black_box(ports.finish(&cfg));
    }
    println!("{sockets} sockets in {rounds} rounds");
}
