//! Compact per-message layouts compiled once from the embedded descriptor set.
//!
//! The canonicalizer runs on these tables instead of walking reflection
//! descriptors for every field, so the hot path does no lookups by name.

use crate::descriptor::descriptor_pool;
use prost_reflect::{Kind, MessageDescriptor};
use std::collections::HashMap;
use std::sync::OnceLock;

/// How a varint-encoded scalar is normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VarintKind {
    /// int32 and enums: 32-bit, negatives sign-extended to 10 bytes.
    Int32,
    /// uint32 and sint32: the low 32 bits.
    Low32,
    /// int64, uint64, sint64: all 64 bits.
    Full64,
    /// bool: 0 or 1.
    Bool,
}

/// The shape of a single (non-map) value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scalar {
    Varint(VarintKind),
    Fixed32,
    Fixed64,
    Str,
    Bytes,
    /// A nested message, by index into [`Layouts::messages`].
    Message(usize),
}

impl Scalar {
    /// The wire type a singular value of this shape is written with.
    pub(crate) fn wire_type(self) -> u8 {
        use super::wire::{I32, I64, LEN, VARINT};
        match self {
            Scalar::Varint(_) => VARINT,
            Scalar::Fixed32 => I32,
            Scalar::Fixed64 => I64,
            Scalar::Str | Scalar::Bytes | Scalar::Message(_) => LEN,
        }
    }

    /// Whether repeated values of this shape are packed.
    pub(crate) fn packable(self) -> bool {
        matches!(self, Scalar::Varint(_) | Scalar::Fixed32 | Scalar::Fixed64)
    }
}

/// Cardinality of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Singular,
    Repeated,
    Map { key: Scalar, value: Scalar },
}

/// One field of a message layout.
#[derive(Clone, Debug)]
pub(crate) struct Field {
    pub(crate) number: u32,
    pub(crate) scalar: Scalar,
    pub(crate) shape: Shape,
    /// Index of the containing oneof, if any.
    pub(crate) oneof: Option<u16>,
}

/// A message layout: fields sorted by number plus a dense number → field index.
#[derive(Clone, Debug, Default)]
pub(crate) struct Message {
    pub(crate) fields: Vec<Field>,
    by_number: Vec<u16>,
}

const NONE: u16 = u16::MAX;

impl Message {
    /// Index into `fields` of the field with this number.
    pub(crate) fn field_index(&self, number: u32) -> Option<usize> {
        match self.by_number.get(number as usize) {
            Some(&i) if i != NONE => Some(i as usize),
            _ => None,
        }
    }
}

/// All message layouts of the CAP schema.
#[derive(Debug, Default)]
pub(crate) struct Layouts {
    pub(crate) messages: Vec<Message>,
    index: HashMap<String, usize>,
}

impl Layouts {
    /// The layout index of a message by its full protobuf name.
    pub(crate) fn index_of(&self, full_name: &str) -> Option<usize> {
        self.index.get(full_name).copied()
    }
}

/// The layouts of every message in the embedded descriptor set.
pub(crate) fn layouts() -> &'static Layouts {
    static LAYOUTS: OnceLock<Layouts> = OnceLock::new();
    LAYOUTS.get_or_init(|| compile(descriptor_pool().all_messages()))
}

fn compile(messages: impl Iterator<Item = MessageDescriptor>) -> Layouts {
    let descs: Vec<MessageDescriptor> = messages.collect();
    let index: HashMap<String, usize> = descs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.full_name().to_owned(), i))
        .collect();
    let scalar = |kind: &Kind| -> Scalar {
        match kind {
            Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => Scalar::Fixed64,
            Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => Scalar::Fixed32,
            Kind::Int32 | Kind::Enum(_) => Scalar::Varint(VarintKind::Int32),
            Kind::Uint32 | Kind::Sint32 => Scalar::Varint(VarintKind::Low32),
            Kind::Int64 | Kind::Uint64 | Kind::Sint64 => Scalar::Varint(VarintKind::Full64),
            Kind::Bool => Scalar::Varint(VarintKind::Bool),
            Kind::String => Scalar::Str,
            Kind::Bytes => Scalar::Bytes,
            Kind::Message(m) => Scalar::Message(index.get(m.full_name()).copied().unwrap_or(0)),
        }
    };
    let messages = descs
        .iter()
        .map(|d| {
            let oneofs: Vec<String> = d.oneofs().map(|o| o.name().to_owned()).collect();
            let mut fields: Vec<Field> = d
                .fields()
                .map(|f| {
                    let kind = f.kind();
                    let shape = match kind.as_message() {
                        Some(entry) if f.is_map() => Shape::Map {
                            key: scalar(&entry.map_entry_key_field().kind()),
                            value: scalar(&entry.map_entry_value_field().kind()),
                        },
                        _ if f.is_list() => Shape::Repeated,
                        _ => Shape::Singular,
                    };
                    Field {
                        number: f.number(),
                        scalar: scalar(&kind),
                        shape,
                        oneof: f
                            .containing_oneof()
                            .and_then(|o| oneofs.iter().position(|n| n == o.name()))
                            .map(|i| i as u16),
                    }
                })
                .collect();
            fields.sort_by_key(|f| f.number);
            let max = fields.last().map_or(0, |f| f.number as usize);
            let mut by_number = vec![NONE; max + 1];
            for (i, f) in fields.iter().enumerate() {
                by_number[f.number as usize] = i as u16;
            }
            Message { fields, by_number }
        })
        .collect();
    Layouts { messages, index }
}
