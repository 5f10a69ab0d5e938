//! Everything Prometheus reads: the text rendering of a snapshot ([`render`], once per
//! sample), the HTTP server that serves it ([`http`]) and its TLS and basic auth
//! ([`webconfig`], the exporter-toolkit format).

pub mod auth_queue;
mod ctnetlink;
mod families;
pub mod http;
mod labels;
mod netns;
mod own;
mod procfs;
pub mod render;
mod tcp;
mod udp;
pub mod webconfig;
