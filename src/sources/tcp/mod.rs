//! TCP from one inet_diag dump: sockets by state (`sockets`), ephemeral ports per destination
//! and listeners' accept queues from the same walk (`ports`), and where each destination is
//! heading from its TIME_WAIT sockets' timers (`projection`); and the listen path from a
//! LISTEN-only dump (`listeners`: each listener's drops and SYN queue).

pub mod listeners;
pub mod ports;
pub mod projection;
pub mod sockets;
