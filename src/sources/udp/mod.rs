//! UDP from its own inet_diag dump (`sockets`): each socket's receive queue against its
//! buffer and the datagrams it dropped (`sk_meminfo`), by port, and the host's UDP counters
//! beside them.

pub mod sockets;
