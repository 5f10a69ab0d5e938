//! Everything Munin reads: the graph definitions and their values from a snapshot
//! ([`graphs`]), the munin-node protocol shim the daemon serves on a socket ([`shim`]),
//! and the munin-node plugin that relays to it ([`plugin`], the binary itself).

pub mod catalog;
mod ctnetlink;
pub mod graphs;
mod netns;
pub mod plugin;
mod procfs;
pub mod shim;
mod tcp;
mod udp;
