//! Reconnect signals. The [`Bus`](cap_bus::Bus) trait has no reconnect event, so a
//! worker re-announces itself on a signal given to
//! [`WorkerBuilder::handshake_on`](crate::WorkerBuilder::handshake_on). For
//! [`NatsBus`] this module derives one from the connection counter.

use cap_bus::NatsBus;
use futures_core::Stream;
use std::time::Duration;

/// Yields once each time `bus` re-establishes its connection (checked every `every`;
/// the first connection does not count).
pub fn nats_reconnects(bus: NatsBus, every: Duration) -> impl Stream<Item = ()> + Send + 'static {
    let first = bus.stats().connects;
    futures_util::stream::unfold((bus, first), move |(bus, mut seen)| async move {
        loop {
            tokio::time::sleep(every).await;
            if cap_bus::Bus::is_closed(&bus) {
                return None;
            }
            let now = bus.stats().connects;
            if now > seen {
                seen = now;
                return Some(((), (bus, seen)));
            }
        }
    })
}
