//! sockwatch: a Linux exporter for TCP socket states, ephemeral ports, conntrack, UDP drops
//! per port, and every network namespace's counters.
//!
//! Data flows one way: kernel → [`sources`] → [`snapshot::Snapshot`] (built by the
//! [`sampler`]) → its readers: [`prometheus`] (rendered once per sample, served over HTTP)
//! and [`munin`] (the protocol shim and the plugin). A scrape only
//! reads the latest published snapshot; it never triggers a sample. Figures derived from a
//! snapshot (utilisations) and the warning/critical levels are defined once, in
//! [`derived`], for every reader.
//!
//! Layout, one hop to each answer:
//! - `sources/`: the kernel layer (`kernel/`) and one wing per kernel family above it (add a
//!   source: a file in its wing, a row in the source table of [`snapshot`], a field on
//!   [`snapshot::Snapshot`], one small function per reader);
//! - `sampler/`, `snapshot.rs`, `derived.rs`: the sample, what it holds, what follows from it;
//! - `prometheus/`: the text rendering (`render.rs`, with `udp.rs` and `netns.rs` for those
//!   families), the HTTP server, TLS and basic auth;
//! - `munin/`: the graphs, the protocol shim, the plugin;
//! - `config/`: every setting defined once (`settings.rs`), merged from flags, file and
//!   defaults (`mod.rs`);
//! - `doctor.rs`: the report; `listen.rs`, `slots.rs`: listening and connection slots,
//!   shared by HTTP and Munin; `shutdown.rs`: the one shutdown signal every task listens
//!   for; `logfmt.rs`: the logfmt log line format.
//!
//! The binary (`main.rs`) holds the command line (`cli.rs`, built from the settings table)
//! and the daemon's wiring, reload and shutdown (`daemon.rs`).

pub mod config;
pub mod derived;
pub mod doctor;
pub mod listen;
pub mod logfmt;
pub mod munin;
pub mod prometheus;
pub mod sampler;
pub mod sched;
pub mod shutdown;
pub mod slots;
pub mod snapshot;
pub mod sources;
