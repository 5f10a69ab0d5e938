//! Shutdown: one signal, given once by the daemon on SIGTERM or SIGINT, that every task
//! listens for (the samplers, the HTTP server, the Munin shim). A task holds a
//! [`Shutdown`], cloned from the one the daemon made; the daemon keeps the [`Trigger`].

use tokio::sync::watch;

/// The daemon's side: [`Trigger::fire`] begins shutdown for every [`Shutdown`].
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A task's side: whether shutdown has begun, and a future that resolves when it does.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new signal, not given yet.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Begins shutdown.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown has begun (at once if it already has, or if the daemon's side
    /// is gone).
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|begun| *begun).await;
    }

    /// Whether shutdown has begun (or the daemon's side is gone): for blocking loops.
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_sees_it_once_given() {
        let (trigger, shutdown) = channel();
        let mut late = shutdown.clone();
        assert!(!shutdown.is_shutdown());
        let waiting = tokio::spawn({
            let mut s = shutdown.clone();
            async move { s.recv().await }
        });
        trigger.fire();
        waiting.await.unwrap();
        assert!(shutdown.is_shutdown());
        late.recv().await; // already given: resolves at once
        let (trigger, mut orphan) = channel();
        drop(trigger);
        orphan.recv().await;
        assert!(orphan.is_shutdown(), "no daemon left to give it: shut down");
    }
}
