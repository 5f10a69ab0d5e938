//! The small shared maps: a fast hash map for keys this host chooses (addresses, ports,
//! destinations it connects to) and the top-K selection every "busiest K" export uses.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Fx-style multiply-rotate hasher (as in rustc). The maps here are keyed by local
/// addresses and ports and by destinations this host connects to, not by what a remote
/// peer chooses, so SipHash's flooding resistance buys nothing and costs a third of the
/// per-socket time.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Keeps the `k` first items in `order`, sorted: O(n) selection, then O(k log k). The one
/// top-K of every "busiest K" export.
pub fn top_k_cmp<T>(items: &mut Vec<T>, k: usize, order: impl Fn(&T, &T) -> std::cmp::Ordering) {
    if items.len() > k {
        if k == 0 {
            items.clear();
            return;
        }
        items.select_nth_unstable_by(k - 1, &order);
        items.truncate(k);
    }
    items.sort_by(order);
}

/// Keeps the `k` smallest items by `key`, sorted.
pub fn top_k_by<T, K: Ord>(items: &mut Vec<T>, k: usize, key: impl Fn(&T) -> K) {
    top_k_cmp(items, k, |a, b| key(a).cmp(&key(b)));
}

/// The `k` largest counts of a map, largest first, ties by key: the top-K of a counting map.
pub fn top_counts<K: Copy + Ord + std::hash::Hash>(map: &FxMap<K, u64>, k: usize) -> Vec<(K, u64)> {
    let mut items: Vec<(K, u64)> = map.iter().map(|(k, v)| (*k, *v)).collect();
    top_k_by(&mut items, k, |&(key, n)| (std::cmp::Reverse(n), key));
    items
}

/// A set of port numbers, one bit each (8 KiB): which ports listen, which are watched.
#[derive(Debug, Clone)]
pub struct PortBits(Box<[u64; 1024]>);

impl Default for PortBits {
    fn default() -> Self {
        PortBits(Box::new([0; 1024]))
    }
}

impl PortBits {
    pub fn set(&mut self, port: u16) {
        self.0[usize::from(port >> 6)] |= 1 << (port & 63);
    }
    pub fn get(&self, port: u16) -> bool {
        self.0[usize::from(port >> 6)] & 1 << (port & 63) != 0
    }
    pub fn clear(&mut self) {
        self.0.fill(0);
    }
}
