//! The checker: reads back every region's `history`, `events.dlq` and the home cluster's
//! `reconciled` and `conflicts`, and compares them with what was sent.

use crate::cluster::Cluster;
use crate::workload::Ledger;
use rdkafka::message::Message;
use rf_core::aggregate::apply_reconciled;
use rf_core::{published_json, AggState, OrderKey};
use rf_runtime::kafka::read_to_end;
use rf_schemas::{Codec, Event, Op, ReconciledEvent};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

fn read_all<T>(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    mut f: impl FnMut(i32, &[u8]) -> Option<T>,
) -> Result<Vec<(i32, T)>, String> {
    let mut out = Vec::new();
    for p in 0..partitions {
        read_to_end(
            bootstrap,
            &crate::cluster::kafka_extras(),
            topic,
            p,
            0,
            Duration::from_secs(60),
            |m| {
                if let Some(t) = m.payload().and_then(|b| f(p, b)) {
                    out.push((p, t));
                }
                Ok(())
            },
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Every key's full state, as any reader of `reconciled` rebuilds it (its records carry a
/// bounded summary): the fold of the records' events by outcome.
pub fn reconciled_states(c: &Cluster) -> Result<HashMap<String, AggState>, String> {
    let mut folded: HashMap<String, Option<AggState>> = HashMap::new();
    for (_, r) in read_reconciled(c)? {
        apply_reconciled(
            folded.entry(r.event.key.clone()).or_default(),
            &r.event,
            r.outcome,
        );
    }
    Ok(folded
        .into_iter()
        .filter_map(|(k, s)| Some((k, s?)))
        .collect())
}

pub fn read_reconciled(c: &Cluster) -> Result<Vec<(i32, ReconciledEvent)>, String> {
    read_all(&c.home.bootstrap(), "reconciled", c.partitions, |_, b| {
        Codec::reconciled().decode(b).ok()
    })
}

/// Every record of the home cluster's `conflicts`.
/// A region's dead letters as (class, reason), once per source record.
pub fn read_dead_letters(
    bootstrap: &str,
    partitions: i32,
) -> Result<Vec<(String, String)>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for p in 0..partitions {
        read_to_end(
            bootstrap,
            &crate::cluster::kafka_extras(),
            "events.dlq",
            p,
            0,
            Duration::from_secs(120),
            |m| {
                let src = (
                    rf_runtime::kafka::header_i64(m, &[rf_schemas::headers::SOURCE_PARTITION]),
                    rf_runtime::kafka::header_i64(m, &[rf_schemas::headers::SOURCE_OFFSET]),
                );
                if seen.insert(src) {
                    let h = |n| rf_runtime::kafka::header_str(m, n).unwrap_or_default();
                    out.push((
                        h(rf_schemas::headers::ERROR_CLASS),
                        h(rf_schemas::headers::ERROR_REASON),
                    ));
                }
                Ok(())
            },
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

pub fn read_all_conflicts(c: &Cluster) -> Result<Vec<rf_schemas::Conflict>, String> {
    Ok(
        read_all(&c.home.bootstrap(), "conflicts", c.partitions, |_, b| {
            Codec::conflict().decode(b).ok()
        })?
        .into_iter()
        .map(|(_, cf)| cf)
        .collect(),
    )
}

/// Raw key/value bytes of `reconciled`, per partition, for byte-for-byte comparisons.
pub fn reconciled_bytes(c: &Cluster) -> Result<Vec<(i32, Vec<u8>)>, String> {
    topic_bytes(&c.home.bootstrap(), "reconciled", c.partitions)
}

/// Raw value bytes of every record of `topic`, in partition then offset order.
pub fn topic_bytes(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(i32, Vec<u8>)>, String> {
    read_all(bootstrap, topic, partitions, |_, b| Some(b.to_vec()))
}

/// Compare two reconciled outputs record by record; `None` when byte-identical, else the
/// first difference.
/// The first difference between two `reconciled` topics (raw records in partition order),
/// per partition: `None` when every partition holds the same bytes, except that one side may
/// hold more records at the end of a partition when those are all escrow rights records the
/// processors wrote (`RightsRequest`, `RightsTransfer`): a run stopped before the reconciler
/// released the last donation is still the same output so far.
pub fn first_difference(a: &[(i32, Vec<u8>)], b: &[(i32, Vec<u8>)]) -> Option<String> {
    let show = |r: &(i32, Vec<u8>)| {
        Codec::reconciled()
            .decode(&r.1)
            .map(|e| format!("[{}] {} {:?}", r.0, e.event.event_id, e.outcome))
            .unwrap_or_else(|_| format!("[{}] undecodable", r.0))
    };
    let originated = |r: &(i32, Vec<u8>)| {
        Codec::reconciled()
            .decode(&r.1)
            .is_ok_and(|e| e.event.op.is_reserved())
    };
    let parts: BTreeSet<i32> = a.iter().chain(b).map(|r| r.0).collect();
    for p in parts {
        let pa: Vec<&(i32, Vec<u8>)> = a.iter().filter(|r| r.0 == p).collect();
        let pb: Vec<&(i32, Vec<u8>)> = b.iter().filter(|r| r.0 == p).collect();
        if let Some(i) = (0..pa.len().min(pb.len())).find(|&i| pa[i] != pb[i]) {
            return Some(format!(
                "partition {p} record {i}: {} vs {}",
                show(pa[i]),
                show(pb[i])
            ));
        }
        let (short, long) = if pa.len() <= pb.len() {
            (&pa, &pb)
        } else {
            (&pb, &pa)
        };
        if let Some(r) = long[short.len()..].iter().find(|r| !originated(r)) {
            return Some(format!(
                "partition {p}: {} records vs {}, and the longer goes on with {}",
                pa.len(),
                pb.len(),
                show(r)
            ));
        }
    }
    None
}

#[derive(Debug, Default)]
pub struct Report {
    pub sent_records: usize,
    pub sent_distinct: usize,
    pub retries: usize,
    pub failovers: usize,
    pub malformed_sent: usize,
    pub history_per_region: BTreeMap<String, usize>,
    pub heartbeats_per_region: BTreeMap<String, usize>,
    /// Records the processors wrote of their own accord (escrow rights requests, transfers).
    pub originated_per_region: BTreeMap<String, usize>,
    pub dlq_per_region: BTreeMap<String, usize>,
    pub accepted_distinct_across_regions: usize,
    pub reconciled: usize,
    /// Distinct conflicts (by conflict_id) per kind.
    pub conflicts: BTreeMap<String, usize>,
    /// Conflict records repeating a conflict_id already seen (reported again after a restart).
    pub conflicts_repeated: usize,
    pub problems: Vec<String>,
    pub sample_states: Vec<(String, String)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Number of producers' events in `reconciled` right now (not the processors' own escrow
/// rights records).
pub fn reconciled_count(c: &Cluster) -> Result<usize, String> {
    Ok(read_reconciled(c)?
        .iter()
        .filter(|(_, r)| !r.event.op.is_reserved())
        .count())
}

pub fn check(c: &Cluster, ledger: &Ledger) -> Result<Report, String> {
    let mut r = Report {
        sent_records: ledger.records,
        sent_distinct: ledger.distinct.len(),
        retries: ledger.retries_same_region,
        failovers: ledger.failovers,
        malformed_sent: ledger.malformed,
        ..Default::default()
    };
    // Histories: each (key, event_id) once per region, HLC strictly increasing per partition.
    let mut accepted: HashMap<(String, String), Vec<OrderKey>> = HashMap::new();
    for (region, b) in &c.regions {
        let recs = read_all(&b.bootstrap(), "history", c.partitions, |_, bytes| {
            Codec::event().decode(bytes).ok()
        })?;
        let mut seen = HashSet::new();
        let mut last: HashMap<i32, rf_schemas::Hlc> = HashMap::new();
        let (mut n, mut hb) = (0, 0);
        for (p, ev) in recs {
            let h = ev.hlc.unwrap_or_default();
            if let Some(prev) = last.insert(p, h) {
                if h <= prev {
                    r.problems.push(format!(
                        "{region} history[{p}]: HLC not increasing ({prev:?} then {h:?})"
                    ));
                }
            }
            if matches!(ev.op, Op::Heartbeat) {
                hb += 1;
                continue;
            }
            if ev.op.is_reserved() {
                // Written by the processor itself (escrow rights): checked for order and
                // once-only below with the rest of reconciled, not against what was sent.
                *r.originated_per_region.entry(region.clone()).or_default() += 1;
                continue;
            }
            n += 1;
            let id = (ev.key.clone(), ev.event_id.clone());
            if !seen.insert(id.clone()) {
                r.problems
                    .push(format!("{region} history: {id:?} appears more than once"));
            }
            if !ledger.distinct.contains_key(&id) {
                r.problems
                    .push(format!("{region} history: {id:?} was never sent"));
            }
            accepted.entry(id).or_default().push(OrderKey::new(
                h,
                region.clone(),
                ev.event_id.clone(),
            ));
        }
        r.history_per_region.insert(region.clone(), n);
        r.heartbeats_per_region.insert(region.clone(), hb);
        let dlq = read_all(&b.bootstrap(), "events.dlq", c.partitions, |_, _| Some(()))?;
        r.dlq_per_region.insert(region.clone(), dlq.len());
    }
    r.accepted_distinct_across_regions = accepted.len();
    let total_dlq: usize = r.dlq_per_region.values().sum();
    if total_dlq != ledger.malformed {
        r.problems.push(format!(
            "dead-lettered {total_dlq}, sent {} malformed",
            ledger.malformed
        ));
    }
    if accepted.len() != ledger.distinct.len() {
        r.problems.push(format!(
            "{} distinct events sent, {} accepted by some region",
            ledger.distinct.len(),
            accepted.len()
        ));
    }

    // Reconciled: each distinct event once, in (hlc, region, event_id) order per partition.
    let rec = read_reconciled(c)?;
    r.reconciled = rec
        .iter()
        .filter(|(_, x)| !x.event.op.is_reserved())
        .count();
    let mut seen = HashSet::new();
    let mut originated = HashSet::new();
    let mut last: HashMap<i32, OrderKey> = HashMap::new();
    let mut final_state: HashMap<String, (AggState, Event)> = HashMap::new();
    let mut folded: HashMap<String, Option<AggState>> = HashMap::new();
    let mut state_mismatches = 0;
    for (p, re) in &rec {
        let ev = &re.event;
        let order = OrderKey::new(
            ev.hlc.unwrap_or_default(),
            ev.region.clone().unwrap_or_default(),
            ev.event_id.clone(),
        );
        if let Some(prev) = last.insert(*p, order.clone()) {
            if order <= prev {
                r.problems
                    .push(format!("reconciled[{p}]: out of order at {}", ev.event_id));
            }
        }
        let id = (ev.key.clone(), ev.event_id.clone());
        if ev.op.is_reserved() {
            if !originated.insert(id.clone()) {
                r.problems
                    .push(format!("reconciled: {id:?} appears more than once"));
            }
        } else if !seen.insert(id.clone()) {
            r.problems
                .push(format!("reconciled: {id:?} appears more than once"));
        }
        // The earliest copy of a cross-region duplicate is the one kept.
        if let Some(copies) = accepted.get(&id) {
            if copies.iter().min() != Some(&order) {
                r.problems
                    .push(format!("reconciled: {id:?} did not keep the earliest copy"));
            }
        }
        // A reader rebuilds the full state by folding the records' events by outcome; the
        // bounded `state_json` of every record must be the published form of that fold.
        let slot = folded.entry(ev.key.clone()).or_default();
        apply_reconciled(slot, ev, re.outcome);
        let want = published_json(slot.as_ref(), ev);
        if want != re.state_json && state_mismatches < 5 {
            state_mismatches += 1;
            r.problems.push(format!(
                "reconciled[{p}] {}: state_json {} is not the fold of the records before it ({want})",
                ev.event_id, re.state_json
            ));
        }
        if let Some(s) = slot {
            final_state.insert(ev.key.clone(), (s.clone(), ev.clone()));
        }
    }
    if seen.len() != ledger.distinct.len() {
        r.problems.push(format!(
            "reconciled holds {} distinct events, {} were sent",
            seen.len(),
            ledger.distinct.len()
        ));
    }
    // Counters: recomputed from what was sent.
    for (k, total) in ledger.counter_totals() {
        match final_state.get(&k) {
            Some((AggState::Counter { total: got }, _)) if *got == total => {}
            other => r.problems.push(format!(
                "counter {k}: expected {total}, reconciled {:?}",
                other.map(|o| &o.0)
            )),
        }
    }
    // Registers: the value of the last put by (hlc, region, event_id) over the kept copies.
    let mut last_put: HashMap<String, (OrderKey, String)> = HashMap::new();
    for ((k, id), op) in &ledger.distinct {
        if let (Op::RegisterPut { value, .. }, Some(copies)) =
            (op, accepted.get(&(k.clone(), id.clone())))
        {
            let o = copies.iter().min().expect("a copy").clone();
            let e = last_put
                .entry(k.clone())
                .or_insert((o.clone(), value.clone()));
            if o > e.0 {
                *e = (o, value.clone());
            }
        }
    }
    for (k, (_, value)) in &last_put {
        match final_state.get(k) {
            Some((AggState::Register { value: got, .. }, _)) if got == value => {}
            other => r.problems.push(format!(
                "register {k}: expected {value:?}, reconciled {:?}",
                other.map(|o| &o.0)
            )),
        }
    }
    let conflicts = read_all(&c.home.bootstrap(), "conflicts", c.partitions, |_, b| {
        Codec::conflict().decode(b).ok()
    })?;
    // A conflict can be reported again after a reconciler restart; consumers deduplicate
    // by conflict_id, and so does this count.
    let mut ids = HashSet::new();
    for (_, cf) in conflicts {
        if ids.insert(cf.conflict_id.clone()) {
            *r.conflicts.entry(cf.kind.as_str().to_owned()).or_insert(0) += 1;
        } else {
            r.conflicts_repeated += 1;
        }
    }
    let mut keys: Vec<_> = final_state.keys().cloned().collect();
    keys.sort();
    for k in keys
        .iter()
        .filter(|k| k.starts_with("likes:"))
        .take(3)
        .chain(keys.iter().filter(|k| k.starts_with("profile:")).take(3))
        .chain(keys.iter().filter(|k| k.starts_with("stock:")).take(2))
    {
        // As `reconciled` publishes it (bounded; a register's siblings and context token,
        // an escrow SKU's rights per region).
        let (s, ev) = &final_state[k];
        r.sample_states
            .push((k.clone(), published_json(Some(s), ev)));
    }
    Ok(r)
}

/// The consumer group's committed offsets for `topic` (what a restart resumes from).
pub fn group_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, i64>, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// What one region's processors left behind, checked against what was sent.
#[derive(Debug, Default)]
pub struct ProcessorReport {
    pub history_events: usize,
    /// Escrow rights requests and transfers the processors wrote of their own accord.
    pub originated: usize,
    pub heartbeats: usize,
    pub dlq_records: usize,
    /// Distinct (source partition, source offset) among dead letters.
    pub dlq_distinct: usize,
    pub dlq_reasons: BTreeMap<String, usize>,
    pub states_checked: usize,
    pub problems: Vec<String>,
}

/// Invariants 1, 3, 4 and 8 as a reader sees them, for one region whose processors have
/// stopped: `history` holds each sent (key, event_id) exactly once and nothing else, its
/// HLC strictly increases per partition, every malformed record is dead-lettered, counters
/// equal the sums of what was sent, and the RocksDB state of each partition (from the store
/// that reflects the most history) equals the fold of its history.
pub fn verify_region(
    bootstrap: &str,
    partitions: i32,
    ledger: &Ledger,
    state_dirs: &[std::path::PathBuf],
) -> Result<ProcessorReport, String> {
    use rf_processor::store::{RocksStore, StateStore};
    let mut r = ProcessorReport::default();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut folded: BTreeMap<i32, BTreeMap<String, Option<AggState>>> = BTreeMap::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for p in 0..partitions {
        let mut last: Option<rf_schemas::Hlc> = None;
        let mut data_end = 0;
        let fold = folded.entry(p).or_default();
        read_to_end(
            bootstrap,
            &crate::cluster::kafka_extras(),
            "history",
            p,
            0,
            Duration::from_secs(120),
            |m| {
                data_end = m.offset() + 1;
                let Some(ev) = m.payload().and_then(|b| Codec::event().decode(b).ok()) else {
                    r.problems
                        .push(format!("history[{p}]@{}: undecodable", m.offset()));
                    return Ok(());
                };
                let h = ev.hlc.unwrap_or_default();
                if last.is_some_and(|l| h <= l) {
                    r.problems.push(format!(
                        "history[{p}]@{}: HLC {h:?} not above {last:?}",
                        m.offset()
                    ));
                }
                last = Some(h);
                if matches!(ev.op, Op::Heartbeat) {
                    r.heartbeats += 1;
                    return Ok(());
                }
                let id = (ev.key.clone(), ev.event_id.clone());
                if ev.op.is_reserved() {
                    // The processor's own escrow rights records: once each, not sent.
                    r.originated += 1;
                } else {
                    r.history_events += 1;
                    if !ledger.distinct.contains_key(&id) {
                        r.problems.push(format!("history: {id:?} was never sent"));
                    }
                }
                if !seen.insert(id.clone()) {
                    r.problems
                        .push(format!("history: {id:?} appears more than once"));
                    return Ok(());
                }
                let st = fold.entry(ev.key.clone()).or_default();
                if ev.refusal.is_none() {
                    let _ = rf_core::aggregate::apply_admitted(st, &ev);
                }
                Ok(())
            },
        )
        .map_err(|e| e.to_string())?;
        ends.insert(p, data_end);
    }
    let missing = ledger
        .distinct
        .keys()
        .filter(|id| !seen.contains(*id))
        .count();
    if missing > 0 {
        r.problems
            .push(format!("{missing} sent events are missing from history"));
    }
    for (k, total) in ledger.counter_totals() {
        let got = folded.values().find_map(|f| f.get(&k).cloned().flatten());
        if got != Some(AggState::Counter { total }) {
            r.problems.push(format!(
                "counter {k}: sent total {total}, history folds to {got:?}"
            ));
        }
    }
    // Dead letters: each malformed input record at least once (a broker that shows aborted
    // records can show a repeat after a crash), with its reason.
    let mut dlq_src = HashSet::new();
    for p in 0..partitions {
        read_to_end(
            bootstrap,
            &crate::cluster::kafka_extras(),
            "events.dlq",
            p,
            0,
            Duration::from_secs(120),
            |m| {
                r.dlq_records += 1;
                let sp = rf_runtime::kafka::header_i64(m, &[rf_schemas::headers::SOURCE_PARTITION]);
                let so = rf_runtime::kafka::header_i64(m, &[rf_schemas::headers::SOURCE_OFFSET]);
                if dlq_src.insert((sp, so)) {
                    let class = rf_runtime::kafka::header_str(m, rf_schemas::headers::ERROR_CLASS)
                        .unwrap_or_default();
                    *r.dlq_reasons.entry(class).or_insert(0) += 1;
                }
                Ok(())
            },
        )
        .map_err(|e| e.to_string())?;
    }
    r.dlq_distinct = dlq_src.len();
    if r.dlq_distinct != ledger.malformed {
        r.problems.push(format!(
            "{} malformed records sent, {} distinct dead letters",
            ledger.malformed, r.dlq_distinct
        ));
    }
    // RocksDB: per partition, the store reflecting the most history must equal the fold.
    let stores: Vec<RocksStore> = state_dirs
        .iter()
        .filter(|d| d.exists())
        .map(|d| RocksStore::open(d).map_err(|e| format!("{}: {e}", d.display())))
        .collect::<Result<_, _>>()?;
    for p in 0..partitions {
        let best = stores
            .iter()
            .filter_map(|s| s.meta(p).ok().flatten().map(|m| (m.history_next, s)))
            .max_by_key(|(n, _)| *n);
        let Some((history_next, store)) = best else {
            r.problems
                .push(format!("partition {p}: no state store holds it"));
            continue;
        };
        // (The log's end may be one further: the last commit marker.)
        if history_next < ends[&p] {
            r.problems.push(format!(
                "partition {p}: store reflects history up to {history_next}, its last record ends at {}",
                ends[&p]
            ));
        }
        let want: BTreeMap<String, AggState> = folded[&p]
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        let got: BTreeMap<String, AggState> = store
            .states(p)
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        r.states_checked += want.len();
        if got != want {
            let diff = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .take(3)
                .map(|(k, v)| format!("{k}: fold {v:?}, store {:?}", got.get(k)))
                .collect::<Vec<_>>();
            r.problems.push(format!(
                "partition {p}: RocksDB state differs from the fold of history ({} vs {} keys; {diff:?})",
                got.len(),
                want.len()
            ));
        }
    }
    Ok(r)
}

/// Every event of a region's `history` as a reader sees it (records of aborted
/// transactions included: no broker here hides them), with its partition.
pub fn read_history_events(
    bootstrap: &str,
    partitions: i32,
) -> Result<Vec<(i32, rf_schemas::Event)>, String> {
    read_all(bootstrap, "history", partitions, |_, b| {
        Codec::event().decode(b).ok()
    })
}

/// Every HLC in a region's `history` (events and heartbeats), for clock checks.
pub fn read_all_history_hlcs(
    bootstrap: &str,
    partitions: i32,
) -> Result<Vec<rf_schemas::Hlc>, String> {
    Ok(read_all(bootstrap, "history", partitions, |_, b| {
        Codec::event().decode(b).ok().and_then(|e| e.hlc)
    })?
    .into_iter()
    .map(|(_, h)| h)
    .collect())
}

/// The highest HLC physical time in a region's `history` (heartbeats included).
pub fn max_history_physical_ms(bootstrap: &str, partitions: i32) -> Result<i64, String> {
    read_all_history_hlcs(bootstrap, partitions)?
        .into_iter()
        .map(|h| h.physical_ms)
        .max()
        .ok_or_else(|| "history is empty".to_owned())
}
