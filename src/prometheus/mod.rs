//! Everything Prometheus reads: the text rendering of a snapshot ([`render`], once per
//! sample), the HTTP server that serves it ([`http`]) and its TLS and basic auth
//! ([`webconfig`], the exporter-toolkit format).

pub mod auth_queue;
mod ct_attribution;
mod families;
pub mod http;
mod netns;
mod ports;
mod procfs;
pub mod render;
mod resources;
mod udp;
pub mod webconfig;
