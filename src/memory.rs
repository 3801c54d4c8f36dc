//! The process's allocator, and giving freed heap memory back to the system.
//!
//! Every allocation of `paas` (and of the crate's tests) goes through jemalloc. Against
//! glibc's allocator, it took about 14 % less of the framework's CPU in `bench provision`
//! and 15 % less per launch in `bench launches` (README, Performance): glibc spent a fifth
//! of the framework's CPU in malloc and free and a tenth more growing its heaps, page
//! fault by page fault.
//!
//! jemalloc keeps what a burst freed (a thousand launches, a batch of updates) as dirty
//! pages, returned by itself only after they stay unused for seconds.
//! [`spawn_trimmer`] purges them every `period` instead ([`trim`]), so that a burst's peak
//! does not stay the process's size. A purge runs on the blocking pool.
//!
//! With `--features dhat-heap`, the allocator is dhat's profiler over glibc's (see
//! `main.rs`); [`tune`] and [`trim`] then use glibc's knobs: [`tune`] keeps large blocks on
//! the heap instead of one `mmap` each, and [`trim`] is `malloc_trim`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How often `paas serve` trims.
pub const TRIM_PERIOD: Duration = Duration::from_secs(5);

/// Under glibc's allocator (the `dhat-heap` build), blocks up to this size come from the
/// heap rather than from their own `mmap`: glibc's most (`HEAP_MAX_SIZE / 2` on 64-bit).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Sets the allocator up for a long-running server; call it first thing in `main`, before
/// any thread starts. Whether it changed anything: only glibc's allocator (the `dhat-heap`
/// build) has a knob to set; jemalloc's defaults serve as they are.
pub fn tune() -> bool {
    #[cfg(all(feature = "dhat-heap", target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a parameter of the allocator, under its own lock.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1 }
    }
    #[cfg(not(all(feature = "dhat-heap", target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims every `period` until `shutdown`.
pub fn spawn_trimmer(period: Duration, shutdown: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(async move {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {
                    let _ = tokio::task::spawn_blocking(trim).await;
                }
            }
        }
    });
}

/// Returns the free pages of every arena to the system; whether the allocator took the
/// request (jemalloc) or returned some pages (glibc).
pub fn trim() -> bool {
    #[cfg(not(feature = "dhat-heap"))]
    {
        // `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena's unused dirty pages go back.
        // SAFETY: a NUL-terminated name, and no old or new value, as this mallctl takes.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                c"arena.4096.purge".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            ) == 0
        }
    }
    #[cfg(all(feature = "dhat-heap", target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only takes the allocator's own locks and has no preconditions.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(all(
        feature = "dhat-heap",
        not(all(target_os = "linux", target_env = "gnu"))
    ))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocator takes a trim after a burst of small blocks is freed (that it returns
    /// pages is `tests/memory_trim.rs`, in a process of its own).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_trim_after_a_freed_burst_is_taken() {
        let burst: Vec<Vec<u8>> = (0..200_000).map(|i| vec![(i % 251) as u8; 200]).collect();
        // Keep every hundredth block, so that the freed memory is spread over the heap.
        let kept: Vec<Vec<u8>> = burst.into_iter().step_by(100).collect();
        assert!(trim(), "a trim after freeing ~40 MB in small blocks");
        assert_eq!(kept.len(), 2_000);
    }

    /// Under glibc's allocator, after [`tune`] a 4 MiB block comes from the heap, not from
    /// a mapping of its own (glibc's default threshold, 128 KiB to start with, would map
    /// it).
    #[test]
    #[cfg(all(feature = "dhat-heap", target_os = "linux", target_env = "gnu"))]
    fn tuned_large_blocks_are_not_mapped_one_by_one() {
        // SAFETY: mallinfo2 reads the allocator's statistics under its lock.
        let mapped = || unsafe { libc::mallinfo2() }.hblks;
        assert!(tune());
        let before = mapped();
        let block = vec![1u8; 4 << 20];
        // Other tests' threads may free a mapped block meanwhile, hence `<=`.
        assert!(mapped() <= before, "the block has no mapping of its own");
        assert_eq!(block.len(), 4 << 20);
    }
}
