//! sockwatch: a Linux exporter for TCP socket states, ephemeral ports and conntrack.
//!
//! Data flows one way: kernel → [`sources`] → [`snapshot::Snapshot`] (built by the
//! [`sampler`]) → its readers: [`prometheus`] (rendered once per sample, served over HTTP)
//! and [`munin`] (the protocol shim and the plugin). A scrape only
//! reads the latest published snapshot; it never triggers a sample. Figures derived from a
//! snapshot (utilisations) and the warning/critical levels are defined once, in
//! [`derived`], for every reader.

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
