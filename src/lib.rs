//! sockwatch: a Linux exporter for TCP socket states, ephemeral ports and conntrack.
//!
//! Data flows one way: kernel → [`sources`] → [`snapshot::Snapshot`] (built by the
//! [`sampler`]) → its readers: [`prometheus`] (rendered once per sample, served over HTTP)
//! and [`munin`] (the protocol shim and the plugin). A scrape only
//! reads the latest published snapshot; it never triggers a sample. Figures derived from a
//! snapshot (utilisations) and the warning/critical levels are defined once, in
//! [`derived`], for every reader.
//!
//! Layout, one hop to each answer:
//! - `sources/`: one module per kernel source (add a source: a file here, a field on
//!   [`snapshot::Snapshot`], one small function per reader);
//! - `sampler.rs`, `snapshot.rs`, `derived.rs`: the sample, what it holds, what follows from it;
//! - `prometheus/`: the text rendering, the HTTP server, TLS and basic auth;
//! - `munin/`: the graphs, the protocol shim, the plugin;
//! - `doctor.rs`, `slots.rs`, `cli.rs`, `config.rs`: the report, connection slots, the
//!   command line, the merged configuration. The daemon's wiring is the binary's `daemon.rs`.

pub mod cli;
pub mod config;
pub mod derived;
pub mod doctor;
pub mod munin;
pub mod prometheus;
pub mod sampler;
pub mod sched;
pub mod slots;
pub mod snapshot;
pub mod sources;
