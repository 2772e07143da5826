//! Process-wide memory settings, applied first thing in each binary's `main`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What each binary's `main` calls first: two glibc arenas (`limit_malloc_arenas`), and the
/// sampler thread that reads the allocators once a second and gives glibc's free memory back
/// every `TRIM_EVERY` (`sample_and_trim`).
pub fn init() {
    limit_malloc_arenas();
    sample_and_trim(TRIM_EVERY);
}

/// How often `init`'s thread trims glibc's free memory (when it holds more than
/// `TRIM_ABOVE`).
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// glibc free memory above which the thread trims.
pub const TRIM_ABOVE: u64 = 16 << 20;

/// Two glibc malloc arenas instead of up to eight per core. Rust code allocates through
/// mimalloc, but RocksDB and librdkafka (C and C++) use glibc's malloc, whose per-thread
/// arenas keep freed memtable and compaction buffers fragmented: with the default, a
/// processor's memory outside its store grew 15–80 bytes per pending event during a long
/// cut of the home cluster (`view_memory_bound`); with two arenas it stayed flat (170, 176,
/// 165 MB at 400,000, 800,000 and 1,200,000 pending). An explicit `MALLOC_ARENA_MAX` in the
/// environment wins.
#[allow(unsafe_code)]
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Every second, read the allocators (`heap`, kept for `sampled`); every `trim_every`, give
/// glibc's free memory back to the kernel when it holds more than `TRIM_ABOVE` of it
/// (`malloc_trim(0)`: whole free pages inside the arenas are released, not only the top).
///
/// glibc keeps what RocksDB and librdkafka free (flushed memtables, evicted cache blocks,
/// fetch buffers) in its arenas for reuse, and with a churning block cache much of it is
/// never reused: in the soak, glibc's free part grew from 27–51 MB to 142–157 MB per
/// processor over 8× the history, most of the processor's growth (docs/BENCHMARKS.md).
/// glibc's free figure still counts the pages a trim released (their chunks stay free in
/// the bins), so once past the threshold the thread trims every `trim_every`; each trim's
/// time is in `Heap::trim_micros`. The sampling is here, off the services' threads, because
/// `mallinfo2` walks every free chunk under the arena's lock. A background thread for the
/// life of the process, like the allocator itself: it holds nothing and needs no shutdown.
/// `RF_MALLOC_TRIM=off` keeps the sampling and turns the trim off (for A/B runs).
pub fn sample_and_trim(trim_every: Duration) {
    if SAMPLER.swap(true, Ordering::SeqCst) {
        return;
    }
    let trim_on = std::env::var("RF_MALLOC_TRIM").map_or(true, |v| v != "off");
    std::thread::Builder::new()
        .name("rf-malloc-sampler".into())
        .spawn(move || {
            let mut trimmed = Instant::now();
            loop {
                let h = heap();
                store(&h);
                if trim_on && trimmed.elapsed() >= trim_every && h.glibc_free > TRIM_ABOVE {
                    trimmed = Instant::now();
                    trim();
                    TRIMS.fetch_add(1, Ordering::Relaxed);
                    TRIM_NANOS.fetch_add(trimmed.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .expect("spawn the malloc sampler thread");
}

static SAMPLER: AtomicBool = AtomicBool::new(false);
static GLIBC_IN_USE: AtomicU64 = AtomicU64::new(0);
static GLIBC_FREE: AtomicU64 = AtomicU64::new(0);
static RUST_COMMITTED: AtomicU64 = AtomicU64::new(0);
static TRIMS: AtomicU64 = AtomicU64::new(0);
static TRIM_NANOS: AtomicU64 = AtomicU64::new(0);

fn store(h: &Heap) {
    GLIBC_IN_USE.store(h.glibc_in_use, Ordering::Relaxed);
    GLIBC_FREE.store(h.glibc_free, Ordering::Relaxed);
    RUST_COMMITTED.store(h.rust_committed, Ordering::Relaxed);
}

/// The sampler's last reading (at most a second old), with the trims so far; read directly
/// when no sampler runs (a service embedded in a test). What the services' gauges show.
pub fn sampled() -> Heap {
    if !SAMPLER.load(Ordering::Relaxed) {
        return heap();
    }
    Heap {
        glibc_in_use: GLIBC_IN_USE.load(Ordering::Relaxed),
        glibc_free: GLIBC_FREE.load(Ordering::Relaxed),
        rust_committed: RUST_COMMITTED.load(Ordering::Relaxed),
        trims: TRIMS.load(Ordering::Relaxed),
        trim_micros: TRIM_NANOS.load(Ordering::Relaxed) / 1000,
    }
}

#[allow(unsafe_code)]
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns the allocator's free pages; safe from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the two allocators hold, in bytes: with a store's accounted memory (memtables, block
/// cache, table readers, all in glibc's in-use part), most of resident memory besides code
/// and stacks. Exported as `rf_heap_bytes` (and `rf_reconciler_heap_bytes`) so an operator
/// can tell growth in use from free memory kept, and C from Rust.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heap {
    /// glibc malloc (RocksDB and librdkafka): bytes in allocated chunks, mmapped ones
    /// included.
    pub glibc_in_use: u64,
    /// glibc malloc: free bytes in its arenas, including pages a trim gave back.
    pub glibc_free: u64,
    /// mimalloc (all Rust allocations): memory it has committed, in use or cached (an
    /// estimate: more than it has touched).
    pub rust_committed: u64,
    /// Trims so far (`sample_and_trim`) and the time they took, microseconds.
    pub trims: u64,
    pub trim_micros: u64,
}

impl Heap {
    /// The byte gauges' `part` label and value, in a fixed order.
    pub fn parts(&self) -> [(&'static str, u64); 3] {
        [
            ("glibc_in_use", self.glibc_in_use),
            ("glibc_free", self.glibc_free),
            ("rust_committed", self.rust_committed),
        ]
    }
}

/// The allocators' figures now (zeros for glibc off glibc; no trims). `mallinfo2` walks
/// every free chunk under each arena's lock: services read `sampled` instead.
#[allow(unsafe_code)]
pub fn heap() -> Heap {
    let mut h = Heap::default();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's own statistics.
        let m = unsafe { libc::mallinfo2() };
        h.glibc_in_use = (m.uordblks + m.hblkhd) as u64;
        h.glibc_free = m.fordblks as u64;
    }
    let mut commit = 0usize;
    let mut unused = [0usize; 7];
    let [a, b, c, d, e, f, g] = &mut unused;
    // SAFETY: every pointer is to a live local; mimalloc writes one usize through each.
    unsafe {
        libmimalloc_sys::mi_process_info(a, b, c, d, e, &mut commit, f, g);
    }
    h.rust_committed = commit as u64;
    h
}

#[cfg(test)]
mod tests {
    /// This test binary allocates through glibc (no mimalloc global allocator here): a
    /// 1 MiB buffer is in glibc's in-use figure.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn the_heap_figures_are_read() {
        // black_box: without it the compiler may drop the unused allocation.
        let v: Vec<u8> = std::hint::black_box(vec![1; 1 << 20]);
        let h = super::heap();
        assert!(h.glibc_in_use >= v.len() as u64, "{h:?}");
        assert_eq!(h.parts().len(), 3);
    }

    /// A trim gives fragmented free memory back: 3 of every 4 blocks of 16 KB freed (240 MB of
    /// 320 MB), resident memory falls after `trim` by most of it. Prints the trim's time.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_trim_returns_fragmented_free_memory() {
        let rss = || status_kb("VmRSS:");
        // Below glibc's mmap threshold, so the blocks come from the arena's heap.
        let mut blocks: Vec<Option<Vec<u8>>> =
            (0..20_000).map(|_| Some(vec![7u8; 16 << 10])).collect();
        for (i, b) in blocks.iter_mut().enumerate() {
            if i % 4 != 0 {
                *b = None;
            }
        }
        let before = rss();
        let t = std::time::Instant::now();
        super::trim();
        let took = t.elapsed();
        let after = rss();
        eprintln!(
            "trim: {:.1} ms, RSS {before} -> {after} kB, {} blocks still held",
            took.as_secs_f64() * 1e3,
            blocks.iter().flatten().count()
        );
        assert!(
            before.saturating_sub(after) > 150 * 1024,
            "trim released {} kB of 240 MB free",
            before.saturating_sub(after)
        );
    }

    /// A `/proc/self/status` figure in kB (0 if absent).
    fn status_kb(field: &str) -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}
