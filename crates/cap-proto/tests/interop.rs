//! Against the live reference peers, cap-sdk-python 2.10.0 (`CAP_INTEROP_PYTHON`) and
//! 2.17.0 (`CAP_INTEROP_PYTHON_217`): schema, canonical bytes, JSON, validation and the
//! receive path. Run by `cargo xtask interop` and `.ci/run`; they fail, not skip, when a
//! peer is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_proto::{CapMessage, canonical, json, v1};
use common::fixup::{self, Fixer};
use common::peer::{PeerServer, Version};
use common::random::{self, Restrict};
use common::{check_vector, hex, parse_vectors, run_peer_with};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind};

const BUS_PACKET: &str = v1::BusPacket::FULL_NAME;

fn peer_vectors_match_ours(version: Version) {
    let vectors = parse_vectors(&run_peer_with(version, "vectors.py", &["make"]));
    let golden = common::golden(version);
    assert!(
        vectors.len() >= golden.len().max(15),
        "peer produced {} vectors",
        vectors.len()
    );
    for v in &vectors {
        check_vector(v);
        // The committed golden file is what this peer version produces today.
        let g = golden.iter().find(|g| g.name == v.name).unwrap();
        assert_eq!(g.hex, v.hex, "{}: golden file is stale", v.name);
    }
}

#[test]
#[ignore = "needs cap-sdk-python 2.10.0: run `cargo xtask interop`"]
fn peer_210_canonical_bytes_and_json_match_ours() {
    peer_vectors_match_ours(Version::V210);
}

#[test]
#[ignore = "needs cap-sdk-python 2.17.0: run `cargo xtask interop`"]
fn peer_217_canonical_bytes_and_json_match_ours() {
    peer_vectors_match_ours(Version::V217);
}

fn peer_parses_our_json(version: Version) {
    let vectors = common::golden(version);
    let mut peer = PeerServer::start(version);
    for v in &vectors {
        let ours = check_vector(v);
        let a = peer.ok(serde_json::json!({"op": "from_json", "type": v.ty, "json": ours}));
        let mut expected = v.hex.clone();
        if v.name == "heartbeat_negative" {
            // Our JSON omits the -0.0 cpu_load (see common::strip_negative_zero).
            expected = expected
                .replace("250000008030", "30")
                .replace("621e0a0177", "62190a0177");
        }
        assert_eq!(a["hex"], expected, "{}: peer's bytes from our JSON", v.name);
    }
}

#[test]
#[ignore = "needs cap-sdk-python 2.10.0: run `cargo xtask interop`"]
fn peer_210_parses_our_json_to_the_same_bytes() {
    peer_parses_our_json(Version::V210);
}

#[test]
#[ignore = "needs cap-sdk-python 2.17.0: run `cargo xtask interop`"]
fn peer_217_parses_our_json_to_the_same_bytes() {
    peer_parses_our_json(Version::V217);
}

/// The peer's schema, from the descriptors compiled into its `_pb2` modules.
fn peer_pool(peer: &mut PeerServer) -> DescriptorPool {
    let a = peer.ok(serde_json::json!({"op": "descriptors"}));
    DescriptorPool::decode(common::unhex(a["hex"].as_str().unwrap()).as_slice()).unwrap()
}

fn kind_name(k: &Kind) -> String {
    match k {
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        other => format!("{other:?}"),
    }
}

/// Everything of `theirs` that `ours` lacks or has differently (empty: a superset).
fn missing_from(ours: &DescriptorPool, theirs: &DescriptorPool) -> Vec<String> {
    let mut gaps = Vec::new();
    for m in theirs.all_messages() {
        let Some(o) = ours.get_message_by_name(m.full_name()) else {
            gaps.push(format!("message {}", m.full_name()));
            continue;
        };
        for f in m.fields() {
            let Some(g) = o.get_field(f.number()) else {
                gaps.push(format!("field {} = {}", f.full_name(), f.number()));
                continue;
            };
            let theirs = (
                f.name(),
                f.json_name(),
                kind_name(&f.kind()),
                f.cardinality(),
                f.is_packed(),
                f.supports_presence(),
                f.containing_oneof().map(|o| o.name().to_owned()),
            );
            let ours = (
                g.name(),
                g.json_name(),
                kind_name(&g.kind()),
                g.cardinality(),
                g.is_packed(),
                g.supports_presence(),
                g.containing_oneof().map(|o| o.name().to_owned()),
            );
            if theirs != ours {
                gaps.push(format!(
                    "field {}: theirs {theirs:?}, ours {ours:?}",
                    f.full_name()
                ));
            }
        }
    }
    for e in theirs.all_enums() {
        let Some(o) = ours.get_enum_by_name(e.full_name()) else {
            gaps.push(format!("enum {}", e.full_name()));
            continue;
        };
        for v in e.values() {
            if o.get_value(v.number()).map(|x| x.name().to_owned()) != Some(v.name().to_owned()) {
                gaps.push(format!("enum value {} = {}", v.full_name(), v.number()));
            }
        }
    }
    for s in theirs.services() {
        let Some(o) = ours.get_service_by_name(s.full_name()) else {
            gaps.push(format!("service {}", s.full_name()));
            continue;
        };
        for m in s.methods() {
            let same = o.methods().any(|x| {
                x.name() == m.name()
                    && x.input().full_name() == m.input().full_name()
                    && x.output().full_name() == m.output().full_name()
                    && x.is_client_streaming() == m.is_client_streaming()
                    && x.is_server_streaming() == m.is_server_streaming()
            });
            if !same {
                gaps.push(format!("method {}", m.full_name()));
            }
        }
    }
    gaps
}

fn descriptors_superset(version: Version) {
    let mut peer = PeerServer::start(version);
    let theirs = peer_pool(&mut peer);
    let ours = cap_proto::descriptor_pool();
    let gaps = missing_from(ours, &theirs);
    assert!(
        gaps.is_empty(),
        "ours lacks what {} has:\n{}",
        version.release(),
        gaps.join("\n")
    );
    // The check itself sees a difference: a schema without one of the peer's fields fails.
    let mut fds = prost_types::FileDescriptorSet::decode(cap_proto::FILE_DESCRIPTOR_SET).unwrap();
    let job = fds
        .file
        .iter_mut()
        .flat_map(|f| f.message_type.iter_mut())
        .find(|m| m.name() == "JobCancel")
        .unwrap();
    job.field.retain(|f| f.number() != 3);
    let trimmed = DescriptorPool::from_file_descriptor_set(fds).unwrap();
    assert_eq!(
        missing_from(&trimmed, &theirs),
        ["field cordum.agent.v1.JobCancel.requested_by = 3"]
    );
    assert!(theirs.all_messages().count() >= 20);
}

#[test]
#[ignore = "needs cap-sdk-python 2.10.0: run `cargo xtask interop`"]
fn peer_210_descriptors_are_a_subset_of_ours() {
    descriptors_superset(Version::V210);
}

#[test]
#[ignore = "needs cap-sdk-python 2.17.0: run `cargo xtask interop`"]
fn peer_217_descriptors_are_a_subset_of_ours() {
    descriptors_superset(Version::V217);
}

/// Our canonical bytes of `raw` (a `full_name`) by the struct path, when it is one of the
/// message types with a typed struct.
fn struct_canonical(full_name: &str, raw: &[u8]) -> Vec<u8> {
    macro_rules! by_type {
        ($($t:ident),*) => {
            match full_name {
                $(n if n == v1::$t::FULL_NAME => canonical::to_bytes(&v1::$t::decode(raw).unwrap()),)*
                other => panic!("no struct for {other}"),
            }
        };
    }
    by_type!(
        BusPacket,
        JobRequest,
        JobResult,
        JobProgress,
        JobCancel,
        ContextHints,
        Budget,
        JobMetadata,
        Compensation,
        Heartbeat,
        SystemAlert,
        Handshake,
        WorkerHandshakeChallengeRequest,
        WorkerHandshakeChallenge,
        WorkerHandshakeAuthenticate,
        WorkerHandshakeResult,
        PolicyCheckRequest,
        PolicyCheckResponse,
        PolicyConstraints,
        BudgetConstraints,
        SandboxProfile,
        ToolchainConstraints,
        DiffConstraints,
        PolicyRemediation,
        ListSnapshotsRequest,
        ListSnapshotsResponse,
        SignatureMetadata,
        IdentityBinding,
        DispatchIdentity,
        ResourceRef,
        RuleScope,
        AuditMetadata,
        Rule,
        TraceStep,
        Decision,
        BundleMetadata,
        BundleVersion,
        Bundle,
        JobEvaluationContext,
        EdgeEvaluationContext,
        PolicyEvaluateRequest,
        PolicyEvaluateResponse
    )
}

/// Makes two JSON renderings comparable: drops `-0.0` numbers (our JSON omits them, the
/// peer prints them) and rounds fractional numbers to `f32`. A `float` field's value is
/// printed in the fewest digits that give back the same `f32` by us, and in at least six
/// significant digits by the peer (`3.9545e-41` and `3.95446e-41` are one float); that
/// the peer reads our digits back to the same bits is checked separately.
fn normalize_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, x| {
                !(x.as_f64() == Some(0.0) && x.as_f64().is_some_and(f64::is_sign_negative))
            });
            map.values_mut().for_each(normalize_json);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(normalize_json),
        serde_json::Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(r) = serde_json::Number::from_f64(f64::from(x as f32)) {
                *n = r;
            }
        }
        _ => {}
    }
}

fn random_messages_match(version: Version) {
    let mut peer = PeerServer::start(version);
    let theirs = peer_pool(&mut peer);
    let restrict = Restrict::To(theirs.clone());
    let mut checked = 0usize;
    // What the random packets covered: payload kinds, and envelopes with fields 5 and 6.
    let kinds = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let envelope_5_6 = std::cell::Cell::new(0usize);
    for name in cap_proto::ALL_MESSAGES {
        if theirs.get_message_by_name(name).is_none() {
            continue;
        }
        let cases = if *name == BUS_PACKET { 2000 } else { 60 };
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = random::of(name, &restrict);
        let peer = std::cell::RefCell::new(&mut peer);
        runner
            .run(&strategy, |msg: DynamicMessage| {
                let raw = msg.encode_to_vec();
                let mut peer = peer.borrow_mut();
                let theirs = peer.canonical(name, &raw);
                let wire = canonical::canonicalize_named(name, &raw).unwrap();
                prop_assert_eq!(hex(&wire), hex(&theirs), "wire path, input {}", hex(&raw));
                if *name == BUS_PACKET {
                    let p = v1::BusPacket::decode(raw.as_slice()).unwrap();
                    if let Some(k) = p.kind() {
                        kinds.borrow_mut().insert(k.name());
                    }
                    if p.signature_metadata.is_some() && p.identity.is_some() {
                        envelope_5_6.set(envelope_5_6.get() + 1);
                    }
                }
                let from_struct = struct_canonical(name, &raw);
                prop_assert_eq!(hex(&from_struct), hex(&theirs), "struct path");
                // JSON: the peer's MessageToJson, and the peer parses ours to the same bytes.
                let a =
                    peer.call(serde_json::json!({"op": "json", "type": name, "hex": hex(&raw)}));
                let ours = json::bytes_to_string(name, &raw, false);
                if let Some(e) = a.get("error") {
                    // No JSON form (a timestamp out of range, a non-finite Struct number):
                    // we refuse it too.
                    prop_assert!(ours.is_err(), "peer: {}, ours: {:?}", e, ours);
                    return Ok(());
                }
                let ours = ours.unwrap();
                let mut their_json: serde_json::Value =
                    serde_json::from_str(a["json"].as_str().unwrap()).unwrap();
                let mut our_json: serde_json::Value = serde_json::from_str(&ours).unwrap();
                normalize_json(&mut their_json);
                normalize_json(&mut our_json);
                prop_assert_eq!(&our_json, &their_json, "JSON of {}", hex(&raw));
                let a = peer.ok(serde_json::json!({"op": "from_json", "type": name, "json": ours}));
                let ours_back = json::str_to_bytes(name, &ours).unwrap();
                prop_assert_eq!(
                    a["hex"].as_str().unwrap(),
                    hex(&ours_back),
                    "peer parsing our JSON"
                );
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name} against {}: {e}", version.release()));
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} message types compared");
    let (kinds, with_5_6) = (kinds.into_inner(), envelope_5_6.get());
    match version {
        Version::V210 => {
            assert_eq!(kinds.len(), 7, "{kinds:?}");
            assert_eq!(with_5_6, 0, "2.10.0 has no fields 5 and 6");
        }
        Version::V217 => {
            assert_eq!(kinds.len(), 11, "{kinds:?}");
            assert!(with_5_6 >= 50, "{with_5_6} packets with fields 5 and 6");
        }
    }
}

#[test]
#[ignore = "needs cap-sdk-python 2.10.0: run `cargo xtask interop`"]
fn peer_210_canonical_bytes_and_json_of_random_messages_match_ours() {
    random_messages_match(Version::V210);
}

#[test]
#[ignore = "needs cap-sdk-python 2.17.0: run `cargo xtask interop`"]
fn peer_217_canonical_bytes_and_json_of_random_messages_match_ours() {
    random_messages_match(Version::V217);
}

/// Random packets near the validation boundary: a random packet, repaired rule by rule
/// with a few repairs skipped.
fn near_valid(restrict: &Restrict) -> impl Strategy<Value = (v1::BusPacket, usize)> {
    (
        random::of(BUS_PACKET, restrict),
        proptest::collection::vec(proptest::bool::weighted(0.93), 80),
    )
        .prop_map(|(msg, flags)| {
            let mut p = v1::BusPacket::decode(msg.encode_to_vec().as_slice()).unwrap();
            let mut f = Fixer::new(flags);
            fixup::make_valid(&mut f, &mut p);
            (p, f.skipped())
        })
}

/// Counts of the validation comparison, to show both sides of the boundary were hit.
#[derive(Debug, Default)]
struct Tally {
    both_accept: usize,
    both_reject: usize,
    only_we_reject: usize,
}

fn validation_parity(version: Version, receive_path: bool) -> Tally {
    let mut peer = PeerServer::start(version);
    let theirs = peer_pool(&mut peer);
    let restrict = Restrict::To(theirs);
    let tally = std::cell::RefCell::new(Tally::default());
    let peer = std::cell::RefCell::new(&mut peer);
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&near_valid(&restrict), |(p, skipped)| {
            let raw = cap_proto::packet::encode(&p);
            let ours = cap_proto::validate::received(&raw, &p);
            if skipped == 0 {
                prop_assert!(ours.is_ok(), "a fully repaired packet is valid: {:?}", ours);
            }
            let mut peer = peer.borrow_mut();
            let errors = peer.validate(&raw);
            let peer_ok = if receive_path {
                let (accepted, log) = peer.receive(&raw, None);
                prop_assert_eq!(
                    accepted,
                    errors.is_empty(),
                    "receive path vs validate: {:?}",
                    log
                );
                accepted
            } else {
                errors.is_empty()
            };
            // Whatever the peer refuses, we refuse.
            prop_assert!(
                peer_ok || ours.is_err(),
                "{} rejects {:?} but we accept {}",
                version.release(),
                errors,
                hex(&raw)
            );
            let mut t = tally.borrow_mut();
            match (ours.is_ok(), peer_ok) {
                (true, true) => t.both_accept += 1,
                (false, false) => t.both_reject += 1,
                (false, true) => t.only_we_reject += 1,
                (true, false) => unreachable!(),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("against {}: {e}", version.release()));
    let t = tally.into_inner();
    eprintln!("{}: {t:?}", version.release());
    assert!(t.both_accept >= 150, "too few valid cases: {t:?}");
    assert!(t.both_reject >= 150, "too few invalid cases: {t:?}");
    t
}

#[test]
#[ignore = "needs cap-sdk-python 2.17.0: run `cargo xtask interop`"]
fn peer_217_rejects_nothing_we_accept() {
    // Packets only we reject break our stricter rules (pointers, subjects, load
    // percentages, timestamps): counted, not failed.
    validation_parity(Version::V217, true);
}

#[test]
#[ignore = "needs cap-sdk-python 2.10.0: run `cargo xtask interop`"]
fn peer_210_rejects_nothing_we_accept() {
    validation_parity(Version::V210, false);
}

#[test]
#[ignore = "needs cap-sdk-python 2.17.0: run `cargo xtask interop`"]
fn peer_217_refuses_unknown_fields_in_trust_packets_as_we_do() {
    let mut peer = PeerServer::start(Version::V217);
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let peer = std::cell::RefCell::new(&mut peer);
    // Valid trust packets of every phase (others become a valid challenge request).
    let valid_trust = random::of(BUS_PACKET, &Restrict::Ours).prop_map(|msg| {
        let mut p = v1::BusPacket::decode(msg.encode_to_vec().as_slice()).unwrap();
        fixup::make_valid(&mut Fixer::all(), &mut p);
        if cap_proto::validate::trust::is_trust_payload(&p) {
            p
        } else {
            trust_request_packet()
        }
    });
    let kinds = std::cell::RefCell::new(std::collections::BTreeSet::<&str>::new());
    runner
        .run(
            &(valid_trust, 23u32..40, any::<bool>()),
            |(p, field, nested)| {
                let raw = cap_proto::packet::encode(&p);
                kinds.borrow_mut().insert(p.kind().unwrap().name());
                let mut peer = peer.borrow_mut();
                prop_assert_eq!(peer.validate(&raw), Vec::<String>::new());
                prop_assert!(cap_proto::validate::received(&raw, &p).is_ok());
                let unknown = with_unknown_field(&raw, field, nested);
                let errors = peer.validate(&unknown);
                prop_assert_eq!(
                    errors,
                    vec!["unknown_fields: must be empty recursively".to_owned()]
                );
                let ours = cap_proto::validate::received(&unknown, &p).unwrap_err();
                let fields: Vec<&str> = ours.iter().map(|x| x.field.as_str()).collect();
                prop_assert_eq!(fields, vec!["unknown_fields"]);
                // The packet alone (what a plain decoder keeps) is still valid.
                prop_assert!(cap_proto::validate::packet(&p).is_ok());
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(kinds.into_inner().len(), 4, "every trust phase");
}

/// A valid challenge-request packet.
fn trust_request_packet() -> v1::BusPacket {
    let mut p = v1::BusPacket::new(
        "trace-1",
        "worker-1",
        fixup::NOW,
        v1::WorkerHandshakeChallengeRequest::default(),
    );
    fixup::make_valid(&mut Fixer::all(), &mut p);
    p
}

/// `raw` with an unknown varint field `field` appended at the top level, or inside the
/// payload (its length prefix grown) when `nested`.
fn with_unknown_field(raw: &[u8], field: u32, nested: bool) -> Vec<u8> {
    let extra = [(field << 3) as u8 | 0x80, (field >> 4) as u8, 0x01];
    if !nested {
        let mut out = raw.to_vec();
        out.extend_from_slice(&extra);
        return out;
    }
    // Walk the top-level fields to the payload (one of 19-22) and re-emit it longer.
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let (key, n) = varint(&raw[i..]);
        let number = key >> 3;
        let start = i;
        i += n;
        match key & 7 {
            0 => i += varint(&raw[i..]).1,
            2 => {
                let (len, m) = varint(&raw[i..]);
                let body = &raw[i + m..i + m + len as usize];
                i += m + len as usize;
                if (19..=22).contains(&number) {
                    out.extend_from_slice(&raw[start..start + n]);
                    put_varint(&mut out, len + extra.len() as u64);
                    out.extend_from_slice(body);
                    out.extend_from_slice(&extra);
                    continue;
                }
            }
            _ => panic!("unexpected wire type"),
        }
        out.extend_from_slice(&raw[start..i]);
    }
    out
}

fn varint(b: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate() {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    panic!("truncated varint")
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
