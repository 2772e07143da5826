//! Process-wide memory settings, applied first thing in each binary's `main`.

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
