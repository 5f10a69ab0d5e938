//! Connection slots with eviction: what keeps one client from denying service to others by
//! holding connections open (HTTP and the Munin shim share it).
//!
//! A server admits at most `max` sessions. When all are taken and a new connection
//! arrives, one session *without a request in progress* is closed to make room, taken from
//! the client (peer address, an IPv6 /64, or the process at the other end of a Unix
//! socket) that holds the most sessions: first its sessions that have been silent past
//! [`NEWCOMER_GRACE`], then those that sent some bytes but never completed a request
//! (trickling), then its idle ones between requests (a keep-alive scraper reconnects on its
//! next scrape at no cost), and last a client's only session while it is younger than the
//! grace and not yet served (a newcomer that has not had time to finish its request; silent
//! ones before those that spoke); on a tie the oldest first,
//! whichever client it belongs to. Only when every session is in the middle of a request
//! does a new one wait. So a client flooding connections that say nothing only ever evicts
//! its own, however fast it reconnects; a flood spread over thousands of addresses (one
//! session each, as many as the scraper holds) evicts its own older silent sessions, and
//! one whose every address holds a served keep-alive session evicts those: never the
//! scraper's new connection that is sending its request now, nor one whose request has
//! arrived.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long a client's only session counts as a newcomer that has not yet had time to send
/// its request: it is evicted after every idle served session. Longer than a loaded host
/// takes to deliver a scraper's request (milliseconds), far shorter than the header timeout.
pub const NEWCOMER_GRACE: Duration = Duration::from_secs(2);

/// How one session stands, shared between the server loop and the session task.
#[derive(Debug)]
pub struct SlotState {
    /// When the session took its slot.
    since: Instant,
    /// A request is being answered.
    busy: AtomicBool,
    /// At least one request was answered.
    served: AtomicBool,
    /// The client sent at least one byte.
    spoke: AtomicBool,
    /// The connection's socket, when known ([`SlotState::watch_fd`]): bytes waiting in it
    /// mean the client spoke, even if the session's task has not run yet to see them.
    fd: AtomicI32,
    /// The slot table chose it to make room.
    evicted: AtomicBool,
    evict: Notify,
}

impl Default for SlotState {
    fn default() -> Self {
        SlotState {
            since: Instant::now(),
            busy: AtomicBool::default(),
            served: AtomicBool::default(),
            spoke: AtomicBool::default(),
            fd: AtomicI32::default(),
            evicted: AtomicBool::default(),
            evict: Notify::new(),
        }
    }
}

impl SlotState {
    /// A request has arrived: not evictable until [`Self::end`].
    pub fn begin(&self) {
        self.busy.store(true, Ordering::Release);
    }

    /// Lets the table look at the socket itself before evicting a session as silent.
    /// `fd` must stay open while the slot is held (it is the session's own socket).
    pub fn watch_fd(&self, fd: i32) {
        self.fd.store(fd + 1, Ordering::Release); // 0: none
    }

    /// Bytes are waiting in the socket: the client spoke, whether or not its task has run.
    fn has_pending_bytes(&self) -> bool {
        let fd = self.fd.load(Ordering::Acquire) - 1;
        if fd < 0 {
            return false;
        }
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int; on a descriptor that is not a socket it fails.
        unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) == 0 && n > 0 }
    }

    /// The client sent its first byte (a request is on its way).
    pub fn spoke(&self) {
        self.spoke.store(true, Ordering::Release);
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

    /// Which kind of session goes first: 0 silent, 1 spoke but never served, 2 idle.
    fn class(&self) -> u8 {
        if self.served.load(Ordering::Acquire) {
            2
        } else if self.spoke.load(Ordering::Acquire) {
            1
        } else {
            0
        }
    }

    /// Its place in the eviction order within its client: a newcomer (its client's only
    /// session, not yet served, younger than [`NEWCOMER_GRACE`]) after every other session,
    /// then by [`Self::class`].
    fn rank(&self, held: usize, now: Instant) -> (bool, u8) {
        let class = self.class();
        let newcomer = held == 1 && class < 2 && now.saturating_duration_since(self.since) < NEWCOMER_GRACE;
        (newcomer, class)
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

impl Peer {
    /// A TCP client: its IPv4 address, or its IPv6 /64 (one host is handed a whole /64, so
    /// its addresses are one client). An IPv4-mapped IPv6 address is the IPv4 one.
    pub fn ip(addr: std::net::IpAddr) -> Peer {
        match addr {
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Peer::Ip(v4.into()),
                None if v6.is_loopback() => Peer::Ip(addr),
                None => Peer::Ip(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
            v4 => Peer::Ip(v4),
        }
    }
}

/// Which session goes first: the biggest holder's, then by [`SlotState::rank`], then the
/// oldest (smallest id); smaller is evicted first.
type EvictionRank = (std::cmp::Reverse<usize>, (bool, u8), u64);

/// The table: each client's sessions, oldest first, and how many are not yet evicted.
#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    live: usize,
    peers: std::collections::HashMap<Peer, Vec<(u64, Arc<SlotState>)>>,
}

impl Table {
    /// Evicts one session without a request in progress: the biggest holder's; within it
    /// silent before trickling before idle before a newcomer; on a tie the oldest, across
    /// clients. False when every session is busy.
    fn evict_one(&mut self) -> bool {
        let now = Instant::now();
        loop {
            // One pass, no allocation: this runs for every connection accepted while full.
            let mut pick: Option<(EvictionRank, &Arc<SlotState>)> = None;
            for sessions in self.peers.values() {
                let held = sessions.iter().filter(|(_, s)| !s.evicted.load(Ordering::Acquire)).count();
                for (id, s) in sessions.iter().filter(|(_, s)| s.evictable()) {
                    let key = (std::cmp::Reverse(held), s.rank(held, now), *id);
                    if pick.as_ref().is_none_or(|(best, _)| key < *best) {
                        pick = Some((key, s));
                    }
                }
            }
            let Some(state) = pick.map(|(_, s)| s.clone()) else { return false };
            // Silent as far as its task knows, but its request may be waiting in the socket.
            if state.class() == 0 && state.has_pending_bytes() {
                state.spoke();
                continue;
            }
            state.evicted.store(true, Ordering::Release);
            state.evict.notify_one();
            self.live -= 1;
            return true;
        }
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

    /// A flood spread over many addresses, one silent session each, as many as the
    /// scraper holds: each newcomer evicts the oldest silent session, never the scraper's
    /// newer one, nor one that spoke or whose request arrived. (Before: ties between
    /// holders of one session went in hash order, and reset 18 of 30 scrapes.)
    #[test]
    fn many_addresses_of_one_session_each_evict_their_oldest() {
        let slots = Slots::new(64);
        let addr = |i: u32| Peer::ip(std::net::Ipv4Addr::from(0x7f00_0000 + 2 + i).into());
        let mut flood: Vec<Slot> = (0..63).map(|i| slots.try_acquire(addr(i)).unwrap()).collect();
        let scraper = slots.try_acquire(Peer::ip("127.0.0.1".parse().unwrap())).unwrap();
        // Every older session goes before it: 63 newcomers evict the 63 older ones.
        for i in 0..63 {
            flood.push(slots.try_acquire(addr(100 + i)).unwrap());
        }
        assert!(!scraper.state.evicted.load(Ordering::Acquire), "the scraper went before older sessions");
        assert_eq!(flood.iter().filter(|s| s.state.evicted.load(Ordering::Acquire)).count(), 63);
        flood.retain(|s| !s.state.evicted.load(Ordering::Acquire));
        // Once it spoke, it outlasts every silent session, however many newer ones arrive.
        scraper.state.spoke();
        for i in 0..200 {
            flood.push(slots.try_acquire(addr(5000 + i)).unwrap());
            flood.retain(|s| !s.state.evicted.load(Ordering::Acquire));
        }
        assert!(!scraper.state.evicted.load(Ordering::Acquire));
    }

    /// Every address holds one served keep-alive session and reconnects when it is closed:
    /// the scraper's new connection, its address's only session, outlasts every idle one,
    /// however many newcomers arrive while it sends its request. (Before: a silent session
    /// went before a served one, so the scraper's new connection was the one evicted.)
    #[test]
    fn a_newcomer_outlasts_idle_served_sessions_of_other_addresses() {
        let slots = Slots::new(64);
        let addr = |i: u32| Peer::ip(std::net::Ipv4Addr::from(0x7f00_0000 + 2 + i).into());
        let served = |s: Slot| {
            s.state.begin();
            s.state.end();
            s
        };
        let mut flood: Vec<Slot> = (0..64).map(|i| served(slots.try_acquire(addr(i)).unwrap())).collect();
        let scraper = slots.try_acquire(Peer::ip("127.0.0.1".parse().unwrap())).unwrap();
        // The evicted reconnect, and each of their new connections is served at once.
        for i in 0..200 {
            flood.retain(|s| !s.state.evicted.load(Ordering::Acquire));
            flood.push(served(slots.try_acquire(addr(1000 + i)).unwrap()));
        }
        assert!(!scraper.state.evicted.load(Ordering::Acquire), "the scraper's new connection was evicted");
        // Past the grace, a session that never spoke is silent like any other.
        let old = SlotState { since: Instant::now() - NEWCOMER_GRACE, ..SlotState::default() };
        assert_eq!(old.rank(1, Instant::now()), (false, 0));
        assert_eq!(SlotState::default().rank(2, Instant::now()), (false, 0), "not its client's only session");
    }

    #[test]
    fn an_ipv6_prefix_is_one_client() {
        let a = Peer::ip("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Peer::ip("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap());
        let c = Peer::ip("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b, "one /64");
        assert_ne!(a, c);
        assert_eq!(Peer::ip("::ffff:127.0.0.2".parse().unwrap()), Peer::ip("127.0.0.2".parse().unwrap()));
        assert_ne!(Peer::ip("::1".parse().unwrap()), Peer::ip("::2".parse().unwrap()));
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
