//! Issue 17: scheduled actions fired exactly once across regions, on real brokers, with
//! every processor's and the reconciler's clock running fast (one simulated hour per real
//! second) across the spring-forward night of London, Paris and Berlin.
//!
//! 1,000 schedules over seven zones, most at home in region `a` (whose processor runs as
//! its own process, in its own network namespace), the rest in `b`; half are set through
//! `a`, half through `b`. In the middle, `a`'s processor is killed with SIGKILL and started
//! again, and later region `a` is cut off from the home cluster and healed. Then:
//! - every occurrence a `catch_up` schedule calls for is in `reconciled` exactly once, and
//!   nothing else is; `skip` and `coalesce` schedules fire a subset of theirs, each at most
//!   once;
//! - none fired early: every fired record's HLC is at or after its occurrence (failover
//!   copies: after the occurrence plus the grace);
//! - the regions other than the home fired failover copies while the home's firing could
//!   not show, and every copy `reconciled` dropped is in `conflicts`;
//! - during the cut, the home kept firing on time, and its copies are the ones kept.
//!   Lateness (due → history) of the home's firings is printed, simulated and real.
use rf_core::schedule::{instant_ms, occurrence_id, Schedule};
use rf_core::{Clock, FastClock, SystemClock};
use rf_harness::check::{read_all_conflicts, read_history_events, read_reconciled};
use rf_harness::cluster::Cluster;
use rf_harness::process::{ChildProcessor, RESTORED};
use rf_harness::workload::{publish, Outgoing};
use rf_schemas::{Codec, ConflictKind, Event, Op, Outcome, ScheduleSpec};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Simulated ms per real ms.
const RATE: i64 = 3_600;
const H: i64 = 3_600_000;
const GRACE_MS: i64 = 3 * H;
const TOLERANCE_MS: i64 = H;
const SCHEDULES: usize = 1_000;

const PLAN: [(&str, &str); 10] = [
    ("Europe/London", "30 1 * * *"),  // 01:30 does not exist on 28 March
    ("Europe/Paris", "30 2 * * *"),   // nor does 02:30 in Paris
    ("Europe/Berlin", "0 */2 * * *"), // nor 02:00 in Berlin
    ("Europe/London", "*/30 0-3 * * *"),
    ("Asia/Kolkata", "0 9 * * *"),
    ("America/New_York", "15 */2 * * *"),
    ("Australia/Lord_Howe", "45 */4 * * *"),
    ("UTC", "0 * * * *"),
    ("Asia/Kolkata", "30 */6 * * *"),
    ("Europe/Paris", "0 0 * * *"), // a sale that closes at midnight, Paris time
];

fn spec(i: usize, start: i64, end: i64) -> ScheduleSpec {
    let (zone, cron) = PLAN[i % PLAN.len()];
    let mut s = ScheduleSpec::new(cron, zone, format!("payload-{i}"));
    s.home = Some(if i % 5 == 4 { "b" } else { "a" }.into());
    s.on_gap = if i.is_multiple_of(3) {
        "skip"
    } else {
        "after_gap"
    }
    .into();
    s.on_fold = if i.is_multiple_of(2) { "both" } else { "first" }.into();
    s.missed = match (i / 10) % 10 {
        0 => "skip",
        1 => "coalesce",
        _ => "catch_up",
    }
    .into();
    s.catch_up_max = 1_000;
    s.catch_up_window_ms = 7 * 24 * H;
    s.start_ms = Some(start);
    s.end_ms = Some(end);
    s
}

fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> Result<bool, String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Wait until the fast clock reads `sim_ms`.
fn until(clock: &FastClock, sim_ms: i64) {
    let real = (sim_ms - clock.now_ms()) / RATE;
    if real > 0 {
        std::thread::sleep(Duration::from_millis(real as u64));
    }
}

fn pct(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn schedules_fire_once_across_regions_through_kill9_and_a_cut() {
    let regions = ["a", "b", "c"];
    let mut c = Cluster::start_partitionable(&regions, 4).unwrap_or_else(|e| {
        panic!("network namespaces are needed (root, nftables): {e}");
    });
    // The simulated night starts 12 real seconds from now (time to start everything).
    let sim0 = instant_ms("2027-03-27T18:00:00Z").unwrap();
    let clock = FastClock {
        sim0_ms: sim0,
        real0_ms: SystemClock.now_ms() + 12_000,
        rate: RATE,
    };
    let start = sim0 + 2 * H;
    let end = sim0 + 40 * H;
    let toml = format!(
        "schedule_grace_ms = {GRACE_MS}\nschedule_tolerance_ms = {TOLERANCE_MS}\n\
         escrow_split = {{ a = 1, b = 1, c = 1 }}\n"
    );
    let cfg_a = c.processor_config("a", 0);
    let toml_path = cfg_a.state_dir.with_extension("toml");
    std::fs::write(&toml_path, &toml).unwrap();
    let env_fast = clock.to_env();
    let env = [
        ("RF_CONFIG", toml_path.to_str().unwrap()),
        ("RF_CLOCK_FAST", env_fast.as_str()),
    ];
    let ns_a = c.netns("a").map(|n| n.name.clone());
    let spawn_a = || {
        let mut p = ChildProcessor::spawn_processor_in(&cfg_a, &env, ns_a.as_deref()).unwrap();
        p.wait_log(RESTORED, Duration::from_secs(120)).unwrap();
        p
    };
    let mut a = spawn_a();
    for r in ["b", "c"] {
        let mut cfg = c.processor_config(r, 0);
        cfg.schedule_grace_ms = GRACE_MS as u64;
        cfg.schedule_tolerance_ms = TOLERANCE_MS as u64;
        c.start_processor_with(cfg, 0, Arc::new(clock));
    }
    let rcfg = c.reconciler_config();
    c.start_reconciler_clocked(rcfg, Arc::new(clock));

    // The schedules, set through a (even) and b (odd).
    let specs: Vec<ScheduleSpec> = (0..SCHEDULES).map(|i| spec(i, start, end)).collect();
    let records: Vec<Outgoing> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let key = format!("sched-{i:04}");
            let ev = Event::new(
                format!("set-{i}"),
                key.clone(),
                Op::ScheduleSet(Box::new(s.clone())),
            );
            Outgoing {
                region: i % 2,
                key,
                payload: Codec::event().encode(&ev).unwrap(),
            }
        })
        .collect();
    publish(&c.bootstraps(), &records, |_| {}).unwrap();
    wait_for(60, "every set to be reconciled", || {
        let n = read_reconciled(&c)?
            .iter()
            .filter(|(_, r)| matches!(r.event.op, Op::ScheduleSet(_)))
            .count();
        Ok(n == SCHEDULES)
    });
    let sets_at = clock.now_ms();
    println!(
        "sets reconciled at simulated {} (schedules start at {})",
        rf_core::schedule::utc(sets_at),
        rf_core::schedule::utc(start)
    );

    // Kill -9 of the home's processor after the spring-forward night (01:00Z = sim0 + 7 h).
    until(&clock, sim0 + 12 * H);
    a.kill9();
    let killed = clock.now_ms();
    std::thread::sleep(Duration::from_secs(3));
    let mut a = spawn_a();
    let restarted = clock.now_ms();
    println!(
        "a killed at {}, processing again at {} ({:.1} simulated hours down)",
        rf_core::schedule::utc(killed),
        rf_core::schedule::utc(restarted),
        (restarted - killed) as f64 / H as f64
    );
    // The cut of the home region, for 8 simulated hours.
    until(&clock, restarted + 6 * H);
    c.cut("a").unwrap();
    let cut_at = clock.now_ms();
    until(&clock, cut_at + 8 * H);
    c.heal("a").unwrap();
    let healed_at = clock.now_ms();
    println!(
        "a cut off from {} to {}",
        rf_core::schedule::utc(cut_at),
        rf_core::schedule::utc(healed_at)
    );

    // Every occurrence each catch-up schedule calls for.
    let mut expected: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut catch_up = BTreeSet::new();
    let mut total = 0;
    for (i, s) in specs.iter().enumerate() {
        let key = format!("sched-{i:04}");
        let sched = Schedule::parse(s).unwrap();
        let ids: BTreeSet<String> = sched
            .upcoming(0, 10_000)
            .iter()
            .map(|o| occurrence_id(&key, o.at_ms, o.fold))
            .collect();
        total += ids.len();
        if s.missed == "catch_up" {
            catch_up.insert(key.clone());
        }
        expected.insert(key, ids);
    }
    let expected_catch_up: usize = catch_up.iter().map(|k| expected[k].len()).sum();
    until(&clock, end + GRACE_MS + TOLERANCE_MS);
    let fired_reconciled = |c: &Cluster| -> Result<Vec<Event>, String> {
        Ok(read_reconciled(c)?
            .into_iter()
            .filter(|(_, r)| r.outcome == Outcome::Applied)
            .map(|(_, r)| r.event)
            .filter(|e| matches!(e.op, Op::ScheduleFired(_)))
            .collect())
    };
    let mut last = 0;
    wait_for(180, "every catch-up occurrence in reconciled", || {
        let got: BTreeSet<(String, String)> = fired_reconciled(&c)?
            .into_iter()
            .filter(|e| catch_up.contains(&e.key))
            .map(|e| (e.key, e.event_id))
            .collect();
        if got.len() != last {
            last = got.len();
            println!("  {last} of {expected_catch_up} catch-up occurrences reconciled");
        }
        Ok(got.len() >= expected_catch_up)
    });
    let fired = fired_reconciled(&c).unwrap();

    // Exactly once, none unexpected, none early.
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &fired {
        *per_id.entry(e.event_id.as_str()).or_default() += 1;
        assert!(
            expected[&e.key].contains(&e.event_id),
            "{} fired an occurrence the schedule does not call for: {}",
            e.key,
            e.event_id
        );
        let Op::ScheduleFired(f) = &e.op else {
            unreachable!()
        };
        let hlc = e.hlc.unwrap().physical_ms;
        let lead = if f.failover { GRACE_MS } else { 0 };
        assert!(
            hlc >= f.occurrence_ms + lead,
            "{} fired early: HLC {hlc} < due {} + {lead}",
            e.event_id,
            f.occurrence_ms
        );
    }
    let dup: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "in reconciled more than once: {dup:?}");
    for k in &catch_up {
        let got: BTreeSet<&str> = fired
            .iter()
            .filter(|e| &e.key == k)
            .map(|e| e.event_id.as_str())
            .collect();
        let want: BTreeSet<&str> = expected[k].iter().map(String::as_str).collect();
        assert_eq!(
            got, want,
            "{k}: reconciled differs from what catch_up calls for"
        );
    }

    // The copies each region fired, and what reconciled dropped.
    let mut copies: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut home_late = Vec::new();
    let mut failover_copies = 0;
    for r in regions {
        for (_, e) in read_history_events(&c.bootstrap(r), c.partitions).unwrap() {
            let Op::ScheduleFired(f) = &e.op else {
                continue;
            };
            if copies
                .entry(e.event_id.clone())
                .or_default()
                .insert(r.to_owned())
            {
                if f.failover {
                    failover_copies += 1;
                } else {
                    home_late.push(e.hlc.unwrap().physical_ms - f.occurrence_ms);
                }
            }
        }
    }
    let conflicts = read_all_conflicts(&c).unwrap();
    let dup_reported: BTreeSet<&str> = conflicts
        .iter()
        .filter(|cf| cf.kind == ConflictKind::CrossRegionDuplicate)
        .map(|cf| cf.event_id.as_str())
        .collect();
    let mut dropped = 0;
    for (id, rs) in &copies {
        if rs.len() > 1 && per_id.contains_key(id.as_str()) {
            dropped += rs.len() - 1;
            assert!(
                dup_reported.contains(id.as_str()),
                "{id} was fired by {rs:?} but no CROSS_REGION_DUPLICATE names it"
            );
        }
    }
    assert!(failover_copies > 0, "no region fired a failover copy");

    // During the cut the home kept firing on time: its copies are the ones kept.
    let home_kept_in_cut = fired
        .iter()
        .filter(|e| {
            let Op::ScheduleFired(f) = &e.op else {
                return false;
            };
            let home_a = specs[e.key[6..].parse::<usize>().unwrap()].home.as_deref() == Some("a");
            home_a && f.occurrence_ms > cut_at + H && f.occurrence_ms < healed_at - H
        })
        .collect::<Vec<_>>();
    assert!(!home_kept_in_cut.is_empty());
    let not_a: Vec<_> = home_kept_in_cut
        .iter()
        .filter(|e| e.region.as_deref() != Some("a"))
        .map(|e| (&e.event_id, &e.region))
        .collect();
    assert!(
        not_a.is_empty(),
        "occurrences due while a was cut, but kept from another region: {not_a:?}"
    );

    let (p50, p99) = (pct(&mut home_late, 0.5), pct(&mut home_late, 0.99));
    println!(
        "{SCHEDULES} schedules: {} occurrences called for ({} by catch-up schedules), {} in reconciled exactly once",
        total,
        expected_catch_up,
        fired.len()
    );
    println!(
        "failover copies fired: {failover_copies}; copies reconciled dropped and conflicts list: {dropped}; home firings kept during the cut: {}",
        home_kept_in_cut.len()
    );
    println!(
        "lateness due -> history (home firings, {} of them): p50 {} s simulated ({} ms real), p99 {} s simulated ({} ms real)",
        home_late.len(),
        p50 / 1000,
        p50 / RATE,
        p99 / 1000,
        p99 / RATE
    );
    a.kill9();
    let _ = c.stop_all();
}
