//! Process-wide memory settings, applied first thing in each binary's `main`.

/// What each binary's `main` calls first: two glibc arenas (`limit_malloc_arenas`), and
/// glibc's free memory given back every `TRIM_EVERY` (`trim_periodically`).
pub fn init() {
    limit_malloc_arenas();
    trim_periodically(TRIM_EVERY);
}

/// How often `init`'s trim thread looks at glibc's free memory.
pub const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

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

/// Every `every`, give glibc's free memory back to the kernel when it holds more than
/// `TRIM_ABOVE` of it (`malloc_trim(0)`: whole free pages inside the arenas are released, not
/// only the top). glibc keeps what RocksDB and librdkafka free (flushed memtables, evicted
/// cache blocks, fetch buffers) in its arenas for reuse, and with a churning block cache much
/// of it is never reused: in the soak, glibc's free part grew from 27–51 MB to 142–157 MB per
/// processor over 8× the history, most of the processor's growth (docs/BENCHMARKS.md). A
/// background thread for the life of the process, like the allocator itself: it holds
/// nothing and needs no shutdown.
pub fn trim_periodically(every: std::time::Duration) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    std::thread::Builder::new()
        .name("rf-malloc-trim".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            if heap().glibc_free > TRIM_ABOVE {
                trim();
            }
        })
        .expect("spawn the malloc trim thread");
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = every;
}

/// glibc free memory above which `trim_periodically` trims.
pub const TRIM_ABOVE: u64 = 16 << 20;

#[allow(unsafe_code)]
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns the allocator's free pages; safe from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the two allocators hold, in bytes: the part of resident memory that is neither a
/// store's accounted memory (memtables, block cache, table readers) nor code and stacks.
/// Exported as `rf_process_heap_bytes` so an operator can tell a leak (in use grows) from
/// fragmentation (free grows) and C from Rust.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heap {
    /// glibc malloc (RocksDB and librdkafka): bytes in allocated chunks, mmapped ones
    /// included.
    pub glibc_in_use: u64,
    /// glibc malloc: free bytes it keeps in its arenas (fragmentation, not yet returned).
    pub glibc_free: u64,
    /// mimalloc (all Rust allocations): memory it has committed, in use or cached.
    pub rust_committed: u64,
}

impl Heap {
    /// The series' `part` label and value, in a fixed order.
    pub fn parts(&self) -> [(&'static str, u64); 3] {
        [
            ("glibc_in_use", self.glibc_in_use),
            ("glibc_free", self.glibc_free),
            ("rust_committed", self.rust_committed),
        ]
    }
}

/// The allocators' figures now (zeros for glibc off glibc). Cheap: a walk of glibc's arena
/// headers (two arenas, see `limit_malloc_arenas`) and mimalloc's counters; called with the
/// other gauges at each commit.
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
    #[test]
    fn the_heap_figures_are_read() {
        let v: Vec<u8> = vec![1; 1 << 20];
        let h = super::heap();
        assert!(h.rust_committed >= v.len() as u64 || cfg!(not(target_env = "gnu")));
        assert_eq!(h.parts().len(), 3);
    }
}
