//! Canonical (deterministic) encoding, byte-identical to the reference peer's
//! `SerializeToString(deterministic=True)`.
//!
//! The canonicalizer works on wire bytes, not on decoded structs, so it keeps what a
//! struct round trip would lose: fields this version does not model are re-emitted after
//! the known ones, in the order received, at every nesting level. That is what makes
//! signatures from newer peers verify (see [`signing_bytes`]).
//!
//! The rules, applied at every level:
//! - known fields in ascending field-number order; a oneof member at its own number;
//! - proto3 scalars equal to their default are omitted (floats by bit pattern, so `-0.0`
//!   is kept); present sub-messages are emitted even when empty; oneof members always;
//! - a repeated singular scalar keeps its last value; a repeated singular message merges;
//!   of several oneof members the last one wins;
//! - map entries sorted by key, each carrying both key and value even when default;
//! - repeated numeric fields packed; negative `int32` as 10-byte varints;
//! - unknown fields last, verbatim, in received order.
//!
//! ```
//! use cap_proto::canonical;
//! use cap_proto::v1::Handshake;
//!
//! let hs = Handshake {
//!     capabilities: [("a".to_string(), false)].into(),
//!     ..Default::default()
//! };
//! // prost omits the default `false` inside the map entry; the canonical form keeps it.
//! assert_eq!(canonical::to_bytes(&hs), [0x22, 0x05, 0x0a, 0x01, 0x61, 0x10, 0x00]);
//! ```

#[doc(hidden)]
pub mod encode;
mod layout;
mod wire;

use crate::message::CapMessage;
use layout::{Field, Layouts, Scalar, Shape, VarintKind, layouts};
use wire::{LEN, Reader, Value, put_len, put_tag, put_varint};

/// Nesting depth at which decoding gives up (the reference peer's limit is 100).
pub(crate) const MAX_DEPTH: u32 = 100;

/// Field number of `BusPacket.signature`, cleared before signing.
pub const SIGNATURE_FIELD: u32 = 14;

/// Why bytes are not a valid protobuf encoding of the expected message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ends inside a field.
    #[error("truncated input")]
    Truncated,
    /// A varint longer than 10 bytes or above 2^64.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// Field number 0, above 2^29-1, or a tag above 32 bits.
    #[error("invalid field tag")]
    InvalidTag,
    /// Wire types 6 and 7 do not exist.
    #[error("invalid wire type {0}")]
    InvalidWireType(u8),
    /// An end-group tag without its start.
    #[error("unexpected end-group tag")]
    UnexpectedEndGroup,
    /// A packed fixed-width field whose length is not a multiple of the width.
    #[error("packed field {0} has a length that is not a multiple of its element size")]
    BadPackedLength(u32),
    /// A `string` field that is not UTF-8.
    #[error("field {0} is not valid UTF-8")]
    InvalidUtf8(u32),
    /// Nested deeper than the limit.
    #[error("message nested deeper than {MAX_DEPTH} levels")]
    RecursionLimit,
    /// The message name is not part of the CAP schema.
    #[error("unknown message type {0}")]
    UnknownMessage(String),
    /// A varint (tag, length or value) in a longer form than needed (strict decoding).
    #[error("non-minimal varint encoding")]
    NonMinimalVarint,
    /// More than one member of a oneof, such as two `BusPacket` payloads (strict
    /// decoding): the field number of the second one.
    #[error("more than one member of a oneof (field {0})")]
    DuplicateOneof(u32),
}

/// The order of map entries in canonical bytes.
///
/// Signers differ here, and a verifier must know both: the reference peer (upb, every
/// cap-sdk-python release) writes string keys bytewise except that a key comes *after*
/// the keys it is a prefix of (`abc, ab, a`); Go's deterministic marshalling and most
/// other encoders write plain bytewise order (`a, ab, abc`). cap-rs signs in the peer's
/// order and verifies either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MapOrder {
    /// The reference peer's order ([`encode::peer_key_order`]); what cap-rs produces.
    #[default]
    Peer,
    /// Plain bytewise key order (Go's deterministic marshalling).
    Bytewise,
}

/// Single-pass canonical encoding of a decoded message, implemented for every CAP
/// message by generated code (`cargo xtask codegen`).
pub trait CanonicalEncode {
    /// Appends the canonical bytes of `self` to `buf`.
    fn encode_canonical(&self, buf: &mut Vec<u8>);
}

/// The canonical bytes of a message.
///
/// ```
/// use cap_proto::{canonical, v1::JobCancel};
/// let c = JobCancel { job_id: "j1".into(), ..Default::default() };
/// assert_eq!(canonical::to_bytes(&c), b"\x0a\x02j1");
/// ```
pub fn to_bytes<M: CapMessage>(msg: &M) -> Vec<u8> {
    let mut buf = Vec::with_capacity(msg.encoded_len() + 32);
    msg.encode_canonical(&mut buf);
    buf
}

/// Appends the canonical bytes of a message to `buf` (reuse a buffer on hot paths).
pub fn encode_into<M: CapMessage>(msg: &M, buf: &mut Vec<u8>) {
    msg.encode_canonical(buf);
}

/// Re-encodes the wire bytes of an `M` canonically, keeping unknown fields.
pub fn canonicalize<M: CapMessage>(bytes: &[u8]) -> Result<Vec<u8>, WireError> {
    canonicalize_named(M::FULL_NAME, bytes)
}

/// Like [`canonicalize`], for a message named at run time (`cordum.agent.v1.JobRequest`).
pub fn canonicalize_named(full_name: &str, bytes: &[u8]) -> Result<Vec<u8>, WireError> {
    let l = layouts();
    let idx = l
        .index_of(full_name)
        .ok_or_else(|| WireError::UnknownMessage(full_name.to_owned()))?;
    let mut out = Vec::with_capacity(bytes.len() + 16);
    transcode(l, idx, bytes, &mut out, 0, None, MapOrder::Peer)?;
    Ok(out)
}

/// The bytes a packet signature covers: the canonical encoding of the received
/// `BusPacket` bytes with field 14 (`signature`) removed, unknown fields kept.
pub fn signing_bytes(packet: &[u8]) -> Result<Vec<u8>, WireError> {
    signing_bytes_in(packet, MapOrder::Peer)
}

/// Like [`signing_bytes`], with map entries in the given order (a verifier tries the
/// orders of the signers it may meet).
pub fn signing_bytes_in(packet: &[u8], order: MapOrder) -> Result<Vec<u8>, WireError> {
    let l = layouts();
    let idx = l
        .index_of(crate::v1::BusPacket::FULL_NAME)
        .ok_or_else(|| WireError::UnknownMessage(crate::v1::BusPacket::FULL_NAME.into()))?;
    let mut out = Vec::with_capacity(packet.len());
    transcode(l, idx, packet, &mut out, 0, Some(SIGNATURE_FIELD), order)?;
    Ok(out)
}

/// The received bytes of a `BusPacket` with every field-14 (`signature`) entry cut out
/// and nothing else touched: what a signer that signs its own wire bytes covered.
pub fn without_signature(packet: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(packet.len());
    let mut r = Reader::new(packet);
    while !r.is_empty() {
        let start = r.pos();
        let (number, wt) = r.tag()?;
        r.value(number, wt, 0)?;
        if number != SIGNATURE_FIELD {
            out.extend_from_slice(r.slice(start, r.pos()));
        }
    }
    Ok(out)
}

/// Whether map keys need reordering between [`MapOrder`]s anywhere in `bytes` (an `M`):
/// true when some map holds a key that is a prefix of another. When false, the peer's
/// and the bytewise canonical forms are the same bytes.
pub fn map_orders_differ<M: CapMessage>(bytes: &[u8]) -> Result<bool, WireError> {
    let peer = canonicalize_in::<M>(bytes, MapOrder::Peer)?;
    let bytewise = canonicalize_in::<M>(bytes, MapOrder::Bytewise)?;
    Ok(peer != bytewise)
}

/// Like [`canonicalize`], with map entries in the given order.
pub fn canonicalize_in<M: CapMessage>(bytes: &[u8], order: MapOrder) -> Result<Vec<u8>, WireError> {
    let l = layouts();
    let idx = l
        .index_of(M::FULL_NAME)
        .ok_or_else(|| WireError::UnknownMessage(M::FULL_NAME.to_owned()))?;
    let mut out = Vec::with_capacity(bytes.len() + 16);
    transcode(l, idx, bytes, &mut out, 0, None, order)?;
    Ok(out)
}

/// Checks that `bytes` (an `M`) are a strict encoding: every varint at every level
/// (tags, lengths, values, packed elements) minimal, and at most one member of each
/// oneof (so at most one `BusPacket` payload). Protobuf parsers accept both; no
/// deterministic serializer produces them, and the CAP conformance kit requires them
/// to be dropped as malformed. Unknown fields are checked for varint form only.
pub fn check_strict<M: CapMessage>(bytes: &[u8]) -> Result<(), WireError> {
    let l = layouts();
    let idx = l
        .index_of(M::FULL_NAME)
        .ok_or_else(|| WireError::UnknownMessage(M::FULL_NAME.to_owned()))?;
    strict(l, Some(idx), bytes, 0)
}

fn strict(l: &Layouts, idx: Option<usize>, input: &[u8], depth: u32) -> Result<(), WireError> {
    if depth >= MAX_DEPTH {
        return Err(WireError::RecursionLimit);
    }
    let msg = idx.map(|i| &l.messages[i]);
    let mut oneofs_seen: Vec<u16> = Vec::new();
    let mut r = Reader::new(input);
    while !r.is_empty() {
        let key = r.varint_minimal()?;
        if key > u64::from(u32::MAX) || key >> 3 == 0 {
            return Err(WireError::InvalidTag);
        }
        let number = (key >> 3) as u32;
        let wt = (key & 7) as u8;
        let field = msg.and_then(|m| {
            m.field_index(number)
                .map(|i| &m.fields[i])
                .filter(|f| accepts(f, wt))
        });
        if let Some(group) = field.and_then(|f| f.oneof) {
            if oneofs_seen.contains(&group) {
                return Err(WireError::DuplicateOneof(number));
            }
            oneofs_seen.push(group);
        }
        match wt {
            wire::VARINT => {
                r.varint_minimal()?;
            }
            LEN => {
                let len = r.varint_minimal()?;
                let start = r.pos();
                // Re-read through the lenient path to take the bytes, bounds-checked.
                let mut probe = Reader::new(r.slice(start, input.len()));
                let body = match probe.take_len(len) {
                    Some(b) => b,
                    None => return Err(WireError::Truncated),
                };
                r.skip(body.len());
                if let Some(f) = field {
                    strict_len(l, f, body, depth)?;
                }
            }
            _ => {
                // Fixed-width values and groups: no varints to check beyond the tag.
                r.value(number, wt, depth)?;
            }
        }
    }
    Ok(())
}

fn strict_len(l: &Layouts, f: &Field, body: &[u8], depth: u32) -> Result<(), WireError> {
    match (f.shape, f.scalar) {
        (Shape::Map { value, .. }, _) => {
            // A map entry is a message of key (1) and value (2).
            let mut r = Reader::new(body);
            while !r.is_empty() {
                let key = r.varint_minimal()?;
                let number = (key >> 3) as u32;
                let wt = (key & 7) as u8;
                match wt {
                    wire::VARINT => {
                        r.varint_minimal()?;
                    }
                    LEN => {
                        let len = r.varint_minimal()?;
                        let start = r.pos();
                        let mut probe = Reader::new(r.slice(start, body.len()));
                        let inner = probe.take_len(len).ok_or(WireError::Truncated)?;
                        r.skip(inner.len());
                        if let (2, Scalar::Message(m)) = (number, value) {
                            strict(l, Some(m), inner, depth + 2)?;
                        }
                    }
                    _ => {
                        r.value(number, wt, depth + 1)?;
                    }
                }
            }
            Ok(())
        }
        (_, Scalar::Message(m)) => strict(l, Some(m), body, depth + 1),
        (Shape::Repeated, Scalar::Varint(_)) => {
            let mut r = Reader::new(body);
            while !r.is_empty() {
                r.varint_minimal()?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Adds a signature to the canonical unsigned bytes of a `BusPacket` (as produced by
/// [`to_bytes`] with an empty signature, or by [`signing_bytes`]), at the place field 14
/// has in the canonical order: before the first known field numbered above 14 or the
/// first unknown field. The result equals the canonical encoding of the signed packet,
/// without encoding it again.
///
/// ```
/// use cap_proto::{canonical, v1, Timestamp};
/// let mut p = v1::BusPacket::new("t", "s", Timestamp::default(), v1::JobCancel::default());
/// let unsigned = canonical::to_bytes(&p);
/// let signed = canonical::insert_signature(&unsigned, &[0x30, 0x01, 0x00]).unwrap();
/// p.signature = vec![0x30, 0x01, 0x00].into();
/// assert_eq!(signed, canonical::to_bytes(&p));
/// ```
pub fn insert_signature(unsigned: &[u8], signature: &[u8]) -> Result<Vec<u8>, WireError> {
    let l = layouts();
    let idx = l
        .index_of(crate::v1::BusPacket::FULL_NAME)
        .ok_or_else(|| WireError::UnknownMessage(crate::v1::BusPacket::FULL_NAME.into()))?;
    let msg = &l.messages[idx];
    let mut r = Reader::new(unsigned);
    let mut at = unsigned.len();
    while !r.is_empty() {
        let start = r.pos();
        let (number, wt) = r.tag()?;
        r.value(number, wt, 0)?;
        let known = msg
            .field_index(number)
            .is_some_and(|i| accepts(&msg.fields[i], wt));
        if number > SIGNATURE_FIELD || !known {
            at = start;
            break;
        }
    }
    let mut out = Vec::with_capacity(unsigned.len() + signature.len() + 3);
    out.extend_from_slice(&unsigned[..at]);
    if !signature.is_empty() {
        put_len(&mut out, SIGNATURE_FIELD, signature);
    }
    out.extend_from_slice(&unsigned[at..]);
    Ok(out)
}

/// The field numbers at the top level of `bytes` that the schema of `M` does not know,
/// in the order received (used to tell an unknown payload from a missing one).
pub fn unknown_fields<M: CapMessage>(bytes: &[u8]) -> Result<Vec<u32>, WireError> {
    let l = layouts();
    let idx = l
        .index_of(M::FULL_NAME)
        .ok_or_else(|| WireError::UnknownMessage(M::FULL_NAME.to_owned()))?;
    let msg = &l.messages[idx];
    let mut r = Reader::new(bytes);
    let mut unknown = Vec::new();
    while !r.is_empty() {
        let (number, wt) = r.tag()?;
        r.value(number, wt, 0)?;
        let known = msg
            .field_index(number)
            .is_some_and(|i| accepts(&msg.fields[i], wt));
        if !known {
            unknown.push(number);
        }
    }
    Ok(unknown)
}

/// Whether a field of this layout accepts a value of wire type `wt`; a mismatch makes
/// the occurrence an unknown field, as in the reference peer.
fn accepts(f: &Field, wt: u8) -> bool {
    match f.shape {
        Shape::Map { .. } => wt == LEN,
        Shape::Repeated if f.scalar.packable() => wt == LEN || wt == f.scalar.wire_type(),
        _ => wt == f.scalar.wire_type(),
    }
}

fn transcode(
    l: &Layouts,
    idx: usize,
    input: &[u8],
    out: &mut Vec<u8>,
    depth: u32,
    skip: Option<u32>,
    order: MapOrder,
) -> Result<(), WireError> {
    if depth >= MAX_DEPTH {
        return Err(WireError::RecursionLimit);
    }
    let msg = &l.messages[idx];
    // Known occurrences (field index, value) in stream order, and raw unknown fields.
    let mut known: Vec<(usize, Value<'_>)> = Vec::new();
    let mut unknown: Vec<&[u8]> = Vec::new();
    let mut r = Reader::new(input);
    while !r.is_empty() {
        let start = r.pos();
        let (number, wt) = r.tag()?;
        let value = r.value(number, wt, depth)?;
        if skip == Some(number) {
            continue;
        }
        match (msg.field_index(number), value) {
            (Some(fi), Some(v)) if accepts(&msg.fields[fi], wt) => {
                if let Some(group) = msg.fields[fi].oneof {
                    // Setting another member of a oneof clears the current one.
                    known.retain(|(i, _)| *i == fi || msg.fields[*i].oneof != Some(group));
                }
                known.push((fi, v));
            }
            _ => unknown.push(r.slice(start, r.pos())),
        }
    }
    // Stable: occurrences of one field keep their stream order.
    known.sort_by_key(|(i, _)| *i);
    let mut rest = known.as_slice();
    while let Some(&(fi, _)) = rest.first() {
        let n = rest.iter().take_while(|(i, _)| *i == fi).count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let values: Vec<Value<'_>> = group.iter().map(|(_, v)| *v).collect();
        emit_field(l, &msg.fields[fi], &values, out, depth, order)?;
    }
    for raw in unknown {
        out.extend_from_slice(raw);
    }
    Ok(())
}

fn emit_field(
    l: &Layouts,
    f: &Field,
    values: &[Value<'_>],
    out: &mut Vec<u8>,
    depth: u32,
    order: MapOrder,
) -> Result<(), WireError> {
    match f.shape {
        Shape::Map { key, value } => emit_map(l, f.number, key, value, values, out, depth, order),
        Shape::Repeated => match f.scalar {
            Scalar::Message(m) => {
                let mut child = Vec::new();
                for v in values {
                    child.clear();
                    transcode(l, m, len_of(v), &mut child, depth + 1, None, order)?;
                    put_len(out, f.number, &child);
                }
                Ok(())
            }
            Scalar::Str | Scalar::Bytes => {
                for v in values {
                    let s = len_of(v);
                    if f.scalar == Scalar::Str {
                        check_utf8(s, f.number)?;
                    }
                    put_len(out, f.number, s);
                }
                Ok(())
            }
            packable => emit_packed(f.number, packable, values, out),
        },
        Shape::Singular => {
            let always = f.oneof.is_some();
            match f.scalar {
                Scalar::Message(m) => {
                    let mut child = Vec::new();
                    if let [one] = values {
                        transcode(l, m, len_of(one), &mut child, depth + 1, None, order)?;
                    } else {
                        // Several occurrences of a singular message merge: their
                        // concatenation decodes to exactly the merged message.
                        let joined: Vec<u8> =
                            values.iter().flat_map(|v| len_of(v)).copied().collect();
                        transcode(l, m, &joined, &mut child, depth + 1, None, order)?;
                    }
                    put_len(out, f.number, &child);
                }
                Scalar::Str | Scalar::Bytes => {
                    if f.scalar == Scalar::Str {
                        for v in values {
                            check_utf8(len_of(v), f.number)?;
                        }
                    }
                    let last = values.last().map(len_of).unwrap_or_default();
                    if always || !last.is_empty() {
                        put_len(out, f.number, last);
                    }
                }
                scalar => {
                    if let Some(v) = values.last() {
                        emit_scalar(f.number, scalar, *v, always, out);
                    }
                }
            }
            Ok(())
        }
    }
}

fn len_of<'a>(v: &Value<'a>) -> &'a [u8] {
    match v {
        Value::Len(s) => s,
        _ => &[],
    }
}

fn check_utf8(s: &[u8], number: u32) -> Result<(), WireError> {
    std::str::from_utf8(s)
        .map(|_| ())
        .map_err(|_| WireError::InvalidUtf8(number))
}

fn normalize(kind: VarintKind, v: u64) -> u64 {
    match kind {
        VarintKind::Int32 => i64::from(v as u32 as i32) as u64,
        VarintKind::Low32 => u64::from(v as u32),
        VarintKind::Full64 => v,
        VarintKind::Bool => u64::from(v != 0),
    }
}

/// Emits a singular scalar (skipped when default, unless it is a oneof member).
fn emit_scalar(number: u32, scalar: Scalar, v: Value<'_>, always: bool, out: &mut Vec<u8>) {
    match (scalar, v) {
        (Scalar::Varint(k), Value::Varint(raw)) => {
            let n = normalize(k, raw);
            if always || n != 0 {
                put_tag(out, number, wire::VARINT);
                put_varint(out, n);
            }
        }
        (Scalar::Fixed32, Value::Fixed32(bits)) if always || bits != 0 => {
            put_tag(out, number, wire::I32);
            out.extend_from_slice(&bits.to_le_bytes());
        }
        (Scalar::Fixed64, Value::Fixed64(bits)) if always || bits != 0 => {
            put_tag(out, number, wire::I64);
            out.extend_from_slice(&bits.to_le_bytes());
        }
        _ => {}
    }
}

/// Emits a repeated numeric field packed, whether it arrived packed or not.
fn emit_packed(
    number: u32,
    scalar: Scalar,
    values: &[Value<'_>],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let mut body = Vec::new();
    for v in values {
        match (scalar, *v) {
            (Scalar::Varint(k), Value::Varint(raw)) => put_varint(&mut body, normalize(k, raw)),
            (Scalar::Fixed32, Value::Fixed32(bits)) => body.extend_from_slice(&bits.to_le_bytes()),
            (Scalar::Fixed64, Value::Fixed64(bits)) => body.extend_from_slice(&bits.to_le_bytes()),
            (Scalar::Varint(k), Value::Len(packed)) => {
                let mut r = Reader::new(packed);
                while !r.is_empty() {
                    put_varint(&mut body, normalize(k, r.varint()?));
                }
            }
            (Scalar::Fixed32 | Scalar::Fixed64, Value::Len(packed)) => {
                let width = if scalar == Scalar::Fixed32 { 4 } else { 8 };
                if packed.len() % width != 0 {
                    return Err(WireError::BadPackedLength(number));
                }
                body.extend_from_slice(packed);
            }
            _ => {}
        }
    }
    if !body.is_empty() {
        put_len(out, number, &body);
    }
    Ok(())
}

/// A decoded map key, ordered as the reference peer orders keys.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum MapKey<'a> {
    Signed(i64),
    Unsigned(u64),
    Bytes(&'a [u8]),
}

#[allow(clippy::too_many_arguments)]
fn emit_map(
    l: &Layouts,
    number: u32,
    key: Scalar,
    value: Scalar,
    entries: &[Value<'_>],
    out: &mut Vec<u8>,
    depth: u32,
    order: MapOrder,
) -> Result<(), WireError> {
    let mut parsed: Vec<(MapKey<'_>, Vec<u8>)> = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut k: Option<Value<'_>> = None;
        let mut v: Vec<Value<'_>> = Vec::new();
        let mut r = Reader::new(len_of(entry));
        while !r.is_empty() {
            let (n, wt) = r.tag()?;
            let val = r.value(n, wt, depth + 1)?;
            match (n, val) {
                (1, Some(x)) if wt == key.wire_type() => k = Some(x),
                (2, Some(x)) if wt == value.wire_type() => {
                    if !matches!(value, Scalar::Message(_)) {
                        v.clear();
                    }
                    v.push(x);
                }
                _ => {}
            }
        }
        let map_key = match (key, k) {
            (Scalar::Str | Scalar::Bytes, Some(Value::Len(s))) => {
                if key == Scalar::Str {
                    check_utf8(s, number)?;
                }
                MapKey::Bytes(s)
            }
            (Scalar::Str | Scalar::Bytes, _) => MapKey::Bytes(&[]),
            (Scalar::Varint(kind), Some(Value::Varint(raw))) => varint_key(kind, raw),
            (Scalar::Varint(kind), _) => varint_key(kind, 0),
            (Scalar::Fixed32, Some(Value::Fixed32(b))) => MapKey::Unsigned(u64::from(b)),
            (Scalar::Fixed64, Some(Value::Fixed64(b))) => MapKey::Unsigned(b),
            _ => MapKey::Unsigned(0),
        };
        // The entry, re-encoded: key and value both present even when default.
        let mut body = Vec::new();
        emit_entry_part(l, 1, key, k.as_slice(), &mut body, depth, order)?;
        emit_entry_part(l, 2, value, &v, &mut body, depth, order)?;
        parsed.push((map_key, body));
    }
    // Last entry for a key wins; then sort by key.
    let mut deduped: Vec<(MapKey<'_>, Vec<u8>)> = Vec::with_capacity(parsed.len());
    for (k, body) in parsed.into_iter().rev() {
        if !deduped.iter().any(|(seen, _)| *seen == k) {
            deduped.push((k, body));
        }
    }
    deduped.sort_by(|a, b| match (order, &a.0, &b.0) {
        (MapOrder::Peer, MapKey::Bytes(x), MapKey::Bytes(y)) => encode::peer_key_order(x, y),
        _ => a.0.cmp(&b.0),
    });
    for (_, body) in deduped {
        put_len(out, number, &body);
    }
    Ok(())
}

fn varint_key(kind: VarintKind, raw: u64) -> MapKey<'static> {
    match kind {
        VarintKind::Int32 => MapKey::Signed(i64::from(raw as u32 as i32)),
        VarintKind::Full64 => MapKey::Signed(raw as i64),
        VarintKind::Low32 => MapKey::Unsigned(u64::from(raw as u32)),
        VarintKind::Bool => MapKey::Unsigned(u64::from(raw != 0)),
    }
}

/// One half of a map entry, always emitted (a missing value is its default).
fn emit_entry_part(
    l: &Layouts,
    number: u32,
    scalar: Scalar,
    values: &[Value<'_>],
    out: &mut Vec<u8>,
    depth: u32,
    order: MapOrder,
) -> Result<(), WireError> {
    match scalar {
        Scalar::Message(m) => {
            let joined: Vec<u8> = values.iter().flat_map(|v| len_of(v)).copied().collect();
            let mut child = Vec::new();
            transcode(l, m, &joined, &mut child, depth + 2, None, order)?;
            put_len(out, number, &child);
        }
        Scalar::Str | Scalar::Bytes => {
            let s = values.last().map(len_of).unwrap_or_default();
            if scalar == Scalar::Str {
                check_utf8(s, number)?;
            }
            put_len(out, number, s);
        }
        Scalar::Varint(k) => {
            let raw = match values.last() {
                Some(Value::Varint(x)) => *x,
                _ => 0,
            };
            put_tag(out, number, wire::VARINT);
            put_varint(out, normalize(k, raw));
        }
        Scalar::Fixed32 => {
            let bits = match values.last() {
                Some(Value::Fixed32(x)) => *x,
                _ => 0,
            };
            put_tag(out, number, wire::I32);
            out.extend_from_slice(&bits.to_le_bytes());
        }
        Scalar::Fixed64 => {
            let bits = match values.last() {
                Some(Value::Fixed64(x)) => *x,
                _ => 0,
            };
            put_tag(out, number, wire::I64);
            out.extend_from_slice(&bits.to_le_bytes());
        }
    }
    Ok(())
}
