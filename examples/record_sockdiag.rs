//! Records one raw inet_diag dump as a test fixture (see `tests/fixtures/sockdiag/`).
//!
//! `record_sockdiag 4|6|all|bad-protocol|short-request OUT` (`all`: sockwatch's one-walk
//! request for both families): writes the request's sequence number (u32 LE),
//! then every datagram the kernel sent, each prefixed with its length (u32 LE).
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};
use sockwatch::sources::tcp::sockets::SockDiag;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (family, out) = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some(f @ ("4" | "6" | "all" | "bad-protocol" | "short-request")), Some(out)) => (f.to_owned(), out.clone()),
        _ => {
            eprintln!("usage: record_sockdiag 4|6|all|bad-protocol|short-request OUT");
            std::process::exit(2);
        }
    };
    let af = if family == "6" { libc::AF_INET6 as u8 } else { libc::AF_INET as u8 };
    let seq = 4242;
    let mut req = if family == "all" { SockDiag::request_all_families(seq) } else { SockDiag::request(af, seq) };
    if family == "bad-protocol" {
        req[17] = 255; // inet_diag_req_v2.sdiag_protocol: no such handler
    }
    if family == "short-request" {
        req.truncate(16 + 8); // shorter than inet_diag_req_v2: the kernel answers NLMSG_ERROR
        req[0..4].copy_from_slice(&24u32.to_ne_bytes());
    }
    let mut sock = Socket::new(NETLINK_SOCK_DIAG).expect("socket");
    sock.bind_auto().expect("bind");
    sock.connect(&SocketAddr::new(0, 0)).expect("connect");
    sock.send(&req, 0).expect("send");
    let mut file = seq.to_le_bytes().to_vec();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut w: &mut [u8] = &mut buf[..];
        let n = sock.recv(&mut w, 0).expect("recv");
        file.extend_from_slice(&(n as u32).to_le_bytes());
        file.extend_from_slice(&buf[..n]);
        // Stop after NLMSG_DONE or NLMSG_ERROR in this datagram.
        let mut off = 0;
        let mut done = false;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            done |= ty == 2 || ty == 3;
            off += (len.max(16) + 3) & !3;
        }
        if done {
            break;
        }
    }
    std::fs::write(&out, file).expect("write");
}
