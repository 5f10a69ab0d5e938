//! TCP from one inet_diag dump: sockets by state (`sockets`), ephemeral ports per destination
//! and listeners' accept queues from the same walk (`ports`), and where each destination is
//! heading from its TIME_WAIT sockets' timers (`projection`).

pub mod ports;
pub mod projection;
pub mod sockets;
