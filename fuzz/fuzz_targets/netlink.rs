//! Netlink replies: the inet_diag dump parser (TCP, and UDP's memory-info attribute), the
//! ctnetlink breakdown, attribution and event parsers must never panic, whatever the kernel (or a corrupted
//! buffer) hands them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sockwatch::sources::ctnetlink::{attribution as ct_attribution, dump as ct_breakdown, events as ct_events};
use sockwatch::sources::tcp::{
    ports::{EphemeralRange, PortAggregator},
    sockets,
};
use sockwatch::sources::kernel::inet_diag;
use sockwatch::sources::udp::sockets as udp;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let seq = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let body = &data[4..];
    let mut states = sockets::TcpStates::default();
    // The whole range, and a narrow one with a short TIME_WAIT, so the projection's
    // stepping toward exhaustion runs on whatever the histograms hold.
    let narrow = EphemeralRange { capacity: u32::from(data[0]), time_wait_seconds: 1 + u32::from(data[1] % 120), ..EphemeralRange::new(1024, 1100) };
    for range in [EphemeralRange::new(1024, 65535), narrow] {
        let mut ports = PortAggregator::default();
        ports.begin_range(Some(range));
        let mut intr = false;
        let _ = inet_diag::parse_datagram(body, seq, &mut intr, &mut |m| {
            states.count(m);
            ports.visit(m);
            // The UDP reply's attribute walk (SKMEMINFO) and socket cookie.
            let _ = (udp::meminfo(m), m.cookie(), m.attribute(u16::from(seq as u8)));
        });
        let _ = ports.finish(&Default::default());
    }
    // The breakdown, its attribution (dump and events, in and out) and the events' walk.
    let mut b = ct_breakdown::Breakdown::default();
    let mut a = ct_attribution::Attributor::default();
    let _ = ct_breakdown::parse_datagram(body, seq, &mut |e| {
        b.count(e);
        a.add(e, 1);
    });
    ct_breakdown::count_entry(body, &mut b);
    // Entries that predate a subscription, followed by id through two dumps.
    let mut old = ct_events::Predating::new(std::time::Duration::from_secs(600));
    old.subscribed();
    let now = std::time::Instant::now();
    let _ = ct_breakdown::parse_datagram(body, seq, &mut |e| old.visit(e, now));
    old.dumped();
    let _ = ct_breakdown::parse_datagram(body, seq, &mut |e| old.visit(e, now));
    old.dumped();
    let _ = old.next_due();
    ct_events::parse_events(body, &mut |delta, e| a.add(e, delta));
    let cfg =
        ct_attribution::AttributionConfig { top_k: 3, nat_ports: u32::from(data[2]), nat_recycles: data[3] & 1 == 1 };
    let _ = a.finish(&cfg);
    // Twice, a window apart: the NAT projection's arithmetic on whatever was counted.
    let _ = a.finish_at(&cfg, now + ct_attribution::NAT_RATE_WINDOW);
});
