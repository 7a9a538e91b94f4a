//! mimalloc settings for the processes that run rounds: the `hefl` CLI and the Python module
//! (feature `mimalloc`; both declare mimalloc as their global allocator).
//!
//! Every round allocates and frees megabyte-sized vectors (updates, prepared encryptions,
//! ciphertexts, wire bytes). mimalloc returns ("purges") free pages to the system 10 ms after
//! they are freed by default; a round later the same sizes are allocated again and every page
//! faults back in, zeroed by the kernel. [`keep_freed_pages`] raises that delay to a second,
//! longer than a round, so pages are reused instead. Measured on 2 cores,
//! `hefl train --mode federated --privacy he --epochs 3`: 7.5 s with 2.6 s of system time
//! before, 6.25 s with 0.8 s after, for 45 MB more peak memory (680 MB). Memory still goes
//! back to the system once a process has been idle for a few seconds. (The measurements:
//! `docs/performance.md#the-allocator`.)

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// mimalloc's `mi_option_purge_delay`: position 15 of `mi_option_e` in `mimalloc.h` (v2 and
/// v3); libmimalloc-sys has no constant for it.
const PURGE_DELAY: mi_option_t = 15;

/// mimalloc's documented default for the purge delay, in milliseconds.
const DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 10;

/// The purge delay this sets, in milliseconds.
pub const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// mimalloc's `mi_option_allow_thp`: position 37 of `mi_option_e` in v2's `mimalloc.h` (the
/// version libmimalloc-sys builds without its `v3` feature, as hefl does; 43 in v3).
const ALLOW_THP: mi_option_t = 37;

/// Stops mimalloc from asking for transparent huge pages (`madvise(MADV_HUGEPAGE)`) for the
/// memory it maps from now on, for processes of many threads with a little memory each: the
/// load generator of `hefl bench-network` (a thread per party) and `hefl serve` (a task per
/// connection). mimalloc gives each thread its own segments, and the first touch of a huge page
/// makes the kernel zero 2 MiB where the thread may use a few KiB: at 1000 parties (`he-seeds`
/// over HTTP, 2 shared cores) that zeroing was half of the load generator's CPU time (`perf`);
/// in one pair of runs without it, the load generator's CPU per round went from 1.56 to 1.34 s
/// and the server's peak memory from 402 to 265 MiB. Leaves the option alone when it does not
/// read mimalloc's default, 1 (`MIMALLOC_ALLOW_THP=0` set by the user, or another mimalloc).
pub fn avoid_huge_pages() {
    // SAFETY: as in `keep_freed_pages`.
    unsafe {
        if mi_option_get(ALLOW_THP) == 1 {
            mi_option_set(ALLOW_THP, 0);
        }
    }
}

/// Keeps freed pages for [`PURGE_DELAY_MS`] before mimalloc returns them to the system (see
/// the module docs). Leaves the option alone when it does not read mimalloc's default (set by
/// the user through `MIMALLOC_PURGE_DELAY`, or a mimalloc whose option 15 is something else).
/// Call it once, first thing in `main` or at module load.
pub fn keep_freed_pages() {
    // SAFETY: both calls take and return plain integers; mimalloc's options are process-wide
    // and safe to read and set from any thread.
    unsafe {
        if mi_option_get(PURGE_DELAY) == DEFAULT_PURGE_DELAY_MS {
            mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

/// Keeps freed pages for as long as the process runs, for the load generator of
/// `hefl bench-network`: its P threads each free a sum's download at the end of a round and
/// allocate one again at the next, and at 1000 parties a round with its barriers lasts longer
/// than [`PURGE_DELAY_MS`], so every page faulted back in, zeroed, each round. Measured at
/// 1000 parties, `he-seeds` over HTTP, alternating runs on 2 shared cores: the load
/// generator's CPU per round 1.61 and 1.79 s before, 1.29 and 1.19 s after. (A server keeps
/// [`keep_freed_pages`]: it runs for hours and should give memory back when idle.) Leaves the
/// option alone when the user set it (`MIMALLOC_PURGE_DELAY`).
pub fn never_return_freed_pages() {
    // SAFETY: as in `keep_freed_pages`.
    unsafe {
        let delay = mi_option_get(PURGE_DELAY);
        if delay == DEFAULT_PURGE_DELAY_MS || delay == PURGE_DELAY_MS {
            mi_option_set(PURGE_DELAY, -1);
        }
    }
}
