//! Field writers used by the generated [`CanonicalEncode`](super::CanonicalEncode) impls
//! (`src/gen/canonical_encode.rs`). Each writer applies the canonical presence rule.

use super::CanonicalEncode;
use super::wire::{I32, I64, LEN, VARINT, put_tag, put_varint};
use std::cmp::Ordering;
use std::collections::BTreeMap;

#[inline]
fn len_delimited(buf: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_tag(buf, number, LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A string, skipped when empty.
#[inline]
pub fn str(buf: &mut Vec<u8>, number: u32, v: &str) {
    if !v.is_empty() {
        len_delimited(buf, number, v.as_bytes());
    }
}

/// A string element of a repeated field or map entry: always written.
#[inline]
pub fn str_always(buf: &mut Vec<u8>, number: u32, v: &str) {
    len_delimited(buf, number, v.as_bytes());
}

/// Bytes, skipped when empty.
#[inline]
pub fn bytes(buf: &mut Vec<u8>, number: u32, v: &[u8]) {
    if !v.is_empty() {
        len_delimited(buf, number, v);
    }
}

/// A bytes element of a repeated field: always written.
#[inline]
pub fn bytes_always(buf: &mut Vec<u8>, number: u32, v: &[u8]) {
    len_delimited(buf, number, v);
}

#[inline]
fn varint_field(buf: &mut Vec<u8>, number: u32, v: u64) {
    if v != 0 {
        put_tag(buf, number, VARINT);
        put_varint(buf, v);
    }
}

/// An `int32` or enum (negative values as 10-byte varints), skipped when 0.
#[inline]
pub fn int32(buf: &mut Vec<u8>, number: u32, v: &i32) {
    varint_field(buf, number, i64::from(*v) as u64);
}

/// An `int64`, skipped when 0.
#[inline]
pub fn int64(buf: &mut Vec<u8>, number: u32, v: &i64) {
    varint_field(buf, number, *v as u64);
}

/// A `uint32`, skipped when 0.
#[inline]
pub fn uint32(buf: &mut Vec<u8>, number: u32, v: &u32) {
    varint_field(buf, number, u64::from(*v));
}

/// A `uint64`, skipped when 0.
#[inline]
pub fn uint64(buf: &mut Vec<u8>, number: u32, v: &u64) {
    varint_field(buf, number, *v);
}

/// A `bool`, skipped when false.
#[inline]
pub fn bool(buf: &mut Vec<u8>, number: u32, v: &bool) {
    varint_field(buf, number, u64::from(*v));
}

/// A `float`, skipped when its bit pattern is zero (so `-0.0` is written, as the peer does).
#[inline]
pub fn float(buf: &mut Vec<u8>, number: u32, v: &f32) {
    let bits = v.to_bits();
    if bits != 0 {
        put_tag(buf, number, I32);
        buf.extend_from_slice(&bits.to_le_bytes());
    }
}

/// A `double`, skipped when its bit pattern is zero.
#[inline]
pub fn double(buf: &mut Vec<u8>, number: u32, v: &f64) {
    let bits = v.to_bits();
    if bits != 0 {
        put_tag(buf, number, I64);
        buf.extend_from_slice(&bits.to_le_bytes());
    }
}

/// A packed repeated `int32`/enum, skipped when empty.
pub fn packed_int32(buf: &mut Vec<u8>, number: u32, v: &[i32]) {
    if v.is_empty() {
        return;
    }
    let mut body = Vec::with_capacity(v.len() * 2);
    for x in v {
        put_varint(&mut body, i64::from(*x) as u64);
    }
    len_delimited(buf, number, &body);
}

/// A nested message, always written when present (even when empty). The length is
/// written in place: a 5-byte slot is reserved and shrunk once the size is known.
pub fn message<M: CanonicalEncode + ?Sized>(buf: &mut Vec<u8>, number: u32, m: &M) {
    put_tag(buf, number, LEN);
    let start = buf.len();
    buf.extend_from_slice(&[0; 5]);
    m.encode_canonical(buf);
    let len = buf.len() - start - 5;
    let n = varint_len(len);
    if n <= 5 {
        // Shift the body left over the unused part of the slot, then write the length:
        // no allocation (this runs for every nested message).
        let mut v = len as u64;
        buf.copy_within(start + 5.., start + n);
        buf.truncate(buf.len() - (5 - n));
        for b in &mut buf[start..start + n] {
            *b = if v >= 0x80 { (v as u8) | 0x80 } else { v as u8 };
            v >>= 7;
        }
    } else {
        // Over 32 GiB: only reachable in theory.
        let mut prefix = Vec::with_capacity(n);
        put_varint(&mut prefix, len as u64);
        buf.splice(start..start + 5, prefix);
    }
}

/// One `map<string, string>` entry: key and value both written, even when empty.
pub fn map_entry_str_str(buf: &mut Vec<u8>, number: u32, k: &str, v: &str) {
    put_tag(buf, number, LEN);
    put_varint(
        buf,
        (2 + varint_len(k.len()) + k.len() + varint_len(v.len()) + v.len()) as u64,
    );
    str_always(buf, 1, k);
    str_always(buf, 2, v);
}

/// One `map<string, bool>` entry: key and value both written, even when false.
pub fn map_entry_str_bool(buf: &mut Vec<u8>, number: u32, k: &str, v: &bool) {
    put_tag(buf, number, LEN);
    put_varint(buf, (1 + varint_len(k.len()) + k.len() + 2) as u64);
    str_always(buf, 1, k);
    put_tag(buf, 2, VARINT);
    put_varint(buf, u64::from(*v));
}

fn varint_len(n: usize) -> usize {
    let mut len = 1;
    let mut n = n >> 7;
    while n != 0 {
        len += 1;
        n >>= 7;
    }
    len
}

impl CanonicalEncode for prost_types::Timestamp {
    fn encode_canonical(&self, buf: &mut Vec<u8>) {
        int64(buf, 1, &self.seconds);
        int32(buf, 2, &self.nanos);
    }
}

/// The order in which the reference peer (upb, in every cap-sdk-python release) writes
/// map entries with string keys: bytewise, except that when one key is a prefix of the
/// other, the longer key comes first (`abc, ab, a, ba, b`; `x, ""`).
pub fn peer_key_order(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    match a[..n].cmp(&b[..n]) {
        Ordering::Equal => b.len().cmp(&a.len()),
        other => other,
    }
}

/// Writes the entries of a string-keyed map in the peer's order.
///
/// The generated types keep maps in `BTreeMap`s, whose order is plain bytewise order.
/// The two orders differ only where one key is a prefix of another, and in bytewise
/// order every key that has a prefix in the map directly follows a key it starts with,
/// so one pass over neighbours tells whether the `BTreeMap` order can be used as is
/// (the common case, which allocates nothing).
fn map_in_peer_order<V>(
    buf: &mut Vec<u8>,
    number: u32,
    m: &BTreeMap<String, V>,
    entry: impl Fn(&mut Vec<u8>, u32, &str, &V),
) {
    let mut prev: Option<&str> = None;
    let mut reorder = false;
    for k in m.keys() {
        if prev.is_some_and(|p| k.starts_with(p)) {
            reorder = true;
            break;
        }
        prev = Some(k);
    }
    if reorder {
        let mut sorted: Vec<(&String, &V)> = m.iter().collect();
        sorted.sort_by(|a, b| peer_key_order(a.0.as_bytes(), b.0.as_bytes()));
        for (k, v) in sorted {
            entry(buf, number, k, v);
        }
    } else {
        for (k, v) in m {
            entry(buf, number, k, v);
        }
    }
}

/// A `map<string, string>` field, entries in the peer's order.
pub fn map_str_str(buf: &mut Vec<u8>, number: u32, m: &BTreeMap<String, String>) {
    map_in_peer_order(buf, number, m, |b, n, k, v| map_entry_str_str(b, n, k, v));
}

/// A `map<string, bool>` field, entries in the peer's order.
pub fn map_str_bool(buf: &mut Vec<u8>, number: u32, m: &BTreeMap<String, bool>) {
    map_in_peer_order(buf, number, m, map_entry_str_bool);
}

/// A map-entry length prefix and key for a message-valued entry, then the value.
fn map_entry_str_message<M: CanonicalEncode>(buf: &mut Vec<u8>, number: u32, k: &str, v: &M) {
    let mut body = Vec::with_capacity(k.len() + 16);
    str_always(&mut body, 1, k);
    message(&mut body, 2, v);
    len_delimited(buf, number, &body);
}

impl CanonicalEncode for prost_types::Struct {
    fn encode_canonical(&self, buf: &mut Vec<u8>) {
        map_in_peer_order(buf, 1, &self.fields, |b, n, k, v| {
            map_entry_str_message(b, n, k, v)
        });
    }
}

impl CanonicalEncode for prost_types::Value {
    fn encode_canonical(&self, buf: &mut Vec<u8>) {
        use prost_types::value::Kind;
        // A oneof member is written even when it holds its default.
        match &self.kind {
            None => {}
            Some(Kind::NullValue(v)) => {
                put_tag(buf, 1, VARINT);
                put_varint(buf, i64::from(*v) as u64);
            }
            Some(Kind::NumberValue(v)) => {
                put_tag(buf, 2, I64);
                buf.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            Some(Kind::StringValue(v)) => str_always(buf, 3, v),
            Some(Kind::BoolValue(v)) => {
                put_tag(buf, 4, VARINT);
                put_varint(buf, u64::from(*v));
            }
            Some(Kind::StructValue(v)) => message(buf, 5, v),
            Some(Kind::ListValue(v)) => message(buf, 6, v),
        }
    }
}

impl CanonicalEncode for prost_types::ListValue {
    fn encode_canonical(&self, buf: &mut Vec<u8>) {
        for v in &self.values {
            message(buf, 1, v);
        }
    }
}
