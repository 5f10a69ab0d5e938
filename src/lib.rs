//! sockwatch: a Linux exporter for TCP socket states, ephemeral ports and conntrack.
//!
//! Data flows one way: kernel → [`sources`] → [`snapshot::Snapshot`] (built by the
//! [`sampler`]) → exporters ([`exporter::prometheus`]) → HTTP ([`http`]). A scrape only
//! reads the latest published snapshot; it never triggers a sample. Figures derived from a
//! snapshot (utilisations) and the warning/critical levels are defined once, in
//! [`derived`], for every reader.

pub mod cli;
pub mod config;
pub mod derived;
pub mod doctor;
pub mod exporter;
pub mod http;
pub mod munin;
pub mod munin_plugin;
pub mod sampler;
pub mod sched;
pub mod slots;
pub mod snapshot;
pub mod sources;
pub mod webconfig;
