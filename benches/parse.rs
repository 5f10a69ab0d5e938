//! Micro-benchmarks of the per-sample work around the kernel's walk, on recorded dumps:
//! parsing inet_diag messages in place, counting states, aggregating ports and queues,
//! rendering and compressing the Prometheus text.
//!
//! `cargo bench --bench parse` (figures in BENCHMARKS.md).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sockwatch::sources::kernel::inet_diag;
use sockwatch::sources::tcp::ports::{PortAggregator, PortsConfig};
use sockwatch::sources::tcp::sockets::{self, TcpStates};

fn recorded() -> (u32, Vec<Vec<u8>>) {
    let raw =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sockdiag/ipv4-multipart.bin")).unwrap();
    let (seq, parts) = sockets::recorded_datagrams(&raw).unwrap();
    (seq, parts.into_iter().map(<[u8]>::to_vec).collect())
}

fn parse(c: &mut Criterion) {
    let (seq, dgrams) = recorded();
    let mut n = 0u64;
    let mut intr = false;
    for d in &dgrams {
        let _ = inet_diag::parse_datagram(d, seq, &mut intr, &mut |_| n += 1);
    }
    let mut g = c.benchmark_group("dump");
    g.throughput(Throughput::Elements(n));
    g.bench_function("parse_and_count_states", |b| {
        b.iter(|| {
            let mut states = TcpStates::default();
            let mut intr = false;
            for d in &dgrams {
                let _ = inet_diag::parse_datagram(d, seq, &mut intr, &mut |m| states.count(m));
            }
            states
        })
    });
    let mut ports = PortAggregator::default();
    let cfg = PortsConfig::default();
    g.bench_function("parse_count_and_aggregate_ports", |b| {
        b.iter(|| {
            let mut states = TcpStates::default();
            let mut intr = false;
            ports.begin(Some((32768, 60999)));
            for d in &dgrams {
                let _ = inet_diag::parse_datagram(d, seq, &mut intr, &mut |m| {
                    states.count(m);
                    ports.visit(m);
                });
            }
            ports.finish(&cfg)
        })
    });
    // The end of the sample alone: projecting every tracked destination, the top-K cut.
    g.bench_function("finish_ports", |b| b.iter(|| ports.finish(&cfg)));
    g.finish();
}

fn render(c: &mut Criterion) {
    let procfs = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc/linux-6.18"));
    let mut config = sockwatch::config::Config::load(&Default::default()).unwrap();
    config.procfs = procfs;
    config.munin.socket = None;
    let mut sampler = sockwatch::sampler::Sampler::new(&config, sockwatch::prometheus::render::render);
    let snapshot = sampler.sample();
    c.bench_function("render_prometheus_text", |b| b.iter(|| sockwatch::prometheus::render::render(&snapshot)));
    c.bench_function("sample_render_and_gzip", |b| b.iter(|| sampler.sample_and_render()));
}

criterion_group!(benches, parse, render);
criterion_main!(benches);
