//! The benchmarks of `bench` (docs/BENCHMARKS.md): each measures one figure and compares
//! it, where the issue asks, with a baseline measured in the same run. No assertion on
//! speed: the figures are printed and written down, targets met or not.

pub mod merge;
pub mod micro;
pub mod mix;
pub mod pipeline;
pub mod quix;
pub mod report;
pub mod soak;

/// How big a run is: the full one for docs/BENCHMARKS.md, the small one CI runs to keep
/// the benchmark working.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub name: &'static str,
    /// Distinct keys the processor ends up holding.
    pub keys: usize,
    /// Distinct events (each key gets at least one; the rest hit keys again).
    pub events: usize,
    /// Events per region fed to the merge.
    pub merge_events: usize,
    /// Ids in the RocksDB dedup micro-benchmark.
    pub dedup_ids: usize,
    /// Iterations of the in-memory micro-benchmarks.
    pub micro_iters: usize,
    /// Latency phase: events per second and seconds.
    pub latency_rate: usize,
    pub latency_secs: u64,
}

impl Sizes {
    pub fn full() -> Self {
        Sizes {
            name: "full",
            keys: 1_000_000,
            events: 1_200_000,
            merge_events: 400_000,
            dedup_ids: 1_000_000,
            micro_iters: 200_000,
            latency_rate: 2_000,
            latency_secs: 15,
        }
    }

    pub fn small() -> Self {
        Sizes {
            name: "small",
            keys: 5_000,
            events: 6_000,
            merge_events: 5_000,
            dedup_ids: 10_000,
            micro_iters: 2_000,
            latency_rate: 500,
            latency_secs: 3,
        }
    }
}

/// The current UTC time, "YYYY-MM-DD HH:MM UTC" (from the system clock; no date crate).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}
