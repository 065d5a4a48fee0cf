//! Free loopback ports.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

static NEXT: AtomicU16 = AtomicU16::new(0);

/// A loopback port nothing listens on now, and `port + offset` free too (Redis Cluster
/// uses `port + 10000` for its bus, NATS clustering a second port). Ports are drawn
/// from 20000–29999 (with a per-process start), so `port + 10000` stays valid.
pub fn free_port(offset: u16) -> u16 {
    let start = 20_000 + (std::process::id() % 5_000) as u16 * 2;
    for _ in 0..20_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (start - 20_000 + n) % 10_000;
        let ok = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if ok(port) && (offset == 0 || ok(port + offset)) {
            return port;
        }
    }
    panic!("no free loopback port found")
}

/// Whether something accepts connections on `port`.
pub(crate) fn open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}
