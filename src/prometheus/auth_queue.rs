//! Who pays for bcrypt next. bcrypt is slow on purpose (tens of ms a check), so the server
//! runs one check at a time and a password guesser must not decide who waits:
//!
//! - a client (an IPv4 address or an IPv6 /64) has at most [`PER_CLIENT`] checks queued or
//!   running; more are refused (429) at once, without hashing;
//! - at most [`MAX_WAITING`] checks wait in all: a newcomer that would overflow it pushes
//!   out the waiter that ranks last (429), or is refused itself if it ranks last;
//! - the next check run is the best ranked: a client whose password was right before goes
//!   first (after SIGHUP empties the credential cache), then clients by how many of their
//!   checks failed, then by how many attempts they made (a guesser retrying at once after
//!   each refusal ranks behind a scraper that asks once), then first come first served.
//!   A full queue takes a newcomer only if it ranks strictly better than its last waiter.
//!
//! So 300 addresses guessing two at a time queue behind a scraper that asks once: it waits
//! for at most the check running now. What a client did is forgotten after
//! [`FAILURE_MEMORY`], and the memory is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::slots::Peer;

/// Checks one client may have queued or running.
pub const PER_CLIENT: usize = 2;
/// Checks waiting in all.
pub const MAX_WAITING: usize = 64;
/// How long a client's failures count against it.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(600);
/// Clients whose failures are remembered (past it the oldest half is forgotten).
const MAX_REMEMBERED: usize = 10_000;

/// How a check ended, for the client's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Good,
    Bad,
}

struct Waiter {
    peer: Peer,
    seq: u64,
    go: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    running: bool,
    seq: u64,
    /// The waiter the turn was last handed to.
    handed: Option<u64>,
    waiting: Vec<Waiter>,
    /// Checks queued or running per client.
    pending: HashMap<Peer, usize>,
    /// What each client did lately.
    records: HashMap<Peer, Record>,
}

/// A client's recent history.
#[derive(Debug, Clone, Copy)]
struct Record {
    good: bool,
    failures: u32,
    attempts: u32,
    at: Instant,
}

impl State {
    fn record(&self, peer: &Peer) -> Option<Record> {
        self.records.get(peer).filter(|r| r.at.elapsed() < FAILURE_MEMORY).copied()
    }

    /// Updates a client's record (a fresh one past the memory), bounding the map.
    fn note(&mut self, peer: Peer, f: impl FnOnce(&mut Record)) {
        let mut r = self.record(&peer).unwrap_or(Record { good: false, failures: 0, attempts: 0, at: Instant::now() });
        f(&mut r);
        r.at = Instant::now();
        if self.records.len() >= MAX_REMEMBERED && !self.records.contains_key(&peer) {
            let mut ages: Vec<Instant> = self.records.values().map(|r| r.at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.records.retain(|_, r| r.at > cut);
        }
        self.records.insert(peer, r);
    }

    /// Sort key: smaller runs first.
    fn rank(&self, w: &Waiter) -> (bool, u32, u32, u64) {
        let r = self.record(&w.peer);
        (!r.is_some_and(|r| r.good), r.map_or(0, |r| r.failures), r.map_or(0, |r| r.attempts), w.seq)
    }

    fn release_pending(&mut self, peer: &Peer) {
        if let Some(n) = self.pending.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(peer);
            }
        }
    }

    /// Hands the turn to the best waiter still listening, or frees it.
    fn hand_over(&mut self) {
        while !self.waiting.is_empty() {
            let best = (0..self.waiting.len()).min_by_key(|&i| self.rank(&self.waiting[i])).unwrap_or(0);
            let w = self.waiting.swap_remove(best);
            if w.go.send(()).is_ok() {
                self.handed = Some(w.seq);
                return; // still running: the turn passed to it
            }
            self.release_pending(&w.peer); // it gave up (its client went away)
        }
        self.running = false;
    }
}

/// The queue of one server.
#[derive(Default)]
pub struct AuthQueue {
    state: Mutex<State>,
}

/// The turn to run one check; tell [`Permit::done`] how it ended. Dropped without it (the
/// request was abandoned), it passes the turn on all the same.
pub struct Permit<'a> {
    queue: &'a AuthQueue,
    peer: Peer,
    verdict: Option<Verdict>,
}

impl Permit<'_> {
    pub fn done(mut self, verdict: Verdict) {
        self.verdict = Some(verdict);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let Ok(mut s) = self.queue.state.lock() else { return };
        match self.verdict {
            Some(Verdict::Bad) => s.note(self.peer, |r| r.failures = r.failures.saturating_add(1)),
            Some(Verdict::Good) => {
                s.note(self.peer, |r| *r = Record { good: true, failures: 0, attempts: 0, at: r.at })
            }
            None => {}
        }
        s.release_pending(&self.peer);
        s.hand_over();
    }
}

impl AuthQueue {
    /// Waits for `peer`'s turn to run a check. `Err` when it is refused: the client has
    /// [`PER_CLIENT`] checks pending already, or the queue is full of better-ranked ones
    /// (or it was pushed out of the queue by one).
    pub async fn wait_turn(&self, peer: Peer) -> Result<Permit<'_>, ()> {
        let seq;
        let rx = {
            let Ok(mut s) = self.state.lock() else { return Err(()) };
            s.note(peer, |r| r.attempts = r.attempts.saturating_add(1));
            if s.pending.get(&peer).copied().unwrap_or(0) >= PER_CLIENT {
                return Err(());
            }
            if !s.running {
                s.running = true;
                *s.pending.entry(peer).or_default() += 1;
                return Ok(Permit { queue: self, peer, verdict: None });
            }
            s.seq += 1;
            seq = s.seq;
            let (go, rx) = oneshot::channel();
            let me = Waiter { peer, seq: s.seq, go };
            if s.waiting.len() >= MAX_WAITING {
                let worst = (0..s.waiting.len()).max_by_key(|&i| s.rank(&s.waiting[i])).unwrap_or(0);
                if s.rank(&me) >= s.rank(&s.waiting[worst]) {
                    return Err(());
                }
                let out = s.waiting.swap_remove(worst); // its receiver sees the sender dropped
                s.release_pending(&out.peer);
            }
            *s.pending.entry(peer).or_default() += 1;
            s.waiting.push(me);
            rx
        };
        // Dropped while waiting (the client went away): its place and pending count go, and
        // a turn already handed to it is passed on.
        struct Gone<'a>(&'a AuthQueue, Peer, u64, bool);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                let (queue, peer, seq, armed) = (self.0, self.1, self.2, self.3);
                if !armed {
                    return;
                }
                let Ok(mut s) = queue.state.lock() else { return };
                if let Some(i) = s.waiting.iter().position(|w| w.seq == seq) {
                    s.waiting.swap_remove(i);
                    s.release_pending(&peer);
                } else if s.handed == Some(seq) {
                    s.handed = None;
                    s.release_pending(&peer);
                    s.hand_over();
                }
                // Otherwise it was pushed out of a full queue: already released.
            }
        }
        let mut gone = Gone(self, peer, seq, true);
        let turn = rx.await;
        gone.3 = false;
        match turn {
            Ok(()) => Ok(Permit { queue: self, peer, verdict: None }),
            Err(_) => Err(()), // pushed out of a full queue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Peer {
        Peer::ip(s.parse().unwrap())
    }

    /// Guessers that failed once queue behind a scraper that has not failed, however many
    /// of them wait and however long they have waited.
    #[tokio::test]
    async fn a_client_without_failures_goes_before_guessers() {
        let q = std::sync::Arc::new(AuthQueue::default());
        // 30 guessers fail once each.
        for i in 0..30 {
            q.wait_turn(ip(&format!("127.0.1.{i}"))).await.unwrap().done(Verdict::Bad);
        }
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let running = q.wait_turn(ip("127.0.9.9")).await.unwrap(); // someone's check runs
        let mut tasks = Vec::new();
        for i in 0..30 {
            let (q, order) = (q.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = q.wait_turn(ip(&format!("127.0.1.{i}"))).await.unwrap();
                order.lock().unwrap().push(format!("guesser {i}"));
                p.done(Verdict::Bad);
            }));
        }
        tokio::task::yield_now().await;
        let (q2, order2) = (q.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let p = q2.wait_turn(ip("127.0.0.1")).await.unwrap();
            order2.lock().unwrap().push("scraper".to_owned());
            p.done(Verdict::Good);
        }));
        tokio::task::yield_now().await;
        drop(running); // the running check ends: the scraper is next, not a guesser
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        assert_eq!(order.len(), 31);
        assert_eq!(order[0], "scraper", "{order:?}");
    }

    #[tokio::test]
    async fn per_client_and_total_bounds() {
        let q = std::sync::Arc::new(AuthQueue::default());
        let a = ip("10.0.0.1");
        let first = q.wait_turn(a).await.unwrap();
        let second = {
            let q = q.clone();
            tokio::spawn(async move { q.wait_turn(a).await.map(|p| p.done(Verdict::Bad)).is_ok() })
        };
        tokio::task::yield_now().await;
        assert!(q.wait_turn(a).await.is_err(), "a third check from one client is refused");
        // The queue full of fresh clients: a client that failed is refused; a fresh one
        // pushes out the oldest fresh waiter.
        let mut fresh = Vec::new();
        for i in 0..MAX_WAITING {
            let q = q.clone();
            fresh.push(tokio::spawn(
                async move { q.wait_turn(ip(&format!("10.1.{}.{}", i / 200, i % 200))).await.is_ok() },
            ));
        }
        tokio::task::yield_now().await;
        assert!(q.state.lock().unwrap().waiting.len() <= MAX_WAITING);
        drop(first);
        assert!(second.await.unwrap(), "the queued check got its turn");
        // Abandoned waiters release everything: once all are done the queue is idle.
        for f in fresh {
            f.abort();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let s = q.state.lock().unwrap();
        assert!(s.waiting.len() <= MAX_WAITING);
    }
}
