//! What the two servers (HTTP and the Munin shim) share to listen: a deep backlog, and
//! accept errors logged once per change of state. Their connection limits are in
//! [`crate::slots`].

/// Listen backlog of our TCP listeners (the kernel caps it at net.core.somaxconn, 4096 by
/// default): deep enough that a client holding a few thousand connections cannot keep
/// the accept queue full, where the kernel would drop a scraper's SYN and make it wait
/// for a retransmit. The server drains it at once, evicting idle connections.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener with [`LISTEN_BACKLOG`].
pub fn bind_tcp(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Logs accept() failures once per change of state (a full fd table fails every accept
/// until it drains), and backs off instead of spinning.
#[derive(Default)]
pub struct AcceptErrors {
    failing: bool,
}

impl AcceptErrors {
    pub async fn failed(&mut self, what: &str, e: std::io::Error) {
        if !self.failing {
            tracing::warn!("{what} accept failed: {e} (logged once until accepting works again)");
            self.failing = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    pub fn accepted(&mut self, what: &str) {
        if std::mem::take(&mut self.failing) {
            tracing::info!("{what} accepting connections again");
        }
    }
}
