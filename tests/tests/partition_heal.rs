//! Invariants 5, 6 and 7 through a real network partition. Each region's broker and
//! processor run in their own network namespace; region `c` is cut off from the home
//! cluster and the reconciler (its veth link taken down) while load keeps arriving in every
//! region, then healed. The cut region keeps accepting events; `reconciled` holds back
//! everything past its watermark during the cut and catches up after the heal; the result
//! equals, byte for byte, what a fresh reconciler writes from the same histories with no
//! partition and in another arrival order; every region's view of every key converges to
//! the reconciled state; the conflicts the divergence produced are listed.
//!
//! Needs root and iproute2 (`ip netns`); without them the test fails saying so.
use prometheus::core::Metric;
use rf_harness::check::{check, first_difference, reconciled_states, topic_bytes};
use rf_harness::cluster::Cluster;
use rf_harness::workload::{generate, Publisher, Workload};
use std::time::{Duration, Instant};

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn lag_ms(c: &Cluster, region: &str) -> i64 {
    c.reconciler
        .as_ref()
        .and_then(|r| {
            r.stats
                .watermark_lag_ms
                .lock()
                .unwrap()
                .get(region)
                .copied()
        })
        .unwrap_or(i64::MAX)
}

#[test]
fn a_cut_region_keeps_working_and_everything_converges_after_the_heal() {
    let regions = ["a", "b", "c"];
    let mut c = Cluster::start_partitionable(&regions, 4).unwrap_or_else(|e| {
        panic!("this test needs Linux network namespaces (root and iproute2): {e}")
    });
    c.create_check_topics().unwrap();
    for r in regions {
        c.start_processor(r, 0);
    }
    c.start_reconciler();
    let (recs, ledger) = generate(
        &Workload {
            events: 9_000,
            seed: 123,
            all_aggregates: true,
            ..Default::default()
        },
        regions.len(),
    );
    let bs = c.bootstraps();
    let publisher = Publisher::new_in(&bs, &c.namespace_names()).unwrap();
    let phases: Vec<_> = recs.chunks(recs.len().div_ceil(3)).collect();
    let started = Instant::now();
    let t = || started.elapsed().as_secs_f64();

    // Before: everything flows.
    publisher.send(phases[0], |_| {});
    publisher.flush().unwrap();
    c.wait_until(Duration::from_secs(120), "phase 1 reconciled", |c| {
        Ok(c.processor_sum(|s| &s.consumed) >= phases[0].len() as u64
            && regions.iter().all(|r| lag_ms(c, r) < 2_000)
            && c.reconciler_buffered() == 0)
    })
    .unwrap();
    eprintln!(
        "{:.0} s: phase 1 reconciled ({} records)",
        t(),
        c.reconciled_so_far()
    );

    // The cut: c is alone with its broker and its load.
    c.cut("c").unwrap();
    let cut_at = Instant::now();
    let cut_wall = wall_ms();
    let c_idx = 2;
    let accepted_c = |c: &Cluster| c.processors[c_idx].stats.counters.accepted.get();
    let consumed_c = |c: &Cluster| c.processors[c_idx].stats.counters.consumed.get();
    let (acc_before, cons_before) = (accepted_c(&c), consumed_c(&c));
    let c_share = phases[1].iter().filter(|o| o.region == c_idx).count() as u64;
    publisher.send(phases[1], |_| {});
    publisher.flush().unwrap();
    c.wait_until(
        Duration::from_secs(120),
        "c to take its load while cut off",
        |c| Ok(consumed_c(c) >= cons_before + c_share),
    )
    .unwrap();
    let acc_during = accepted_c(&c) - acc_before;
    assert!(acc_during > 0, "the cut region accepted nothing");
    c.wait_until(
        Duration::from_secs(60),
        "c's watermark lag to show the cut",
        |c| Ok(lag_ms(c, "c") > 10_000),
    )
    .unwrap();
    // The same, as an operator sees it: the reconciler's /metrics.
    let rec_http = c.reconciler_http().unwrap();
    let scraped_lag = || {
        rf_harness::http_client::get(rec_http, "/metrics")
            .ok()
            .and_then(|(_, m)| {
                rf_harness::http_client::sample(&m, "rf_watermark_lag_ms{region=\"c\"}")
            })
            .unwrap_or(f64::MAX)
    };
    let lag_scraped_during = scraped_lag();
    assert!(
        lag_scraped_during > 10_000.0,
        "scraped lag during the cut: {lag_scraped_during}"
    );
    let held_back = c.reconciled_so_far();
    let lag_during = lag_ms(&c, "c");
    eprintln!(
        "{:.0} s: cut for {:.0} s; c accepted {acc_during} events alone; reconciled held at {held_back}; c's watermark lag {lag_during} ms",
        t(),
        cut_at.elapsed().as_secs_f64()
    );

    // The heal.
    c.heal("c").unwrap();
    let healed_at = Instant::now();
    let heal_wall = wall_ms();
    publisher.send(phases[2], |_| {});
    publisher.flush().unwrap();
    let want = ledger.distinct.len() as u64;
    c.wait_until(
        Duration::from_secs(180),
        "reconciled to catch up after the heal",
        |c| Ok(c.reconciled_so_far() >= want),
    )
    .unwrap();
    let caught_up = healed_at.elapsed();
    c.wait_until(
        Duration::from_secs(60),
        "c's watermark lag to fall back",
        |c| Ok(lag_ms(c, "c") < 2_000 && scraped_lag() < 2_000.0),
    )
    .unwrap();
    eprintln!("scraped rf_watermark_lag_ms{{region=\"c\"}}: {lag_scraped_during} ms during the cut, {} ms after the heal", scraped_lag());
    eprintln!(
        "{:.0} s: healed; reconciled caught up ({want} records) {:.1} s after the heal; c's lag back to {} ms",
        t(),
        caught_up.as_secs_f64(),
        lag_ms(&c, "c")
    );

    // The reconciliation-latency histogram shows the cut: events waited over 5 s.
    {
        let h = &c
            .reconciler
            .as_ref()
            .unwrap()
            .stats
            .metrics
            .reconcile_latency;
        let total = h.get_sample_count();
        let within_5s = h
            .metric()
            .get_histogram()
            .get_bucket()
            .iter()
            .find(|b| b.upper_bound() == 5.0)
            .map(|b| b.cumulative_count())
            .unwrap();
        assert!(total >= want, "latency observed for every reconciled event");
        assert!(within_5s < total, "no event waited over 5 s for the cut");
        eprintln!(
            "reconciliation latency: {} of {total} events over 5 s (the cut), mean {:.2} s",
            total - within_5s,
            h.get_sample_sum() / total as f64
        );
    }

    // Every region's view converges to the reconciled state (read again each time: the
    // escrow rights requests and transfers the last reservations set off are reconciled
    // after the producers' events).
    let mut final_state = reconciled_states(&c).unwrap();
    c.wait_until(
        Duration::from_secs(60),
        "every region's view to converge",
        |c| {
            final_state = reconciled_states(c)?;
            Ok(c.processors.iter().all(|p| {
                let v = p.stats.view.lock();
                v.pending_count() == 0
                    && final_state
                        .iter()
                        .all(|(k, s)| v.view(k).as_ref() == Some(s))
            }))
        },
    )
    .unwrap_or_else(|e| {
        let diffs: Vec<String> = c
            .processors
            .iter()
            .map(|p| {
                let v = p.stats.view.lock();
                let differ = final_state
                    .iter()
                    .filter(|(k, s)| v.view(k).as_ref() != Some(*s))
                    .count();
                format!(
                    "{}: {} pending, {differ} keys differ",
                    p.name,
                    v.pending_count()
                )
            })
            .collect();
        panic!("{e}: {diffs:?}")
    });
    eprintln!(
        "{:.0} s: all 3 regional views equal the reconciled state of {} keys",
        t(),
        final_state.len()
    );

    // Same bytes as a fresh reconciler reading the same histories, no partition, another
    // arrival order.
    let fresh = c.fresh_check_config();
    let errs = c.stop_all();
    assert!(errs.is_empty(), "{errs:?}");
    c.reconciler = None;
    c.start_reconciler_with(fresh);
    c.wait_until(Duration::from_secs(120), "the fresh reconciler", |c| {
        Ok(c.reconciled_so_far() >= want)
    })
    .unwrap();
    let errs = c.stop_all();
    assert!(errs.is_empty(), "{errs:?}");
    let home = c.home.bootstrap();
    let partitioned = topic_bytes(&home, "reconciled", 4).unwrap();
    let clean = topic_bytes(&home, "reconciled-check", 4).unwrap();
    assert_eq!(first_difference(&partitioned, &clean), None);

    // Register conflicts come from causality, not a time window: each reported pair was
    // made concurrently, one of them during the cut (c could not see the others, nor they
    // c), or both within the reconciliation latency of each other (neither had read the
    // other back yet: under 2 s outside the cut, as the lag shows).
    let hlc_of: std::collections::HashMap<String, i64> = rf_harness::check::read_reconciled(&c)
        .unwrap()
        .into_iter()
        .filter_map(|(_, r)| Some((r.event.event_id.clone(), r.event.hlc?.physical_ms)))
        .collect();
    let (mut in_cut, mut close) = (0, 0);
    for cf in rf_harness::check::read_all_conflicts(&c).unwrap() {
        if cf.kind != rf_schemas::ConflictKind::RegisterConcurrent {
            continue;
        }
        let other = cf.conflict_id.rsplit(':').next().unwrap();
        let (x, y) = (cf.hlc.physical_ms, hlc_of[other]);
        let during = |h: i64| h >= cut_wall - 2_000 && h <= heal_wall + 5_000;
        if during(x) || during(y) {
            in_cut += 1;
        } else {
            assert!(
                (x - y).abs() < 5_000,
                "puts {} and {other} are {} ms apart outside the cut, yet reported concurrent",
                cf.event_id,
                (x - y).abs()
            );
            close += 1;
        }
    }
    assert!(in_cut > 0, "the cut produced no concurrent register puts");
    // Inventory is escrow by default: nothing admitted is ever revoked, cut or not, failover
    // copies of stock adds and releases included.
    let revoked = rf_harness::check::read_all_conflicts(&c)
        .unwrap()
        .into_iter()
        .filter(|cf| cf.kind == rf_schemas::ConflictKind::ReservationRevoked)
        .map(|cf| format!("{}: {}", cf.event_id, cf.detail))
        .collect::<Vec<_>>();
    assert!(revoked.is_empty(), "escrow revoked {revoked:?}");
    eprintln!(
        "register conflicts: {in_cut} with a put made during the cut, {close} between puts made within the reconciliation latency of each other"
    );

    let report = check(&c, &ledger).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert!(
        !report.conflicts.is_empty(),
        "the divergence produced no conflicts"
    );
    eprintln!(
        "{:.0} s: {} reconciled records byte-identical to the unpartitioned run; conflicts: {:?}",
        t(),
        partitioned.len(),
        report.conflicts
    );
}
