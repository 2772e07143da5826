//! The multi-region demo on embedded Tansu brokers: processors, reconciler, load, a real
//! network partition of one region and its heal, checker. Exit status 0 only if the
//! reconciled state equals the one recomputed from what was sent.

use clap::Parser;
use rf_harness::check::{check, read_all_conflicts, reconciled_count};
use rf_harness::cluster::{Cluster, PARTITIONS};
use rf_harness::workload::{generate, Publisher, Workload};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Multi-region demo on embedded brokers")]
struct Args {
    /// Number of regions (2 or 3).
    #[arg(long, default_value_t = 3)]
    regions: usize,
    /// Distinct events to send.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// After the summary, keep the brokers up (to inspect the topics) until Ctrl-C.
    #[arg(long)]
    keep_brokers: bool,
    /// How long the last region stays cut off (seconds).
    #[arg(long, default_value_t = 10)]
    cut_secs: u64,
    /// Run without the network partition (no network namespaces needed).
    #[arg(long)]
    no_partition: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // librdkafka's connection errors during the partition are expected: the
            // progress lines say what is cut off.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,librdkafka=off,rdkafka::client=off".into()),
        )
        .init();
    let args = Args::parse();
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let i = interrupted.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM");
                tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            });
            i.store(true, Ordering::SeqCst);
        });
    }
    match run(&args, &interrupted) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Where each component's HTTP endpoints listen (they live while the demo runs).
fn print_endpoints(cluster: &Cluster) {
    let wait = |addr: &std::sync::Mutex<Option<std::net::SocketAddr>>| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(a) = *addr.lock().expect("addr") {
                return Some(a);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    println!("== where to look while it runs (docs/metrics.md names every series)");
    let mut first = None;
    for p in &cluster.processors {
        if let Some(a) = wait(&p.stats.http_addr) {
            println!(
                "   {:<22} http://{a}/metrics  http://{a}/ready  http://{a}/state/likes:1",
                p.name
            );
            first.get_or_insert(a);
        }
    }
    if let Some(r) = &cluster.reconciler {
        if let Some(a) = wait(&r.stats.http_addr) {
            println!(
                "   {:<22} http://{a}/metrics  http://{a}/ready",
                "reconciler"
            );
        }
    }
    if let Some(a) = first {
        println!("   live feed (SSE):       curl -N 'http://{a}/feed?prefix=likes:'");
        println!("   a key's view:          curl -s http://{a}/state/likes:1");
    }
}

fn run(args: &Args, interrupted: &AtomicBool) -> Result<bool, String> {
    let names: Vec<&str> = ["us-east", "eu-west", "ap-south"]
        .into_iter()
        .take(args.regions.clamp(2, 3))
        .collect();
    let started = Instant::now();
    println!(
        "== regionflow demo: {} regions ({}), {} partitions",
        names.len(),
        names.join(", "),
        PARTITIONS
    );
    let mut cluster = if args.no_partition {
        Cluster::start(&names, PARTITIONS)?
    } else {
        Cluster::start_partitionable(&names, PARTITIONS).map_err(|e| {
            format!("{e}\n(the partition needs root and iproute2; --no-partition runs without it)")
        })?
    };
    if !args.no_partition {
        println!("   each region runs in its own network namespace; the home cluster and the reconciler run outside");
    }
    for (n, b) in &cluster.regions {
        println!("   broker {n:<9} tansu at {}", b.bootstrap());
    }
    println!("   broker home      tansu at {}", cluster.home.bootstrap());
    // Escrow inventory: each stock add's rights split evenly across the regions, so a sale
    // starts everywhere at once; a region out of rights asks, the others give.
    for n in &names {
        let mut cfg = cluster.processor_config(n, 0);
        cfg.escrow_split = names.iter().map(|r| (r.to_string(), 1)).collect();
        // Schedules: the other regions fire an occurrence 5 s after it is due when the
        // home's firing has not reached them through `reconciled` by then.
        cfg.schedule_grace_ms = SCHEDULE_GRACE_MS as u64;
        cluster.start_processor_with(cfg, 0, std::sync::Arc::new(rf_core::SystemClock));
    }
    cluster.start_reconciler();
    print_endpoints(&cluster);
    let w = Workload {
        events: args.events,
        seed: args.seed,
        all_aggregates: true,
        ..Workload::default()
    };
    let (records, mut ledger) = generate(&w, names.len());
    println!(
        "== sending {} records: {} distinct events (counters, registers, leaderboards, inventory, chat), {} retries, {} failovers to another region, {} malformed",
        records.len(), ledger.distinct.len(), ledger.retries_same_region, ledger.failovers, ledger.malformed
    );
    let bootstraps = cluster.bootstraps();
    let publisher = Publisher::new_in(&bootstraps, &cluster.namespace_names())?;
    let total = records.len();
    let reconciled_now = |c: &Cluster| c.reconciled_so_far();
    let lag = |c: &Cluster, r: &str| {
        c.reconciler
            .as_ref()
            .and_then(|x| x.stats.watermark_lag_ms.lock().ok()?.get(r).copied())
            .unwrap_or(0)
    };
    // Reminders, one per zone, each at home in one region (every 10 s of its wall clock).
    let reminders = reminder_sets(&names, &mut ledger);
    println!("== schedules: {} reminders (a zone each, every 10 s of local time), set through their home regions", reminders.len());
    publisher.send(&reminders, |_| {});
    publisher.flush()?;
    let (first, rest) = records.split_at(total * 2 / 5);
    let (during, after) = rest.split_at(if args.no_partition { 0 } else { total * 2 / 5 });
    publisher.send(first, |_| {});
    publisher.flush()?;
    println!("   sent {}/{total}", first.len());
    // Let everything flow before the cut: every region processing, the reconciler caught up.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        cluster.check_alive()?;
        let consumed = cluster.processor_sum(|s| &s.consumed);
        let buffered = cluster.reconciler_buffered();
        let rec = reconciled_now(&cluster);
        if consumed >= first.len() as u64 && rec > 0 && buffered == 0 {
            println!("   all regions processing; reconciled {rec}");
            break;
        }
        if Instant::now() > deadline || interrupted.load(Ordering::SeqCst) {
            return Err(format!("regions did not take the first load in time (consumed {consumed}, reconciled {rec})"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut partition_note = None;
    let mut cut_wall = (i64::MAX, i64::MIN);
    if !args.no_partition {
        let cut = *names.last().expect("regions");
        let idx = names.len() - 1;
        let accepted = |c: &Cluster| c.processors[idx].stats.counters.accepted.get();
        let (acc0, rec0) = (accepted(&cluster), reconciled_now(&cluster));
        // The sale closes at a local instant in Paris 3 s from now (a midnight would be hours
        // away; a wall time is a wall time): at home in the region about to be cut.
        let close = sale_close(idx, wall_ms() + 3_000, &mut ledger);
        println!(
            "== schedule: flash sale closes at {} (Europe/Paris), home {cut}",
            close.1
        );
        publisher.send(&[close.0], |_| {});
        publisher.flush()?;
        cluster.cut(cut)?;
        let cut_at = Instant::now();
        cut_wall.0 = wall_ms();
        println!("== PARTITION: {cut} cut off from the home cluster and the reconciler (veth link down) for {} s", args.cut_secs);
        publisher.send(during, |_| {});
        publisher.flush()?;
        while cut_at.elapsed() < Duration::from_secs(args.cut_secs) {
            if interrupted.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            cluster.check_alive()?;
            println!(
                "   {:>2} s cut: {cut} accepted {} events on its own; reconciled {} (held at {cut}'s watermark); {cut} watermark lag {} ms",
                cut_at.elapsed().as_secs(),
                accepted(&cluster) - acc0,
                reconciled_now(&cluster),
                lag(&cluster, cut)
            );
        }
        let held = reconciled_now(&cluster) - rec0;
        cluster.heal(cut)?;
        let healed_at = Instant::now();
        cut_wall.1 = wall_ms();
        println!("== HEAL: {cut} reconnected; reconciling what diverged");
        partition_note = Some((cut, cut_at, healed_at, accepted(&cluster) - acc0, held));
    }
    publisher.send(after, |_| {});
    publisher.flush()?;
    println!("   sent {total}/{total}");
    println!("== waiting for the reconciler (deadline 180 s)");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last_print = Instant::now();
    loop {
        if interrupted.load(Ordering::SeqCst) {
            println!("interrupted: stopping everything");
            cluster.stop_all();
            return Ok(false);
        }
        cluster.check_alive()?;
        let rec = cluster.reconciled_so_far() as usize;
        let done =
            rec >= ledger.distinct.len() && reconciled_count(&cluster)? >= ledger.distinct.len();
        if done || last_print.elapsed() > Duration::from_secs(1) {
            let accepted: u64 = cluster
                .processors
                .iter()
                .map(|p| p.stats.counters.accepted.get())
                .sum();
            println!(
                "   accepted {accepted}, reconciled {rec}/{}",
                ledger.distinct.len()
            );
            last_print = Instant::now();
        }
        if done {
            if let Some((cut, _, healed_at, _, _)) = &mut partition_note {
                println!(
                    "   caught up {:.1} s after the heal; {cut} watermark lag {} ms",
                    healed_at.elapsed().as_secs_f64(),
                    lag(&cluster, cut)
                );
            }
            break;
        }
        if Instant::now() > deadline {
            println!("   deadline passed with {rec} reconciled");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let proc_stats: Vec<(String, u64, u64, u64, u64)> = cluster
        .processors
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.stats.counters.consumed.get(),
                p.stats.counters.accepted.get(),
                p.stats.counters.duplicates.get(),
                p.stats.counters.dead_lettered.get(),
            )
        })
        .collect();
    // Stop the writers first: processors heartbeat into history every few hundred ms, so
    // a live partition has no end to read to. The brokers live on until `cluster` drops.
    let errs = cluster.stop_all();
    let report = check(&cluster, &ledger)?;
    println!("\n== summary ({:.1} s)", started.elapsed().as_secs_f64());
    println!("   sent                {} records ({} distinct events, {} same-region retries, {} failovers, {} malformed)",
        report.sent_records, report.sent_distinct, report.retries, report.failovers, report.malformed_sent);
    for (name, consumed, accepted, dups, dead) in proc_stats {
        println!("   {name:<22} consumed {consumed:>6}  accepted {accepted:>6}  deduplicated {dups:>5}  dead-lettered {dead:>3}");
    }
    for (region, n) in &report.history_per_region {
        println!(
            "   history {region:<9}   {n} events + {} heartbeats, dlq {}",
            report.heartbeats_per_region[region], report.dlq_per_region[region]
        );
    }
    println!(
        "   reconciled          {} events (distinct across regions: {})",
        report.reconciled, report.accepted_distinct_across_regions
    );
    if let Some((cut, cut_at, healed_at, alone, held)) = &partition_note {
        println!(
            "   partition           {cut} cut for {:.1} s: accepted {alone} events on its own; reconciled moved by only {held} meanwhile (it waits for every region's watermark)",
            (*healed_at - *cut_at).as_secs_f64()
        );
    }
    if let Ok(rec) = rf_harness::check::read_reconciled(&cluster) {
        let mut n = std::collections::BTreeMap::<&str, usize>::new();
        for (_, r) in &rec {
            let what = match (&r.event.op, r.outcome) {
                (rf_schemas::Op::Reserve { .. }, rf_schemas::Outcome::Applied) => "reserved",
                (rf_schemas::Op::Reserve { .. }, rf_schemas::Outcome::Refused) => "refused",
                (rf_schemas::Op::Reserve { .. }, rf_schemas::Outcome::Revoked) => "revoked",
                (rf_schemas::Op::RightsRequest { .. }, _) => "rights requests",
                (rf_schemas::Op::RightsTransfer { .. }, _) => "rights transfers",
                _ => continue,
            };
            *n.entry(what).or_default() += 1;
        }
        let get = |k: &str| n.get(k).copied().unwrap_or(0);
        println!(
            "   flash sale (escrow) {} reservations admitted, {} refused at once by a region out of rights, {} revoked afterwards; {} rights requests, {} rights transfers between regions",
            get("reserved"),
            get("refused"),
            get("revoked"),
            get("rights requests"),
            get("rights transfers")
        );
    }
    println!(
        "   conflicts           {:?} (distinct by conflict_id)",
        report.conflicts
    );
    if let Ok(cs) = read_all_conflicts(&cluster) {
        // Register conflicts come from causality: puts neither writer had seen the other of.
        let (mut cut, mut close) = (0, 0);
        for cf in cs
            .iter()
            .filter(|c| c.kind == rf_schemas::ConflictKind::RegisterConcurrent)
        {
            if cf.hlc.physical_ms >= cut_wall.0 && cf.hlc.physical_ms <= cut_wall.1 + 5_000 {
                cut += 1;
            } else {
                close += 1;
            }
        }
        println!(
            "   register conflicts  {cut} made during the cut (or while it healed), {close} by puts to one key from two regions less than a reconciliation round trip apart (neither had seen the other)"
        );
    }
    if let Ok(cs) = read_all_conflicts(&cluster) {
        let mut shown = std::collections::BTreeSet::new();
        for cf in cs {
            if shown.insert(cf.kind.as_str()) {
                println!(
                    "     e.g. {:<24} key {:<18} regions {:?}: {} (reconciled {} ms after it happened)",
                    cf.kind.as_str(),
                    cf.key,
                    cf.regions,
                    cf.detail,
                    cf.reconcile_latency_ms
                );
            }
        }
    }
    print_schedules(&cluster);
    println!("   merged state of a few keys:");
    for (k, s) in &report.sample_states {
        println!("     {k:<22} {s}");
    }
    println!("   where to look: topics events/history/events.dlq on each region broker, reconciled/conflicts on home (addresses above; they stop with the demo unless --keep-brokers)");
    for e in &errs {
        println!("   component error: {e}");
    }
    if args.keep_brokers {
        println!("   brokers kept up (--keep-brokers); press Ctrl-C to stop them");
        while !interrupted.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if report.ok() && errs.is_empty() {
        println!("\nRESULT: reconciled state EQUALS the state recomputed from what was sent");
        Ok(true)
    } else {
        println!("\nRESULT: MISMATCH ({} problems)", report.problems.len());
        for p in report.problems.iter().take(20) {
            println!("   - {p}");
        }
        Ok(false)
    }
}

const SCHEDULE_GRACE_MS: i64 = 5_000;

fn schedule_record(
    region: usize,
    key: &str,
    spec: rf_schemas::ScheduleSpec,
    ledger: &mut rf_harness::workload::Ledger,
) -> rf_harness::workload::Outgoing {
    let id = format!("set:{key}");
    let ev = rf_schemas::Event::new(id.clone(), key, rf_schemas::Op::ScheduleSet(Box::new(spec)));
    ledger.distinct.insert((key.to_owned(), id), ev.op.clone());
    ledger.records += 1;
    rf_harness::workload::Outgoing {
        region,
        key: key.to_owned(),
        payload: rf_schemas::Codec::event().encode(&ev).expect("encodes"),
    }
}

/// A reminder per zone, every 10 s of local wall time, for the next 10 minutes; home: the
/// region it is sent to.
fn reminder_sets(
    names: &[&str],
    ledger: &mut rf_harness::workload::Ledger,
) -> Vec<rf_harness::workload::Outgoing> {
    let zones = [
        "America/New_York",
        "Europe/London",
        "Asia/Kolkata",
        "Australia/Lord_Howe",
    ];
    zones
        .iter()
        .enumerate()
        .map(|(i, zone)| {
            let mut spec = rf_schemas::ScheduleSpec::new(
                "*/10 * * * * *",
                *zone,
                format!("remind the users in {zone}"),
            );
            spec.missed = "catch_up".into();
            spec.end_ms = Some(wall_ms() + 600_000);
            let key = format!("reminder:{}", zone.to_lowercase().replace('/', "-"));
            schedule_record(i % names.len(), &key, spec, ledger)
        })
        .collect()
}

/// The sale's closing time: the Paris wall time of `at_ms` as a one-off cron expression.
fn sale_close(
    region: usize,
    at_ms: i64,
    ledger: &mut rf_harness::workload::Ledger,
) -> (rf_harness::workload::Outgoing, String) {
    let probe = rf_schemas::ScheduleSpec::new("* * * * * *", "Europe/Paris", "");
    let sched = rf_core::schedule::Schedule::parse(&probe).expect("valid");
    let wall = sched.wall(at_ms / 1000);
    // "2026-12-02T20:41:05+01:00" -> seconds minutes hours day month
    let (date, time) = wall.split_at(10);
    let f = |s: &str| s.trim_start_matches('0').parse::<u32>().unwrap_or(0);
    let (mo, d) = (f(&date[5..7]), f(&date[8..10]));
    let (h, mi, se) = (f(&time[1..3]), f(&time[4..6]), f(&time[7..9]));
    let mut spec = rf_schemas::ScheduleSpec::new(
        format!("{se} {mi} {h} {d} {mo} *"),
        "Europe/Paris",
        "close flash sale stock:*",
    );
    spec.end_ms = Some(at_ms + 1_000);
    (
        schedule_record(region, "sale-close:paris", spec, ledger),
        wall,
    )
}

/// What fired where and when: per schedule, the occurrences in `reconciled`, by whom, and
/// the copies that were dropped.
fn print_schedules(cluster: &Cluster) {
    let Ok(rec) = rf_harness::check::read_reconciled(cluster) else {
        return;
    };
    let mut per_key: std::collections::BTreeMap<String, Vec<(String, String, bool, i64)>> =
        Default::default();
    for (_, r) in &rec {
        if let rf_schemas::Op::ScheduleFired(f) = &r.event.op {
            let late = r.event.hlc.map_or(0, |h| h.physical_ms) - f.occurrence_ms;
            per_key.entry(r.event.key.clone()).or_default().push((
                f.wall.clone(),
                r.event.region.clone().unwrap_or_default(),
                f.failover,
                late,
            ));
        }
    }
    let mut copies = 0;
    let mut failover_copies = 0;
    for (_, b) in &cluster.regions {
        if let Ok(h) = rf_harness::check::read_history_events(&b.bootstrap(), cluster.partitions) {
            for (_, e) in h {
                if let rf_schemas::Op::ScheduleFired(f) = &e.op {
                    copies += 1;
                    failover_copies += usize::from(f.failover);
                }
            }
        }
    }
    let kept: usize = per_key.values().map(Vec::len).sum();
    println!(
        "   schedules           {kept} occurrences in reconciled, each once; {copies} fired records in the histories ({failover_copies} failover copies after the {} s grace); the extra copies are CROSS_REGION_DUPLICATE conflicts",
        SCHEDULE_GRACE_MS / 1000
    );
    for (key, fired) in &per_key {
        let (first, last) = (&fired[0], &fired[fired.len() - 1]);
        let by: std::collections::BTreeSet<String> = fired
            .iter()
            .map(|(_, r, f, _)| format!("{r}{}", if *f { " (failover)" } else { "" }))
            .collect();
        let worst = fired.iter().map(|x| x.3).max().unwrap_or(0);
        println!(
            "     {key:<34} {} fired, {} .. {} local, kept from {:?}, due -> history at most {worst} ms",
            fired.len(),
            first.0,
            last.0,
            by
        );
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
