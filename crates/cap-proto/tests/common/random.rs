//! Random CAP messages for property tests, built from the descriptors, so every field of
//! every message (new ones included) is exercised without listing them: strings from a
//! pool rich in map keys that are prefixes of one another (and the empty key), edge
//! numbers, unknown enum values, sub-messages a few levels deep, at most one member of
//! each oneof (for `BusPacket`, nearly always a payload).
//!
//! A [`Restrict`] limits the fields to those a peer's schema has (2.10.0 knows fewer).

use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union};
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value,
};
use std::collections::HashMap;

/// How deep sub-messages go.
pub const MAX_DEPTH: u32 = 4;

/// Which fields may be set.
#[derive(Clone)]
pub enum Restrict {
    /// Every field of our schema.
    Ours,
    /// Only fields (by message name and number) that this pool also has.
    To(DescriptorPool),
}

impl Restrict {
    /// The enum values to draw from: those the restricting schema also has.
    fn enum_values(&self, e: &prost_reflect::EnumDescriptor) -> Vec<i32> {
        let ours = e.values().map(|v| v.number());
        match self {
            Restrict::Ours => ours.collect(),
            Restrict::To(pool) => match pool.get_enum_by_name(e.full_name()) {
                Some(theirs) => ours.filter(|n| theirs.get_value(*n).is_some()).collect(),
                None => vec![0],
            },
        }
    }

    fn allows(&self, field: &FieldDescriptor) -> bool {
        match self {
            Restrict::Ours => true,
            Restrict::To(pool) => pool
                .get_message_by_name(field.parent_message().full_name())
                .is_some_and(|m| m.get_field(field.number()).is_some()),
        }
    }
}

/// Keys that exercise the peer's map order: prefixes of one another, the empty key,
/// bytes above ASCII and a NUL.
pub const KEYS: &[&str] = &[
    "", "a", "ab", "abc", "b", "ba", "team", "team_id", "team.id", "x", "é", "éa", "\u{0}",
    "a\u{0}", "zz", "Z",
];

pub fn string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        2 => "[a-z0-9._:-]{0,10}",
        1 => "\\PC{0,6}",
    ]
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{0,6}",
    ]
    .boxed()
}

fn i32s() -> BoxedStrategy<i32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(-1),
        Just(i32::MIN),
        Just(i32::MAX),
        any::<i32>()
    ]
    .boxed()
}

fn i64s() -> BoxedStrategy<i64> {
    prop_oneof![
        Just(0),
        Just(-1),
        Just(i64::MIN),
        Just(i64::MAX),
        any::<i64>()
    ]
    .boxed()
}

fn u64s() -> BoxedStrategy<u64> {
    prop_oneof![Just(0), Just(1), Just(u64::MAX), any::<u64>()].boxed()
}

fn u32s() -> BoxedStrategy<u32> {
    prop_oneof![Just(0), Just(1), Just(u32::MAX), any::<u32>()].boxed()
}

/// One value of a field's kind (a single element for lists).
fn scalar(
    field: &FieldDescriptor,
    restrict: &Restrict,
    depth: u32,
) -> Option<BoxedStrategy<Value>> {
    Some(match field.kind() {
        Kind::String => string().prop_map(Value::String).boxed(),
        Kind::Bytes => proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| Value::Bytes(b.into()))
            .boxed(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => i32s().prop_map(Value::I32).boxed(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => i64s().prop_map(Value::I64).boxed(),
        Kind::Uint32 | Kind::Fixed32 => u32s().prop_map(Value::U32).boxed(),
        Kind::Uint64 | Kind::Fixed64 => u64s().prop_map(Value::U64).boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Kind::Float => any::<f32>().prop_map(Value::F32).boxed(),
        Kind::Double => any::<f64>().prop_map(Value::F64).boxed(),
        Kind::Enum(e) => {
            let known = restrict.enum_values(&e);
            prop_oneof![
                4 => proptest::sample::select(known),
                // Unknown to every schema (the enums stay below 1000).
                1 => any::<i32>().prop_filter("a known value", |n| !(0..1000).contains(n)),
            ]
            .prop_map(Value::EnumNumber)
            .boxed()
        }
        Kind::Message(m) => {
            if depth >= MAX_DEPTH {
                return None;
            }
            message(&m, restrict, depth + 1)
                .prop_map(Value::Message)
                .boxed()
        }
    })
}

/// A field's whole value: a list, a map, or one value.
fn field_value(
    field: &FieldDescriptor,
    restrict: &Restrict,
    depth: u32,
) -> Option<BoxedStrategy<Value>> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return None;
        };
        let value = scalar(&entry.map_entry_value_field(), restrict, depth)?;
        return Some(
            proptest::collection::vec((key(), value), 0..7)
                .prop_map(|entries| {
                    Value::Map(
                        entries
                            .into_iter()
                            .map(|(k, v)| (MapKey::String(k), v))
                            .collect::<HashMap<_, _>>(),
                    )
                })
                .boxed(),
        );
    }
    let one = scalar(field, restrict, depth)?;
    if field.is_list() {
        return Some(
            proptest::collection::vec(one, 0..4)
                .prop_map(Value::List)
                .boxed(),
        );
    }
    Some(one)
}

type FieldSet = Option<(FieldDescriptor, Value)>;

/// A random message of type `desc`.
pub fn message(
    desc: &MessageDescriptor,
    restrict: &Restrict,
    depth: u32,
) -> BoxedStrategy<DynamicMessage> {
    let mut parts: Vec<BoxedStrategy<Vec<FieldSet>>> = Vec::new();
    let mut plain: Vec<BoxedStrategy<FieldSet>> = Vec::new();
    for field in desc.fields() {
        if !restrict.allows(&field) {
            continue;
        }
        if field.containing_oneof().is_some_and(|o| !o.is_synthetic()) {
            continue;
        }
        if let Some(v) = field_value(&field, restrict, depth) {
            let f = field.clone();
            plain.push(
                proptest::option::weighted(0.45, v)
                    .prop_map(move |v| v.map(|v| (f.clone(), v)))
                    .boxed(),
            );
        }
    }
    parts.push(plain.boxed());
    for oneof in desc.oneofs().filter(|o| !o.is_synthetic()) {
        let mut members: Vec<(u32, BoxedStrategy<FieldSet>)> = vec![(1, Just(None).boxed())];
        for field in oneof.fields() {
            if !restrict.allows(&field) {
                continue;
            }
            if let Some(v) = field_value(&field, restrict, depth) {
                let f = field.clone();
                members.push((8, v.prop_map(move |v| Some((f.clone(), v))).boxed()));
            }
        }
        parts.push(Union::new_weighted(members).prop_map(|x| vec![x]).boxed());
    }
    let desc = desc.clone();
    parts
        .prop_map(move |groups| {
            let mut m = DynamicMessage::new(desc.clone());
            for (f, v) in groups.into_iter().flatten().flatten() {
                m.set_field(&f, v);
            }
            m
        })
        .boxed()
}

/// A random message of the type named `full_name` in our schema.
pub fn of(full_name: &str, restrict: &Restrict) -> BoxedStrategy<DynamicMessage> {
    let desc = cap_proto::descriptor_pool()
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("no message {full_name}"));
    message(&desc, restrict, 0)
}
