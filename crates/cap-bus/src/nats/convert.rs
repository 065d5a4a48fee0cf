//! Conversions between async-nats types and this crate's.

use crate::{Error, ErrorKind, Headers, Message};
use bytes::Bytes;

/// Our headers as an async-nats header map (`None` when empty).
pub(super) fn header_map(headers: &Headers) -> Option<async_nats::HeaderMap> {
    if headers.is_empty() {
        return None;
    }
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers.iter() {
        map.append(name, value);
    }
    Some(map)
}

/// A received core NATS message as ours.
pub(super) fn message(m: async_nats::Message) -> Message {
    message_parts(
        m.subject.as_str(),
        m.reply.as_ref().map(|r| r.as_str()),
        m.headers.as_ref(),
        m.payload,
    )
}

pub(super) fn message_parts(
    subject: &str,
    reply: Option<&str>,
    headers: Option<&async_nats::HeaderMap>,
    payload: Bytes,
) -> Message {
    let mut msg = Message::new(subject, payload);
    if let Some(reply) = reply {
        msg = msg.with_reply(reply);
    }
    if let Some(map) = headers.filter(|h| !h.is_empty()) {
        let mut ours = Headers::new();
        for (name, values) in map.iter() {
            for value in values {
                // A header another client sent that our rules reject (a name with
                // non-ASCII bytes, say) is skipped rather than failing the message.
                if ours
                    .append(AsRef::<str>::as_ref(name), value.as_str())
                    .is_err()
                {
                    tracing::debug!("skipped a header that cap-bus cannot represent");
                }
            }
        }
        msg = msg.with_headers(ours);
    }
    msg
}

pub(super) fn publish_error(e: async_nats::PublishError, closed: bool) -> Error {
    use async_nats::client::PublishErrorKind as K;
    let kind = match e.kind() {
        K::MaxPayloadExceeded => ErrorKind::PayloadTooLarge,
        K::InvalidSubject => ErrorKind::InvalidSubject,
        K::Send if closed => ErrorKind::Closed,
        K::Send => ErrorKind::ConnectionLost,
    };
    Error::with_source(kind, e.to_string(), e)
}

pub(super) fn subscribe_error(e: async_nats::SubscribeError, closed: bool) -> Error {
    use async_nats::client::SubscribeErrorKind as K;
    let kind = match e.kind() {
        K::InvalidSubject | K::InvalidQueueName => ErrorKind::InvalidPattern,
        K::Other if closed => ErrorKind::Closed,
        K::Other => ErrorKind::Subscribe,
    };
    Error::with_source(kind, e.to_string(), e)
}

pub(super) fn request_error(e: async_nats::RequestError, subject: &str, closed: bool) -> Error {
    use async_nats::client::RequestErrorKind as K;
    let kind = match e.kind() {
        K::TimedOut => ErrorKind::Timeout,
        K::NoResponders => ErrorKind::NoResponders,
        K::InvalidSubject => ErrorKind::InvalidSubject,
        K::MaxPayloadExceeded => ErrorKind::PayloadTooLarge,
        K::Other if closed => ErrorKind::Closed,
        K::Other => ErrorKind::Publish,
    };
    Error::with_source(kind, format!("request on {subject}"), e)
}

/// A JetStream publish error, and whether retrying may help (the server did not answer,
/// the connection dropped, or JetStream was not reachable yet after a reconnect).
pub(super) fn js_publish_error(e: async_nats::jetstream::context::PublishError) -> (Error, bool) {
    use async_nats::jetstream::context::PublishErrorKind as K;
    let (kind, retry) = match e.kind() {
        K::TimedOut => (ErrorKind::Timeout, true),
        K::BrokenPipe => (ErrorKind::ConnectionLost, true),
        K::StreamNotFound => (ErrorKind::Publish, true),
        K::MaxPayloadExceeded => (ErrorKind::PayloadTooLarge, false),
        _ => (ErrorKind::Publish, false),
    };
    (Error::with_source(kind, e.to_string(), e), retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let mut h = Headers::new();
        h.append("A", "1").unwrap();
        h.append("A", "2").unwrap();
        h.insert("B", "x").unwrap();
        let map = header_map(&h).unwrap();
        let back = message_parts("s", Some("r"), Some(&map), Bytes::from_static(b"p"));
        assert_eq!(back.headers().get_all("A").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(back.headers().get("B"), Some("x"));
        assert_eq!(back.reply(), Some("r"));
        assert!(header_map(&Headers::new()).is_none());
    }
}
