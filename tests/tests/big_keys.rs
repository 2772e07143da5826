//! Keys far larger than a record (issue 14, bounded records): one leaderboard of 200,000
//! players and one SKU with 100,000 open orders, over two regions on real Tansu brokers.
//! Every event is reconciled and applied, every `reconciled` record stays small (its state is
//! the bounded published summary, `rf_core::published`), the summaries count every player and
//! order, and each region's view (which folds the records instead of reading their state)
//! holds the full state: every player's best and every open order.
use rf_core::{AggState, Published};
use rf_harness::check::topic_bytes;
use rf_harness::cluster::Cluster;
use rf_harness::workload::{outgoing, publish, Outgoing};
use rf_schemas::{Codec, Op, Outcome};
use std::time::{Duration, Instant};

const BOARD: &str = "board:global";
const SKU: &str = "stock:big";
const PLAYERS: usize = 200_000;
const ORDERS: usize = 100_000;
/// A record well under any producer's limit (librdkafka's default is 1,000,000 bytes).
const RECORD_MAX: usize = 4 * 1024;

#[test]
fn a_leaderboard_of_200k_players_and_a_sku_of_100k_orders_reconcile_in_small_records() {
    let mut c = Cluster::start(&["a", "b"], 4).unwrap();
    c.start_processor("a", 0);
    c.start_processor("b", 0);
    c.start_reconciler();
    let started = Instant::now();

    // Each region holds enough stock of its own for its half of the orders, so every
    // reservation is admitted by its region's view, whatever has been reconciled yet.
    let mut recs: Vec<Outgoing> = (0..2)
        .map(|r| outgoing(r, &format!("stock-{r}"), SKU, Op::stock_add(ORDERS as i64)))
        .collect();
    for i in 0..PLAYERS {
        recs.push(outgoing(
            i % 2,
            &format!("s-{i}"),
            BOARD,
            Op::ScoreSubmit {
                player: format!("player-{i:06}"),
                score: (i as i64 * 7919) % 1_000_003,
            },
        ));
    }
    for i in 0..ORDERS {
        recs.push(outgoing(
            i % 2,
            &format!("o-{i}"),
            SKU,
            Op::Reserve {
                order_id: format!("order-{i:06}"),
                qty: 1,
            },
        ));
    }
    let total = recs.len() as u64;
    publish(&c.bootstraps(), &recs, |n| {
        if n % 50_000 == 0 {
            eprintln!("{:.0} s: {n} published", started.elapsed().as_secs_f64());
        }
    })
    .unwrap();
    let mut last_print = Instant::now();
    c.wait_until(Duration::from_secs(600), "every event reconciled", |c| {
        let n = c.reconciled_so_far();
        if last_print.elapsed() > Duration::from_secs(10) {
            last_print = Instant::now();
            eprintln!(
                "{:.0} s: {n} of {total} reconciled",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(n >= total)
    })
    .unwrap();
    eprintln!(
        "{:.0} s: {total} events reconciled",
        started.elapsed().as_secs_f64()
    );

    // Each region's view folds the records: the full states, every player and order.
    c.wait_until(
        Duration::from_secs(120),
        "both views to hold every player and order",
        |c| {
            Ok(c.processors.iter().all(|p| {
                let v = p.stats.view.lock();
                let players = matches!(v.reconciled_state(BOARD), Some(AggState::Leaderboard { best }) if best.len() == PLAYERS);
                let orders = matches!(v.reconciled_state(SKU), Some(AggState::Inventory { reserved, available, .. }) if reserved.len() == ORDERS && *available == ORDERS as i64);
                v.pending_count() == 0 && players && orders
            }))
        },
    )
    .unwrap();
    assert!(c.stop_all().is_empty());

    let mut largest = 0;
    let mut last_board = None;
    let mut last_sku = None;
    let mut n = 0;
    for (_, bytes) in topic_bytes(&c.home.bootstrap(), "reconciled", c.partitions).unwrap() {
        largest = largest.max(bytes.len());
        let r = Codec::reconciled().decode(&bytes).unwrap();
        assert_eq!(
            r.outcome,
            Outcome::Applied,
            "{}: {:?}",
            r.event.event_id,
            r.reason
        );
        n += 1;
        let p = Published::from_json(&r.state_json).unwrap();
        if r.event.key == BOARD {
            last_board = Some(p);
        } else {
            last_sku = Some(p);
        }
    }
    assert_eq!(n, total);
    assert!(
        largest < RECORD_MAX,
        "largest reconciled record {largest} bytes"
    );
    let Some(Published::Leaderboard { players, top, .. }) = last_board else {
        panic!("no leaderboard summary: {last_board:?}")
    };
    assert_eq!(players, PLAYERS as u64);
    assert_eq!(top.len(), rf_core::aggregate::LEADERBOARD_TOP_K);
    assert!(top.windows(2).all(|w| w[0].score >= w[1].score));
    let Some(Published::Inventory {
        available,
        reserved,
        open_orders,
        ..
    }) = last_sku
    else {
        panic!("no inventory summary: {last_sku:?}")
    };
    assert_eq!(
        (available, reserved, open_orders),
        (ORDERS as i64, ORDERS as i64, ORDERS as u64)
    );
    eprintln!(
        "{:.0} s: {n} records, the largest {largest} bytes; {players} players, {open_orders} open orders",
        started.elapsed().as_secs_f64()
    );
}
