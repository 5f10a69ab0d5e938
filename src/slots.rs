//! Connection slots with eviction: what keeps one client from denying service to others by
//! holding connections open (HTTP and the Munin shim share it).
//!
//! A server admits at most `max` sessions. When all are taken and a new connection
//! arrives, one session *without a request in progress* is closed to make room, taken from
//! the client (peer address, or the process at the other end of a Unix socket) that holds
//! the most sessions: first its sessions that never completed a request (silent or
//! trickling), then its idle ones between requests (a keep-alive scraper reconnects on its
//! next scrape at no cost), oldest first. Only when every session is in the middle of a
//! request does a new one wait. So a client flooding connections that say nothing, or
//! nothing useful, only ever evicts its own, however fast it reconnects, and a scraper
//! from anywhere else keeps its session until it has been answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// How one session stands, shared between the server loop and the session task.
#[derive(Debug, Default)]
pub struct SlotState {
    /// A request is being answered.
    busy: AtomicBool,
    /// At least one request was answered.
    served: AtomicBool,
    /// The slot table chose it to make room.
    evicted: AtomicBool,
    evict: Notify,
}

impl SlotState {
    /// A request has arrived: not evictable until [`Self::end`].
    pub fn begin(&self) {
        self.busy.store(true, Ordering::Release);
    }

    /// The request was answered.
    pub fn end(&self) {
        self.served.store(true, Ordering::Release);
        self.busy.store(false, Ordering::Release);
    }

    /// Resolves when the session was evicted: its task should then close the connection.
    pub async fn evicted(&self) {
        let notified = self.evict.notified();
        if self.evicted.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    fn evictable(&self) -> bool {
        !self.busy.load(Ordering::Acquire) && !self.evicted.load(Ordering::Acquire)
    }
}

/// Who is at the other end, for fairness between clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Ip(std::net::IpAddr),
    /// A Unix socket peer: its user and process (`SO_PEERCRED`).
    Process {
        uid: u32,
        pid: i32,
    },
    Unknown,
}

/// The table: each client's sessions, oldest first, and how many are not yet evicted.
#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    live: usize,
    peers: std::collections::HashMap<Peer, Vec<(u64, Arc<SlotState>)>>,
}

impl Table {
    /// Live (not evicted) sessions of each client, biggest holder first.
    fn holders(&self) -> Vec<(usize, Peer)> {
        let mut h: Vec<(usize, Peer)> = self
            .peers
            .iter()
            .map(|(p, v)| (v.iter().filter(|(_, s)| !s.evicted.load(Ordering::Acquire)).count(), *p))
            .collect();
        h.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        h
    }

    /// Evicts one session of the biggest holder that has one to spare: a never-served one
    /// first, else an idle one; oldest first. False when every session is busy.
    fn evict_one(&mut self) -> bool {
        for (_, peer) in self.holders() {
            let sessions = &self.peers[&peer];
            let pick = sessions
                .iter()
                .find(|(_, s)| s.evictable() && !s.served.load(Ordering::Acquire))
                .or_else(|| sessions.iter().find(|(_, s)| s.evictable()));
            if let Some((_, state)) = pick {
                state.evicted.store(true, Ordering::Release);
                state.evict.notify_one();
                self.live -= 1;
                return true;
            }
        }
        false
    }
}

/// The slot table of one server.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    table: Mutex<Table>,
    freed: Notify,
}

/// A held slot; released when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    peer: Peer,
    pub state: Arc<SlotState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.slots.table.lock() {
            if !self.state.evicted.load(Ordering::Acquire) {
                t.live -= 1;
            }
            if let Some(v) = t.peers.get_mut(&self.peer) {
                v.retain(|(id, _)| *id != self.id);
                if v.is_empty() {
                    t.peers.remove(&self.peer);
                }
            }
        }
        self.slots.freed.notify_waiters();
    }
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots { max: max.max(1), table: Mutex::new(Table::default()), freed: Notify::new() })
    }

    /// Sessions held now (evicted ones still closing included).
    pub fn len(&self) -> usize {
        self.table.lock().map_or(0, |t| t.peers.values().map(Vec::len).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a slot for a new session of `peer`, evicting one if all are taken; waits only
    /// while every session is answering a request.
    pub async fn acquire(self: &Arc<Self>, peer: Peer) -> Slot {
        loop {
            let freed = self.freed.notified();
            if let Some(slot) = self.try_acquire(peer) {
                return slot;
            }
            // A session that finishes its request becomes evictable without freeing its
            // slot: look again now and then, not only when one closes.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), freed).await;
        }
    }

    /// [`Self::acquire`] without waiting: `None` when every session is busy.
    pub fn try_acquire(self: &Arc<Self>, peer: Peer) -> Option<Slot> {
        let mut t = self.table.lock().ok()?;
        if t.live >= self.max && !t.evict_one() {
            return None;
        }
        t.next_id += 1;
        t.live += 1;
        let (id, state) = (t.next_id, Arc::new(SlotState::default()));
        t.peers.entry(peer).or_default().push((id, state.clone()));
        Some(Slot { slots: self.clone(), id, peer, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Peer = Peer::Unknown;

    #[test]
    fn the_biggest_holder_evicts_its_own_sessions() {
        let slots = Slots::new(4);
        let scraper = Peer::Ip("10.0.0.1".parse().unwrap());
        let flood = Peer::Ip("10.0.0.66".parse().unwrap());
        let legit = slots.try_acquire(scraper).unwrap(); // connected, request not sent yet
        let hostile: Vec<Slot> = (0..3).map(|_| slots.try_acquire(flood).unwrap()).collect();
        // However many more the flood opens, it only ever closes its own.
        let mut more = Vec::new();
        for _ in 0..100 {
            more.push(slots.try_acquire(flood).unwrap());
        }
        assert!(!legit.state.evicted.load(Ordering::Acquire));
        assert!(hostile.iter().all(|h| h.state.evicted.load(Ordering::Acquire)));
    }

    #[test]
    fn a_full_table_evicts_the_oldest_silent_session_first() {
        let slots = Slots::new(3);
        let served = slots.try_acquire(P).unwrap();
        served.state.begin();
        served.state.end(); // idle keep-alive
        let silent_old = slots.try_acquire(P).unwrap();
        let busy = slots.try_acquire(P).unwrap();
        busy.state.begin();
        // Full: the newcomer evicts the silent one, not the served one, not the busy one.
        let _new = slots.try_acquire(P).unwrap();
        assert!(silent_old.state.evicted.load(Ordering::Acquire));
        assert!(!served.state.evicted.load(Ordering::Acquire));
        assert!(!busy.state.evicted.load(Ordering::Acquire));
        drop(silent_old);
        assert_eq!(slots.len(), 3);
        // Next: the newcomer has not sent anything yet, so it goes before the served one.
        let _newer = slots.try_acquire(P).unwrap();
        assert!(_new.state.evicted.load(Ordering::Acquire));
    }

    #[test]
    fn only_busy_sessions_make_a_newcomer_wait() {
        let slots = Slots::new(2);
        let a = slots.try_acquire(P).unwrap();
        let b = slots.try_acquire(P).unwrap();
        a.state.begin();
        b.state.begin();
        assert!(slots.try_acquire(P).is_none());
        b.state.end();
        let c = slots.try_acquire(P).expect("b is idle now");
        assert!(b.state.evicted.load(Ordering::Acquire));
        drop((a, b, c));
        assert!(slots.is_empty());
    }

    #[tokio::test]
    async fn an_evicted_session_is_told_and_a_waiter_wakes_when_a_slot_frees() {
        let slots = Slots::new(1);
        let a = slots.try_acquire(P).unwrap();
        let state = a.state.clone();
        let waiter = tokio::spawn(async move { state.evicted().await });
        a.state.begin();
        let s2 = slots.clone();
        let pending = tokio::spawn(async move { s2.acquire(P).await.id });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!pending.is_finished(), "waits while the only session is busy");
        a.state.end();
        drop(a); // the session ended: the waiter gets its slot
        assert!(pending.await.unwrap() > 1);
        waiter.abort();
        // An already evicted state resolves at once.
        let s = SlotState::default();
        s.evicted.store(true, Ordering::Release);
        s.evicted().await;
    }
}
