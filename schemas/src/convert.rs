//! Hand-written mapping between the Rust types and `apache_avro::types::Value`.
//! Field order follows the `.avsc` files exactly.

use crate::types::*;
use apache_avro::types::Value;

pub trait AvroRecord: Sized {
    fn to_value(&self) -> Value;
    fn from_value(v: Value) -> Result<Self, String>;
    /// Write the datum for the current schema directly (see `binary`); false if there is
    /// no direct writer.
    fn write_binary(&self, _out: &mut Vec<u8>) -> bool {
        false
    }
    /// Read a complete, canonical datum of the current schema directly, or `None`.
    fn read_binary(_datum: &[u8]) -> Option<Self> {
        None
    }
}

macro_rules! direct_binary {
    ($t:ty, $write:path, $read:path) => {
        fn write_binary(&self, out: &mut Vec<u8>) -> bool {
            $write(out, self);
            true
        }
        fn read_binary(datum: &[u8]) -> Option<Self> {
            let mut r = crate::binary::Reader::new(datum);
            let v = $read(&mut r)?;
            r.is_empty().then_some(v)
        }
    };
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}
fn rec(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}
fn opt_str(v: &Option<String>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(s(x))),
    }
}

fn opt_long(v: Option<i64>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(Value::Long(x))),
    }
}

fn hlc_value(h: &Hlc) -> Value {
    rec(vec![
        ("physical_ms", Value::Long(h.physical_ms)),
        ("logical", Value::Int(h.logical)),
    ])
}

struct Fields(Vec<(String, Value)>);

impl Fields {
    fn of(v: Value) -> Result<Self, String> {
        match v {
            Value::Record(f) => Ok(Fields(f)),
            other => Err(format!("expected record, got {other:?}")),
        }
    }
    fn take(&mut self, name: &str) -> Result<Value, String> {
        let i = self
            .0
            .iter()
            .position(|(k, _)| k == name)
            .ok_or_else(|| format!("missing field {name}"))?;
        Ok(std::mem::replace(&mut self.0[i].1, Value::Null))
    }
    fn string(&mut self, name: &str) -> Result<String, String> {
        match self.take(name)? {
            Value::String(x) => Ok(x),
            other => Err(format!("field {name}: expected string, got {other:?}")),
        }
    }
    fn long(&mut self, name: &str) -> Result<i64, String> {
        match self.take(name)? {
            Value::Long(x) | Value::TimestampMillis(x) => Ok(x),
            Value::Int(x) => Ok(x as i64),
            other => Err(format!("field {name}: expected long, got {other:?}")),
        }
    }
    fn int(&mut self, name: &str) -> Result<i32, String> {
        match self.take(name)? {
            Value::Int(x) => Ok(x),
            other => Err(format!("field {name}: expected int, got {other:?}")),
        }
    }
    /// A field an older writer schema may lack (added later with a null default): `None`
    /// when absent.
    fn added(&mut self, name: &str) -> Result<Option<Value>, String> {
        if self.0.iter().any(|(k, _)| k == name) {
            self.optional(name)
        } else {
            Ok(None)
        }
    }

    fn opt_long(&mut self, name: &str) -> Result<Option<i64>, String> {
        match self.optional(name)? {
            None => Ok(None),
            Some(Value::Long(x)) => Ok(Some(x)),
            Some(Value::Int(x)) => Ok(Some(x.into())),
            Some(other) => Err(format!("field {name}: expected long, got {other:?}")),
        }
    }

    fn optional(&mut self, name: &str) -> Result<Option<Value>, String> {
        match self.take(name)? {
            Value::Union(_, b) => match *b {
                Value::Null => Ok(None),
                x => Ok(Some(x)),
            },
            Value::Null => Ok(None),
            x => Ok(Some(x)),
        }
    }
    fn opt_string(&mut self, name: &str) -> Result<Option<String>, String> {
        match self.optional(name)? {
            None => Ok(None),
            Some(Value::String(x)) => Ok(Some(x)),
            Some(other) => Err(format!("field {name}: expected string, got {other:?}")),
        }
    }
    fn enum_index(&mut self, name: &str) -> Result<u32, String> {
        match self.take(name)? {
            Value::Enum(i, _) => Ok(i),
            other => Err(format!("field {name}: expected enum, got {other:?}")),
        }
    }
}

fn hlc_from(v: Value) -> Result<Hlc, String> {
    let mut f = Fields::of(v)?;
    Ok(Hlc {
        physical_ms: f.long("physical_ms")?,
        logical: f.int("logical")?,
    })
}

fn op_value(op: &Op) -> Value {
    let (i, v) = match op {
        Op::CounterAdd { delta } => (0, rec(vec![("delta", Value::Long(*delta))])),
        Op::RegisterPut {
            value,
            context,
            dot,
        } => (
            1,
            rec(vec![
                ("value", s(value)),
                ("context", opt_str(context)),
                (
                    "dot",
                    match dot {
                        None => Value::Union(0, Box::new(Value::Null)),
                        Some(d) => Value::Union(
                            1,
                            Box::new(rec(vec![
                                ("region", s(&d.region)),
                                ("seq", Value::Long(d.seq)),
                            ])),
                        ),
                    },
                ),
            ]),
        ),
        Op::ScoreSubmit { player, score } => (
            2,
            rec(vec![("player", s(player)), ("score", Value::Long(*score))]),
        ),
        Op::StockAdd { qty, grants } => (
            3,
            rec(vec![
                ("qty", Value::Long(*qty)),
                (
                    "grants",
                    match grants {
                        None => Value::Union(0, Box::new(Value::Null)),
                        Some(g) => Value::Union(
                            1,
                            Box::new(Value::Array(
                                g.iter()
                                    .map(|x| {
                                        rec(vec![
                                            ("region", s(&x.region)),
                                            ("qty", Value::Long(x.qty)),
                                        ])
                                    })
                                    .collect(),
                            )),
                        ),
                    },
                ),
            ]),
        ),
        Op::Reserve { order_id, qty } => (
            4,
            rec(vec![("order_id", s(order_id)), ("qty", Value::Long(*qty))]),
        ),
        Op::Release { order_id } => (5, rec(vec![("order_id", s(order_id))])),
        Op::MessagePost { author, text } => {
            (6, rec(vec![("author", s(author)), ("text", s(text))]))
        }
        Op::Heartbeat => (7, rec(vec![])),
        Op::Custom { aggregate, payload } => (
            8,
            rec(vec![
                ("aggregate", s(aggregate)),
                ("payload", Value::Bytes(payload.clone())),
            ]),
        ),
        Op::RightsRequest { qty } => (9, rec(vec![("qty", Value::Long(*qty))])),
        Op::RightsTransfer { to, qty, request } => (
            10,
            rec(vec![
                ("to", s(to)),
                ("qty", Value::Long(*qty)),
                ("request", Value::Long(*request)),
            ]),
        ),
        Op::ScheduleSet(x) => (
            11,
            rec(vec![
                ("cron", s(&x.cron)),
                ("zone", s(&x.zone)),
                ("payload", s(&x.payload)),
                ("home", opt_str(&x.home)),
                ("on_gap", s(&x.on_gap)),
                ("on_fold", s(&x.on_fold)),
                ("missed", s(&x.missed)),
                ("catch_up_max", Value::Int(x.catch_up_max)),
                ("catch_up_window_ms", Value::Long(x.catch_up_window_ms)),
                ("start_ms", opt_long(x.start_ms)),
                ("end_ms", opt_long(x.end_ms)),
            ]),
        ),
        Op::ScheduleCancel { reason } => (12, rec(vec![("reason", opt_str(reason))])),
        Op::ScheduleFired(x) => (
            13,
            rec(vec![
                ("occurrence_ms", Value::Long(x.occurrence_ms)),
                ("fold", Value::Int(x.fold)),
                ("wall", s(&x.wall)),
                ("payload", s(&x.payload)),
                ("failover", Value::Boolean(x.failover)),
                ("missed", Value::Long(x.missed)),
            ]),
        ),
    };
    Value::Union(i, Box::new(v))
}

fn op_from(v: Value) -> Result<Op, String> {
    let (i, inner) = match v {
        Value::Union(i, b) => (i, *b),
        other => return Err(format!("op: expected union, got {other:?}")),
    };
    let mut f = Fields::of(inner)?;
    Ok(match i {
        0 => Op::CounterAdd {
            delta: f.long("delta")?,
        },
        1 => Op::RegisterPut {
            value: f.string("value")?,
            context: match f.added("context")? {
                None => None,
                Some(Value::String(x)) => Some(x),
                Some(other) => return Err(format!("context: {other:?}")),
            },
            dot: match f.added("dot")? {
                None => None,
                Some(v) => {
                    let mut d = Fields::of(v)?;
                    Some(Dot {
                        region: d.string("region")?,
                        seq: d.long("seq")?,
                    })
                }
            },
        },
        2 => Op::ScoreSubmit {
            player: f.string("player")?,
            score: f.long("score")?,
        },
        3 => Op::StockAdd {
            qty: f.long("qty")?,
            grants: match f.added("grants")? {
                None => None,
                Some(Value::Array(items)) => Some(
                    items
                        .into_iter()
                        .map(|v| {
                            let mut g = Fields::of(v)?;
                            Ok(Share {
                                region: g.string("region")?,
                                qty: g.long("qty")?,
                            })
                        })
                        .collect::<Result<_, String>>()?,
                ),
                Some(other) => return Err(format!("grants: {other:?}")),
            },
        },
        4 => Op::Reserve {
            order_id: f.string("order_id")?,
            qty: f.long("qty")?,
        },
        5 => Op::Release {
            order_id: f.string("order_id")?,
        },
        6 => Op::MessagePost {
            author: f.string("author")?,
            text: f.string("text")?,
        },
        7 => Op::Heartbeat,
        8 => Op::Custom {
            aggregate: f.string("aggregate")?,
            payload: match f.take("payload")? {
                Value::Bytes(b) => b,
                other => return Err(format!("payload: expected bytes, got {other:?}")),
            },
        },
        9 => Op::RightsRequest {
            qty: f.long("qty")?,
        },
        10 => Op::RightsTransfer {
            to: f.string("to")?,
            qty: f.long("qty")?,
            request: f.long("request")?,
        },
        11 => Op::ScheduleSet(Box::new(ScheduleSpec {
            cron: f.string("cron")?,
            zone: f.string("zone")?,
            payload: f.string("payload")?,
            home: match f.optional("home")? {
                None => None,
                Some(Value::String(x)) => Some(x),
                Some(other) => return Err(format!("home: {other:?}")),
            },
            on_gap: f.string("on_gap")?,
            on_fold: f.string("on_fold")?,
            missed: f.string("missed")?,
            catch_up_max: f.int("catch_up_max")?,
            catch_up_window_ms: f.long("catch_up_window_ms")?,
            start_ms: f.opt_long("start_ms")?,
            end_ms: f.opt_long("end_ms")?,
        })),
        12 => Op::ScheduleCancel {
            reason: match f.optional("reason")? {
                None => None,
                Some(Value::String(x)) => Some(x),
                Some(other) => return Err(format!("reason: {other:?}")),
            },
        },
        13 => Op::ScheduleFired(Firing {
            occurrence_ms: f.long("occurrence_ms")?,
            fold: f.int("fold")?,
            wall: f.string("wall")?,
            payload: f.string("payload")?,
            failover: match f.take("failover")? {
                Value::Boolean(b) => b,
                other => return Err(format!("failover: expected boolean, got {other:?}")),
            },
            missed: f.long("missed")?,
        }),
        n => return Err(format!("op: unknown union branch {n}")),
    })
}

impl AvroRecord for Event {
    direct_binary!(Event, crate::binary::write_event, crate::binary::read_event);
    fn to_value(&self) -> Value {
        rec(vec![
            ("event_id", s(&self.event_id)),
            ("key", s(&self.key)),
            ("op", op_value(&self.op)),
            ("region", opt_str(&self.region)),
            (
                "client_time_ms",
                match self.client_time_ms {
                    None => Value::Union(0, Box::new(Value::Null)),
                    Some(t) => Value::Union(1, Box::new(Value::TimestampMillis(t))),
                },
            ),
            (
                "hlc",
                match &self.hlc {
                    None => Value::Union(0, Box::new(Value::Null)),
                    Some(h) => Value::Union(1, Box::new(hlc_value(h))),
                },
            ),
            ("refusal", opt_str(&self.refusal)),
        ])
    }

    fn from_value(v: Value) -> Result<Self, String> {
        let mut f = Fields::of(v)?;
        Ok(Event {
            event_id: f.string("event_id")?,
            key: f.string("key")?,
            op: op_from(f.take("op")?)?,
            region: f.opt_string("region")?,
            client_time_ms: match f.optional("client_time_ms")? {
                None => None,
                Some(Value::Long(t)) | Some(Value::TimestampMillis(t)) => Some(t),
                Some(other) => return Err(format!("client_time_ms: {other:?}")),
            },
            hlc: f.optional("hlc")?.map(hlc_from).transpose()?,
            refusal: f.opt_string("refusal")?,
        })
    }
}

impl AvroRecord for ReconciledEvent {
    direct_binary!(
        ReconciledEvent,
        crate::binary::write_reconciled,
        crate::binary::read_reconciled
    );
    fn to_value(&self) -> Value {
        rec(vec![
            ("event", self.event.to_value()),
            (
                "outcome",
                Value::Enum(
                    self.outcome.index(),
                    Outcome::SYMBOLS[self.outcome.index() as usize].to_owned(),
                ),
            ),
            ("reason", opt_str(&self.reason)),
            ("state_json", s(&self.state_json)),
        ])
    }

    fn from_value(v: Value) -> Result<Self, String> {
        let mut f = Fields::of(v)?;
        Ok(ReconciledEvent {
            event: Event::from_value(f.take("event")?)?,
            outcome: match f.enum_index("outcome")? {
                0 => Outcome::Applied,
                1 => Outcome::Refused,
                2 => Outcome::Revoked,
                n => return Err(format!("outcome: unknown symbol {n}")),
            },
            reason: f.opt_string("reason")?,
            state_json: f.string("state_json")?,
        })
    }
}

impl AvroRecord for Conflict {
    direct_binary!(
        Conflict,
        crate::binary::write_conflict,
        crate::binary::read_conflict
    );
    fn to_value(&self) -> Value {
        rec(vec![
            ("conflict_id", s(&self.conflict_id)),
            ("key", s(&self.key)),
            (
                "kind",
                Value::Enum(self.kind as u32, self.kind.as_str().to_owned()),
            ),
            ("event_id", s(&self.event_id)),
            (
                "regions",
                Value::Array(self.regions.iter().map(|r| s(r)).collect()),
            ),
            ("winner", opt_str(&self.winner)),
            ("loser", opt_str(&self.loser)),
            ("detail", s(&self.detail)),
            ("hlc", hlc_value(&self.hlc)),
            (
                "reconcile_latency_ms",
                Value::Long(self.reconcile_latency_ms),
            ),
        ])
    }

    fn from_value(v: Value) -> Result<Self, String> {
        let mut f = Fields::of(v)?;
        Ok(Conflict {
            conflict_id: f.string("conflict_id")?,
            key: f.string("key")?,
            kind: match f.enum_index("kind")? {
                0 => ConflictKind::RegisterConcurrent,
                1 => ConflictKind::ReservationRevoked,
                2 => ConflictKind::CrossRegionDuplicate,
                3 => ConflictKind::ClockSkew,
                4 => ConflictKind::LateRecord,
                n => return Err(format!("kind: unknown symbol {n}")),
            },
            event_id: f.string("event_id")?,
            regions: match f.take("regions")? {
                Value::Array(items) => items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(x) => Ok(x),
                        other => Err(format!("regions: {other:?}")),
                    })
                    .collect::<Result<_, _>>()?,
                other => return Err(format!("regions: {other:?}")),
            },
            winner: f.opt_string("winner")?,
            loser: f.opt_string("loser")?,
            detail: f.string("detail")?,
            hlc: hlc_from(f.take("hlc")?)?,
            reconcile_latency_ms: f.long("reconcile_latency_ms")?,
        })
    }
}
