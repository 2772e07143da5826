//! Avro single-object encoding: `C3 01`, 8-byte little-endian CRC-64-AVRO (Rabin)
//! fingerprint of the writer schema, then the binary datum.
//!
//! A [`Codec`] parses its schemas once; the process-wide codecs are [`Codec::event`],
//! [`Codec::reconciled`] and [`Codec::conflict`]. Decoding resolves the writer schema by
//! fingerprint among the codec's known writers and reads with the codec's reader schema,
//! so data written with an older (registered) schema stays readable.

use crate::convert::AvroRecord;
use crate::{avsc, Conflict, Event, ReconciledEvent};
use apache_avro::{from_avro_datum, to_avro_datum, Schema};
use std::marker::PhantomData;
use std::sync::OnceLock;

pub const MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record is {0} bytes, shorter than the 10-byte single-object header")]
    TooShort(usize),
    #[error("bad magic {0:02x}{1:02x}, expected c301 (Avro single-object encoding)")]
    BadMagic(u8, u8),
    #[error("unknown schema fingerprint {0:016x}")]
    UnknownFingerprint(u64),
    #[error("malformed Avro datum: {0}")]
    Malformed(String),
    #[error("datum does not match the contract: {0}")]
    Shape(String),
}

impl DecodeError {
    /// Short, stable class name used in dead-letter headers and metric labels.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::TooShort(_) | DecodeError::BadMagic(..) => "undecodable",
            DecodeError::UnknownFingerprint(_) => "unknown_schema",
            DecodeError::Malformed(_) => "truncated_or_malformed",
            DecodeError::Shape(_) => "invalid_shape",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("encoding failed: {0}")]
pub struct EncodeError(String);

pub struct Codec<T> {
    writer: Schema,
    /// The fingerprint written in every header: of the Java reference canonical form.
    fingerprint: [u8; 8],
    reader: Schema,
    /// Known writer schemas (the current one first), each under both of its fingerprints.
    writers: Vec<(u64, usize)>,
    schemas: Vec<Schema>,
    /// Encode and decode the current schema with the direct binary code (`binary`); only
    /// the process-wide codecs, whose schema that code implements, set it.
    direct: bool,
    _t: PhantomData<fn() -> T>,
}

/// The two Parsing Canonical Forms Avro libraries compute for one schema. They differ for a
/// logical-typed primitive such as `client_time_ms` (`long` + `timestamp-millis`): Java's
/// reference `SchemaNormalization` and fastavro write `"long"`, as the specification's
/// STRIP and PRIMITIVES rules give; apache-avro (Rust) and the official Python package keep
/// `{"type":"long"}`. Returns (Java reference form, apache-avro form).
pub fn canonical_forms(schema: &Schema) -> (String, String) {
    let ours = schema.canonical_form();
    let mut java = ours.clone();
    for p in [
        "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    ] {
        java = java.replace(&format!(r#"{{"type":"{p}"}}"#), &format!(r#""{p}""#));
    }
    (java, ours)
}

/// CRC-64-AVRO (Rabin) of `bytes`, as the 8 header bytes (little-endian), per the Avro
/// specification's "Schema Fingerprints".
pub fn crc64_avro(bytes: &[u8]) -> [u8; 8] {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: OnceLock<[u64; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            }
            *e = fp;
        }
        t
    });
    let mut fp = EMPTY;
    for b in bytes {
        fp = (fp >> 8) ^ table[((fp ^ *b as u64) & 0xff) as usize];
    }
    fp.to_le_bytes()
}

/// Both fingerprints of `schema` as header values: (Java reference form, apache-avro form).
/// They are equal for a schema without logical-typed primitives.
pub fn fingerprints(schema: &Schema) -> (u64, u64) {
    let (java, ours) = canonical_forms(schema);
    (
        u64::from_le_bytes(crc64_avro(java.as_bytes())),
        u64::from_le_bytes(crc64_avro(ours.as_bytes())),
    )
}

/// The fingerprint written (Java reference form), as header bytes.
fn fingerprint(schema: &Schema) -> [u8; 8] {
    fingerprints(schema).0.to_le_bytes()
}

impl<T: AvroRecord> Codec<T> {
    /// Codec that writes and reads with `schema`.
    pub fn new(schema_text: &str) -> Result<Self, String> {
        let writer = Schema::parse_str(schema_text).map_err(|e| e.to_string())?;
        let fp = fingerprint(&writer);
        let mut c = Codec {
            reader: writer.clone(),
            writers: Vec::new(),
            schemas: Vec::new(),
            fingerprint: fp,
            writer: writer.clone(),
            direct: false,
            _t: PhantomData,
        };
        c.add_writer(writer);
        Ok(c)
    }

    /// Accept data written with `schema` under either of its fingerprints.
    fn add_writer(&mut self, schema: Schema) {
        let (java, ours) = fingerprints(&schema);
        let i = self.schemas.len();
        self.schemas.push(schema);
        self.writers.push((java, i));
        if ours != java {
            self.writers.push((ours, i));
        }
    }

    /// Every fingerprint this codec reads, as header values, with the index of its writer
    /// schema (0 = the current one) and whether it is the one written.
    pub fn accepted_fingerprints(&self) -> Vec<(u64, usize, bool)> {
        self.writers
            .iter()
            .map(|&(fp, i)| (fp, i, fp == self.fingerprint()))
            .collect()
    }

    /// Use the direct binary code for the current schema (only for the contract's own
    /// schemas, which that code implements).
    fn direct(mut self) -> Self {
        self.direct = true;
        self
    }

    /// Decode through apache-avro only (the reference the direct code is tested against).
    pub fn decode_generic(&self, bytes: &[u8]) -> Result<T, DecodeError> {
        self.decode_with(bytes, false)
    }

    /// A codec that reads with `reader_text`, resolving data written with any of `writer_texts`.
    pub fn with_reader(reader_text: &str, writer_texts: &[&str]) -> Result<Self, String> {
        let mut c = Self::new(reader_text)?;
        for w in writer_texts {
            c.add_writer(Schema::parse_str(w).map_err(|e| e.to_string())?);
        }
        Ok(c)
    }

    pub fn fingerprint(&self) -> u64 {
        u64::from_le_bytes(self.fingerprint)
    }

    pub fn encode(&self, value: &T) -> Result<Vec<u8>, EncodeError> {
        if self.direct {
            let mut out = Vec::with_capacity(96);
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&self.fingerprint);
            if value.write_binary(&mut out) {
                return Ok(out);
            }
        }
        self.encode_generic(value)
    }

    /// Encode through apache-avro's `Value` (the reference the direct code is tested against).
    pub fn encode_generic(&self, value: &T) -> Result<Vec<u8>, EncodeError> {
        let datum = to_avro_datum(&self.writer, value.to_value())
            .map_err(|e| EncodeError(e.to_string()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&datum);
        Ok(out)
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<T, DecodeError> {
        self.decode_with(bytes, self.direct)
    }

    fn decode_with(&self, bytes: &[u8], direct: bool) -> Result<T, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        if bytes[..2] != MAGIC {
            return Err(DecodeError::BadMagic(bytes[0], bytes[1]));
        }
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&bytes[2..HEADER_LEN]);
        let fp = u64::from_le_bytes(fp);
        let index = self
            .writers
            .iter()
            .find(|(f, _)| *f == fp)
            .map(|(_, i)| *i)
            .ok_or(DecodeError::UnknownFingerprint(fp))?;
        let writer = &self.schemas[index];
        let full = &bytes[HEADER_LEN..];
        if direct && index == 0 {
            if let Some(v) = T::read_binary(full) {
                return Ok(v);
            }
        }
        let mut datum = full;
        let value = from_avro_datum(writer, &mut datum, None)
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !datum.is_empty() {
            return Err(DecodeError::Malformed(format!(
                "{} trailing bytes after the datum",
                datum.len()
            )));
        }
        // apache-avro reads a union index at end-of-input as its first branch, so a datum
        // truncated just before a trailing union decodes "successfully". Re-encoding tells.
        let reencoded = to_avro_datum(writer, value.clone())
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if reencoded.len() != full.len() {
            return Err(DecodeError::Malformed(format!(
                "datum is {} bytes but its value encodes to {}: truncated",
                full.len(),
                reencoded.len()
            )));
        }
        if index == 0 {
            return T::from_value(value).map_err(DecodeError::Shape);
        }
        // An older writer: the contract's schemas evolve by appending only (fields with a
        // null default at the end of a record, union branches and enum symbols at the end),
        // so its value maps directly, by branch index and field name, with the added fields
        // absent. Not through apache-avro's resolution: it matches a union branch by shape,
        // not by name, and would read a v1 `Reserve { order_id, qty }` as the first reader
        // branch it fits, `StockAdd { qty, grants = null }`.
        match T::from_value(value.clone()) {
            Ok(v) => Ok(v),
            Err(_) => {
                let value = value
                    .resolve(&self.reader)
                    .map_err(|e| DecodeError::Shape(e.to_string()))?;
                T::from_value(value).map_err(DecodeError::Shape)
            }
        }
    }
}

/// Drop the fields schema v2 added (`context`, `dot`, `grants`) from a value tree.
fn strip_v2_fields(v: &mut apache_avro::types::Value) {
    use apache_avro::types::Value;
    match v {
        Value::Record(fields) => {
            fields.retain(|(k, _)| !matches!(k.as_str(), "context" | "dot" | "grants"));
            for (_, f) in fields {
                strip_v2_fields(f);
            }
        }
        Value::Union(_, b) => strip_v2_fields(b),
        _ => {}
    }
}

/// Encode `value` as the previous version wrote it, with the v1 schema (`avro/previous/`):
/// for tests and tools that reproduce old topics. `Err` for what v1 cannot express (the
/// rights ops); v2's optional fields are dropped.
pub fn encode_v1<T: AvroRecord>(v1_schema: &str, value: &T) -> Result<Vec<u8>, EncodeError> {
    let schema = Schema::parse_str(v1_schema).map_err(|e| EncodeError(e.to_string()))?;
    let mut datum = value.to_value();
    strip_v2_fields(&mut datum);
    let body = to_avro_datum(&schema, datum).map_err(|e| EncodeError(e.to_string()))?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&fingerprint(&schema));
    out.extend_from_slice(&body);
    Ok(out)
}

impl Codec<Event> {
    pub fn event() -> &'static Codec<Event> {
        static C: OnceLock<Codec<Event>> = OnceLock::new();
        C.get_or_init(|| {
            Codec::with_reader(avsc::EVENT, &[avsc::EVENT_V1, avsc::EVENT_V2])
                .expect("event.avsc parses")
                .direct()
        })
    }
}
impl Codec<ReconciledEvent> {
    pub fn reconciled() -> &'static Codec<ReconciledEvent> {
        static C: OnceLock<Codec<ReconciledEvent>> = OnceLock::new();
        C.get_or_init(|| {
            Codec::with_reader(
                avsc::RECONCILED_EVENT,
                &[avsc::RECONCILED_EVENT_V1, avsc::RECONCILED_EVENT_V2],
            )
            .expect("reconciled_event.avsc parses")
            .direct()
        })
    }
}
impl Codec<Conflict> {
    pub fn conflict() -> &'static Codec<Conflict> {
        static C: OnceLock<Codec<Conflict>> = OnceLock::new();
        C.get_or_init(|| {
            Codec::with_reader(avsc::CONFLICT, &[avsc::CONFLICT_V1])
                .expect("conflict.avsc parses")
                .direct()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use proptest::prelude::*;

    fn all_ops() -> Vec<Op> {
        vec![
            Op::CounterAdd { delta: -3 },
            Op::put("blue"),
            Op::RegisterPut {
                value: "green".into(),
                context: Some("eu:2,us:1".into()),
                dot: Some(Dot {
                    region: "eu".into(),
                    seq: 3,
                }),
            },
            Op::ScoreSubmit {
                player: "ann".into(),
                score: 99,
            },
            Op::stock_add(1000),
            Op::StockAdd {
                qty: 1000,
                grants: Some(vec![
                    Share {
                        region: "eu".into(),
                        qty: 500,
                    },
                    Share {
                        region: "us".into(),
                        qty: 500,
                    },
                ]),
            },
            Op::RightsRequest { qty: 5 },
            Op::RightsTransfer {
                to: "us".into(),
                qty: 40,
                request: 2,
            },
            Op::Reserve {
                order_id: "o1".into(),
                qty: 2,
            },
            Op::Release {
                order_id: "o1".into(),
            },
            Op::MessagePost {
                author: "bo".into(),
                text: "hi ✓".into(),
            },
            Op::Heartbeat,
            Op::Custom {
                aggregate: "peak_gauge".into(),
                payload: vec![0, 1, 2, 255],
            },
        ]
    }

    #[test]
    fn every_op_round_trips() {
        for op in all_ops() {
            let mut e = Event::new("id-1", "k", op);
            e.region = Some("eu".into());
            e.client_time_ms = Some(1_700_000_000_000);
            e.hlc = Some(Hlc::new(1_700_000_000_001, 7));
            let bytes = Codec::event().encode(&e).unwrap();
            assert_eq!(&bytes[..2], &MAGIC);
            assert_eq!(Codec::event().decode(&bytes).unwrap(), e);
            let bare = Event::new("id-2", "k", e.op.clone());
            let b2 = Codec::event().encode(&bare).unwrap();
            assert_eq!(Codec::event().decode(&b2).unwrap(), bare);
        }
    }

    #[test]
    fn reconciled_and_conflict_round_trip() {
        let r = ReconciledEvent {
            event: Event::new("e", "k", Op::CounterAdd { delta: 1 }),
            outcome: Outcome::Revoked,
            reason: Some("would oversell".into()),
            state_json: "{\"total\":1}".into(),
        };
        let b = Codec::reconciled().encode(&r).unwrap();
        assert_eq!(Codec::reconciled().decode(&b).unwrap(), r);
        let c = Conflict {
            conflict_id: "c".into(),
            key: "k".into(),
            kind: ConflictKind::CrossRegionDuplicate,
            event_id: "e".into(),
            regions: vec!["a".into(), "b".into()],
            winner: Some("a".into()),
            loser: None,
            detail: "d".into(),
            hlc: Hlc::new(1, 2),
            reconcile_latency_ms: 5,
        };
        let b = Codec::conflict().encode(&c).unwrap();
        assert_eq!(Codec::conflict().decode(&b).unwrap(), c);
    }

    #[test]
    fn fingerprint_is_rabin_of_canonical_form_little_endian() {
        // The header carries the fingerprint exactly as other languages compute it.
        let bytes = Codec::event()
            .encode(&Event::new("x", "k", Op::CounterAdd { delta: 1 }))
            .unwrap();
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&bytes[2..10]);
        assert_eq!(u64::from_le_bytes(fp), Codec::event().fingerprint());
    }

    fn hex(fp: u64) -> String {
        fp.to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn both_canonical_forms_are_read_and_the_java_one_is_written() {
        let schema = Schema::parse_str(avsc::EVENT).unwrap();
        // Our CRC-64-AVRO equals apache-avro's on its own canonical form.
        let theirs = schema.fingerprint::<apache_avro::rabin::Rabin>();
        let (java, ours) = fingerprints(&schema);
        assert_eq!(ours.to_le_bytes()[..], theirs.bytes[..8]);
        // The values measured with Java's SchemaNormalization / fastavro and with
        // apache-avro / the official Python package (docs/contract.md).
        assert_eq!(hex(java), "6ee599fe10bed641");
        assert_eq!(hex(ours), "c802e1e0acc249c0");
        assert_eq!(Codec::event().fingerprint(), java);
        let e = Event::new("x", "k", Op::CounterAdd { delta: 1 });
        let written = Codec::event().encode(&e).unwrap();
        assert_eq!(&written[2..10], &java.to_le_bytes());
        let mut other = written.clone();
        other[2..10].copy_from_slice(&ours.to_le_bytes());
        assert_eq!(Codec::event().decode(&other).unwrap(), e);
        assert_eq!(Codec::event().decode_generic(&other).unwrap(), e);
        // A schema without logical types has one form.
        let c = Schema::parse_str(avsc::CONFLICT).unwrap();
        let (a, b) = fingerprints(&c);
        assert_eq!(a, b);
    }

    #[test]
    fn published_fingerprints_match_the_codecs() {
        // schemas/avro/fingerprints.tsv and docs/contract.md publish exactly what we read.
        let tsv = include_str!("../avro/fingerprints.tsv");
        let contract = include_str!("../../docs/contract.md");
        let mut published: Vec<(String, String, bool)> = tsv
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f.len(), 4, "fingerprints.tsv line {l:?}");
                (f[0].to_owned(), f[1].to_owned(), f[3] == "yes")
            })
            .collect();
        published.sort();
        let mut expected = Vec::new();
        for (file, fps) in [
            ("event.avsc", Codec::event().accepted_fingerprints()),
            (
                "reconciled_event.avsc",
                Codec::reconciled().accepted_fingerprints(),
            ),
            ("conflict.avsc", Codec::conflict().accepted_fingerprints()),
        ] {
            for (fp, i, written) in fps {
                // Writer 0 is the current schema; older ones are in avro/previous/.
                let file = match (file, i) {
                    (f, 0) => f.to_owned(),
                    ("conflict.avsc", 1) => "previous/conflict.v1.avsc".to_owned(),
                    ("event.avsc", 1) => "previous/event.v1.avsc".to_owned(),
                    ("reconciled_event.avsc", 1) => "previous/reconciled_event.v1.avsc".to_owned(),
                    ("event.avsc", 2) => "previous/event.v2.avsc".to_owned(),
                    ("reconciled_event.avsc", 2) => "previous/reconciled_event.v2.avsc".to_owned(),
                    (f, i) => panic!("{f}: writer {i} has no published file"),
                };
                expected.push((hex(fp), file, written));
            }
        }
        expected.sort();
        assert_eq!(published, expected);
        for (fp, _, _) in &expected {
            assert!(
                contract.contains(fp.as_str()),
                "docs/contract.md lacks {fp}"
            );
        }
    }

    #[test]
    fn conflicts_written_before_late_record_was_added_still_decode() {
        let v1: Codec<Conflict> = Codec::new(avsc::CONFLICT_V1).unwrap();
        let c = Conflict {
            conflict_id: "c".into(),
            key: "k".into(),
            kind: ConflictKind::ClockSkew,
            event_id: "e".into(),
            regions: vec!["a".into()],
            winner: None,
            loser: Some("a".into()),
            detail: "d".into(),
            hlc: Hlc::new(1, 2),
            reconcile_latency_ms: 5,
        };
        let old = v1.encode(&c).unwrap();
        assert_ne!(v1.fingerprint(), Codec::conflict().fingerprint());
        assert_eq!(Codec::conflict().decode(&old).unwrap(), c);
        let mut late = c.clone();
        late.kind = ConflictKind::LateRecord;
        let new = Codec::conflict().encode(&late).unwrap();
        assert_eq!(Codec::conflict().decode(&new).unwrap(), late);
    }

    /// History and reconciled records written before escrow and dotted version vectors
    /// (schema v1: no `context`/`dot` on puts, no `grants`, no rights ops) still decode,
    /// with the new fields absent.
    #[test]
    fn events_written_with_the_v1_schema_still_decode() {
        let v1: Codec<Event> = Codec::new(avsc::EVENT_V1).unwrap();
        assert_ne!(v1.fingerprint(), Codec::event().fingerprint());
        let v1_ops = [
            Op::CounterAdd { delta: 2 },
            Op::put("x"),
            Op::ScoreSubmit {
                player: "p".into(),
                score: 3,
            },
            Op::stock_add(7),
            Op::Reserve {
                order_id: "o".into(),
                qty: 4,
            },
            Op::Release {
                order_id: "o".into(),
            },
            Op::MessagePost {
                author: "a".into(),
                text: "t".into(),
            },
            Op::Heartbeat,
            Op::Custom {
                aggregate: "g".into(),
                payload: vec![1],
            },
        ];
        for op in v1_ops {
            let mut e = Event::new("old", "k", op);
            e.region = Some("eu".into());
            e.hlc = Some(Hlc::new(5, 1));
            let bytes = encode_v1(avsc::EVENT_V1, &e).unwrap();
            assert_eq!(&bytes[2..10], &v1.fingerprint().to_le_bytes());
            assert_eq!(Codec::event().decode(&bytes).unwrap(), e);
            let r = ReconciledEvent {
                event: e.clone(),
                outcome: Outcome::Applied,
                reason: None,
                state_json: "{}".into(),
            };
            let bytes = encode_v1(avsc::RECONCILED_EVENT_V1, &r).unwrap();
            assert_eq!(Codec::reconciled().decode(&bytes).unwrap(), r);
        }
        // What v1 has no branch for cannot be written as v1.
        let req = Event::new("r", "k", Op::RightsRequest { qty: 1 });
        assert!(encode_v1(avsc::EVENT_V1, &req).is_err());
    }

    #[test]
    fn reader_with_added_optional_field_reads_old_data() {
        let mut v: serde_json::Value = serde_json::from_str(avsc::EVENT).unwrap();
        v["fields"].as_array_mut().unwrap().push(serde_json::json!(
            {"name": "tenant", "type": ["null", "string"], "default": null}
        ));
        let newer = v.to_string();
        let old_bytes = Codec::event()
            .encode(&Event::new("old", "k", Op::CounterAdd { delta: 4 }))
            .unwrap();
        let reader: Codec<Event> = Codec::with_reader(&newer, &[avsc::EVENT]).unwrap();
        let e = reader.decode(&old_bytes).unwrap();
        assert_eq!(e.event_id, "old");
        assert_eq!(e.op, Op::CounterAdd { delta: 4 });
    }

    #[test]
    fn unknown_fingerprint_and_truncation_are_typed_errors() {
        let mut bytes = Codec::event()
            .encode(&Event::new("x", "k", Op::put("long value")))
            .unwrap();
        let good = bytes.clone();
        bytes[5] ^= 0xFF;
        assert!(matches!(
            Codec::event().decode(&bytes),
            Err(DecodeError::UnknownFingerprint(_))
        ));
        let truncated = &good[..good.len() - 4];
        let err = Codec::event().decode(truncated).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
        assert_eq!(err.class(), "truncated_or_malformed");
        assert_eq!(
            Codec::event().decode(&good[..5]),
            Err(DecodeError::TooShort(5))
        );
        assert!(matches!(
            Codec::event().decode(b"hello world, not avro"),
            Err(DecodeError::BadMagic(..))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&Codec::event().fingerprint().to_le_bytes());
            framed.extend_from_slice(&bytes);
            let _ = Codec::event().decode(&framed);
            let _ = Codec::event().decode(&bytes);
        }

        #[test]
        fn counter_events_round_trip(id in "[a-z0-9-]{1,20}", key in "[a-z:0-9]{1,20}", d in any::<i64>(), p in any::<i64>(), l in any::<i32>()) {
            let mut e = Event::new(id, key, Op::CounterAdd { delta: d });
            e.hlc = Some(Hlc::new(p, l));
            let b = Codec::event().encode(&e).unwrap();
            prop_assert_eq!(Codec::event().decode(&b).unwrap(), e);
        }
    }
}
