//! The flash sale (DESIGN.md use case), on one 3-region deployment with a real network
//! partition in the middle, three SKUs of stock 1,000 each, all added in region a:
//!
//! - `stock:flash` under `escrow` (the default; the deployment splits a stock add's rights
//!   evenly): 5,000 reservation attempts spread over the regions, region c cut off in the
//!   middle. Nothing is ever revoked: reserved ≤ 1,000 at every record of `reconciled` and at
//!   every moment in every region's view (sampled from the `/state` JSON), no region's
//!   rights below zero, and at least 95 % of the stock sold.
//! - `stock:solo` under `escrow`: 3,000 attempts, all in region b, after the heal: b sells
//!   its share, then the rights a and c give it when it asks. At least 95 % sold, zero
//!   revocations; how long b waited for rights (request → rights in its view) p50/p99.
//! - `stock:repair:flash` under `repair` (a prefix policy), the same 5,000 attempts and cut:
//!   today's behaviour, the regions over-admit during the cut and the merge revokes in
//!   reconciled order, every revocation in `reconciled` and in `conflicts`.
use rf_core::Published;
use rf_harness::check::read_all_conflicts;
use rf_harness::check::read_reconciled;
use rf_harness::cluster::Cluster;
use rf_harness::workload::{outgoing, Publisher};
use rf_schemas::{ConflictKind, Op, Outcome, ReconciledEvent};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ESCROW: &str = "stock:flash";
const SOLO: &str = "stock:solo";
const REPAIR: &str = "stock:repair:flash";
const STOCK: i64 = 1_000;

/// A region's `/state/{key}` JSON (the function the route serves).
fn state(c: &Cluster, i: usize, key: &str) -> Option<serde_json::Value> {
    rf_processor::serve::state_json(&c.processors[i].stats, key)
}

fn view_available(c: &Cluster, i: usize, key: &str) -> Option<i64> {
    state(c, i, key)?["view"]["available"].as_i64()
}

/// What the sampler saw: violations, samples taken, and per region the moments its view
/// first showed each of its requests for rights and the rights answering it.
#[derive(Default)]
struct Samples {
    violations: Vec<String>,
    taken: u64,
    asked: BTreeMap<(String, i64), Instant>,
    answered: BTreeMap<(String, i64), Instant>,
}

/// Every 50 ms, each region's view of the escrow SKUs: reserved ≤ stock, no region's
/// rights below zero, and when each request for rights appeared and was answered.
fn sample(stats: Vec<rf_processor::SharedStats>, stop: Arc<AtomicBool>) -> Arc<Mutex<Samples>> {
    let out = Arc::new(Mutex::new(Samples::default()));
    let o = out.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            for s in &stats {
                let region = s.region.clone();
                for key in [ESCROW, SOLO] {
                    let Some(v) = rf_processor::serve::state_json(s, key) else {
                        continue;
                    };
                    let view = &v["view"];
                    let reserved: i64 = view["reserved"]
                        .as_object()
                        .map(|m| m.values().filter_map(|q| q.as_i64()).sum())
                        .unwrap_or(0);
                    let mut o = o.lock().unwrap();
                    o.taken += 1;
                    if reserved > STOCK {
                        o.violations
                            .push(format!("{region}'s view of {key}: reserved {reserved}"));
                    }
                    for (r, n) in v["rights"].as_object().into_iter().flatten() {
                        if n.as_i64().unwrap_or(0) < 0 {
                            o.violations
                                .push(format!("{region}'s view of {key}: {r} holds {n}"));
                        }
                    }
                    if key != SOLO {
                        continue;
                    }
                    let esc = &view["escrow"];
                    let asked = esc["requested"][&region].as_i64().unwrap_or(0);
                    let now = Instant::now();
                    for n in 1..=asked {
                        o.asked.entry((region.clone(), n)).or_insert(now);
                    }
                    let answered = esc["answered"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter_map(|(_, to)| to[&region].as_i64())
                        .max()
                        .unwrap_or(0);
                    for n in 1..=answered {
                        o.answered.entry((region.clone(), n)).or_insert(now);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    out
}

fn reservations(
    key: &str,
    n: usize,
    region: impl Fn(usize) -> usize,
) -> Vec<rf_harness::workload::Outgoing> {
    (0..n)
        .map(|i| {
            outgoing(
                region(i),
                &format!("{key}:res-{i}"),
                key,
                Op::Reserve {
                    order_id: format!("order-{i}"),
                    qty: 1,
                },
            )
        })
        .collect()
}

/// Checks every record of one SKU in `reconciled`; returns (applied reservations,
/// revoked ids, refused).
fn check_records(key: &str, rec: &[&ReconciledEvent]) -> (i64, BTreeSet<String>, usize) {
    let mut revoked = BTreeSet::new();
    let (mut applied, mut refused) = (0, 0);
    for r in rec {
        let Ok(Published::Inventory {
            available,
            reserved,
            rights,
            ..
        }) = Published::from_json(&r.state_json)
        else {
            panic!("{key}: no inventory state after {}", r.event.event_id);
        };
        assert!(
            available >= 0,
            "{key}: available {available} after {}",
            r.event.event_id
        );
        assert!(
            reserved <= STOCK,
            "{key}: reserved {reserved} after {}",
            r.event.event_id
        );
        for (region, n) in rights.into_iter().flatten() {
            assert!(
                n >= 0,
                "{key}: {region} holds {n} rights after {}",
                r.event.event_id
            );
        }
        match (r.outcome, &r.event.op) {
            (Outcome::Revoked, Op::Reserve { order_id, qty }) => {
                assert!(!order_id.is_empty() && *qty == 1);
                assert!(r.reason.as_deref().is_some_and(|s| !s.is_empty()));
                revoked.insert(r.event.event_id.clone());
            }
            (Outcome::Revoked, op) => panic!("{key}: revoked a non-reservation: {op:?}"),
            (Outcome::Refused, _) => refused += 1,
            (Outcome::Applied, Op::Reserve { .. }) => applied += 1,
            (Outcome::Applied, _) => {}
        }
    }
    (applied, revoked, refused)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn flash_sale_escrow_never_revokes_and_repair_revokes_after_a_partition() {
    let regions = ["a", "b", "c"];
    let mut c = Cluster::start_partitionable(&regions, 4).unwrap_or_else(|e| {
        panic!("this test needs Linux network namespaces (root and iproute2): {e}")
    });
    for r in regions {
        // The harness splits escrow rights evenly across the regions.
        let mut cfg = c.processor_config(r, 0);
        cfg.inventory_policy_prefixes
            .insert("stock:repair:".into(), "repair".into());
        c.start_processor_with(cfg, 0, Arc::new(rf_core::SystemClock));
    }
    c.start_reconciler();
    let bs = c.bootstraps();
    let publisher = Publisher::new_in(&bs, &c.namespace_names()).unwrap();
    let started = Instant::now();
    let t = || started.elapsed().as_secs_f64();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = sample(
        c.processors.iter().map(|p| p.stats.clone()).collect(),
        stop.clone(),
    );

    // Stock arrives in region a; every region sees it once reconciled.
    let stock: Vec<_> = [ESCROW, SOLO, REPAIR]
        .iter()
        .map(|k| outgoing(0, &format!("{k}:stock"), k, Op::stock_add(STOCK)))
        .collect();
    publisher.send(&stock, |_| {});
    publisher.flush().unwrap();
    c.wait_until(
        Duration::from_secs(60),
        "every region to see the stock",
        |c| {
            Ok((0..3).all(|i| {
                [ESCROW, SOLO, REPAIR]
                    .iter()
                    .all(|k| view_available(c, i, k) == Some(STOCK))
            }))
        },
    )
    .unwrap();
    let rights = state(&c, 1, ESCROW).unwrap()["rights"].clone();
    eprintln!(
        "{:.0} s: stock 1,000 per SKU; escrow rights per region {rights}",
        t()
    );

    let escrow = reservations(ESCROW, 5_000, |i| i % 3);
    let repair = reservations(REPAIR, 5_000, |i| i % 3);
    let both = |a: usize, b: usize| {
        let mut v = escrow[a..b].to_vec();
        v.extend_from_slice(&repair[a..b]);
        v
    };
    // 300 before the cut, 2,700 during it, 2,000 after the heal.
    let base = c.reconciled_so_far();
    publisher.send(&both(0, 300), |_| {});
    publisher.flush().unwrap();
    c.wait_until(
        Duration::from_secs(60),
        "the first 300 to be reconciled",
        |c| Ok(c.reconciled_so_far() >= base + 600),
    )
    .unwrap();
    c.cut("c").unwrap();
    let consumed = |c: &Cluster| c.processor_sum(|s| &s.consumed);
    let before = consumed(&c);
    publisher.send(&both(300, 3_000), |_| {});
    publisher.flush().unwrap();
    c.wait_until(
        Duration::from_secs(120),
        "all regions to decide during the cut",
        |c| Ok(consumed(c) >= before + 5_400),
    )
    .unwrap();
    let admitted = |c: &Cluster, key: &str| -> i64 {
        (0..3)
            .map(|i| {
                let v = state(c, i, key).unwrap();
                v["view"]["reserved"]
                    .as_object()
                    .map_or(0, |m| m.values().filter_map(|q| q.as_i64()).sum::<i64>())
            })
            .max()
            .unwrap_or(0)
    };
    eprintln!(
        "{:.0} s: during the cut, the fullest view holds {} reserved under escrow, {} under repair (stock 1,000 each)",
        t(),
        admitted(&c, ESCROW),
        admitted(&c, REPAIR)
    );
    c.heal("c").unwrap();
    publisher.send(&both(3_000, 5_000), |_| {});
    publisher.flush().unwrap();
    let settled = |c: &Cluster, key: &str| {
        (0..3).all(|i| state(c, i, key).is_some_and(|v| v["view"] == v["reconciled"]))
    };
    c.wait_until(
        Duration::from_secs(120),
        "the spread sales reconciled",
        |c| Ok(consumed(c) >= before + 9_400 && settled(c, ESCROW) && settled(c, REPAIR)),
    )
    .unwrap();

    // Demand only in region b, paced (about 300/s), after the heal.
    let solo = reservations(SOLO, 3_000, |_| 1);
    for chunk in solo.chunks(150) {
        publisher.send(chunk, |_| {});
        publisher.flush().unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    // Every attempt decided, and the last transfers and requests in reconciled too.
    c.wait_until(Duration::from_secs(120), "the solo sale reconciled", |c| {
        Ok(consumed(c) >= before + 12_400 && settled(c, SOLO))
    })
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    let errs = c.stop_all();
    assert!(errs.is_empty(), "{errs:?}");

    let rec = read_reconciled(&c).unwrap();
    let of = |key: &str| -> Vec<&ReconciledEvent> {
        rec.iter()
            .map(|(_, r)| r)
            .filter(|r| r.event.key == key)
            .collect()
    };
    let conflicts: HashMap<String, _> = read_all_conflicts(&c)
        .unwrap()
        .into_iter()
        .filter(|cf| cf.kind == ConflictKind::ReservationRevoked)
        .map(|cf| (cf.event_id.clone(), cf))
        .collect();
    let reserves = |v: &[&ReconciledEvent]| {
        v.iter()
            .filter(|r| matches!(r.event.op, Op::Reserve { .. }))
            .count()
    };
    let count_op =
        |v: &[&ReconciledEvent], name: &str| v.iter().filter(|r| r.event.op.name() == name).count();

    // Escrow, spread demand and a cut.
    let e = of(ESCROW);
    assert_eq!(reserves(&e), 5_000, "each attempt exactly once");
    let (sold, revoked, refused) = check_records(ESCROW, &e);
    assert!(revoked.is_empty(), "escrow revoked {revoked:?}");
    assert!(sold >= 950, "escrow sold only {sold} of 1,000");
    eprintln!(
        "escrow, spread: {sold} sold, 0 revoked, {refused} refused at once; {} rights requests, {} transfers",
        count_op(&e, "RightsRequest"),
        count_op(&e, "RightsTransfer")
    );

    // Escrow, demand in one region only.
    let s = of(SOLO);
    assert_eq!(reserves(&s), 3_000);
    let (sold, revoked, _) = check_records(SOLO, &s);
    assert!(revoked.is_empty(), "escrow revoked {revoked:?}");
    let transfers = count_op(&s, "RightsTransfer");
    assert!(transfers > 0, "no rights moved to b");
    let mut waits: Vec<f64> = {
        let o = samples.lock().unwrap();
        o.asked
            .iter()
            .filter_map(|(k, at)| Some(o.answered.get(k)?.duration_since(*at).as_secs_f64() * 1e3))
            .collect()
    };
    let answered = waits.len();
    let (p50, p99) = (percentile(&mut waits, 0.5), percentile(&mut waits, 0.99));
    eprintln!(
        "escrow, demand only in b: {sold} sold, 0 revoked; {} requests, {transfers} transfers; b waited for rights p50 {p50:.0} ms, p99 {p99:.0} ms ({answered} requests answered)",
        count_op(&s, "RightsRequest"),
    );
    assert!(sold >= 950, "escrow sold only {sold} of 1,000 in b");
    assert!(answered > 0, "the sampler saw no request answered");

    // The sampled views.
    let o = samples.lock().unwrap();
    assert!(o.taken > 100, "only {} samples", o.taken);
    assert!(
        o.violations.is_empty(),
        "{:?}",
        &o.violations[..o.violations.len().min(5)]
    );
    eprintln!(
        "{} samples of the views: reserved ≤ 1,000 and rights ≥ 0 in every one",
        o.taken
    );

    // Repair: over-admitted during the cut, revoked in the merge, each in conflicts.
    let r = of(REPAIR);
    assert_eq!(reserves(&r), 5_000);
    let (sold, revoked, refused) = check_records(REPAIR, &r);
    assert_eq!(
        count_op(&r, "RightsRequest") + count_op(&r, "RightsTransfer"),
        0
    );
    let missing: Vec<_> = revoked
        .iter()
        .filter(|id| !conflicts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "revocations without a conflict: {missing:?}"
    );
    assert!(
        !revoked.is_empty(),
        "the partition caused no over-admission under repair"
    );
    assert!(sold <= STOCK);
    eprintln!(
        "repair: {sold} sold, {} revoked (each in reconciled and conflicts), {refused} refused by a region's view; {:.0} s",
        revoked.len(),
        t()
    );
}
