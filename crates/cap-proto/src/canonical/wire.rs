//! Protobuf wire-format primitives: a bounds-checked reader and the writer helpers.
//!
//! Nothing here panics on any input: every read is checked and returns [`WireError`].

use super::WireError;

/// Wire type: varint.
pub(crate) const VARINT: u8 = 0;
/// Wire type: 64-bit little-endian.
pub(crate) const I64: u8 = 1;
/// Wire type: length-delimited.
pub(crate) const LEN: u8 = 2;
/// Wire type: start group (deprecated, only ever skipped).
pub(crate) const SGROUP: u8 = 3;
/// Wire type: end group.
pub(crate) const EGROUP: u8 = 4;
/// Wire type: 32-bit little-endian.
pub(crate) const I32: u8 = 5;

/// Largest legal field number (2^29 - 1).
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// One decoded field value, borrowing from the input.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

/// A cursor over protobuf bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn slice(&self, from: usize, to: usize) -> &'a [u8] {
        self.buf.get(from..to).unwrap_or_default()
    }

    pub(crate) fn varint(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or(WireError::Truncated)?;
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(WireError::VarintOverflow);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::VarintOverflow)
    }

    /// Reads a varint and refuses a non-minimal encoding (a longer form than needed,
    /// such as `81 00` for 1), which no deterministic serializer produces.
    pub(crate) fn varint_minimal(&mut self) -> Result<u64, WireError> {
        let start = self.pos;
        let v = self.varint()?;
        let len = self.pos - start;
        if len > 1 && self.buf.get(self.pos - 1) == Some(&0) {
            return Err(WireError::NonMinimalVarint);
        }
        Ok(v)
    }

    /// Reads a tag: (field number, wire type).
    pub(crate) fn tag(&mut self) -> Result<(u32, u8), WireError> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(WireError::InvalidTag);
        }
        let number = key >> 3;
        let wire_type = (key & 7) as u8;
        if number == 0 || number > MAX_FIELD_NUMBER {
            return Err(WireError::InvalidTag);
        }
        Ok((number as u32, wire_type))
    }

    /// Takes `len` bytes (a decoded length) if that many remain.
    pub(crate) fn take_len(&mut self, len: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(len).ok()?;
        self.take(n).ok()
    }

    /// Advances past `n` bytes the caller has already bounds-checked.
    pub(crate) fn skip(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.buf.len());
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// Reads the value of a field of the given wire type. Groups are skipped and
    /// reported as `None` (their bytes stay reachable through [`Reader::slice`]).
    pub(crate) fn value(
        &mut self,
        number: u32,
        wire_type: u8,
        depth: u32,
    ) -> Result<Option<Value<'a>>, WireError> {
        Ok(Some(match wire_type {
            VARINT => Value::Varint(self.varint()?),
            I64 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(a))
            }
            LEN => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
                Value::Len(self.take(len)?)
            }
            I32 => {
                let b = self.take(4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Value::Fixed32(u32::from_le_bytes(a))
            }
            SGROUP => {
                self.skip_group(number, depth)?;
                return Ok(None);
            }
            EGROUP => return Err(WireError::UnexpectedEndGroup),
            other => return Err(WireError::InvalidWireType(other)),
        }))
    }

    fn skip_group(&mut self, number: u32, depth: u32) -> Result<(), WireError> {
        if depth >= super::MAX_DEPTH {
            return Err(WireError::RecursionLimit);
        }
        loop {
            if self.is_empty() {
                return Err(WireError::Truncated);
            }
            let (n, wt) = self.tag()?;
            if wt == EGROUP {
                return if n == number {
                    Ok(())
                } else {
                    Err(WireError::UnexpectedEndGroup)
                };
            }
            self.value(n, wt, depth + 1)?;
        }
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_tag(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

pub(crate) fn put_len(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_tag(out, number, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}
