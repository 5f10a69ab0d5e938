//! Renders a [`Snapshot`] as Prometheus text exposition format (0.0.4).
//!
//! The metric names and labels here are a contract: dashboards, alert rules and the
//! Munin side depend on them. Every HELP text says what the number means and where in
//! the kernel it comes from. A source that is down contributes no series at all.

use prometheus::{Encoder, TextEncoder};

use super::families::Families;
use super::{ctnetlink, netns, own, procfs, tcp, udp};

use crate::snapshot::Snapshot;

/// Renders the snapshot. Called once per sample by the sampler, never per scrape.
///
/// This is the order of output and nothing else: each call writes the families of one
/// source from the file of its wing (`tcp.rs` for `sources/tcp/`, `procfs.rs` for
/// `sources/procfs/`, …; `own.rs` for sockwatch's own). A wing appears more than once
/// where its families have always been exported between another wing's.
pub fn render(s: &Snapshot) -> Vec<u8> {
    let mut out = Families::default();
    tcp::sockets(&mut out, s);
    tcp::ports(&mut out, s);
    procfs::sockstat(&mut out, s);
    procfs::conntrack(&mut out, s);
    ctnetlink::breakdown(&mut out, s);
    ctnetlink::attribution(&mut out, s);
    ctnetlink::projection(&mut out, s);
    procfs::snmp(&mut out, s);
    udp::sockets(&mut out, s);
    procfs::udp_counters(&mut out, s);
    netns::render(&mut out, s);
    tcp::listen_path(&mut out, s);
    procfs::descriptors(&mut out, s);
    procfs::socket_memory(&mut out, s);
    procfs::softnet(&mut out, s);
    procfs::neighbours(&mut out, s);
    procfs::limits(&mut out, s);
    own::sources_and_sampler(&mut out, s);
    own::process(&mut out, s);
    let mut buf = Vec::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode(&out.0, &mut buf) {
        // Only a bug in this file can get here (an invalid name); serve what was written.
        tracing::error!("rendering Prometheus text: {e}");
    }
    spell_infinities(buf)
}

/// The prometheus crate writes values with Rust's `f64` formatting, `inf` and `-inf`; the
/// exposition format (and OpenMetrics) spell them `+Inf` and `-Inf`. A value is the last
/// field of its line, and a newline inside a label value is escaped, so " inf\n" can only
/// be a value.
fn spell_infinities(buf: Vec<u8>) -> Vec<u8> {
    if !buf.windows(5).any(|w| w == b" inf\n" || w == b"-inf\n") {
        return buf;
    }
    let text = String::from_utf8_lossy(&buf);
    text.replace(" inf\n", " +Inf\n").replace(" -inf\n", " -Inf\n").into_bytes()
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
