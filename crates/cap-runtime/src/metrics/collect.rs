//! Collectors: counters kept elsewhere, read at scrape time (nothing is counted twice).

use crate::packets::PacketStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::fmt;
use std::sync::Arc;

type Read<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// Exports a packet layer's [`PacketStats`] (read at each scrape) as
/// `cap_packets_published_total`, `cap_packets_accepted_total`,
/// `cap_packets_duplicates_total`, `cap_packets_rejected_total{code}`,
/// `cap_alerts_total{outcome}` and `cap_packets_failed_results_total`.
pub struct PacketCollector(Read<PacketStats>);

impl PacketCollector {
    /// A collector reading `stats` (e.g. `move || packets.stats()`).
    pub fn new(stats: impl Fn() -> PacketStats + Send + Sync + 'static) -> Self {
        PacketCollector(Arc::new(stats))
    }
}

impl fmt::Debug for PacketCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PacketCollector")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let c = ConstCounter::new(value);
    let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

impl Collector for PacketCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let s = (self.0)();
        counter(
            &mut encoder,
            "cap_packets_published",
            "Packets published",
            s.published,
        )?;
        counter(
            &mut encoder,
            "cap_packets_accepted",
            "Packets received and accepted",
            s.accepted,
        )?;
        counter(
            &mut encoder,
            "cap_packets_duplicates",
            "CAP-PRODUCTION packets received again after their first admission",
            s.duplicates,
        )?;
        counter(
            &mut encoder,
            "cap_packets_failed_results",
            "FAILED results sent for rejected job requests",
            s.failed_results,
        )?;
        let mut m = encoder.encode_descriptor(
            "cap_packets_rejected",
            "Packets received and rejected, by CAP error code",
            None,
            MetricType::Counter,
        )?;
        for (code, n) in &s.rejected {
            let labels = [("code", code.as_i32().to_string())];
            ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "cap_alerts",
            "Alerts on sys.alert: published, suppressed by the rate limit, failed",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in [
            ("published", s.alerts_published),
            ("suppressed", s.alerts_suppressed),
            ("failed", s.alerts_failed),
        ] {
            ConstCounter::new(n).encode(m.encode_family(&[("outcome", outcome)])?)?;
        }
        Ok(())
    }
}

/// Whether a [`ValueCollector`] is a counter or a gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// Only goes up (`_total` is added to the name).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One value read by a closure at each scrape (a counter kept by another component,
/// such as a bus's reconnects, or a size such as a queue's depth).
pub struct ValueCollector {
    name: String,
    help: String,
    kind: ValueKind,
    read: Read<u64>,
}

impl ValueCollector {
    /// `name` (without `_total`), `help`, and how to read it.
    pub fn new(
        name: impl Into<String>,
        help: impl Into<String>,
        kind: ValueKind,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        ValueCollector {
            name: name.into(),
            help: help.into(),
            kind,
            read: Arc::new(read),
        }
    }
}

impl fmt::Debug for ValueCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueCollector")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Collector for ValueCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let v = (self.read)();
        match self.kind {
            ValueKind::Counter => counter(&mut encoder, &self.name, &self.help, v),
            ValueKind::Gauge => {
                let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
                let m = encoder.encode_descriptor(&self.name, &self.help, None, g.metric_type())?;
                g.encode(m)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metrics::{Registry, encode, sample};
    use cap_proto::ErrorCode;

    #[test]
    fn packet_stats_and_values_are_exported_as_read() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(PacketCollector::new(|| {
            let mut s = PacketStats {
                published: 5,
                alerts_suppressed: 2,
                ..Default::default()
            };
            s.rejected.insert(ErrorCode::PROTOCOL_SIGNATURE_INVALID, 3);
            s
        })));
        registry.register_collector(Box::new(ValueCollector::new(
            "cap_bus_reconnects",
            "Reconnects",
            ValueKind::Counter,
            || 4,
        )));
        registry.register_collector(Box::new(ValueCollector::new(
            "cap_depth",
            "Depth",
            ValueKind::Gauge,
            || 9,
        )));
        let text = encode(&registry);
        assert_eq!(sample(&text, "cap_packets_published_total"), Some(5.0));
        let code = ErrorCode::PROTOCOL_SIGNATURE_INVALID.as_i32();
        assert_eq!(
            sample(
                &text,
                &format!("cap_packets_rejected_total{{code=\"{code}\"}}")
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "cap_alerts_total{outcome=\"suppressed\"}"),
            Some(2.0)
        );
        assert_eq!(sample(&text, "cap_bus_reconnects_total"), Some(4.0));
        assert_eq!(sample(&text, "cap_depth"), Some(9.0));
    }
}
