//! The conntrack table entry by entry, over ctnetlink (`NETLINK_NETFILTER`): the entry and
//! its parsing (`entry`), who holds the entries (`attribution`), the full dump and its
//! per-state breakdown (`dump`), and the NEW/DESTROY events that keep the attribution
//! current between dumps (`events`). Arrows run one way: entry <- attribution <- dump,
//! entry <- events <- dump.

pub mod attribution;
pub mod dump;
pub mod entry;
pub mod events;
