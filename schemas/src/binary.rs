//! Hand-written Avro binary for the three contract records, for the current schemas only.
//!
//! apache-avro goes through its dynamic `Value` tree: about 5 µs to encode and 7 µs to
//! decode one event (docs/BENCHMARKS.md), most of the reconciler's time. This writes and
//! reads the same bytes directly. It is a fast path, not a second authority:
//! - encoding is byte-identical to apache-avro's (property-tested against it);
//! - decoding accepts only canonical, complete data of the current writer schema; on any
//!   doubt it returns `None` and the codec decodes with apache-avro, so errors, older
//!   writer schemas and schema resolution behave exactly as before.

use crate::types::*;

fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    long(out, b.len() as i64);
    out.extend_from_slice(b);
}

fn string(out: &mut Vec<u8>, s: &str) {
    bytes(out, s.as_bytes());
}

fn opt_string(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        None => long(out, 0),
        Some(s) => {
            long(out, 1);
            string(out, s);
        }
    }
}

fn opt_long(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => long(out, 0),
        Some(v) => {
            long(out, 1);
            long(out, v);
        }
    }
}

fn hlc(out: &mut Vec<u8>, h: &Hlc) {
    long(out, h.physical_ms);
    long(out, i64::from(h.logical));
}

pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader(b)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A zigzag varint in its shortest form (anything else: `None`).
    fn long(&mut self) -> Option<i64> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let b = *self.0.get(i)?;
            if i == 9 && b > 1 {
                return None;
            }
            z |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return None; // not the shortest encoding
                }
                self.0 = &self.0[i + 1..];
                return Some((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        None
    }

    fn int(&mut self) -> Option<i32> {
        i32::try_from(self.long()?).ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.long()?).ok()?;
        if n > self.0.len() {
            return None;
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b)
    }

    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }

    fn opt_string(&mut self) -> Option<Option<String>> {
        match self.long()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }

    fn opt_long(&mut self) -> Option<Option<i64>> {
        match self.long()? {
            0 => Some(None),
            1 => Some(Some(self.long()?)),
            _ => None,
        }
    }

    fn boolean(&mut self) -> Option<bool> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        match b {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn hlc(&mut self) -> Option<Hlc> {
        Some(Hlc::new(self.long()?, self.int()?))
    }

    /// An array of `RightsShare` in one block then the end marker, as `write_event` writes
    /// it (anything else: apache-avro reads it).
    fn shares(&mut self) -> Option<Vec<Share>> {
        let n = self.long()?;
        let mut out = Vec::new();
        if n > 0 {
            for _ in 0..n {
                out.push(Share {
                    region: self.string()?,
                    qty: self.long()?,
                });
            }
            if self.long()? != 0 {
                return None;
            }
        } else if n < 0 {
            return None;
        }
        Some(out)
    }
}

pub(crate) fn write_event(out: &mut Vec<u8>, e: &Event) {
    string(out, &e.event_id);
    string(out, &e.key);
    match &e.op {
        Op::CounterAdd { delta } => {
            long(out, 0);
            long(out, *delta);
        }
        Op::RegisterPut {
            value,
            context,
            dot,
        } => {
            long(out, 1);
            string(out, value);
            opt_string(out, context);
            match dot {
                None => long(out, 0),
                Some(d) => {
                    long(out, 1);
                    string(out, &d.region);
                    long(out, d.seq);
                }
            }
        }
        Op::ScoreSubmit { player, score } => {
            long(out, 2);
            string(out, player);
            long(out, *score);
        }
        Op::StockAdd { qty, grants } => {
            long(out, 3);
            long(out, *qty);
            match grants {
                None => long(out, 0),
                Some(g) => {
                    long(out, 1);
                    if !g.is_empty() {
                        long(out, g.len() as i64);
                        for x in g {
                            string(out, &x.region);
                            long(out, x.qty);
                        }
                    }
                    long(out, 0);
                }
            }
        }
        Op::Reserve { order_id, qty } => {
            long(out, 4);
            string(out, order_id);
            long(out, *qty);
        }
        Op::Release { order_id } => {
            long(out, 5);
            string(out, order_id);
        }
        Op::MessagePost { author, text } => {
            long(out, 6);
            string(out, author);
            string(out, text);
        }
        Op::Heartbeat => long(out, 7),
        Op::Custom { aggregate, payload } => {
            long(out, 8);
            string(out, aggregate);
            bytes(out, payload);
        }
        Op::RightsRequest { qty } => {
            long(out, 9);
            long(out, *qty);
        }
        Op::RightsTransfer { to, qty, request } => {
            long(out, 10);
            string(out, to);
            long(out, *qty);
            long(out, *request);
        }
        Op::ScheduleSet(s) => {
            long(out, 11);
            string(out, &s.cron);
            string(out, &s.zone);
            string(out, &s.payload);
            opt_string(out, &s.home);
            string(out, &s.on_gap);
            string(out, &s.on_fold);
            string(out, &s.missed);
            long(out, i64::from(s.catch_up_max));
            long(out, s.catch_up_window_ms);
            opt_long(out, s.start_ms);
            opt_long(out, s.end_ms);
        }
        Op::ScheduleCancel { reason } => {
            long(out, 12);
            opt_string(out, reason);
        }
        Op::ScheduleFired(f) => {
            long(out, 13);
            long(out, f.occurrence_ms);
            long(out, i64::from(f.fold));
            string(out, &f.wall);
            string(out, &f.payload);
            out.push(u8::from(f.failover));
            long(out, f.missed);
        }
    }
    opt_string(out, &e.region);
    match e.client_time_ms {
        None => long(out, 0),
        Some(t) => {
            long(out, 1);
            long(out, t);
        }
    }
    match &e.hlc {
        None => long(out, 0),
        Some(h) => {
            long(out, 1);
            hlc(out, h);
        }
    }
    opt_string(out, &e.refusal);
}

pub(crate) fn read_event(r: &mut Reader<'_>) -> Option<Event> {
    let event_id = r.string()?;
    let key = r.string()?;
    let op = match r.long()? {
        0 => Op::CounterAdd { delta: r.long()? },
        1 => Op::RegisterPut {
            value: r.string()?,
            context: r.opt_string()?,
            dot: match r.long()? {
                0 => None,
                1 => Some(Dot {
                    region: r.string()?,
                    seq: r.long()?,
                }),
                _ => return None,
            },
        },
        2 => Op::ScoreSubmit {
            player: r.string()?,
            score: r.long()?,
        },
        3 => Op::StockAdd {
            qty: r.long()?,
            grants: match r.long()? {
                0 => None,
                1 => Some(r.shares()?),
                _ => return None,
            },
        },
        4 => Op::Reserve {
            order_id: r.string()?,
            qty: r.long()?,
        },
        5 => Op::Release {
            order_id: r.string()?,
        },
        6 => Op::MessagePost {
            author: r.string()?,
            text: r.string()?,
        },
        7 => Op::Heartbeat,
        8 => Op::Custom {
            aggregate: r.string()?,
            payload: r.bytes()?.to_vec(),
        },
        9 => Op::RightsRequest { qty: r.long()? },
        10 => Op::RightsTransfer {
            to: r.string()?,
            qty: r.long()?,
            request: r.long()?,
        },
        11 => Op::ScheduleSet(Box::new(ScheduleSpec {
            cron: r.string()?,
            zone: r.string()?,
            payload: r.string()?,
            home: r.opt_string()?,
            on_gap: r.string()?,
            on_fold: r.string()?,
            missed: r.string()?,
            catch_up_max: r.int()?,
            catch_up_window_ms: r.long()?,
            start_ms: r.opt_long()?,
            end_ms: r.opt_long()?,
        })),
        12 => Op::ScheduleCancel {
            reason: r.opt_string()?,
        },
        13 => Op::ScheduleFired(Firing {
            occurrence_ms: r.long()?,
            fold: r.int()?,
            wall: r.string()?,
            payload: r.string()?,
            failover: r.boolean()?,
            missed: r.long()?,
        }),
        _ => return None,
    };
    let region = r.opt_string()?;
    let client_time_ms = match r.long()? {
        0 => None,
        1 => Some(r.long()?),
        _ => return None,
    };
    let hlc = match r.long()? {
        0 => None,
        1 => Some(r.hlc()?),
        _ => return None,
    };
    let refusal = r.opt_string()?;
    Some(Event {
        event_id,
        key,
        op,
        region,
        client_time_ms,
        hlc,
        refusal,
    })
}

pub(crate) fn write_reconciled(out: &mut Vec<u8>, r: &ReconciledEvent) {
    write_event(out, &r.event);
    long(out, i64::from(r.outcome.index()));
    opt_string(out, &r.reason);
    string(out, &r.state_json);
}

pub(crate) fn read_reconciled(r: &mut Reader<'_>) -> Option<ReconciledEvent> {
    let event = read_event(r)?;
    let outcome = match r.long()? {
        0 => Outcome::Applied,
        1 => Outcome::Refused,
        2 => Outcome::Revoked,
        _ => return None,
    };
    Some(ReconciledEvent {
        event,
        outcome,
        reason: r.opt_string()?,
        state_json: r.string()?,
    })
}

pub(crate) fn write_conflict(out: &mut Vec<u8>, c: &Conflict) {
    string(out, &c.conflict_id);
    string(out, &c.key);
    long(out, c.kind as i64);
    string(out, &c.event_id);
    if !c.regions.is_empty() {
        long(out, c.regions.len() as i64);
        for r in &c.regions {
            string(out, r);
        }
    }
    long(out, 0);
    opt_string(out, &c.winner);
    opt_string(out, &c.loser);
    string(out, &c.detail);
    hlc(out, &c.hlc);
    long(out, c.reconcile_latency_ms);
}

pub(crate) fn read_conflict(r: &mut Reader<'_>) -> Option<Conflict> {
    let conflict_id = r.string()?;
    let key = r.string()?;
    let kind = match r.long()? {
        0 => ConflictKind::RegisterConcurrent,
        1 => ConflictKind::ReservationRevoked,
        2 => ConflictKind::CrossRegionDuplicate,
        3 => ConflictKind::ClockSkew,
        4 => ConflictKind::LateRecord,
        _ => return None,
    };
    let event_id = r.string()?;
    // One block then the end marker, as written above (anything else: apache-avro reads it).
    let mut regions = Vec::new();
    let n = r.long()?;
    if n > 0 {
        for _ in 0..n {
            regions.push(r.string()?);
        }
        if r.long()? != 0 {
            return None;
        }
    } else if n < 0 {
        return None;
    }
    Some(Conflict {
        conflict_id,
        key,
        kind,
        event_id,
        regions,
        winner: r.opt_string()?,
        loser: r.opt_string()?,
        detail: r.string()?,
        hlc: r.hlc()?,
        reconcile_latency_ms: r.long()?,
    })
}

#[cfg(test)]
mod tests {
    use crate::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,12}", "[a-z0-9:-]{0,30}", Just(String::new())]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<i64>().prop_map(|delta| Op::CounterAdd { delta }),
            (
                text(),
                proptest::option::of(text()),
                proptest::option::of((text(), any::<i64>()))
            )
                .prop_map(|(value, context, dot)| Op::RegisterPut {
                    value,
                    context,
                    dot: dot.map(|(region, seq)| Dot { region, seq }),
                }),
            (text(), any::<i64>()).prop_map(|(player, score)| Op::ScoreSubmit { player, score }),
            (
                any::<i64>(),
                proptest::option::of(proptest::collection::vec((text(), any::<i64>()), 0..3))
            )
                .prop_map(|(qty, g)| Op::StockAdd {
                    qty,
                    grants: g.map(|g| g
                        .into_iter()
                        .map(|(region, qty)| Share { region, qty })
                        .collect()),
                }),
            any::<i64>().prop_map(|qty| Op::RightsRequest { qty }),
            (text(), any::<i64>(), any::<i64>())
                .prop_map(|(to, qty, request)| Op::RightsTransfer { to, qty, request }),
            (text(), any::<i64>()).prop_map(|(order_id, qty)| Op::Reserve { order_id, qty }),
            text().prop_map(|order_id| Op::Release { order_id }),
            (text(), text()).prop_map(|(author, text)| Op::MessagePost { author, text }),
            Just(Op::Heartbeat),
            (text(), proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(aggregate, payload)| Op::Custom { aggregate, payload }),
            (
                (text(), text(), text(), proptest::option::of(text())),
                (text(), text(), text(), any::<i32>(), any::<i64>()),
                (
                    proptest::option::of(any::<i64>()),
                    proptest::option::of(any::<i64>())
                )
            )
                .prop_map(
                    |(
                        (cron, zone, payload, home),
                        (on_gap, on_fold, missed, catch_up_max, catch_up_window_ms),
                        (start_ms, end_ms),
                    )| {
                        Op::ScheduleSet(Box::new(ScheduleSpec {
                            cron,
                            zone,
                            payload,
                            home,
                            on_gap,
                            on_fold,
                            missed,
                            catch_up_max,
                            catch_up_window_ms,
                            start_ms,
                            end_ms,
                        }))
                    }
                ),
            proptest::option::of(text()).prop_map(|reason| Op::ScheduleCancel { reason }),
            (
                any::<i64>(),
                any::<i32>(),
                text(),
                text(),
                any::<bool>(),
                any::<i64>()
            )
                .prop_map(|(occurrence_ms, fold, wall, payload, failover, missed)| {
                    Op::ScheduleFired(Firing {
                        occurrence_ms,
                        fold,
                        wall,
                        payload,
                        failover,
                        missed,
                    })
                }),
        ]
    }

    fn hlc() -> impl Strategy<Value = Hlc> {
        (any::<i64>(), any::<i32>()).prop_map(|(p, l)| Hlc::new(p, l))
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            text(),
            text(),
            op(),
            proptest::option::of(text()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(hlc()),
            proptest::option::of(text()),
        )
            .prop_map(
                |(id, key, op, region, client_time_ms, hlc, refusal)| Event {
                    event_id: id,
                    key,
                    op,
                    region,
                    client_time_ms,
                    hlc,
                    refusal,
                },
            )
    }

    fn conflict() -> impl Strategy<Value = Conflict> {
        (
            (text(), text(), 0usize..5, text()),
            proptest::collection::vec(text(), 0..4),
            (proptest::option::of(text()), proptest::option::of(text())),
            (text(), hlc(), any::<i64>()),
        )
            .prop_map(
                |(
                    (conflict_id, key, kind, event_id),
                    regions,
                    (winner, loser),
                    (detail, hlc, lat),
                )| {
                    Conflict {
                        conflict_id,
                        key,
                        kind: [
                            ConflictKind::RegisterConcurrent,
                            ConflictKind::ReservationRevoked,
                            ConflictKind::CrossRegionDuplicate,
                            ConflictKind::ClockSkew,
                            ConflictKind::LateRecord,
                        ][kind],
                        event_id,
                        regions,
                        winner,
                        loser,
                        detail,
                        hlc,
                        reconcile_latency_ms: lat,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The direct writer produces apache-avro's bytes, and the direct reader reads them
        /// back to the same value apache-avro does.
        #[test]
        fn event_bytes_equal_apache_avro(e in event()) {
            let c = Codec::event();
            let direct = c.encode(&e).unwrap();
            prop_assert_eq!(&direct, &c.encode_generic(&e).unwrap());
            prop_assert_eq!(c.decode(&direct).unwrap(), e.clone());
            prop_assert_eq!(c.decode_generic(&direct).unwrap(), e);
        }

        #[test]
        fn reconciled_bytes_equal_apache_avro(
            e in event(), o in 0usize..3, reason in proptest::option::of(text()), state in text()
        ) {
            let r = ReconciledEvent {
                event: e,
                outcome: [Outcome::Applied, Outcome::Refused, Outcome::Revoked][o],
                reason,
                state_json: state,
            };
            let c = Codec::reconciled();
            let direct = c.encode(&r).unwrap();
            prop_assert_eq!(&direct, &c.encode_generic(&r).unwrap());
            prop_assert_eq!(c.decode(&direct).unwrap(), r);
        }

        #[test]
        fn conflict_bytes_equal_apache_avro(x in conflict()) {
            let c = Codec::conflict();
            let direct = c.encode(&x).unwrap();
            prop_assert_eq!(&direct, &c.encode_generic(&x).unwrap());
            prop_assert_eq!(c.decode(&direct).unwrap(), x);
        }

        /// Damaged records (truncated, a byte changed, bytes appended) decode exactly as
        /// apache-avro alone decodes them: the same value or the same error.
        #[test]
        fn damaged_records_decode_as_apache_avro_does(
            e in event(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(),
            mask in 1u8.., extra in proptest::collection::vec(any::<u8>(), 1..4)
        ) {
            let c = Codec::event();
            let good = c.encode(&e).unwrap();
            let truncated = good[..cut.index(good.len())].to_vec();
            let mut flipped = good.clone();
            let at = 10 + flip.index(good.len() - 10);
            flipped[at] ^= mask;
            let mut longer = good.clone();
            longer.extend_from_slice(&extra);
            for bytes in [truncated, flipped, longer] {
                prop_assert_eq!(c.decode(&bytes), c.decode_generic(&bytes));
            }
        }
    }
}
